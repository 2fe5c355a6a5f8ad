"""How much memory an attribution graph takes, and the largest graph that fits a bound.

    graph = attribution_graph(model, long_prompt, transcoders, max_memory_mb=2000)
    graph.settings["memory_plan"]     # batch, n_rows, peak_bytes, limited, ...

`attribution_graph(..., max_memory_mb=M)` first runs the prompt forward with one and with two
copies and counts the bytes autograd saves for the backward pass (`saved_bytes`: every tensor
packed by `torch.autograd.graph.saved_tensors_hooks`, each storage once); the difference is
what one copy saves (the weights, saved once whatever the batch, cancel). With that, what the build
allocates beyond the model's and transcoders' own weights is bounded by

    peak = max(batch * per_copy + rows,  rows + adjacency)
    per_copy  = 2 * saved (the forward's saved activations, and the backward's gradients of the
                same sizes) + twice the gradients read at every MLP output and the embeddings
                (2 (n_layers + 1) n_pos d_model: read, then stacked) + twice a row (2 n_cols)
    rows      = (n_targets + n_rows) * n_cols       the computed adjacency rows (n_cols = the
                active features + errors + tokens), twice when the features are capped (the
                greedy ranking keeps a normalised copy)
    adjacency = n_nodes ** 2                        the final matrix, n_nodes = n_rows + errors +
                                                    tokens + targets
in elements of the model's dtype, plus a fixed part (the decoder rows held at once: under a
bound they are gathered one (layer, position) at a time; the errors and embeddings; and `run_bytes`: what the run keeps of its first copy, the features'
activations and pre-activations at every position, measured on the probe run), and 10% plus 0.25
MB on top for what the count leaves out (small temporaries: on the fact world about 0.2 MB). The
plan keeps every active feature and the asked batch size when they fit. Otherwise it keeps every
feature with fewer copies per backward pass, down to one; if even one copy does not leave room
for every feature, the copies get at most half of the bound (at least one copy), the feature
nodes as many as then fit (chosen by influence, as `max_feature_nodes` does), and the batch
grows back into what the rows leave; if even no feature node with one copy fits, it says how
much is needed. `tests/test_graph_memory.py` measures the real peak with torch's profiler and
checks it stays under the bound.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Iterator, Optional

import torch

MB = 2 ** 20
SLACK = MB // 4  # what a run holds beyond the counted tensors (masks, index tensors, small copies)


@dataclass(frozen=True)
class MemoryPlan:
    """batch (copies per backward pass), n_rows (feature nodes), peak_bytes (the bound's estimate
    of what the build allocates), per_copy_bytes, limited (True when the bound lowered n_rows
    below what was asked), and what the estimate was made from: n_active, n_targets,
    saved_per_copy (the bytes one copy saves for backward)."""

    batch: int
    n_rows: int
    peak_bytes: int
    per_copy_bytes: int
    limited: bool
    n_active: int
    n_targets: int
    saved_per_copy: int


@contextlib.contextmanager
def saved_bytes() -> Iterator[list[int]]:
    """Counts the bytes of every tensor autograd saves for backward inside the body (each storage
    once); the total is in the yielded list's single element when the body ends."""
    seen: set[tuple[int, int]] = set()
    total = [0]

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        key = (storage.data_ptr(), storage.nbytes())
        if key not in seen:
            seen.add(key)
            total[0] += storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        yield total


