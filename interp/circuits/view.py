"""A circuit as an interactive graph (view kind "graph"): every scored edge of a `Graph`, nodes laid
out by layer as in `interp.circuits.figure` (the embedding at the bottom, the logits at the top,
a layer's heads side by side, its MLP above them), edges coloured by sign (blue: positive, red:
negative) and as wide as |score|.

    view = circuit_view(scores.graph, scores, top_edges(scores, 30), faithfulness=faith)
    view.save_html("out/circuit.html")       # or view.show(); Circuit(...) is the Viewable result

In the page: a threshold slider on |score| (log scale; it starts at the circuit's weakest edge,
the exact value can be typed in the box next to it) shows every edge at or above it, at most
`max_drawn` of them drawn (the strongest); drag pans, the wheel and the +/- buttons zoom;
hovering an edge shows "upstream -> downstream: score"; clicking a node opens its panel: its
edges in and out with their scores and, when `node_views` has one for it, its own view (for a
head, e.g. its attention pattern: `head_node_views`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Optional, Sequence, Union

import torch

from interp.circuits.graph import Graph
from interp.circuits.scores import EdgeScores
from interp.circuits.select import Faithfulness
from interp.views.page import View, Viewable
from models import Transformer

MAX_DRAWN = 2000  # edges drawn at most at once (the strongest above the threshold): keeps the page responsive
DEFAULT_SHOWN = 20  # without a circuit, the slider starts at the |score| of the 20th strongest edge

EdgeLike = Union[tuple[str, str], tuple[str, str, float]]
NodeView = Union[View, Mapping[str, Any]]


def _score_matrix(graph: Graph, scores: Union[EdgeScores, torch.Tensor]) -> torch.Tensor:
    """scores [U, D] float64 checked against the graph's shape."""
    if isinstance(scores, EdgeScores):
        matrix = scores.scores
    elif isinstance(scores, torch.Tensor):
        matrix = scores
    else:
        raise TypeError(f"scores must be an EdgeScores or a [writers, inputs] tensor, got {type(scores).__name__}")
    want = tuple(graph.edges.shape)
    if tuple(matrix.shape) != want:
        raise ValueError(f"scores have shape {tuple(matrix.shape)} but the graph has {want[0]} writers x {want[1]} "
                         f"inputs: score the same model's graph ({graph})")
    return matrix.detach().to("cpu", torch.float64)


def _nodes(graph: Graph) -> tuple[list[dict], dict[str, int]]:
    """Every node (writers, then the readers that write nothing: key-value heads, logits) with its
    layout position (x, y in figure units, y up) and its index by name."""
    from interp.circuits.figure import _positions  # the figure's layout (imported here: it loads matplotlib)

    pos = _positions(graph)
    nodes: list[dict] = []
    index: dict[str, int] = {}

    def add(name: str, kind: str, layer: int, head: Optional[int]) -> None:
        if name in index:
            return
        x, y = pos[name]
        index[name] = len(nodes)
        nodes.append({"name": name, "kind": kind, "layer": layer, "head": head, "x": x, "y": y})

    for n in graph.upstream:
        add(n.name, n.kind, n.layer, n.head)
    for i in graph.inputs:
        add(i.node, "logits" if i.kind == "logits" else "kv_head" if "KV" in i.node else i.kind, i.layer, i.head)
    return nodes, index


def _circuit_edges(graph: Graph, edges: Optional[Sequence[EdgeLike]]) -> list[tuple[int, int]]:
    """(u, d) of each circuit edge (a clear error for one that is not an edge of the graph)."""
    if edges is None:
        return []
    out = []
    for e in edges:
        if not isinstance(e, (tuple, list)) or len(e) not in (2, 3):
            raise ValueError(f"a circuit edge is (upstream, downstream) or (upstream, downstream, score), got {e!r}")
        out.append(graph.index(e[0], e[1]))
    return out


def _node_payloads(node_views: Optional[Mapping[str, NodeView]], index: Mapping[str, int]) -> dict[str, dict]:
    if not node_views:
        return {}
    out = {}
    for name, view in node_views.items():
        if name not in index:
            raise KeyError(f"node_views names {name!r}, which is not a node of the graph; nodes: "
                           f"{', '.join(list(index)[:8])}, ...")
        if isinstance(view, View):
            out[name] = view.payload()
        elif isinstance(view, Mapping) and "kind" in view:
            out[name] = dict(view)
        else:
            raise TypeError(f"node_views[{name!r}] must be a View (or its payload()), got {type(view).__name__}")
    return out


def _faithfulness(faithfulness: Union[Faithfulness, float, None]) -> Optional[dict]:
    if faithfulness is None:
        return None
    if isinstance(faithfulness, Faithfulness):
        return {"value": faithfulness.value, "n_edges": faithfulness.n_edges}
    return {"value": float(faithfulness), "n_edges": None}


