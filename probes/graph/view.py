"""The graph browser (view kind "attribution"): an `AttributionGraph`'s pruned nodes and edges laid
out as circuit-tracer's graph page lays them out, offline, in one self-contained page.

    graph.to_view()                                   # prunes at (0.8, 0.98) via graph.prune
    graph_view(graph, pruned=mask, dashboards={node: feature_dashboard(...).to_view()})

Layout: x = token position (token labels along the bottom), y = layer (token embeddings at the
bottom, then layers 0..n-1 (features and error nodes), the targets on top at the last position);
the nodes of one (layer, position) sit side by side, most influential first. Edges are the kept
edges, blue positive / red negative, width by |weight|. The page has hover (label, activation,
value, influence; a node's edges highlighted), a side panel on click (the node's kept edges in and
out, its dashboard when one is given), an influence slider, pan/zoom, and pins / named supernodes /
labels saved to and loaded from JSON (a Blob download; no network). `supernodes=[{"name", "nodes"}]`
(e.g. probes.graph.supernodes.suggest_supernodes' result) opens the page with those groups made: their
members pinned and grouped, as if loaded from a saved file, for the person to edit.

What is shipped: the pruned graph's kept nodes (at most `max_nodes`: tokens and targets always,
then the features and errors of smallest cumulative influence) and the kept edges between them
(at most MAX_EDGES, the largest |weight|), each node's cumulative influence (0..1, smaller = more
important) and each edge's weight `adjacency[target, source]`.
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Optional, Union

import torch

from interp.views.page import View

MAX_EDGES = 10_000  # edges shipped to the page at most (the largest |weight| among the kept ones)


# ---------------------------------------------------------------------------- checks
def _check_graph(graph: Any) -> None:
    n = graph.n_nodes
    if tuple(graph.adjacency.shape) != (n, n):
        raise ValueError(f"graph.adjacency has shape {tuple(graph.adjacency.shape)}; a graph with {graph.n_features} "
                         f"features, {graph.n_layers} layers, {graph.n_pos} positions and {graph.n_targets} targets "
                         f"has {n} nodes, so it must be ({n}, {n})")
    if tuple(graph.values.shape) != (n,):
        raise ValueError(f"graph.values has shape {tuple(graph.values.shape)}, expected ({n},)")
    if graph.features.ndim != 2 or graph.features.shape[1] != 3:
        raise ValueError(f"graph.features must be [n_features, 3] (layer, pos, index), got {tuple(graph.features.shape)}")
    if tuple(graph.activations.shape) != (graph.n_features,):
        raise ValueError(f"graph.activations has shape {tuple(graph.activations.shape)}, expected ({graph.n_features},)")
    if len(graph.tokens) != graph.n_pos:
        raise ValueError(f"graph.tokens has {len(graph.tokens)} strings for {graph.n_pos} token ids")


def _check_threshold(name: str, value: float) -> float:
    if not isinstance(value, (int, float)) or not 0.0 < float(value) <= 1.0:
        raise ValueError(f"{name} must be a number in (0, 1] (a cumulative-influence fraction), got {value!r}")
    return float(value)


def _mask(pruned: Any, name: str, shape: tuple[int, ...]) -> torch.Tensor:
    value = pruned.get(name) if isinstance(pruned, Mapping) else getattr(pruned, name, None)
    if value is None:
        raise ValueError(f"pruned has no {name!r}: pass graph.prune(...)'s result, or an object (or dict) with "
                         "node_mask [n_nodes] bool, edge_mask [n_nodes, n_nodes] bool and cumulative [n_nodes]")
    value = torch.as_tensor(value)
    if tuple(value.shape) != shape:
        raise ValueError(f"pruned.{name} has shape {tuple(value.shape)}, expected {shape} for this graph")
    return value


def _pruning(graph: Any, pruned: Any) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(node_mask [n] bool, edge_mask [n, n] bool (rows = targets), cumulative [n] float)."""
    n = graph.n_nodes
    node_mask, edge_mask = _mask(pruned, "node_mask", (n,)), _mask(pruned, "edge_mask", (n, n))
    cumulative = _mask(pruned, "cumulative", (n,))
    for name, m in (("node_mask", node_mask), ("edge_mask", edge_mask)):
        if m.dtype != torch.bool:
            raise ValueError(f"pruned.{name} must be a bool tensor, got {m.dtype}")
    cumulative = cumulative.detach().to("cpu", torch.float64)
    return node_mask.cpu(), edge_mask.cpu(), cumulative


