"""What an MLP neuron reads: its key's activations, the key decomposed by residual component,
whether it is an AND of the subject's parts, and the prompts that trigger it.

Gated MLPs (Llama / Qwen2 SwiGLU): a neuron's activation is post = act(gate) x up, with
gate = x . W_gate[:, n] (hook_pre) and up = x . W_in[:, n] + b_in[n] (hook_pre_linear): the
key is the product of two keys. "pre" activations and the AND test use the gate (the
non-linear part); `key_decomposition(..., which="up")` splits the linear key.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Sequence, Union

import torch

from interp import names as hook_names
from interp.cache import frozen_norm
from interp.sites import Neuron
from interp.tokens import prompt_tokens, token_text

Prompt = Union[str, torch.Tensor]


def check_neurons(model, neurons: Sequence[Neuron]) -> list[Neuron]:
    """The neurons with their layers resolved (negatives count from the end); a clear error
    for anything that is not a `Neuron` of this model."""
    out = []
    for n in neurons:
        if not isinstance(n, Neuron):
            raise TypeError(f"neurons are given as interp.Neuron(layer, index[, pos]), got {n!r}")
        layer = n.layer + model.cfg.n_layers if n.layer < 0 else n.layer
        if not 0 <= layer < model.cfg.n_layers or not 0 <= n.index < model.cfg.d_mlp:
            raise ValueError(f"neuron {n.label} does not exist: the model has {model.cfg.n_layers} layers "
                             f"of {model.cfg.d_mlp} neurons")
        out.append(Neuron(layer, n.index, n.pos))
    return out


def _keys(model, layer: int, gate: bool) -> torch.Tensor:
    """The keys [d_model, d_mlp] a layer's (gate) pre-activations read: W_gate for a gated MLP's gate, else W_in."""
    return model.get_parameter(hook_names.param_name("mlp.W_gate" if gate else "mlp.W_in", layer)).detach()


def layer_biases(model, layer: int, which: str = "gate") -> torch.Tensor:
    """[d_mlp]: the part of each neuron's pre-activation that does not depend on the input:
    b_in[n] plus ln2.b . key (LayerNorm has a bias, RMSNorm none). For a gated MLP's gate
    (which="gate") there is no b_in term. This is the one implementation of a key's bias."""
    gate = model.cfg.gated_mlp and which == "gate"
    keys = _keys(model, layer, gate)
    bias = torch.zeros(keys.shape[1], dtype=keys.dtype, device=keys.device)
    if model.cfg.norm == "layernorm":
        bias = bias + model.get_parameter(hook_names.param_name("ln2.b", layer)).detach() @ keys
    if not gate:
        bias = bias + model.get_parameter(hook_names.param_name("mlp.b_in", layer)).detach()
    return bias


def neuron_bias(model, neuron: Neuron, which: str = "gate") -> float:
    """One neuron's `layer_biases` entry."""
    (neuron,) = check_neurons(model, [neuron])
    return float(layer_biases(model, neuron.layer, which)[neuron.index])


def neuron_activations(model, prompts: Union[Prompt, Sequence[str]], neurons: Sequence[Neuron],
                       pos: int = -1, pre: bool = False) -> torch.Tensor:
    """Activations [n_prompts, n_neurons] at `pos` (post non-linearity, or pre with pre=True).
    A neuron's own `pos`, when set, overrides `pos`."""
    neurons = check_neurons(model, neurons)
    tokens = prompt_tokens(model, prompts)
    act = "pre" if pre else "post"
    names = sorted({hook_names.act_name(act, n.layer) for n in neurons})
    with torch.no_grad():
        _, cache = model.run_with_cache(tokens, names_filter=names, return_type=None)
    return torch.stack([cache[hook_names.act_name(act, n.layer)][:, pos if n.pos is None else n.pos, n.index]
                        for n in neurons], dim=-1)


def key_decomposition(model, prompt: Prompt, neuron: Neuron, pos: int = -1, which: str = "gate") -> dict[str, float]:
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
    tokens = prompt_tokens(model, prompt)[:1]
    pos = pos if neuron.pos is None else neuron.pos
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