def measured_peak(fn):
    """(fn(), the largest number of bytes allocated on the CPU and not yet freed at any moment
    of fn): every allocation and free torch's profiler records, in time order. How the tests
    and benchmarks.graph_memory check a bound against what a build really takes."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        out = fn()
    live = peak = 0
    for event in sorted(prof.events(), key=lambda e: e.time_range.start):
        live += event.self_cpu_memory_usage
        peak = max(peak, live)
    return out, peak


def per_copy_bytes(*, n_active: int, n_layers: int, n_pos: int, d_model: int, saved_per_copy: int,
                   itemsize: int) -> int:
    """What one more copy of the prompt in a backward pass costs (module docstring), in bytes."""
    n_cols = n_active + (n_layers + 1) * n_pos
    return 2 * saved_per_copy + 2 * itemsize * ((n_layers + 1) * n_pos * d_model + n_cols)


def estimate_peak(*, batch: int, n_rows: int, n_active: int, n_targets: int, n_layers: int, n_pos: int,
                  d_model: int, saved_per_copy: int, itemsize: int, decoder_rows: Optional[int] = None,
                  run_bytes: int = 0) -> int:
    """The module docstring's bound, in bytes. decoder_rows: the most decoder rows held at once
    (default n_active, one each; under a bound `attribution_graph` gathers them one (layer,
    position) at a time, and a cross-layer transcoder's feature has one per layer it writes)."""
    decoder_rows = n_active if decoder_rows is None else decoder_rows
    n_cols = n_active + (n_layers + 1) * n_pos
    per_copy = per_copy_bytes(n_active=n_active, n_layers=n_layers, n_pos=n_pos, d_model=d_model,
                              saved_per_copy=saved_per_copy, itemsize=itemsize)
    fixed = run_bytes + itemsize * (decoder_rows * d_model + n_active * 16 + 4 * (n_layers + 1) * n_pos * d_model)
    copies = 2 if n_rows < n_active else 1
    rows = itemsize * (n_targets + n_rows) * n_cols
    n_nodes = n_rows + (n_layers + 1) * n_pos + n_targets
    return int(1.1 * (fixed + max(batch * per_copy + copies * rows, rows + itemsize * n_nodes ** 2)) + SLACK)


def plan_memory(max_memory_mb: float, *, batch_size: int, n_rows: int, n_active: int, n_targets: int,
                n_layers: int, n_pos: int, d_model: int, saved_per_copy: int, itemsize: int,
                decoder_rows: Optional[int] = None, run_bytes: int = 0) -> MemoryPlan:
    """The largest graph under `max_memory_mb` (module docstring): `n_rows` feature nodes asked
    (n_active, or the max_feature_nodes cap), at most `batch_size` copies per backward pass."""
    budget = max_memory_mb * MB
    per_copy = per_copy_bytes(n_active=n_active, n_layers=n_layers, n_pos=n_pos, d_model=d_model,
                              saved_per_copy=saved_per_copy, itemsize=itemsize)

    def peak(b: int, r: int) -> int:
        return estimate_peak(batch=b, n_rows=r, n_active=n_active, n_targets=n_targets, n_layers=n_layers,
                             n_pos=n_pos, d_model=d_model, saved_per_copy=saved_per_copy, itemsize=itemsize,
                             decoder_rows=decoder_rows, run_bytes=run_bytes)

    def largest(low: int, high: int, fits) -> int:
        """The largest value in [low, high] that fits (fits is monotone: true up to some value)."""
        while low < high:
            mid = (low + high + 1) // 2
            low, high = (mid, high) if fits(mid) else (low, mid - 1)
        return low

    if peak(1, 0) > budget:
        raise ValueError(f"max_memory_mb={max_memory_mb:g} is too small for this prompt: even a graph without "
                         f"feature nodes, one copy per backward pass, needs about {peak(1, 0) / MB:.1f} MB")
    rows, batch = n_rows, batch_size
    if peak(batch, rows) > budget and peak(1, rows) <= budget:  # every feature kept, fewer copies
        batch = largest(1, batch_size, lambda b: peak(b, rows) <= budget)
    elif peak(batch, rows) > budget:
        # The copies get at most half of the bound while the rows need the rest; the rows fill what is left.
        batch = max(1, min(batch_size, int(budget / 2 // per_copy)))
        rows = largest(0, n_rows, lambda r: peak(batch, r) <= budget)
        if rows == 0 and peak(batch, 0) > budget:
            batch = largest(1, batch, lambda b: peak(b, 0) <= budget)
        batch = largest(batch, batch_size, lambda b: peak(b, rows) <= budget)
    return MemoryPlan(batch=batch, n_rows=rows, peak_bytes=peak(batch, rows), per_copy_bytes=per_copy,
                      limited=rows < n_rows, n_active=n_active, n_targets=n_targets, saved_per_copy=saved_per_copy)


def memory_limit(value: Optional[float]) -> Optional[float]:
    """`max_memory_mb` checked: None or a positive number."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ValueError(f"max_memory_mb must be a positive number of megabytes (2**20 bytes) or None, got {value!r}")
    return float(value)


__all__ = ["MemoryPlan", "estimate_peak", "measured_peak", "per_copy_bytes", "memory_limit", "plan_memory", "saved_bytes"]
