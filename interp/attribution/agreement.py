"""How well an estimate of patching effects (attribution patching, edge attribution patching)
matches the real thing: Pearson and Spearman correlation and top-k overlap of the effects."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch


@dataclass
class Agreement:
    """How well an estimate of patching effects matches the real thing."""

    pearson: float
    spearman: float
    top_k_overlap: float  # fraction of the true top-k sites (by |effect|) that the estimate also ranks in its top k
    k: int
    n: int

    def __str__(self) -> str:
        return (f"Pearson {self.pearson:.3f}, Spearman {self.spearman:.3f}, "
                f"top-{self.k} overlap {self.top_k_overlap:.0%} over {self.n} sites")


def _pearson(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a - a.mean(), b - b.mean()
    denom = a.norm() * b.norm()
    return float((a * b).sum() / denom) if denom > 0 else float("nan")


def _ranks(x: torch.Tensor) -> torch.Tensor:
    """Ranks 0..n-1, ties given their average rank."""
    order = x.argsort()
    ranks = torch.empty_like(x)
    ranks[order] = torch.arange(len(x), dtype=x.dtype)
    for v in x.unique()[x.unique(return_counts=True)[1] > 1]:  # average over ties
        ranks[x == v] = ranks[x == v].mean()
    return ranks


def agreement(estimate: Any, actual: Any, k: int = 10) -> Agreement:
    """Pearson and Spearman correlation of the two results' effects (`.effect`, e.g. two
    `PatchResult`s or two `EdgeScores`), and top-k overlap."""
    if estimate.values.shape != actual.values.shape:
        raise ValueError(f"results have different shapes: {tuple(estimate.values.shape)} vs {tuple(actual.values.shape)}")
    a = estimate.effect.flatten().double()
    b = actual.effect.flatten().double()
    k = min(k, len(a))
    top_a = set(a.abs().argsort(descending=True)[:k].tolist())
    top_b = set(b.abs().argsort(descending=True)[:k].tolist())
    return Agreement(_pearson(a, b), _pearson(_ranks(a), _ranks(b)), len(top_a & top_b) / k if k else float("nan"), k, len(a))


__all__ = ["Agreement", "agreement"]
