"""Influence, pruning and the two graph scores of an attribution graph (circuit-tracer's rules).

All of it is tensor math on `AttributionGraph.adjacency` [n_nodes, n_nodes] (rows = targets,
columns = sources; node order features | errors | tokens | targets):

    A_hat = normalize_matrix(A)                 |A| with each row scaled to L1 norm 1
    I     = influence_of(A_hat, w)              sum_{k>=1} w A_hat^k = w((1 - A_hat)^-1 - 1)
    w     = the targets' probabilities on the target nodes, 0 elsewhere

`I[s]` is how much of the (probability-weighted) targets runs through node s over all paths.
`prune` keeps the nodes holding `node_threshold` of the total influence (plus every token and
target), then the edges holding `edge_threshold` of the edge-influence mass of the pruned
graph, then removes dangling features and errors until nothing changes. `graph_scores` gives
the replacement score (how much of the influence reaching the inputs ends at tokens rather
than errors) and the completeness score (how much of each node's input is not error).

This module does not import `probes.graph.graph` (graph.py imports it); a graph is anything
with the attributes of `GraphLike`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch

NORM_EPS = 1e-10  # circuit-tracer's guard on a row's L1 norm
MAX_ITERATIONS = 1000  # circuit-tracer's bound on the influence series


class GraphLike(Protocol):
    """What these functions read of an `AttributionGraph`."""

    adjacency: torch.Tensor
    n_nodes: int
    n_features: int
    n_targets: int
    feature_nodes: slice
    error_nodes: slice
    token_nodes: slice
    target_nodes: slice
    target_probs: torch.Tensor


# ------------------------------------------------------------------ the two matrix operations
def normalize_matrix(A: torch.Tensor) -> torch.Tensor:
    """[n, n] -> [n, n]: |A[i, j]| / max(sum_j |A[i, j]|, 1e-10). Zero rows stay zero."""
    _check_square(A, "A")
    magnitude = A.abs()
    return magnitude / magnitude.sum(dim=1, keepdim=True).clamp(min=NORM_EPS)


def influence_of(A_hat: torch.Tensor, weights: torch.Tensor, max_iterations: int = MAX_ITERATIONS) -> torch.Tensor:
    """sum_{k>=1} weights A_hat^k, i.e. weights ((I - A_hat)^-1 - I).

    A_hat [n, n] (non-negative, e.g. `normalize_matrix(A)`); weights [n] or [batch, n]; returns
    the same shape as weights. Computed by `cur = cur @ A_hat` until `cur` is exactly zero: for
    a DAG A_hat is nilpotent, so this takes at most (longest path + 1) steps and the zeros are
    exact. A graph with a cycle also stops once the newest term is below float precision
    relative to the sum (a series that converges); a cycle whose terms do not decay (row-
    normalised weights around a closed loop) raises ValueError after `max_iterations`.
    """
    _check_square(A_hat, "A_hat")
    if weights.shape[-1] != A_hat.shape[0] or weights.dim() not in (1, 2):
        raise ValueError(f"weights must be [n] or [batch, n] with n = {A_hat.shape[0]}; got {tuple(weights.shape)}")
    tolerance = torch.finfo(A_hat.dtype).eps if A_hat.dtype.is_floating_point else 0.0
    current = weights.to(A_hat.dtype) @ A_hat
    total = current.clone()
    for _ in range(max_iterations):
        if not current.any():
            return total
        current = current @ A_hat
        total += current
        if current.abs().sum() <= tolerance * total.abs().sum():
            return total
    raise ValueError(f"influence did not converge in {max_iterations} iterations: the adjacency has a cycle "
                     "whose weights do not decay (an attribution graph must be acyclic)")


def find_threshold(scores: torch.Tensor, fraction: float) -> float:
    """The score above which the largest scores hold `fraction` of the total (circuit-tracer's).

    scores: any shape, non-negative, not all zero. Sorted descending, cum = cumsum / sum; the
    threshold is the score at the first rank where cum >= fraction (the smallest score if
    rounding leaves cum below it). Keeping `scores >= threshold` keeps at least that fraction.
    """
    _check_fraction(fraction, "fraction")
    flat = scores.flatten()
    if flat.numel() == 0:
        raise ValueError("find_threshold: scores is empty")
    if not torch.isfinite(flat).all() or (flat < 0).any():
        raise ValueError("find_threshold: scores must be finite and non-negative")
    ordered = flat.sort(descending=True).values
    total = ordered.sum()
    if total <= 0:
        raise ValueError("find_threshold: the scores are all zero, so no fraction of them can be chosen")
    cumulative = ordered.cumsum(0) / total
    rank = torch.searchsorted(cumulative, torch.tensor([fraction], dtype=cumulative.dtype))
    return float(ordered[rank.clamp(max=ordered.numel() - 1)].item())


# ------------------------------------------------------------------ on a graph
def target_weights(graph: GraphLike) -> torch.Tensor:
    """[n_nodes] w: each target node's probability, 0 on every other node."""
    _check_graph(graph)
    probs = graph.target_probs.to(_work_dtype(graph.adjacency))
    if not torch.isfinite(probs).all() or (probs < 0).any() or probs.sum() <= 0:
        raise ValueError(f"the targets' probabilities weight influence and must be >= 0 with a positive sum; got "
                         f"{probs.tolist()} (a custom-direction target has prob 0: give the graph a real target "
                         "or a positive prob)")
    weights = torch.zeros(graph.n_nodes, dtype=probs.dtype)
    weights[graph.target_nodes] = probs
    return weights


def node_influence(graph: GraphLike) -> torch.Tensor:
    """[n_nodes] each node's influence on the targets, weighted by their probabilities (targets: 0)."""
    A = _adjacency(graph)
    return influence_of(normalize_matrix(A), target_weights(graph))


def edge_scores(A: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """[n, n] S[t, s] = A_hat[t, s] (I[t] + w[t]) with A_hat = normalize_matrix(A), I = influence_of(A_hat, w)."""
    A_hat = normalize_matrix(A)
    reach = influence_of(A_hat, weights) + weights
    return A_hat * reach[:, None]


@dataclass
class PrunedGraph:
    """The part of a graph `prune` keeps.

    node_mask [n_nodes] bool; edge_mask [n_nodes, n_nodes] bool (same orientation as adjacency:
    [target, source]); cumulative [n_nodes]: the cumulative normalised influence at each node's
    rank (0..1, smaller = more important), from the unpruned influence. `graph` is the graph
    it was cut from (for labels and raw weights)."""

    node_mask: torch.Tensor
    edge_mask: torch.Tensor
    cumulative: torch.Tensor
    node_threshold: float
    edge_threshold: float
    graph: Any = field(repr=False, compare=False)

    @property
    def nodes(self) -> torch.Tensor:
        """[n_kept] the kept nodes' indices in the graph, ascending (graph node order)."""
        return self.node_mask.nonzero().flatten()

    @property
    def n_nodes(self) -> int:
        return int(self.node_mask.sum())

    @property
    def n_edges(self) -> int:
        return int(self.edge_mask.sum())

    @property
    def adjacency(self) -> torch.Tensor:
        """[n_kept, n_kept] the kept edges' raw weights (0 for a dropped edge), rows and columns in `nodes` order."""
        kept = self.nodes
        weights = self.graph.adjacency * self.edge_mask
        return weights[kept][:, kept]

    def edges(self) -> torch.Tensor:
        """[n_edges, 2] (target, source) graph node indices of the kept edges."""
        return self.edge_mask.nonzero()


def prune(graph: GraphLike, node_threshold: float = 0.8, edge_threshold: float = 0.98) -> PrunedGraph:
    """circuit-tracer's pruning.

    1. Nodes: keep those with influence >= find_threshold(influence, node_threshold), over all
       nodes; then every token and target (errors are not kept automatically).
    2. Edges: zero the rows and columns of dropped nodes (P); S = edge_scores(P, w); keep the
       edges with S >= find_threshold(S, edge_threshold) (and S > 0: a zero edge is no edge).
    3. Until nothing changes: drop the edges of dropped nodes; a feature or error needs a kept
       outgoing edge, a feature also a kept incoming one.
    """
    _check_fraction(node_threshold, "node_threshold")
    _check_fraction(edge_threshold, "edge_threshold")
    A = _adjacency(graph)
    weights = target_weights(graph)
    influence = influence_of(normalize_matrix(A), weights)

    node_mask = influence >= find_threshold(influence, node_threshold)
    always = torch.zeros_like(node_mask)
    always[graph.token_nodes] = True
    always[graph.target_nodes] = True
    node_mask |= always

    pruned = A * (node_mask[:, None] & node_mask[None, :])
    scores = edge_scores(pruned, weights)
    if scores.sum() > 0:
        edge_mask = (scores >= find_threshold(scores, edge_threshold)) & (scores > 0)
    else:  # no kept node has a kept input: there are no edges to rank
        edge_mask = torch.zeros_like(scores, dtype=torch.bool)
    node_mask, edge_mask = _clean(graph, node_mask, edge_mask)

    ordered, order = influence.sort(descending=True)
    cumulative = torch.zeros_like(influence)
    cumulative[order] = ordered.cumsum(0) / ordered.sum()
    return PrunedGraph(node_mask, edge_mask, cumulative.to(graph.adjacency.dtype), float(node_threshold),
                       float(edge_threshold), graph)


def _clean(graph: GraphLike, node_mask: torch.Tensor, edge_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The cleanup loop to its fixed point (at most n_nodes passes: each pass that changes
    something drops a node). node_mask [n], edge_mask [n, n] -> both, cleaned (new tensors)."""
    node_mask, edge_mask = node_mask.clone(), edge_mask.clone()
    inner = slice(0, graph.token_nodes.start)  # features and errors
    while True:
        edge_mask &= node_mask[:, None] & node_mask[None, :]
        new_mask = node_mask.clone()
        new_mask[inner] &= edge_mask[:, inner].any(0)  # a kept outgoing edge (a kept target reads it)
        new_mask[graph.feature_nodes] &= edge_mask[graph.feature_nodes].any(1)  # a kept incoming edge
        if torch.equal(new_mask, node_mask):
            return node_mask, edge_mask
        node_mask = new_mask


def graph_scores(graph: GraphLike) -> dict[str, float]:
    """circuit-tracer's two scores of the full (unpruned) graph, with A_hat = normalize_matrix(A),
    I = node_influence, w = target_weights, E = the error nodes:

        replacement  = sum_tokens I / (sum_tokens I + sum_E I)
        completeness = sum_i (1 - sum_{j in E} A_hat[i, j]) (I[i] + w[i]) / sum_i (I[i] + w[i])

    Both lie in [0, 1]; 1 = no error. Rows without inputs count as complete. replacement is NaN
    when no influence reaches a token or an error (a graph without such edges)."""
    A = _adjacency(graph)
    weights = target_weights(graph)
    A_hat = normalize_matrix(A)
    influence = influence_of(A_hat, weights)
    from_tokens = influence[graph.token_nodes].sum()
    from_errors = influence[graph.error_nodes].sum()
    reached = from_tokens + from_errors
    replacement = float(from_tokens / reached) if reached > 0 else math.nan
    non_error = 1 - A_hat[:, graph.error_nodes].sum(1)
    reach = influence + weights
    completeness = float((non_error * reach).sum() / reach.sum())
    return {"replacement": replacement, "completeness": completeness}


# ------------------------------------------------------------------ checks
def _work_dtype(A: torch.Tensor) -> torch.dtype:
    """The adjacency's dtype, at least float32 (half precision is too coarse for cumulative sums)."""
    return A.dtype if A.dtype in (torch.float32, torch.float64) else torch.float32


def _adjacency(graph: GraphLike) -> torch.Tensor:
    _check_graph(graph)
    return graph.adjacency.to(_work_dtype(graph.adjacency))


def _check_graph(graph: GraphLike) -> None:
    if graph.n_targets == 0:
        raise ValueError("the graph has no targets: influence is measured on the targets (give at least one)")
    shape = tuple(graph.adjacency.shape)
    if shape != (graph.n_nodes, graph.n_nodes):
        raise ValueError(f"adjacency must be [n_nodes, n_nodes] = {(graph.n_nodes, graph.n_nodes)}; got {shape}")
    if not torch.isfinite(graph.adjacency).all():
        raise ValueError("adjacency holds NaN or infinite weights")


def _check_square(A: torch.Tensor, name: str) -> None:
    if A.dim() != 2 or A.shape[0] != A.shape[1]:
        raise ValueError(f"{name} must be a square [n, n] matrix; got shape {tuple(A.shape)}")


def _check_fraction(value: float, name: str) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
        raise ValueError(f"{name} must be a number in [0, 1]; got {value!r}")


__all__ = ["GraphLike", "PrunedGraph", "edge_scores", "find_threshold", "graph_scores", "influence_of",
           "node_influence", "normalize_matrix", "prune", "target_weights"]