def circuit_view(graph: Graph, scores: Union[EdgeScores, torch.Tensor], edges: Optional[Sequence[EdgeLike]] = None,
                 *, title: str = "", node_views: Optional[Mapping[str, NodeView]] = None,
                 faithfulness: Union[Faithfulness, float, None] = None,
                 curve: Optional[Sequence[tuple[int, float]]] = None, threshold: Optional[float] = None,
                 max_drawn: int = MAX_DRAWN) -> View:
    """The interactive graph of `scores` over `graph` (module docstring).

    scores: an `EdgeScores` or a [writers, inputs] tensor (NaN where there is no edge; edges with
    a NaN score are left out); edges: the circuit, (upstream, downstream[, score]) pairs, marked in
    the graph, and the slider starts at its smallest |score| (without one: at the 20th strongest
    edge's), unless `threshold` is given; node_views: node name -> View shown in its panel;
    faithfulness: the circuit's (a `Faithfulness` or a number); curve: (n, faithfulness of the top
    n edges) pairs (`faithfulness_curve`), read off for the number of edges shown.
    """
    if max_drawn < 1:
        raise ValueError(f"max_drawn must be >= 1, got {max_drawn}")
    matrix = _score_matrix(graph, scores)
    nodes, index = _nodes(graph)
    circuit = _circuit_edges(graph, edges)
    pairs = graph.edges.nonzero()  # [n_edges, 2]: (u, d) in edge_list order
    values = matrix[graph.edges]  # [n_edges]
    order = values.abs().argsort(descending=True, stable=True)
    order = order[torch.isfinite(values[order])]  # strongest first, no NaN
    writer_node = torch.tensor([index[n.name] for n in graph.upstream])
    ups = writer_node[pairs[order, 0]].tolist()
    downs = pairs[order, 1].tolist()
    edge_scores = values[order].tolist()
    position = {tuple(e): k for k, e in enumerate(pairs[order].tolist())}
    in_circuit = sorted({position[e] for e in circuit if e in position})
    if threshold is None:
        if in_circuit:
            threshold = min(abs(edge_scores[k]) for k in in_circuit)
        else:
            threshold = abs(edge_scores[min(DEFAULT_SHOWN, len(edge_scores)) - 1]) if edge_scores else 0.0
    elif not threshold >= 0:
        raise ValueError(f"threshold is on |score|, so it must be >= 0, got {threshold}")
    from interp.circuits.figure import PORTS

    inputs = [{"name": i.name, "node": index[i.node], "kind": i.kind, "dx": PORTS.get(i.kind, 0.0)}
              for i in graph.inputs]
    dropped = graph.n_edges - len(order)
    notes = [f"{graph}; every edge with |score| >= the threshold is shown, at most {max_drawn} drawn (the "
             "strongest). Blue: positive score, red: negative; width: |score|. Drag to pan, wheel or +/- to "
             "zoom, hover an edge for its score, click a node for its edges."]
    if dropped:
        notes.append(f"{dropped} edges have no finite score and are left out.")
    data = {"nodes": nodes, "inputs": inputs,
            "edges": {"up": ups, "input": downs, "score": edge_scores},
            "circuit": in_circuit, "threshold": float(threshold), "max_drawn": int(max_drawn),
            "n_edges": graph.n_edges, "node_views": _node_payloads(node_views, index),
            "faithfulness": _faithfulness(faithfulness),
            "curve": [[int(n), float(f)] for n, f in curve] if curve is not None else None}
    return View("graph", data, title=title, notes=notes)


@dataclass
class Circuit(Viewable):
    """A circuit with its interactive view: `scores` (every edge's), `edges` the chosen ones, and
    optionally their `faithfulness`, the faithfulness `curve`, a `title` and per-node views.
    `to_view()` is `circuit_view`; `show()` / `save_html(path)` come with it."""

    scores: EdgeScores
    edges: list = field(default_factory=list)
    faithfulness: Optional[Faithfulness] = None
    curve: Optional[list] = None
    title: str = ""
    node_views: dict = field(default_factory=dict)

    def to_view(self) -> View:
        return circuit_view(self.scores.graph, self.scores, self.edges, title=self.title,
                            node_views=self.node_views, faithfulness=self.faithfulness, curve=self.curve)


def _attention_view(pattern: torch.Tensor, tokens: Sequence[str], name: str) -> View:
    """One head's attention on a prompt: pattern [dst, src]. Uses interp.views.attention when it
    is there, else a table of the last position's row."""
    try:
        from interp.views.attention import attention_heads
    except ImportError:
        attention_heads = None
    if attention_heads is not None:
        return attention_heads(pattern[None], list(tokens), head_names=[name], title=f"{name}: attention on the prompt")
    row = pattern[-1].tolist()
    return View("table", {"columns": ["pos", "token", "attention from the last position"],
                          "rows": [[p, t, a] for p, (t, a) in enumerate(zip(tokens, row))],
                          "numeric": [True, False, True]},
                title=f"{name}: attention of the last position ({tokens[-1]!r}) on the prompt")


def head_node_views(model: Transformer, tokens: torch.Tensor) -> dict[str, View]:
    """A view per head node "L{l}H{h}": its attention pattern on the prompt `tokens` [pos] or
    [batch, pos] (the first prompt of a batch), from one forward pass."""
    tokens = torch.as_tensor(tokens)
    if tokens.dim() == 1:
        tokens = tokens[None]
    if tokens.dim() != 2:
        raise ValueError(f"tokens must be [pos] or [batch, pos], got shape {tuple(tokens.shape)}")
    tokens = tokens[:1]
    try:
        words = list(model.to_str_tokens(tokens[0]))
    except ValueError:  # a model without a tokenizer: show the ids
        words = [str(t) for t in tokens[0].tolist()]
    with torch.no_grad():
        _, cache = model.run_with_cache(tokens, names_filter=lambda n: n.endswith("attn.hook_pattern"))
    views = {}
    for l in range(model.cfg.n_layers):
        pattern = cache[f"blocks.{l}.attn.hook_pattern"][0].detach().to("cpu", torch.float64)  # [head, dst, src]
        for h in range(model.cfg.n_heads):
            views[f"L{l}H{h}"] = _attention_view(pattern[h], words, f"L{l}H{h}")
    return views


__all__ = ["circuit_view", "Circuit", "head_node_views", "MAX_DRAWN"]
