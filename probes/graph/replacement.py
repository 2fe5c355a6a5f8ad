"""The frozen local replacement model of one prompt: the model made linear around one run, with
gradients that give an attribution graph's edges as exact direct effects.

    layers = check_replacement(model, load_transcoders("factworld"))   # or a CrossLayerTranscoder
    with frozen_parameters(model, *layers.torch_modules):
        run = replacement_forward(model, tokens, layers, batch=64)
    run.activations[l]     # [n_pos, n_features] the features of layer l (row 0)
    run.errors[l]          # [n_pos, d_model] MLP l's output minus its reconstruction

The MLPs are replaced by per-layer transcoders (a list, one per layer, `check_transcoders`) or
by a cross-layer transcoder (`probes.sae.clt.CrossLayerTranscoder`), whose layer-l features
write to MLP l and every later MLP; both are read through the same layered interface
(`probes.sae.clt.as_cross_layer`: per-layer transcoders are the CLT whose decoders reach only
their own layer). MLP l's reconstruction is sum_{l' <= l} f_l' W_dec[l' -> l] + b_dec[l] (plus
a per-layer transcoder's skip path), and its error is the real output minus that.

The forward pass runs `batch` copies of the prompt (one slot per target of a backward pass)
through the real model with these hooks, which change no value, only what the gradient sees:
  * `hook_embed`: replaced by a copy that is the autograd leaf (the token embeddings, [batch,
    pos, d_model]); position embeddings and every bias are constants (parameters get no grad);
  * every `attn.hook_pattern` and every norm's `hook_scale` (ln1, ln2, ln_final; LayerNorm and
    RMSNorm): detached, so attention patterns and norm denominators are frozen;
  * each layer's `hook_mlp_out` y: replaced by `skip + (y - skip).detach()`, with skip = x_in
    W_skip a per-layer transcoder's linear skip path on its input x_in (no skip, and always for
    a CLT: y detached, a leaf):
    the value is the MLP's own, the gradient passes only through the skip path. The tensor
    returned there is each layer's injection point: the gradient w.r.t. it is the gradient
    w.r.t. that MLP output.
Everything is then linear in the token embeddings and the MLP outputs: the target of a
backward pass (a direction at an encoder's input x_in or at ln_final's output) is an affine
function of them, and `torch.autograd.grad` of it gives its exact direct-effect coefficients.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Iterator, Sequence

import torch

from interp import names as hook_names
from models import Transformer
from probes.sae.clt.model import CrossLayerTranscoder, Layered, PerLayerTranscoders, as_cross_layer
from probes.sae.dictionary import SparseDictionary


# ============================================================ checking the transcoders
def _allowed_inputs(model: Transformer, layer: int) -> list[str]:
    """The hooks a transcoder of MLP `layer` may read: the MLP's normalised input, or the
    residual stream the MLP reads (resid_mid; resid_pre for parallel attention and MLP)."""
    cfg = model.cfg
    if cfg.norm_position == "post":
        return [f"blocks.{layer}.hook_resid_mid"]
    resid = "hook_resid_pre" if cfg.parallel_attn_mlp else "hook_resid_mid"
    return [f"blocks.{layer}.ln2.hook_normalized", f"blocks.{layer}.{resid}"]


def check_transcoders(model: Transformer, transcoders: Sequence[SparseDictionary]) -> list[SparseDictionary]:
    """The transcoders ordered by layer, after checking there is exactly one per layer of
    `model`, each a transcoder writing blocks.{l}.hook_mlp_out from an input of that block
    (see `_allowed_inputs`), of width d_model, on the model's device. A clear error otherwise."""
    if not isinstance(model, Transformer):
        raise TypeError(f"model must be a models.Transformer, got {type(model).__name__}")
    if model.cfg.attn_only:
        raise ValueError("the model is attention-only: it has no MLPs to replace with transcoders")
    if isinstance(transcoders, SparseDictionary) or not isinstance(transcoders, (list, tuple)):
        raise TypeError("transcoders must be a list of SparseDictionary transcoders, one per layer "
                        f"(e.g. probes.sae.load_transcoders(...)), got {type(transcoders).__name__}")
    n_layers, d = model.cfg.n_layers, model.cfg.d_model
    by_layer: dict[int, SparseDictionary] = {}
    for i, tc in enumerate(transcoders):
        if not isinstance(tc, SparseDictionary):
            raise TypeError(f"transcoders[{i}] is a {type(tc).__name__}, not a SparseDictionary")
        _, layer, tail = hook_names.split(tc.out_hook)
        if tc.cfg.kind != "transcoder" or layer is None or tail != "hook_mlp_out":
            raise ValueError(f"transcoders[{i}] is a {tc.cfg.kind} writing {tc.out_hook!r}: each must be a "
                             "transcoder writing blocks.{l}.hook_mlp_out")
        if not 0 <= layer < n_layers:
            raise ValueError(f"transcoders[{i}] writes {tc.out_hook!r}, but the model has layers 0..{n_layers - 1}")
        if layer in by_layer:
            raise ValueError(f"two transcoders for layer {layer} (transcoders[{i}] and an earlier one)")
        allowed = _allowed_inputs(model, layer)
        if tc.in_hook not in allowed:
            raise ValueError(f"transcoders[{i}] reads {tc.in_hook!r}; a transcoder of layer {layer} must read "
                             f"one of {allowed}")
        if tc.cfg.d_in != d or tc.cfg.d_out != d:
            raise ValueError(f"transcoders[{i}] maps {tc.cfg.d_in} -> {tc.cfg.d_out} dims; the model's "
                             f"d_model is {d}")
        if tc.W_enc.device != model.device:
            raise ValueError(f"transcoders[{i}] is on {tc.W_enc.device}, the model on {model.device}: move one")
        by_layer[layer] = tc
    missing = [l for l in range(n_layers) if l not in by_layer]
    if missing:
        raise ValueError(f"an attribution graph needs a transcoder for every layer (0..{n_layers - 1}); "
                         f"missing for layer(s) {missing}")
    return [by_layer[l] for l in range(n_layers)]


