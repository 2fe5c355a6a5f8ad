"""TransformerLens' weight processing, on request: models whose formulas assume folded weights.

    from models.processing import process_weights
    folded = process_weights(model, fold_value_biases=True)   # a processed copy; `model` is unchanged

Our default stays unfolded and exact; these give what TransformerLens' `process_weights`
(HookedTransformer.from_pretrained's defaults, the bridge's compatibility mode) gives, for
formulas written for such models (the exploratory demo's direct path W_E @ W_U, OV circuits
without the norms' weights):

- `fold_layer_norm`: each pre-norm's weight w and bias b move into the weights that read
  it: W <- w[:, None] * W, b_reader <- b_reader + b @ W (ln1 -> W_Q, W_K, W_V; ln2 -> W_in,
  W_gate; ln_final -> W_U, b_U), then the norm's w = 1 and b = 0. With LayerNorm, those
  weights are also centred over d_model (the norm's output has zero mean, so the rows'
  mean never mattered). Logits unchanged.
- `center_writing_weights`: W_E, W_pos, W_O, b_O, W_out, b_out minus their mean over
  d_model: every reader of the residual is a LayerNorm, which removes that mean anyway.
  Logits unchanged; the residual stream itself changes (by its mean over d_model).
- `center_unembed`: W_U and b_U minus their mean over the vocabulary. Logits change by
  one constant per position; log-probabilities and logit differences are unchanged.
- `fold_value_biases`: b_V moves into b_O (b_O <- b_O + sum_h b_V[h] W_O[h]), exact
  because every attention pattern sums to 1. Logits unchanged, but each head's result
  (z_h W_O[h]) then lacks b_V[h] W_O[h]: per-head attributions change. TransformerLens
  does this by default; here `process_weights` makes you say so.

Each function checks the model first and raises before changing anything. They work in
place and return the model; `process_weights` works on a copy.
"""

from __future__ import annotations

import copy

import torch
from einops import einsum

from interp.checks import require_pre_norm
from models.components import Unembed
from models.stacked import kv_repeat
from models.transformer import Transformer


def _untie(model: Transformer) -> None:
    """Give the unembedding its own W_U (folding ln_final or centring changes it, not W_E).
    Changes this model's own config (tie_embeddings=False), which no other model shares."""
    if not model.cfg.tie_embeddings:
        return
    W_U = model.unembed.W_U.detach().clone()
    b_U = model.unembed.b_U.detach().clone()
    model.cfg.tie_embeddings = False
    model.unembed = Unembed(model.cfg).to(device=W_U.device, dtype=W_U.dtype)
    with torch.no_grad():
        model.unembed.W_U.copy_(W_U)
        model.unembed.b_U.copy_(b_U)


@torch.no_grad()
def _fold_norm_into(norm: torch.nn.Module, readers: list[tuple[torch.Tensor, torch.Tensor | None]],
                    d_axis: int, centre: bool) -> None:
    """Fold norm.w (and norm.b) into each (W, b) reading it; W's d_model axis is d_axis."""
    w = norm.w.detach().clone()
    bias = norm.b.detach().clone() if hasattr(norm, "b") else None
    for W, b in readers:
        shape = [1] * W.dim()
        shape[d_axis] = -1
        if bias is not None and b is not None:
            b.add_(torch.tensordot(bias, W.detach(), dims=([0], [d_axis])))
        W.mul_(w.view(shape))
        if centre:
            W.sub_(W.mean(d_axis, keepdim=True))
    norm.w.fill_(1.0)
    if bias is not None:
        norm.b.zero_()


