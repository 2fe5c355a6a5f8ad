"""How the engine groups rows into forward passes: a cost model and a cheapest partition.

Costs are in multiply-add equivalents: a fixed part per forward pass (Python and dispatch
per pass and per block, reading the weights of the blocks run and of the unembedding) plus
the multiply-adds of the rows, positions and blocks computed. The sizes come from the model's
`interp.resumable.Resumable`; nothing here knows a model class.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Any, Optional

import torch

# Measured on a 2-core CPU: ~70 G multiply-adds/s, ~8 GB/s of weight reads, ~0.3 ms of Python
# and dispatch per forward pass and per block.
OVERHEAD_PER_FORWARD = 2e7
OVERHEAD_PER_LAYER = 2e7
COST_PER_WEIGHT_READ = 35  # each forward pass reads the weights of the blocks it runs, and W_U
MEMORY_BUDGET = 512 * 2**20  # bytes of activations per forward pass when batch_size is not given


@dataclass
class Row:
    patches: list
    layer: int  # earliest patched layer (-1: before the blocks, n_layers: the final norm)
    pos: int  # earliest patched position


@dataclass
class Chunk:
    rows: list[int]
    layer: int
    pos: int


class Costs:
    """The cost of a forward pass over part of a model (see the module docstring)."""

    def __init__(self, model: Any, n_pos: int, out_tokens: Optional[int], kept_tokens: Optional[int]) -> None:
        """model: a `Resumable`; out_tokens: positions unembedded per row; kept_tokens: positions whose
        logits a row keeps until the metric reads them (None: all, for both)."""
        self.m = model
        self.layer = model.block_weights + 2 * n_pos * model.attention_width  # per token: weights and attention
        self.n_layers, self.n_pos = model.n_layers, n_pos
        self.out_tokens, self.kept_tokens = out_tokens, kept_tokens

    def chunk(self, rows: int, layer: int, pos: int) -> float:
        n = self.n_pos - pos
        layers = self.n_layers - max(layer, 0)
        out_tokens = n if self.out_tokens is None else self.out_tokens
        fixed = OVERHEAD_PER_FORWARD + OVERHEAD_PER_LAYER * layers + \
            COST_PER_WEIGHT_READ * (layers * self.m.block_weights + self.m.unembed_weights)
        return fixed + rows * (n * layers * self.layer + out_tokens * self.m.unembed_weights)

    def row_bytes(self) -> int:
        """Activation bytes of one sequence in a forward pass."""
        m, n = self.m, self.n_pos
        floats = n * (m.activation_width + 2 * m.attention_heads * n)
        floats += (n if self.kept_tokens is None else self.kept_tokens) * m.d_vocab
        return floats * torch.empty(0, dtype=m.dtype, device="meta").element_size()

    def batch_size(self) -> int:
        """Sequences per forward pass that fit in MEMORY_BUDGET."""
        return max(1, int(MEMORY_BUDGET // self.row_bytes()))


def plan_chunks(rows: list[Row], costs: Costs, batch_size: int, B: int) -> list[Chunk]:
    """Group rows (each B sequences) into forward passes of at most `batch_size` sequences, at the
    least total cost.

    Rows with the same (first layer, first position) form a group; groups are put in order
    (by layer then position, and by position then layer, whichever partitions cheaper) and
    split into consecutive runs by dynamic programming: a pass costs its fixed part plus
    rows x (positions from its earliest) x (blocks from its earliest)."""
    groups: dict[tuple[int, int], list[int]] = defaultdict(list)
    for i, r in enumerate(rows):
        groups[(r.layer, r.pos)].append(i)
    per_chunk = max(1, batch_size // B)
    best: Optional[tuple[float, list[Chunk]]] = None
    for order in (lambda k: (k[0], k[1]), lambda k: (k[1], k[0])):
        pieces = []  # (layer, pos, members), no piece larger than a pass
        for key in sorted(groups, key=order, reverse=True):
            members = groups[key]
            pieces += [(key[0], key[1], members[i:i + per_chunk]) for i in range(0, len(members), per_chunk)]
        cost, chunks = _partition(pieces, costs, per_chunk, B)
        if best is None or cost < best[0]:
            best = (cost, chunks)
    return best[1] if best else []


def _partition(pieces: list[tuple[int, int, list[int]]], costs: Costs, per_chunk: int,
               B: int) -> tuple[float, list[Chunk]]:
    """The cheapest split of the pieces, in their order, into runs of at most per_chunk rows."""
    n = len(pieces)
    total = [0.0] + [float("inf")] * n  # total[i]: the cheapest cover of the first i pieces
    start = [0] * (n + 1)
    for i in range(1, n + 1):
        rows, layer, pos = 0, costs.n_layers + 1, costs.n_pos
        for j in range(i - 1, -1, -1):  # the last run is pieces j..i-1
            rows += len(pieces[j][2])
            if rows > per_chunk:
                break
            layer, pos = min(layer, pieces[j][0]), min(pos, pieces[j][1])
            c = total[j] + costs.chunk(rows * B, layer, pos)
            if c < total[i]:
                total[i], start[i] = c, j
    chunks, i = [], n
    while i > 0:
        j = start[i]
        run = pieces[j:i]
        chunks.append(Chunk([r for p in run for r in p[2]], min(p[0] for p in run), min(p[1] for p in run)))
        i = j
    return total[n], chunks[::-1]


__all__ = ["Row", "Chunk", "Costs", "plan_chunks", "MEMORY_BUDGET"]