def check_clt(model: Transformer, clt: CrossLayerTranscoder) -> CrossLayerTranscoder:
    """`clt` after checking it has the model's number of layers and d_model, that layer l reads
    an input of block l (see `_allowed_inputs`) and writes blocks.{l}.hook_mlp_out, and that it
    is on the model's device. A clear error otherwise."""
    if not isinstance(model, Transformer):
        raise TypeError(f"model must be a models.Transformer, got {type(model).__name__}")
    if model.cfg.attn_only:
        raise ValueError("the model is attention-only: it has no MLPs to replace with a transcoder")
    c = clt.cfg
    if c.n_layers != model.cfg.n_layers or c.d_model != model.cfg.d_model:
        raise ValueError(f"the cross-layer transcoder has {c.n_layers} layers of width {c.d_model}; the model has "
                         f"{model.cfg.n_layers} of width {model.cfg.d_model}")
    for l in range(c.n_layers):
        if c.out_hooks[l] != hook_names.act_name("mlp_out", l):
            raise ValueError(f"the cross-layer transcoder's layer {l} writes {c.out_hooks[l]!r}, not "
                             f"{hook_names.act_name('mlp_out', l)!r}")
        allowed = _allowed_inputs(model, l)
        if c.in_hooks[l] not in allowed:
            raise ValueError(f"the cross-layer transcoder's layer {l} reads {c.in_hooks[l]!r}; it must read one of "
                             f"{allowed}")
    if clt.W_enc.device != model.device:
        raise ValueError(f"the cross-layer transcoder is on {clt.W_enc.device}, the model on {model.device}: move one")
    return clt


def check_replacement(model: Transformer, transcoders) -> Layered:
    """What replaces the MLPs, in the layered interface: a `CrossLayerTranscoder` (`check_clt`),
    or per-layer transcoders (a list, one per layer, `check_transcoders`) as `PerLayerTranscoders`."""
    if isinstance(transcoders, CrossLayerTranscoder):
        return check_clt(model, transcoders)
    if isinstance(transcoders, PerLayerTranscoders):
        transcoders = transcoders.transcoders
    if isinstance(transcoders, SparseDictionary) or not isinstance(transcoders, (list, tuple)):
        raise TypeError("transcoders must be a list of SparseDictionary transcoders, one per layer (e.g. "
                        "probes.sae.load_transcoders(...)), or a CrossLayerTranscoder (probes.sae.load_clt(...)); got "
                        f"{type(transcoders).__name__}")
    return PerLayerTranscoders(check_transcoders(model, transcoders))


# ============================================================ no weight gradients
@contextlib.contextmanager
def frozen_parameters(*modules: torch.nn.Module) -> Iterator[None]:
    """Every parameter of `modules` with requires_grad False for the body (gradients are taken
    w.r.t. activations only); each parameter's own flag is restored on exit, also on errors."""
    params = {id(p): p for m in modules for p in m.parameters()}
    flags = {k: p.requires_grad for k, p in params.items()}
    try:
        for p in params.values():
            p.requires_grad_(False)
        yield
    finally:
        for k, p in params.items():
            p.requires_grad_(flags[k])