def residual_sources(model, cache, words: Sequence[str], pos: int, n_attn: int, n_mlp: int) -> dict[str, torch.Tensor]:
    """The residual stream at `pos` after `n_attn` attention layers and `n_mlp` MLPs, split by
    source, each [d_model], summing to it: "{word}@{p}" (the embedding at `pos`, plus what every
    head carried from position p: pattern x value x W_O), "position", "mlp L{l}", "biases" (b_O)."""
    cfg = model.cfg
    embed = cache["hook_embed"][0]
    zero = torch.zeros(cfg.d_model, dtype=embed.dtype)
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


def key_by_source(model, prompt: Prompt, neuron: Neuron, pos: int = -1) -> dict[str, float]:
    """The neuron's pre-activation at `pos` split by where it comes from (`residual_sources`):
    each token of the prompt ("Michael@1": its embedding if it is at `pos`, plus what every
    earlier attention layer's heads carried from that position), the position embedding, the
    outputs of earlier MLPs ("mlp L"), and the biases (attention b_O, the norm's bias and the
    key's bias). Read through the MLP's norm with its scale frozen, as `key_decomposition`; the
    parts sum to the pre-activation. Pre-norm, non-parallel, ungated MLPs (the key-value
    picture of a ReLU/GELU key)."""
    (neuron,) = check_neurons(model, [neuron])
    cfg = model.cfg
    if cfg.norm_position != "pre" or cfg.parallel_attn_mlp or cfg.gated_mlp:
        raise ValueError("key_by_source needs a pre-norm model with sequential attention and MLP and an ungated MLP; "
                         "use key_decomposition for the others")
    tokens = prompt_tokens(model, prompt)[:1]
    n_pos = tokens.shape[1]
    pos = (pos if neuron.pos is None else neuron.pos) % n_pos
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


# ============================================================ AND detection
@dataclass
class AndRow:
    """One neuron's key on the full subject and on prompts sharing only one of its parts.

    full / first_only / last_only: activation after the non-linearity (partials: mean over
    the prompts given); pre_*: before it; bias: `neuron_bias`, the part of the
    pre-activation that does not depend on the input. is_and: fires for the full subject
    and at most `ratio` x as much for either part. bias_gates: the bias is negative and
    decides it: without the bias each part alone would fire, with it neither does.
    silenced_by_bias: the parts for which that holds on their own."""

    neuron: Neuron
    full: float
    first_only: float
    last_only: float
    pre_full: float
    pre_first_only: float
    pre_last_only: float
    bias: float
    is_and: bool
    bias_gates: bool
    silenced_by_bias: list[str] = field(default_factory=list)  # parts ("first", "last") that fire only without the bias

    @property
    def label(self) -> str:
        return self.neuron.label

    @property
    def and_score(self) -> float:
        return self.full - max(self.first_only, self.last_only)

    def to_dict(self) -> dict:
        return {"neuron": self.label, "layer": self.neuron.layer, "index": self.neuron.index,
                **{k: v for k, v in vars(self).items() if k != "neuron"}}