def fold_layer_norm(model: Transformer, center_weights: bool = True) -> Transformer:
    """Fold every norm's weight and bias into the weights that read it (see the module docstring).
    center_weights: also centre those weights over d_model (LayerNorm only; ignored for RMSNorm)."""
    require_pre_norm(model.cfg, "fold_layer_norm")
    cfg = model.cfg
    layernorm = cfg.norm == "layernorm"
    if cfg.gated_mlp and layernorm and any(bool(b.ln2.b.abs().max() > 0) for b in model.blocks):
        raise ValueError("cannot fold a LayerNorm bias into W_gate, which has no bias; fold_layer_norm needs ln2.b = 0")
    centre = center_weights and layernorm
    for block in model.blocks:
        a = block.attn
        _fold_norm_into(block.ln1, [(a.W_Q, a.b_Q), (a.W_K, a.b_K), (a.W_V, a.b_V)], d_axis=1, centre=centre)
        if not cfg.attn_only:
            m = block.mlp
            readers = [(m.W_in, m.b_in)] + ([(m.W_gate, None)] if cfg.gated_mlp else [])
            _fold_norm_into(block.ln2, readers, d_axis=0, centre=centre)
    if cfg.final_norm:
        _untie(model)
        _fold_norm_into(model.ln_final, [(model.unembed.W_U, model.unembed.b_U)], d_axis=0, centre=centre)
    return model


@torch.no_grad()
def center_writing_weights(model: Transformer) -> Transformer:
    """Subtract the mean over d_model from everything that writes to the residual stream."""
    require_pre_norm(model.cfg, "center_writing_weights")
    if model.cfg.norm != "layernorm":
        raise ValueError("center_writing_weights needs LayerNorm: RMSNorm does not remove the mean, so it would change the model")
    if not model.cfg.final_norm:
        raise ValueError("center_writing_weights needs a final LayerNorm (the unembedding would see the mean)")
    _untie(model)  # W_E changes; the unembedding must not
    writers = [model.embed.W_E]
    if hasattr(model, "pos_embed") and isinstance(getattr(model.pos_embed, "W_pos", None), torch.nn.Parameter):
        writers.append(model.pos_embed.W_pos)
    for block in model.blocks:
        writers += [block.attn.W_O, block.attn.b_O]
        if not model.cfg.attn_only:
            writers += [block.mlp.W_out, block.mlp.b_out]
    for W in writers:
        W.sub_(W.mean(-1, keepdim=True))
    return model


@torch.no_grad()
def center_unembed(model: Transformer) -> Transformer:
    """Subtract the mean over the vocabulary from W_U and b_U (logits shift by a constant per position)."""
    _untie(model)
    model.unembed.W_U.sub_(model.unembed.W_U.mean(-1, keepdim=True))
    model.unembed.b_U.sub_(model.unembed.b_U.mean())
    return model


@torch.no_grad()
def fold_value_biases(model: Transformer) -> Transformer:
    """Move each head's value bias into the output bias: b_O += sum_h b_V[h] W_O[h]; b_V = 0."""
    for block in model.blocks:
        a = block.attn
        b_V = kv_repeat(a.b_V, model.cfg.n_heads)  # [n_heads, d_head]
        a.b_O.add_(einsum(b_V, a.W_O, "h k, h k d -> d"))
        a.b_V.zero_()
    return model


# TransformerLens' order: fold the norms, centre the writers, centre the unembedding, fold b_V.
_STEPS = {"fold_ln": fold_layer_norm, "center_writing_weights": center_writing_weights,
          "center_unembed": center_unembed, "fold_value_biases": fold_value_biases}


def process_weights(
    model: Transformer,
    *,
    fold_value_biases: bool,
    fold_ln: bool = True,
    center_writing_weights: bool = True,
    center_unembed: bool = True,
) -> Transformer:
    """A processed copy of `model`, as TransformerLens processes weights (the same steps in the
    same order). fold_value_biases has no default: True matches TransformerLens but moves b_V
    out of each head's result (see the module docstring)."""
    wanted = {"fold_ln": fold_ln, "center_writing_weights": center_writing_weights,
              "center_unembed": center_unembed, "fold_value_biases": fold_value_biases}
    out = copy.deepcopy(model)
    for name, step in _STEPS.items():
        if wanted[name]:
            step(out)
    return out

__all__ = ["fold_layer_norm", "center_writing_weights", "center_unembed", "fold_value_biases", "process_weights"]