# ============================================================ the forward pass
@dataclass
class ReplacementRun:
    """One forward pass of the local replacement model on `batch` copies of the prompt.

    Differentiable (the batch axis first, [batch, pos, d_model]): `embed` (the autograd leaf),
    `x_in[l]` (encoder l's input), `mlp_out[l]` (the injection point of MLP l), `final` (the
    final residual stream after ln_final, the logit targets' input).
    Detached, of copy 0: `logits` [pos, d_vocab]; per layer `activations[l]` and `pre_acts[l]`
    [pos, n_features] (in the model's dtype), `errors[l]` [pos, d_model] = mlp_out - its
    reconstruction (from every layer's features that write to it; skip included) and
    `skips[l]` [pos, d_model] (zeros without a skip).
    Nothing is zeroed here (the BOS rule is applied by the graph builder)."""

    tokens: torch.Tensor
    embed: torch.Tensor
    x_in: list[torch.Tensor]
    mlp_out: list[torch.Tensor]
    final: torch.Tensor
    logits: torch.Tensor
    activations: list[torch.Tensor]
    pre_acts: list[torch.Tensor]
    errors: list[torch.Tensor]
    skips: list[torch.Tensor]


def frozen_hook_names(model: Transformer) -> list[str]:
    """The hooks whose activations the replacement model detaches: attention patterns and
    every norm scale."""
    return [n for n in model.hook_names if n.endswith("attn.hook_pattern") or n.endswith("hook_scale")]


def replacement_forward(model: Transformer, tokens: torch.Tensor, transcoders, batch: int = 1) -> ReplacementRun:
    """The forward pass described in the module docstring. tokens [pos]; `transcoders` as
    `check_transcoders` or `check_replacement` returns them (a list of per-layer transcoders in
    layer order, or the layered interface of either kind). Call it inside
    `frozen_parameters(model, *layers.torch_modules)` (and with gradients enabled); the hooks it
    adds are gone when it returns."""
    if tokens.dim() != 1:
        raise ValueError(f"tokens must be [pos], got shape {tuple(tokens.shape)}")
    layers = as_cross_layer(transcoders)
    dtype = model.W_E.dtype
    store: dict[str, torch.Tensor] = {}
    x_in: dict[int, torch.Tensor] = {}
    mlp_out: dict[int, torch.Tensor] = {}
    acts, pres, errors, skips = {}, {}, {}, {}
    x0s, f0s = {}, {}  # copy 0's inputs and features, in the transcoders' dtype

    def embed_hook(x: torch.Tensor, hook) -> torch.Tensor:
        store["embed"] = x.detach().clone().requires_grad_(True)
        return store["embed"]

    def detach_hook(x: torch.Tensor, hook) -> torch.Tensor:
        return x.detach()

    def read_hook(layer: int):
        def read(x: torch.Tensor, hook) -> None:
            x_in[layer] = x
            with torch.no_grad():
                x0s[layer] = x[0].detach()
                pre = layers.pre_acts(x0s[layer], layer)
                f0s[layer] = layers.activate(pre, layer)
                pres[layer], acts[layer] = pre.to(dtype), f0s[layer].to(dtype)
        return read

    def write_hook(layer: int):
        def write(y: torch.Tensor, hook) -> torch.Tensor:
            skip = layers.skip(layer, x_in[layer])
            if skip is not None:
                skip = skip.to(dtype)
                out = skip + (y - skip).detach()
            else:
                skip = torch.zeros_like(y)
                out = y.detach().clone().requires_grad_(True)
            with torch.no_grad():
                errors[layer] = y[0].detach() - layers.output(layer, f0s, x0s).to(dtype)
                skips[layer] = skip[0].detach()
            mlp_out[layer] = out
            return out
        return write

    fwd = [("hook_embed", embed_hook)] + [(n, detach_hook) for n in frozen_hook_names(model)]
    for layer, (in_hook, out_hook) in enumerate(zip(layers.in_hooks, layers.out_hooks)):
        fwd += [(in_hook, read_hook(layer)), (out_hook, write_hook(layer))]
    batch_tokens = tokens.to(model.device)[None].expand(batch, -1)
    with model.hooks(fwd_hooks=fwd):
        resid = model(batch_tokens, stop_at_layer=model.cfg.n_layers)
        final = model.ln_final(resid) if model.cfg.final_norm else resid
        logits = model.unembed(final)[0].detach()
    n = layers.n_layers
    return ReplacementRun(
        tokens=tokens, embed=store["embed"], x_in=[x_in[l] for l in range(n)], mlp_out=[mlp_out[l] for l in range(n)],
        final=final, logits=logits, activations=[acts[l] for l in range(n)], pre_acts=[pres[l] for l in range(n)],
        errors=[errors[l] for l in range(n)], skips=[skips[l] for l in range(n)])


__all__ = ["ReplacementRun", "check_clt", "check_replacement",
           "check_transcoders", "frozen_parameters", "frozen_hook_names", "replacement_forward"]