def and_detection(model, full: str, first_only: Union[str, Sequence[str]], last_only: Union[str, Sequence[str]],
                  neurons: Optional[Sequence[Neuron]] = None, pos: int = -1, ratio: float = 0.25,
                  k: int = 20) -> list[AndRow]:
    """Which neurons fire for the full subject but not for its parts alone, at `pos`.

    full: a prompt with the full subject ("Michael Jordan plays the sport of");
    first_only / last_only: prompts (or lists) sharing only the first / last part
    ("Michael Phelps ...", "Alexis Jordan ..."), with the same number of tokens.
    neurons: the ones to report, in that order; default: the k neurons with the
    largest AND score (full minus the larger partial) over the whole model.
    """
    groups = {"full": [full], "first": [first_only] if isinstance(first_only, str) else list(first_only),
              "last": [last_only] if isinstance(last_only, str) else list(last_only)}
    all_prompts = [p for g in groups.values() for p in g]
    prompt_tokens(model, all_prompts, "prompts of the AND test")  # same lengths, or a clear error
    candidates = check_neurons(model, neurons) if neurons is not None else [
        Neuron(l, n) for l in range(model.cfg.n_layers) for n in range(model.cfg.d_mlp)]
    post = neuron_activations(model, all_prompts, candidates, pos)
    pre = neuron_activations(model, all_prompts, candidates, pos, pre=True)
    i_first = slice(1, 1 + len(groups["first"]))
    i_last = slice(1 + len(groups["first"]), None)
    biases = _biases(model, candidates)
    rows = []
    for j, neuron in enumerate(candidates):
        f, a, b = float(post[0, j]), float(post[i_first, j].mean()), float(post[i_last, j].mean())
        pf, pa, pb = float(pre[0, j]), float(pre[i_first, j].mean()), float(pre[i_last, j].mean())
        bias = biases[j]
        is_and = f > 0 and max(a, b) <= ratio * f
        gates = bias < 0 and pf > 0 and pa <= 0 and pb <= 0 and pa - bias > 0 and pb - bias > 0
        silenced = [part for part, p in (("first", pa), ("last", pb)) if p <= 0 < p - bias]
        rows.append(AndRow(neuron, f, a, b, pf, pa, pb, bias, is_and, gates, silenced))
    if neurons is None:
        rows = sorted(rows, key=lambda r: -r.and_score)[:k]
    return rows


def _biases(model, neurons: list[Neuron]) -> list[float]:
    """`neuron_bias` of many neurons (one `layer_biases` per layer)."""
    per_layer = {layer: layer_biases(model, layer).tolist() for layer in {n.layer for n in neurons}}
    return [per_layer[n.layer][n.index] for n in neurons]


def related_subjects(subject: str, subjects: Sequence[str]) -> tuple[list[str], list[str]]:
    """For a two-word subject: the subjects sharing only its first word, and only its last word."""
    parts = subject.split()
    if len(parts) != 2:
        raise ValueError(f"the AND test needs a two-word subject, got {subject!r}")
    first, last = parts
    first_only = [s for s in subjects if s.split()[0] == first and s.split()[-1] != last]
    last_only = [s for s in subjects if s.split()[-1] == last and s.split()[0] != first]
    return first_only, last_only


# ============================================================ trigger examples
@dataclass
class Trigger:
    prompt: str
    pos: int
    token: str
    activation: float


def trigger_examples(model, neuron: Neuron, prompts: Sequence[str], k: int = 10,
                     batch_size: int = 512) -> list[Trigger]:
    """The k (prompt, position) pairs of `prompts` on which the neuron's key fires most."""
    (neuron,) = check_neurons(model, [neuron])
    name = hook_names.act_name("post", neuron.layer)
    prompts = list(prompts)
    if not prompts:
        raise ValueError("trigger_examples needs prompts to search")
    best: list[Trigger] = []
    with torch.no_grad():
        for i in range(0, len(prompts), batch_size):
            chunk = prompts[i: i + batch_size]
            tokens, mask = model._tokenize(chunk)
            _, cache = model.run_with_cache(tokens, attention_mask=mask, names_filter=name, return_type=None)
            act = cache[name][..., neuron.index]  # [batch, pos]
            if mask is not None:
                act = act.masked_fill(mask == 0, float("-inf"))
            top = act.flatten().topk(min(k, act.numel()))
            for v, flat in zip(top.values.tolist(), top.indices.tolist()):
                b, p = divmod(flat, act.shape[1])
                best.append(Trigger(chunk[b], p, token_text(model, tokens[b, p]), v))
            best = sorted(best, key=lambda t: -t.activation)[:k]
    return best


__all__ = ["check_neurons", "residual_sources", "neuron_bias", "layer_biases", "neuron_activations", "key_decomposition", "AndRow", "and_detection",
           "related_subjects", "Trigger", "trigger_examples"]