def _dashboards(graph: Any, dashboards: Optional[Mapping[int, Any]]) -> dict[int, dict[str, Any]]:
    out: dict[int, dict[str, Any]] = {}
    for key, view in (dashboards or {}).items():
        if isinstance(key, bool) or not isinstance(key, int):
            raise ValueError(f"dashboards are keyed by node index (int), got {key!r}")
        if not 0 <= key < graph.n_nodes:
            raise ValueError(f"dashboards key {key} is not a node: the graph has {graph.n_nodes} nodes")
        if isinstance(view, View):
            out[key] = view.payload()
        elif hasattr(view, "to_view"):
            out[key] = view.to_view().payload()
        elif isinstance(view, Mapping) and "kind" in view:
            out[key] = dict(view)
        else:
            raise ValueError(f"dashboards[{key}] must be a View, a result with to_view() or a payload dict, "
                             f"got {type(view).__name__}")
    return out


def _supernodes(graph: Any, supernodes: Any, shown: dict[int, int]) -> tuple[list[dict[str, Any]], list[str]]:
    """([{"name", "nodes": [node ids]}], notes): the initial groups in the page's saved-file format
    (circuit-tracer node ids); members not shown are left out (noted), a group left empty too."""
    out, notes, owner = [], [], {}
    for k, group in enumerate(supernodes or []):
        name = group.get("name") if isinstance(group, Mapping) else getattr(group, "name", None)
        members = group.get("nodes") if isinstance(group, Mapping) else getattr(group, "nodes", None)
        if not isinstance(name, str) or not name.strip():
            raise ValueError(f"supernodes[{k}] needs a non-empty string name; got {name!r}")
        if members is None or isinstance(members, (str, bytes)):
            raise ValueError(f"supernodes[{k}] ({name!r}) needs nodes: a list of graph node indices; got {members!r}")
        if any(g["name"] == name for g in out) or name in owner.values():
            raise ValueError(f"two supernodes are named {name!r}: names must be unique")
        ids, missing = [], []
        for node in list(members):
            if isinstance(node, bool) or not isinstance(node, int) or not 0 <= node < graph.n_nodes:
                raise ValueError(f"supernodes[{k}] ({name!r}) holds {node!r}: nodes are graph node indices, "
                                 f"ints in [0, {graph.n_nodes})")
            if node in owner:
                raise ValueError(f"node {node} is in two supernodes, {owner[node]!r} and {name!r}: a node belongs "
                                 "to at most one")
            owner[node] = name
            if node in shown:
                ids.append(_node_id(graph, node))
            else:
                missing.append(node)
        if missing:
            notes.append(f"supernode {name!r}: {len(missing)} member(s) not shown were left out: {missing[:10]}")
        if ids:
            out.append({"name": name, "nodes": ids})
    return out, notes


# ---------------------------------------------------------------------------- what is shipped
def _chosen_nodes(graph: Any, node_mask: torch.Tensor, cumulative: torch.Tensor, max_nodes: int) -> torch.Tensor:
    """[k] the node indices shown, ascending: every kept token and target, then the kept features and
    errors of smallest cumulative influence (ties: lower index) up to max_nodes in all."""
    frame = torch.zeros_like(node_mask)
    frame[graph.token_nodes.start:] = True  # tokens and targets: the page's frame
    always = (node_mask & frame).nonzero().flatten()
    rest = (node_mask & ~frame).nonzero().flatten()
    room = max(0, max_nodes - always.numel())
    if rest.numel() > room:
        key = torch.nan_to_num(cumulative[rest], nan=math.inf)
        order = sorted(range(rest.numel()), key=lambda i: (float(key[i]), int(rest[i])))
        rest = rest[torch.tensor(order[:room], dtype=torch.long)]
    return torch.cat([always, rest]).sort().values


