"""Suggested supernodes: groups of kept feature nodes of a pruned attribution graph that seem to
play the same role, offered as a STARTING POINT that a person checks, renames, splits and extends
in the graph browser (`graph_view(graph, supernodes=suggest_supernodes(graph, pruned))`).

A suggestion says only this: these features sit at the same position, in the same band of layers,
read the same sources and write the same targets in the pruned graph (in the same proportions, with
the same signs), and, when the model and transcoders are given, their decoder vectors promote the
same token most through the unembedding. It does not say they compute the same thing on other
prompts, nor that merging them loses nothing: it is a guess from one prompt's edges.

The rule, step by step:

    P        = adjacency * edge_mask, zero outside the kept nodes                  [n_nodes, n_nodes]
    profile  = cat(P[i, :], P[:, i]) / activation[i] for each kept feature i        [k, 2 n_nodes]
               (its incoming edges, then its outgoing ones: "edges per unit of activation")
    sim      = cosine of two profiles (signed; a profile of zeros is like no other)  [k, k]
    cell     = (layer // layer_band, position[, top promoted token when same_top_token])
    groups   = complete-linkage clustering inside each cell: merge the two clusters whose LEAST
               similar pair is most similar, while that similarity >= min_similarity

so every pair inside a group has sim >= min_similarity, and raising min_similarity never adds a
grouped node (the merge order does not depend on it). The cosine does not change when a profile is
scaled, so dividing by the activation changes no similarity: it makes the profiles of a strong and a
weak copy of one feature the same vector (`edge_profiles` returns them).

Groups of one are not suggestions. The rest are ordered by size (largest first), then score (the
group's smallest pairwise similarity, highest first), then their first node; at most `max_groups`
are returned (with max_groups binding, a higher min_similarity may rank in a group that was cut).

Names: "{token} ({pos}) L{layer}: {top token}" (e.g. "Jordan (2) L0: basketball"), with the layer
band "L0-1" when the group spans layers, and without ": {top token}" when no model is given. The top
token is the one every member's decoder promotes most (same_top_token=True, the default with a
model), or else the one most members promote most ("Michael (1) L0: Cruise (5/14)"; ties: the first
in text order). A name that repeats gets " #2", " #3", ... in the order above.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Optional, Sequence

import torch

from probes.ffn.values import ranked_tokens
from probes.sae.dashboard import feature_value_logits


@dataclass
class Supernode:
    """A suggested group: `name` (editable in the page), `nodes` (graph node indices, ascending),
    `reason` (why, in words), `score` (the smallest cosine similarity between two members' edge
    profiles, in [-1, 1]), `top_token` (the token most members' decoders promote most; None
    without a model)."""

    name: str
    nodes: list[int]
    reason: str
    score: float
    top_token: Optional[str] = field(default=None, compare=False)

    def to_dict(self) -> dict[str, Any]:
        """{"name", "nodes"}: the form `graph_view(..., supernodes=[...])` takes."""
        return {"name": self.name, "nodes": list(self.nodes)}


# ---------------------------------------------------------------------------- checks
def _masks(graph: Any, pruned: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """(node_mask [n] bool, edge_mask [n, n] bool) of `pruned` (graph.prune()'s result or alike)."""
    n = graph.n_nodes
    out = []
    for name, shape in (("node_mask", (n,)), ("edge_mask", (n, n))):
        value = pruned.get(name) if isinstance(pruned, Mapping) else getattr(pruned, name, None)
        if value is None:
            raise ValueError(f"pruned has no {name!r}: pass graph.prune(...)'s result (node_mask [n_nodes] bool, "
                             "edge_mask [n_nodes, n_nodes] bool)")
        value = torch.as_tensor(value)
        if tuple(value.shape) != shape or value.dtype != torch.bool:
            raise ValueError(f"pruned.{name} must be a bool tensor of shape {shape} for this graph; got "
                             f"{value.dtype} {tuple(value.shape)}")
        out.append(value.cpu())
    return out[0], out[1]


def _check_options(min_similarity: Any, max_groups: Any, layer_band: Any) -> None:
    if isinstance(min_similarity, bool) or not isinstance(min_similarity, (int, float)) \
            or not -1.0 <= float(min_similarity) <= 1.0:
        raise ValueError(f"min_similarity must be a cosine similarity in [-1, 1]; got {min_similarity!r}")
    for name, value in (("max_groups", max_groups), ("layer_band", layer_band)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive int; got {value!r}")


# ---------------------------------------------------------------------------- edge profiles
def edge_profiles(graph: Any, pruned: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """(nodes [k], profiles [k, 2 n_nodes]): the kept feature nodes (ascending) and their signed edge
    profiles in the pruned graph, cat(P[i, :], P[:, i]) / activation[i] with P the kept edges'
    weights (rows = targets, as in adjacency). A zero activation leaves the profile undivided."""
    node_mask, edge_mask = _masks(graph, pruned)
    keep = edge_mask & node_mask[:, None] & node_mask[None, :]
    weights = graph.adjacency.detach().cpu().double() * keep
    nodes = node_mask[graph.feature_nodes].nonzero().flatten()
    profiles = torch.cat([weights[nodes], weights[:, nodes].T], dim=1)
    act = graph.activations.detach().cpu().double()[nodes]
    scale = torch.where((act != 0) & torch.isfinite(act), act, torch.ones_like(act))
    return nodes, profiles / scale[:, None]


def profile_similarity(profiles: torch.Tensor) -> torch.Tensor:
    """profiles [k, d] -> [k, k] signed cosine similarities; a zero profile has similarity 0 to all
    (itself included), so it is never grouped."""
    if profiles.dim() != 2:
        raise ValueError(f"profiles must be [k, d]; got shape {tuple(profiles.shape)}")
    norms = profiles.norm(dim=1)
    unit = profiles / norms.clamp(min=1e-300)[:, None]
    sim = unit @ unit.T
    return sim * ((norms > 0)[:, None] & (norms > 0)[None, :])


# ---------------------------------------------------------------------------- clustering
def _complete_linkage(sim: torch.Tensor, min_similarity: float) -> list[list[int]]:
    """sim [c, c] -> clusters (lists of row indices, ascending) by complete linkage down to
    min_similarity; ties broken by the clusters' first members (deterministic)."""
    clusters = [[i] for i in range(sim.shape[0])]
    link = sim.clone()
    link.fill_diagonal_(-float("inf"))
    while len(clusters) > 1:
        best = float(link.max())
        if best < min_similarity:
            break
        a, b = (int(v) for v in (link == best).nonzero()[0])  # row-major: the smallest (a, b)
        a, b = min(a, b), max(a, b)
        clusters[a] = sorted(clusters[a] + clusters[b])
        merged = torch.minimum(link[a], link[b])
        link[a], link[:, a] = merged, merged
        link[a, a] = -float("inf")
        keep = [i for i in range(len(clusters)) if i != b]
        link = link[keep][:, keep]
        del clusters[b]
    return clusters


def _top_tokens(model: Any, transcoders: Sequence[Any], graph: Any, nodes: torch.Tensor) -> list[str]:
    """The token each kept feature's decoder vector promotes most (feature_value_logits)."""
    layers = sorted({int(graph.features[i, 0]) for i in nodes.tolist()})
    if len(transcoders) <= max(layers, default=-1):
        raise ValueError(f"the graph has features of layer {max(layers)} but {len(transcoders)} transcoders were "
                         "given: pass one per layer, in layer order (probes.sae.load_transcoders)")
    logits = {layer: feature_value_logits(model, transcoders[layer]) for layer in layers}
    out = []
    for i in nodes.tolist():
        layer, _, index = (int(v) for v in graph.features[i])
        top, _ = ranked_tokens(model, logits[layer][index], 1)
        out.append(top[0][0])
    return out


def suggest_supernodes(graph: Any, pruned: Any = None, transcoders: Optional[Sequence[Any]] = None,
                       model: Any = None, *, min_similarity: float = 0.8, max_groups: int = 20,
                       layer_band: int = 1, same_top_token: bool = True) -> list[Supernode]:
    """Suggested supernodes of the pruned graph's kept features (see the module docstring for the
    rule and the names). pruned: graph.prune()'s result (by default graph.prune()); transcoders and
    model: both or neither, to also require the same top promoted token (same_top_token=False: only
    to name the groups by their most common one); layer_band: how many consecutive layers count as
    one band (1: the same layer). Deterministic. A suggestion is a starting point for a person to
    edit, not a finding."""
    _check_options(min_similarity, max_groups, layer_band)
    if (transcoders is None) != (model is None):
        raise ValueError("give both model and transcoders (to compare the features' top promoted tokens) or neither")
    if pruned is None:
        pruned = graph.prune()
    nodes, profiles = edge_profiles(graph, pruned)
    sim = profile_similarity(profiles)
    tokens = _top_tokens(model, transcoders, graph, nodes) if model is not None else [None] * len(nodes)

    cells: dict[tuple, list[int]] = {}
    for k, i in enumerate(nodes.tolist()):
        layer, pos, _ = (int(v) for v in graph.features[i])
        cells.setdefault((layer // layer_band, pos, (tokens[k] or "") if same_top_token else ""), []).append(k)
    found = []
    for key in sorted(cells):
        members = cells[key]
        rows = torch.tensor(members)
        for cluster in _complete_linkage(sim[rows][:, rows], float(min_similarity)):
            if len(cluster) < 2:
                continue
            local = [members[c] for c in cluster]
            block = sim[torch.tensor(local)][:, torch.tensor(local)]
            score = float(block[~torch.eye(len(local), dtype=torch.bool)].min())
            found.append((local, score, _common_token([tokens[k] for k in local])))
    found.sort(key=lambda f: (-len(f[0]), -f[1], int(nodes[f[0][0]])))
    out, seen = [], {}
    for local, score, (token, count) in found[:max_groups]:
        graph_nodes = [int(nodes[k]) for k in local]
        base = _name(graph, graph_nodes, token, count)
        seen[base] = seen.get(base, 0) + 1
        name = base if seen[base] == 1 else f"{base} #{seen[base]}"
        out.append(Supernode(name, graph_nodes, _reason(graph, graph_nodes, score, token, count), score, token))
    return out


def _common_token(tokens: list[Optional[str]]) -> tuple[Optional[str], int]:
    """(the members' most common top token (ties: first in text order), how many promote it most)."""
    if tokens[0] is None:
        return None, 0
    counts: dict[str, int] = {}
    for t in tokens:
        counts[t] = counts.get(t, 0) + 1
    best = min(counts, key=lambda t: (-counts[t], t))
    return best, counts[best]


def _layers(graph: Any, nodes: list[int]) -> str:
    layers = sorted({int(graph.features[i, 0]) for i in nodes})
    return f"L{layers[0]}" if len(layers) == 1 else f"L{layers[0]}-{layers[-1]}"


def _name(graph: Any, nodes: list[int], token: Optional[str], count: int) -> str:
    pos = int(graph.features[nodes[0], 1])
    base = f"{graph.tokens[pos].strip() or repr(graph.tokens[pos])} ({pos}) {_layers(graph, nodes)}"
    if token is None:
        return base
    share = "" if count == len(nodes) else f" ({count}/{len(nodes)})"
    return f"{base}: {token.strip() or repr(token)}{share}"


def _reason(graph: Any, nodes: list[int], score: float, token: Optional[str], count: int) -> str:
    pos = int(graph.features[nodes[0], 1])
    text = (f"{len(nodes)} features at {graph.tokens[pos]!r} ({pos}), {_layers(graph, nodes)}: their edge profiles "
            f"(kept edges in and out, per unit of activation) have pairwise cosine similarity >= {score:.3f}")
    if token is None:
        return text
    if count < len(nodes):
        return text + f"; {count} of their {len(nodes)} decoders promote {token!r} most (the most common)"
    return text + f"; each decoder promotes {token!r} most"


__all__ = ["Supernode", "edge_profiles", "profile_similarity", "suggest_supernodes"]
