"""Residual-stream vectors -> logits: the one implementation (hook base: torch only).

A vector x written to the residual stream at one position reaches the logits through the final
norm and the unembedding. Once the norm's scale is frozen (taken from one run, or 1 for a
direction read per unit of activation) that map is linear:

    frozen norm(x) = (x - mean(x)) / scale * w      (no centring for RMSNorm; identity without a final norm)
    logits(x)      = frozen norm(x) @ W_U           (no b_U and no norm bias: what x adds)

so the parts of a residual stream, each read this way, add up to the logits minus
`ln_final.b @ W_U + b_U`. Direct logit attribution, the cache's `apply_ln_to_stack` /
`logit_attrs`, neuron and feature values, and the recall chain all read through here:

    frozen_norm(x, scale, weight, centre)      the norm's linear part as a function
    FrozenNorm(scale, weight, centre)          the same as an object (`.matrix(d)`: as a matrix)
    norm_of(model, "blocks.2.ln1", scale)      a model's norm by its parameter prefix
    final_norm(model, scale=1.0)               ln_final (the identity if the model has none)
    final_scale(model, cache, pos)             ln_final's scale at `pos` in a cached run (1 without one)
    model_logits(model, resid)                 the model's own (not frozen) final norm and unembedding
    Readout(model, scale=1.0)                  .logits(x) [..., d_vocab], .logit(x, direction) [...]
    unembed_directions(model, ids, minus=None) W_U[:, ids] (- W_U[:, minus]) as rows [..., d_model]

It reads the model only by its configuration and parameter names (`ln_final.w`, `W_U`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional, Union

import torch

Scale = Union[torch.Tensor, float]


def frozen_norm(x: torch.Tensor, scale: Scale, weight: Optional[torch.Tensor], centre: bool) -> torch.Tensor:
    """The linear part of a norm as it acted in one run: centre (LayerNorm only), divide by
    the run's scale, multiply by the weight. x [..., d_model]; scale broadcastable to x.

    Applied to each of a set of residual components, the results plus the norm's bias sum
    to the norm's output (the norm is linear once its scale is fixed).
    """
    if centre:
        x = x - x.mean(-1, keepdim=True)
    x = x / scale
    return x * weight if weight is not None else x


@dataclass(frozen=True)
class FrozenNorm:
    """A norm with its scale frozen: `norm(x)` is `frozen_norm(x, scale, weight, centre)`;
    `identity` (no norm there) leaves x as it is."""

    scale: Scale = 1.0
    weight: Optional[torch.Tensor] = None
    centre: bool = False
    identity: bool = False

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return x if self.identity else frozen_norm(x, self.scale, self.weight, self.centre)

    def matrix(self, d_model: int, dtype: torch.dtype, device: Any = None) -> torch.Tensor:
        """[d_model, d_model]: the frozen norm as a matrix acting on row vectors (x @ M = norm(x))."""
        return self(torch.eye(d_model, dtype=dtype, device=device))


def norm_of(model: Any, norm: str, scale: Scale = 1.0, *, weight: bool = True) -> FrozenNorm:
    """The norm with parameter prefix `norm` ("ln_final", "blocks.2.ln1") frozen at `scale`
    (weight=False: without its weight, TransformerLens' folded-weights convention)."""
    w = model.get_parameter(f"{norm}.w").detach() if weight else None
    return FrozenNorm(scale, w, model.cfg.norm == "layernorm")


def final_norm(model: Any, scale: Scale = 1.0) -> FrozenNorm:
    """ln_final frozen at `scale` (1: a direction per unit, as the unembedding reads it);
    the identity for a model without a final norm."""
    return norm_of(model, "ln_final", scale) if model.cfg.final_norm else FrozenNorm(identity=True)


def final_scale(model: Any, cache: Any, pos: Any, row: Optional[int] = None) -> Scale:
    """ln_final's scale at position(s) `pos` of a cached run ([batch, 1] for one position; [1]
    for one `row` of the batch), or 1.0 for a model without a final norm."""
    if not model.cfg.final_norm:
        return 1.0
    scale = cache["ln_final.hook_scale"]
    return scale[:, pos] if row is None else scale[row, pos]


def model_logits(model: Any, resid: torch.Tensor) -> torch.Tensor:
    """The final residual [..., d_model] -> logits [..., d_vocab] as the model computes them: its
    own final norm (each vector normalised by its own statistics, bias included) and the full
    unembedding (b_U included). The logit lens reads every layer's residual this way."""
    return model.unembed(model.ln_final(resid) if model.cfg.final_norm else resid)


def unembed_directions(model: Any, ids: torch.Tensor, minus: Optional[torch.Tensor] = None) -> torch.Tensor:
    """The unembedding columns of token ids [...] as rows [..., d_model] (minus those of `minus`):
    the residual direction whose read-out is logit[ids] (- logit[minus])."""
    W_U = model.W_U.detach()
    direction = W_U[:, ids.to(W_U.device)].movedim(0, -1)
    if minus is not None:
        direction = direction - unembed_directions(model, minus)
    return direction


class Readout:
    """Residual vectors -> logits through the final norm frozen at `scale` and the unembedding.

    logits(x): x [..., d_model] -> [..., d_vocab]; logit(x, direction): x [..., d_model] and
    an unembedding direction (`unembed_directions`) broadcastable to it -> [...], one token's
    logit (or a difference of two).
    """

    def __init__(self, model: Any, scale: Scale = 1.0, norm: Optional[FrozenNorm] = None) -> None:
        self.norm = final_norm(model, scale) if norm is None else norm
        self.W_U = model.W_U.detach()

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x) @ self.W_U

    def logit(self, x: torch.Tensor, direction: torch.Tensor) -> torch.Tensor:
        return (self.norm(x) * direction).sum(-1)


__all__ = ["frozen_norm", "FrozenNorm", "norm_of", "final_norm", "final_scale", "model_logits", "unembed_directions",
           "Readout"]