def _node_id(graph: Any, i: int) -> str:
    """circuit-tracer's node_id: "{layer}_{feat}_{pos}", errors "{layer}_-1_{pos}", tokens
    "E_{vocab}_{pos}", logits "{n_layers+1}_{vocab}_{pos}" (a custom direction: "..._t{i}_...")."""
    kind, layer, pos, index = graph.node_site(i)
    if kind == "feature":
        return f"{layer}_{index}_{pos}"
    if kind == "error":
        return f"{layer}_-1_{pos}"
    if kind == "token":
        return f"E_{index}_{pos}"
    tag = index if index is not None else f"t{i - graph.target_nodes.start}"
    return f"{graph.n_layers + 1}_{tag}_{pos}"


def _number(x: Any) -> Optional[float]:
    x = float(x)
    return x if math.isfinite(x) else None


def _node_record(graph: Any, i: int, cumulative: float) -> dict[str, Any]:
    kind, layer, pos, index = graph.node_site(i)
    row = 0 if kind == "token" else layer + 1  # tokens at the bottom, targets (layer = n_layers) on top
    rec: dict[str, Any] = {"node": i, "id": _node_id(graph, i), "kind": kind, "layer": layer, "row": row, "pos": pos,
                           "index": index, "label": graph.node_label(i), "influence": _number(cumulative),
                           "value": _number(graph.values[i])}
    if kind == "feature":
        rec["activation"] = _number(graph.activations[i])
    if kind == "target":
        target = graph.targets[i - graph.target_nodes.start]
        rec["prob"] = _number(target.prob)
        rec["short"] = target.label
    return rec


def _edges(graph: Any, chosen: torch.Tensor, edge_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, int]:
    """(targets [e], sources [e]) graph indices of the kept edges between shown nodes, largest
    |weight| first (at most MAX_EDGES), and how many there were before that cap."""
    sub = edge_mask[chosen][:, chosen]
    t_local, s_local = sub.nonzero(as_tuple=True)
    t, s = chosen[t_local], chosen[s_local]
    weights = graph.adjacency.detach().cpu()[t, s]
    order = weights.abs().argsort(descending=True, stable=True)
    total = int(order.numel())
    order = order[:MAX_EDGES]
    return t[order], s[order], total


def _edge_notes(graph: Any, edge_notes: Optional[Mapping[Any, str]]) -> dict[tuple[int, int], str]:
    out: dict[tuple[int, int], str] = {}
    if edge_notes is None:
        return out
    if not isinstance(edge_notes, Mapping):
        raise ValueError(f"edge_notes must be a dict {{(target, source): str}}, got {type(edge_notes).__name__}")
    for key, note in edge_notes.items():
        if not (isinstance(key, tuple) and len(key) == 2 and all(
                isinstance(v, int) and not isinstance(v, bool) and 0 <= v < graph.n_nodes for v in key)):
            raise ValueError(f"edge_notes keys are (target, source) pairs of graph node indices in [0, "
                             f"{graph.n_nodes}), got {key!r}")
        if not isinstance(note, str):
            raise ValueError(f"edge_notes[{key}] must be a string, got {type(note).__name__}")
        out[key] = note
    return out


