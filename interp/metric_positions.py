"""What a metric reads, so that the engine unembeds only that.

The metrics of `interp.metrics` say which position they read (`pos`) and score many runs at
once (`at`). A metric written as a plain function of logits (TransformerLens style,
`lambda logits: (logits[:, -1, a] - logits[:, -1, b]).mean()`) says nothing, so its positions are
found once, on the base run: the positions where its gradient with respect to the logits is
non-zero (or, failing that, the last one) are kept, every other position is set to NaN, and
the metric must give exactly its value on the full logits. Then every patched run unembeds only
those positions and the metric reads them from a tensor that is NaN elsewhere (a metric that
reads other positions of a patched run gives NaN, never a silently wrong number). Otherwise
every position is unembedded.
"""

from __future__ import annotations

from typing import Any, Callable, Optional

import torch

from interp.checks import resolve_pos
from interp.metrics import is_positional, scalar


def _same(a: Any, b: Any) -> bool:
    a, b = torch.as_tensor(a).detach(), torch.as_tensor(b).detach()
    return a.shape == b.shape and bool(torch.isfinite(a).all()) and torch.equal(a, b)


def _gradient_positions(metric: Callable, logits: torch.Tensor) -> Optional[list[int]]:
    """Positions where d metric / d logits is non-zero, or None if the metric has no gradient."""
    try:
        with torch.enable_grad():
            x = logits.detach().requires_grad_(True)
            out = metric(x)
            if not isinstance(out, torch.Tensor) or not out.requires_grad or out.numel() != 1:
                return None
            (grad,) = torch.autograd.grad(out, x, allow_unused=True)
    except Exception:  # noqa: BLE001  a metric that cannot be differentiated: try the last position
        return None
    if grad is None:
        return None
    return (grad != 0).any(-1).any(0).nonzero().flatten().tolist()


class Reader:
    """The positions a metric reads and how to score groups of B rows with it.

    pos: the one position of a positional metric; reads: the positions a plain function was
    found to read (None: every position, or not probed yet)."""

    def __init__(self, metric: Callable, n_pos: int, B: int) -> None:
        self.metric, self.n_pos, self.B = metric, n_pos, B
        self.positional = is_positional(metric)
        self.pos = resolve_pos(metric.pos, n_pos, "the metric's position") if self.positional else None
        self.reads: Optional[list[int]] = None
        self.probed = self.positional
        self._nan: Optional[torch.Tensor] = None
        self._base_at: Optional[torch.Tensor] = None

    @property
    def full(self) -> bool:
        """Whether every position's logits are needed."""
        return not self.positional and self.reads is None

    @property
    def last_read(self) -> int:
        """The last position whose logits the metric reads (a patch after it changes nothing)."""
        if self.positional:
            return self.pos
        return self.n_pos - 1 if self.reads is None else max(self.reads)

    def sizes(self) -> tuple[Optional[int], Optional[int]]:
        """(positions unembedded per row, positions of logits kept per row until scored), None for all.
        Before probing, a plain function is taken to read one position, and to keep all (memory)."""
        if self.positional:
            return 1, 0
        if self.reads is not None:
            return len(self.reads), len(self.reads)
        return (1, None) if not self.probed else (None, None)

    # ------------------------------------------------------------ finding a plain function's positions
    def probe(self, base_logits: torch.Tensor) -> None:
        """Find the positions a plain function reads, from the base run's logits [B, pos, d_vocab]."""
        if self.probed or base_logits.dim() != 3:
            return
        self.probed = True
        value = self.metric(base_logits)
        tried = []
        for reads in (_gradient_positions(self.metric, base_logits), [self.n_pos - 1]):
            if not reads or reads in tried or len(reads) == self.n_pos:
                continue
            tried.append(reads)
            nan = torch.full_like(base_logits, float("nan"))
            poisoned = nan.clone()
            poisoned[:, reads] = base_logits[:, reads]
            try:
                same = _same(self.metric(poisoned), value)
            except Exception:  # noqa: BLE001  the metric refuses NaN elsewhere: read every position
                same = False
            if same:
                self.reads, self._nan, self._base_at = reads, nan.detach(), base_logits[:, reads].detach()
                return

    # ------------------------------------------------------------ reading and scoring
    def logits(self, unembed: Callable, normed: torch.Tensor, start: int, n: int,
               base_logits: Optional[torch.Tensor] = None) -> torch.Tensor:
        """What the metric reads of n copies of B rows whose residual stream covers positions start..
        ([n*B, pos - start, d_model]), through `unembed` (the final norm and unembedding, or what
        is left of them): [n*B, d_vocab] at a positional metric's
        position, [n*B, len(reads), d_vocab] at a plain function's, else [n*B, pos, d_vocab]
        (positions before `start` from base_logits [B, pos, d_vocab])."""
        if self.positional:
            return unembed(normed[:, self.pos - start])
        if self.reads is None:
            out = unembed(normed)
            if start:
                out = torch.cat([base_logits[:, :start].repeat(n, 1, 1), out], dim=1)
            return out
        new = [i for i, p in enumerate(self.reads) if p >= start]
        out = unembed(normed[:, [self.reads[i] - start for i in new]])
        if len(new) == len(self.reads):
            return out
        full = self._base_at.repeat(n, 1, 1).to(out.dtype)
        full[:, new] = out
        return full

    def score(self, logits: torch.Tensor, n: int) -> torch.Tensor:
        """The metric of each of n groups of B rows (logits as `logits` returns them) -> [n]."""
        if self.positional:
            return self.metric.at(logits.reshape(n, self.B, -1))
        groups = logits.reshape(n, self.B, *logits.shape[1:])
        if self.reads is None:
            return torch.stack([torch.as_tensor(self.metric(g)) for g in groups])
        values = []
        for g in groups:
            buf = self._nan.clone() if g.requires_grad else self._nan
            buf[:, self.reads] = g
            v = torch.as_tensor(self.metric(buf))
            values.append(v if v.requires_grad else v.detach().clone())
        return torch.stack(values)

    def run_score(self, logits: torch.Tensor) -> Any:
        """The metric of one unpatched run (full logits, or at a positional metric's position;
        B rows, or 1 row broadcast to B)."""
        if logits.shape[0] != self.B:
            logits = logits.expand(self.B, *logits.shape[1:])
        value = self.metric.at(logits[None])[0] if self.positional else torch.as_tensor(self.metric(logits))
        return value if value.requires_grad else scalar(value)


__all__ = ["Reader"]
