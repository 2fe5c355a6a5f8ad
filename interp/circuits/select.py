"""Circuits chosen from edge scores, and how faithful they are.

A circuit is a set of edges. Its faithfulness: run the clean prompts with every edge outside
the circuit patched to the corrupted value of its upstream node (`interp.circuits.run`, norms
frozen at their clean scales), and normalise the metric between the empty circuit (every
edge patched) and the full model:

    faithfulness = (metric(circuit) - metric(empty)) / (metric(full) - metric(empty))

1 means the circuit alone carries the whole clean-vs-corrupted difference. With
ablation="mean" the edges outside carry each writer's mean output over the corrupted prompts
(per position) instead of each prompt's own corrupted output.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Optional, Sequence

import torch

from interp.circuits.graph import Graph
from interp.circuits.run import EdgeRun, Metric
from interp.circuits.scores import EdgeScores
from interp.progress import progress_bar
from interp.tokens import paired_tokens
from models import Transformer

Edge = tuple[str, str]
ABLATIONS = ("corrupted", "mean")


def top_edges(scores: EdgeScores, n: int) -> list[Edge]:
    """The n edges with the largest |score|."""
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    return [(u, d) for u, d, _ in scores.top(n)]


def edges_above(scores: EdgeScores, threshold: float) -> list[Edge]:
    """Every edge with |score| >= threshold."""
    return [(u, d) for u, d, s in scores.top() if abs(s) >= threshold]


@dataclass
class Faithfulness:
    value: float  # normalised: 0 = empty circuit, 1 = full model
    metric: float  # the metric with only the circuit's edges clean
    full: float
    empty: float
    n_edges: int


class _Evaluator:
    """Faithfulness of many circuits on one prompt pair, rows batched."""

    def __init__(self, model: Transformer, clean, corrupted, metric: Metric, batch_size: int = 256,
                 ablation: str = "corrupted") -> None:
        if ablation not in ABLATIONS:
            raise ValueError(f"ablation must be one of {ABLATIONS}, got {ablation!r}")
        clean_t, corrupted_t = paired_tokens(model, clean, corrupted)
        self.graph = Graph(model.cfg)
        self.run = EdgeRun(model, self.graph, clean_t, corrupted_t)
        if ablation == "mean":
            out = self.run.outputs_corrupted  # [U, batch, pos, d_model]
            self.run.outputs_corrupted = out.mean(1, keepdim=True).expand_as(out)
        self.metric, self.batch_size = metric, batch_size
        self.full, self.empty = self.metrics([self.graph.edges.clone(), torch.zeros_like(self.graph.edges)]).tolist()

    def metrics(self, kept: Sequence[torch.Tensor]) -> torch.Tensor:
        """The metric with only each kept [U, D] edge set clean: [len(kept)]."""
        return self.run.metrics([self.graph.edges & ~k for k in kept], self.metric, self.batch_size)

    def normalise(self, values: torch.Tensor) -> torch.Tensor:
        if self.full == self.empty:
            raise ValueError(f"the metric is {self.full:.6g} both with every edge and with none: the clean and "
                             "corrupted prompts do not differ on it, so faithfulness is undefined")
        return (values - self.empty) / (self.full - self.empty)

    def result(self, kept: torch.Tensor) -> Faithfulness:
        m = float(self.metrics([kept])[0])
        return Faithfulness(float(self.normalise(torch.tensor(m))), m, self.full, self.empty, int(kept.sum()))


def faithfulness(model: Transformer, clean, corrupted, metric: Metric, circuit: Iterable[Edge], *,
                 ablation: str = "corrupted") -> Faithfulness:
    """How much of the clean-vs-corrupted metric difference the circuit's edges carry (module docstring)."""
    ev = _Evaluator(model, clean, corrupted, metric, ablation=ablation)
    return ev.result(ev.graph.mask(circuit))


def faithfulness_curve(model: Transformer, clean, corrupted, metric: Metric, scores: EdgeScores,
                       sizes: Optional[Sequence[int]] = None, *, ablation: str = "corrupted") -> list[tuple[int, float]]:
    """(n, faithfulness of the top-n edges by |score|) for each n of `sizes` (default: every n up to
    256, then doubling up to every edge), batched in a few forward passes."""
    graph = scores.graph
    if sizes is None:
        sizes = list(range(min(graph.n_edges, 256) + 1))
        while sizes[-1] < graph.n_edges:
            sizes.append(min(2 * sizes[-1], graph.n_edges))
    ev = _Evaluator(model, clean, corrupted, metric, ablation=ablation)
    order = scores.top()
    kept = [graph.mask([(u, d) for u, d, _ in order[:n]]) for n in sizes]
    return list(zip(sizes, ev.normalise(ev.metrics(kept)).tolist()))


def greedy_circuit(model: Transformer, clean, corrupted, metric: Metric, scores: EdgeScores, n: int, *,
                   candidates: int = 64, ablation: str = "corrupted", progress: bool = True) -> list[Edge]:
    """n edges by greedy pruning: start from the `candidates` best-scored edges and drop, one at a
    time, the edge whose removal leaves the most faithful circuit (exact patched runs, batched),
    until n remain. (Adding edges one at a time from nothing does not work: one edge alone
    carries nothing until a whole path from the embedding to the logits is clean.)"""
    if n < 1 or candidates < 1:
        raise ValueError(f"n and candidates must be >= 1, got {n} and {candidates}")
    ev = _Evaluator(model, clean, corrupted, metric, ablation=ablation)
    chosen = [(u, d) for u, d, _ in scores.top(max(n, candidates))]
    for _ in progress_bar(range(len(chosen) - n), progress, desc="greedy circuit"):
        values = ev.normalise(ev.metrics([ev.graph.mask(chosen[:i] + chosen[i + 1:]) for i in range(len(chosen))]))
        chosen.pop(int(values.argmax()))
    return chosen


__all__ = ["top_edges", "edges_above", "faithfulness", "faithfulness_curve", "greedy_circuit", "Faithfulness"]