def graph_view(graph: Any, *, pruned: Any = None, node_threshold: float = 0.8, edge_threshold: float = 0.98,
               dashboards: Optional[Mapping[int, Union[View, Any]]] = None, max_nodes: int = 400,
               title: Optional[str] = None, supernodes: Optional[list[Any]] = None,
               edge_notes: Optional[Mapping[tuple[int, int], str]] = None) -> View:
    """The graph browser of `graph` (kind "attribution").

    pruned: the pruning to show (node_mask [n_nodes] bool, edge_mask [n_nodes, n_nodes] bool with
    rows = targets as in `adjacency`, cumulative [n_nodes]); by default
    `graph.prune(node_threshold, edge_threshold)`. dashboards: node index -> View (or payload) shown
    in the side panel when that node is clicked. max_nodes: nodes shipped at most (tokens and
    targets always; then features and errors by cumulative influence). supernodes: groups the page opens
    with, [{"name": str, "nodes": [graph node indices]}] or objects with .name and .nodes (e.g.
    probes.graph.supernodes.Supernode): their members pinned and grouped, editable like the person's
    own (members not shown are left out, with a note). edge_notes: {(target, source): text} shown
    under an edge's hover (e.g. probes.graph.qk.edge_notes: the head that carried it and the
    query-key pairs that formed that head's match)."""
    _check_graph(graph)
    node_threshold = _check_threshold("node_threshold", node_threshold)
    edge_threshold = _check_threshold("edge_threshold", edge_threshold)
    if isinstance(max_nodes, bool) or not isinstance(max_nodes, int) or max_nodes < 1:
        raise ValueError(f"max_nodes must be a positive int, got {max_nodes!r}")
    boards = _dashboards(graph, dashboards)
    notes_by_edge = _edge_notes(graph, edge_notes)
    if pruned is None:
        pruned = graph.prune(node_threshold=node_threshold, edge_threshold=edge_threshold)
        how = f"pruned at node_threshold={node_threshold:g}, edge_threshold={edge_threshold:g}"
    else:
        how = "pruning given by the caller"
    node_mask, edge_mask, cumulative = _pruning(graph, pruned)

    chosen = _chosen_nodes(graph, node_mask, cumulative, max_nodes)
    local = {int(g): k for k, g in enumerate(chosen.tolist())}
    nodes = [_node_record(graph, int(i), float(cumulative[i])) for i in chosen.tolist()]
    t, s, n_edges_kept = _edges(graph, chosen, edge_mask)
    weights = graph.adjacency.detach().cpu()[t, s]
    n_kept = int(node_mask.sum())
    notes = [f"{how}: {n_kept} of {graph.n_nodes} nodes and {n_edges_kept} edges kept"
             + (f"; showing the {len(nodes)} most influential nodes (max_nodes={max_nodes})" if len(nodes) < n_kept else "")
             + (f"; drawing the {MAX_EDGES} largest |weight| edges" if n_edges_kept > MAX_EDGES else "")]
    groups, group_notes = _supernodes(graph, supernodes, local)
    notes.extend(group_notes)
    missing = sorted(k for k in boards if k not in local)
    if missing:
        notes.append(f"dashboards of {len(missing)} node(s) not shown were left out: {missing[:10]}")
    data = {
        "prompt": graph.prompt,
        "tokens": list(graph.tokens),
        "n_layers": graph.n_layers,
        "n_pos": graph.n_pos,
        "nodes": nodes,
        "edges": {"source": [local[int(i)] for i in s.tolist()], "target": [local[int(i)] for i in t.tolist()],
                  "weight": [float(w) for w in weights.tolist()]},
        "n_nodes_total": graph.n_nodes,
        "n_nodes_kept": n_kept,
        "n_edges_kept": n_edges_kept,
        "node_threshold": node_threshold if how.startswith("pruned") else None,
        "edge_threshold": edge_threshold if how.startswith("pruned") else None,
        "dashboards": {str(local[k]): p for k, p in boards.items() if k in local},
        "transcoders": list(getattr(graph, "transcoders", []) or []),
    }
    if groups:
        data["supernodes"] = groups
    if notes_by_edge:
        data["edges"]["note"] = [notes_by_edge.get((int(a), int(b))) for a, b in zip(t.tolist(), s.tolist())]
    if title is None:
        targets = ", ".join(tg.label for tg in graph.targets)
        title = f"attribution graph: {graph.prompt!r} -> {targets}"
    return View("attribution", data, title=title, notes=notes)


__all__ = ["MAX_EDGES", "graph_view"]
