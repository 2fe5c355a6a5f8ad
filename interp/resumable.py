"""What the patching engine needs from a model: the `Resumable` protocol.

A model takes part with one method, `model.engine_adapter() -> Resumable`. The engine
(`interp.engine`) then runs patched copies of a base run from the cached base run, each from
its first patched block and (where the model's positions line up) its first patched position,
and unembeds only the positions its metric reads. A model without the method still works: every
row runs from the model's inputs. A new architecture implements the protocol next to its model
(`models/resuming.py` holds ours) and never edits the engine.

The engine knows no model class and reads no config: what it needs to know comes from here.
"""

from __future__ import annotations

from typing import Any, Callable, Collection, Optional, Protocol, runtime_checkable

import torch

Entry = Optional[Callable[[torch.Tensor], torch.Tensor]]


class Resumption(Protocol):
    def __call__(self, layer: int, start: int, n: int, entry: Entry = None) -> torch.Tensor:
        """The residual stream after the last block at positions start.. [n * rows, pos - start, d_model]
        of n copies of the stored rows (copy c: rows c * rows ... (c + 1) * rows - 1), recomputed with
        the hooks attached from block `layer` on (-1: from the inputs; n_layers: no block), `entry`
        applied first to the residual stream entering block `layer`."""


@runtime_checkable
class Resumable(Protocol):
    """A model's side of the engine (see the module docstring)."""

    n_layers: int  # blocks of the stack that resumes
    resumes_positions: bool  # whether a row may skip the positions before its first patched one
    device: torch.device
    dtype: torch.dtype
    # The cost model's sizes: multiply-adds per token of one block's weights, per token and key of
    # attention (for q.k and p.v each), of the unembedding; floats per token one block keeps.
    block_weights: int
    attention_width: int
    attention_heads: int
    unembed_weights: int
    activation_width: int
    d_vocab: int

    def inputs(self, base: Any) -> tuple:
        """The base run's inputs as a tuple of tensors [batch, ...] on the model's device (checked)."""

    def n_pos(self, inputs: tuple) -> int:
        """Positions of the sequence the blocks run over (and the logits have)."""

    def patch_layer(self, name: str) -> int:
        """The first block a patch at hook `name` can change (-1: before the blocks; n_layers: the final norm)."""

    def entry_hook(self, layer: int) -> Optional[str]:
        """The hook whose patches apply to the residual stream a resumption at `layer` starts from."""

    def shared_prefix(self, base: tuple, source: tuple) -> int:
        """How many leading positions a source run (inputs [B or 1, ...]) shares with the base run."""

    def run(self, inputs: tuple, resume_rows: int = 0, resume_layers: Collection[int] = ()
            ) -> tuple[torch.Tensor, Optional[Resumption]]:
        """The residual stream after the last block [batch, pos, d_model] (hooks fire); with resume_rows,
        also a `Resumption` of the first resume_rows rows, able to start at any of resume_layers."""

    def final_norm(self, resid: torch.Tensor) -> torch.Tensor:
        """The final norm (hooks fire) of [batch, pos, d_model]; the identity for a model without one."""

    def unembed(self, x: torch.Tensor) -> torch.Tensor:
        """[..., d_model] -> logits [..., d_vocab]."""


def adapter(model: Any) -> Optional[Resumable]:
    """The model's `Resumable` (its `engine_adapter()`), or None for a model that has none."""
    make = getattr(model, "engine_adapter", None)
    return make() if callable(make) else None


__all__ = ["Resumable", "Resumption", "adapter"]
