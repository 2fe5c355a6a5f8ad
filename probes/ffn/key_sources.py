"""An MLP neuron's key split by where its input comes from: by residual component
(`key_decomposition`: embeddings, each attention layer's and MLP's output, the bias) or by
source token (`key_by_source`: each token of the prompt, carried by every head, the position
embedding, earlier MLPs, biases), read through the MLP's norm with the run's scale frozen.
One prompt at a time: several are refused (the parts are of one pre-activation).
"""

from __future__ import annotations

from typing import Sequence

import torch

from interp import names as hook_names
from interp.cache import frozen_norm
from interp.checks import require_pre_norm, resolve_pos
from interp.sites import Neuron
from interp.tokens import token_text
from models.transformer import Transformer
from probes.ffn.keys import Prompt, _keys, check_neurons, neuron_bias, single_prompt


def key_decomposition(model: Transformer, prompt: Prompt, neuron: Neuron, pos: int = -1, which: str = "gate") -> dict[str, float]:
    """The neuron's pre-activation at `pos` (or the neuron's own pos) split into what each
    residual component contributes through the MLP's norm (scale frozen from the run) and
    the key, plus the bias (`neuron_bias`). The values sum to the pre-activation. Labels:
    "embed", "pos_embed", "0_attn_out", "0_mlp_out", ..., "bias".

    Gated MLPs (SwiGLU: post = act(x . W_gate[:, n]) * (x . W_in[:, n] + b_in[n])) have two
    keys: which="gate" decomposes the gate's pre-activation (hook_pre), which="up" the linear
    one (hook_pre_linear). Ungated MLPs have one key; `which` is ignored."""
    (neuron,) = check_neurons(model, [neuron])
    if which not in ("gate", "up"):
        raise ValueError(f"which must be 'gate' or 'up', got {which!r}")
    tokens = single_prompt(model, prompt, "key_decomposition")[None]
    pos = resolve_pos(pos if neuron.pos is None else neuron.pos, tokens.shape[1])
    key = _keys(model, neuron.layer, model.cfg.gated_mlp and which == "gate")[:, neuron.index]
    with torch.no_grad():
        _, cache = model.run_with_cache(tokens)
        # The MLP's input, decomposed (a parallel block's MLP reads resid_pre), through ln2.
        parallel = model.cfg.parallel_attn_mlp
        stack, labels = cache.decompose_resid(neuron.layer, mlp_input=not parallel, pos_slice=pos, return_labels=True)
        stack = cache.apply_ln_to_stack(stack, neuron.layer, mlp_input=True, pos_slice=pos, ln_weight=True)
        parts = stack[:, 0] @ key  # [component]
    out = {label: float(v) for label, v in zip(labels, parts)}
    out["bias"] = neuron_bias(model, neuron, which)
    return out


def residual_sources(model: Transformer, cache, words: Sequence[str], pos: int, n_attn: int, n_mlp: int) -> dict[str, torch.Tensor]:
    """The residual stream at `pos` after `n_attn` attention layers and `n_mlp` MLPs, split by
    source, each [d_model], summing to it: "{word}@{p}" (the embedding at `pos`, plus what every
    head carried from position p: pattern x value x W_O), "position", "mlp L{l}", "biases" (b_O)."""
    cfg = model.cfg
    embed = cache["hook_embed"][0]
    zero = torch.zeros(cfg.d_model, dtype=embed.dtype, device=embed.device)
    parts = {f"{w}@{p}": zero.clone() for p, w in enumerate(words[: pos + 1])}
    parts[f"{words[pos]}@{pos}"] = embed[pos].clone()
    parts["position"] = cache["hook_pos_embed"][0, pos] if "hook_pos_embed" in cache else zero
    per_kv = cfg.n_heads // cfg.n_kv_heads
    biases = zero.clone()
    for l in range(n_attn):
        pattern = cache["pattern", l][0, :, pos, : pos + 1]  # [head, src]
        v = cache["v", l][0, : pos + 1].repeat_interleave(per_kv, dim=1)  # [src, head, d_head]
        w_o = model.get_parameter(hook_names.param_name("attn.W_O", l)).detach()  # [head, d_head, d_model]
        from_src = torch.einsum("hs,shd,hdm->sm", pattern, v, w_o)  # [src, d_model]
        for p in range(pos + 1):
            parts[f"{words[p]}@{p}"] = parts[f"{words[p]}@{p}"] + from_src[p]
        biases = biases + model.get_parameter(hook_names.param_name("attn.b_O", l)).detach()
    for l in range(n_mlp):
        parts[f"mlp L{l}"] = cache["mlp_out", l][0, pos]
    parts["biases"] = biases
    return parts


def key_by_source(model: Transformer, prompt: Prompt, neuron: Neuron, pos: int = -1) -> dict[str, float]:
    """The neuron's pre-activation at `pos` split by where it comes from (`residual_sources`):
    each token of the prompt ("Michael@1": its embedding if it is at `pos`, plus what every
    earlier attention layer's heads carried from that position), the position embedding, the
    outputs of earlier MLPs ("mlp L"), and the biases (attention b_O, the norm's bias and the
    key's bias). Read through the MLP's norm with its scale frozen, as `key_decomposition`; the
    parts sum to the pre-activation. Pre-norm, non-parallel, ungated MLPs (the key-value
    picture of a ReLU/GELU key)."""
    (neuron,) = check_neurons(model, [neuron])
    cfg = model.cfg
    require_pre_norm(cfg, "key_by_source")
    if cfg.parallel_attn_mlp or cfg.gated_mlp:
        raise ValueError("key_by_source needs sequential attention and MLP and an ungated MLP; "
                         "use key_decomposition for the others")
    tokens = single_prompt(model, prompt, "key_by_source")[None]
    pos = resolve_pos(pos if neuron.pos is None else neuron.pos, tokens.shape[1])
    key = _keys(model, neuron.layer, False)[:, neuron.index]
    words = [token_text(model, int(t)) for t in tokens[0]]
    with torch.no_grad():
        _, cache = model.run_with_cache(tokens)
        parts = residual_sources(model, cache, words, pos, neuron.layer + 1, neuron.layer)
        scale = cache[hook_names.act_name("scale", neuron.layer, "ln2")][0, pos]
        w = model.get_parameter(hook_names.param_name("ln2.w", neuron.layer)).detach()
        normed = frozen_norm(torch.stack(list(parts.values())), scale, w, cfg.norm == "layernorm") @ key
    out = {label: float(v) for label, v in zip(parts, normed)}
    out["biases"] += neuron_bias(model, neuron, "gate")  # the key's bias, with the norm's bias
    return out


__all__ = ["key_decomposition", "residual_sources", "key_by_source"]
