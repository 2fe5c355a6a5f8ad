"""Attention in the attribution graph: which head carried a cross-position edge.

An attribution graph (probes.graph.build) folds attention into its edges: the local replacement
model freezes every attention pattern, so an edge from "Jordan" to "of" is one number that does
not say which head moved the feature. This module splits such an edge by head.

Definition. In the frozen linear model (patterns, norm scales frozen; MLPs = transcoder
features + errors), the effect of a source at position p_s on a target at position p_t > p_s
travels along paths through the residual stream that cross positions only via attention: a
path goes up the residual stream of one position and moves to a later position only through an
entry pattern[layer, head, dst, src] with dst != src. For each head h = (layer L, head i):

    direct[h]  = the edge computed with every frozen attention pattern restricted to its
                 diagonal (the dst == src entries, which do not cross), plus only head h's
                 entry [p_t, p_s]: the paths with exactly one crossing, made by h, straight
                 from p_s to p_t (the source's signal stays at p_s up to layer L, is read there
                 as h's value, written at p_t, and stays at p_t up to the target);
    remainder  = edge - sum_h direct[h]: the paths with two or more crossings, or through
                 other positions (p_s -> p_m -> p_t).

Heads in layers the path cannot pass through (not above the source, above the target) have
direct[h] = 0 exactly. When the only way across is one hop (a layer-0 MLP source and a layer-1
feature target: only layer 1's attention lies between them) the remainder is 0. Same-position
edges (p_s == p_t) are not split: they need no crossing.

How: one unmodified replacement run (probes.graph.replacement) gives the frozen patterns, norm
scales, error vectors and feature activations. Then, for each (target, p_s, head) a slot of a
batched replacement run whose pattern hooks return the modified frozen patterns (the diagonal
plus that head's [p_t, p_s] entry, per batch copy) and whose norm scales are the unmodified
run's; one backward pass per `batch_size` slots gives the gradients at the MLP outputs and token
embeddings, and each source's direct part is read off them as the graph's edges are
(a * W_dec[f] . g for a feature, e . g for an error, embed . g for a token).

    graph = attribution_graph(model, "Michael Jordan plays the sport of", tcs)
    pruned = graph.prune()
    cross = [(t, s) for t, s in pruned.edges().tolist() if graph.node_site(t)[2] != graph.node_site(s)[2]]
    split = edge_heads(model, graph, tcs, cross)
    split.top(5)   # strings such as "L0F258 @ Jordan (2) -> (L1H3 0.488) -> L3F438 @ of (6)"
    split.direct   # [n_edges, n_layers, n_heads]; split.remainder [n_edges]; split.weights [n_edges]
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence, Union

import torch
from einops import repeat

from models import Transformer
from probes.graph.graph import AttributionGraph
from probes.graph.replacement import ReplacementRun, check_replacement, frozen_parameters, replacement_forward
from probes.sae.clt.model import Layered

EdgeList = Union[torch.Tensor, Sequence[Sequence[int]]]


# ============================================================ the result
@dataclass
class HeadSplit:
    """Cross-position edges split by the head that carries them (module docstring).

    edges [n_edges, 2] (target, source) graph node indices; labels: (target label, source label)
    per edge; weights [n_edges] the edges (graph.adjacency[target, source]); direct [n_edges,
    n_layers, n_heads] each head's one-hop part; remainder [n_edges] = weights - direct summed
    over heads."""

    edges: torch.Tensor
    labels: list[tuple[str, str]]
    weights: torch.Tensor
    direct: torch.Tensor
    remainder: torch.Tensor

    @property
    def n_edges(self) -> int:
        return int(self.edges.shape[0])

    @property
    def n_layers(self) -> int:
        return int(self.direct.shape[1])

    @property
    def n_heads(self) -> int:
        return int(self.direct.shape[2])

    def by_head(self) -> torch.Tensor:
        """[n_layers, n_heads] each head's direct parts summed over the edges."""
        return self.direct.sum(0)

    def top(self, k: int = 10) -> list[str]:
        """The k largest head parts (by absolute value) over all edges, strongest first, as
        "L0F155 @ Jordan (2) -> (L1H3 0.42) -> L3F374 @ of (6)" (source -> (head, its part,
        in the edge's units) -> target)."""
        if isinstance(k, bool) or not isinstance(k, int) or k < 0:
            raise ValueError(f"k must be an integer >= 0, got {k!r}")
        flat = self.direct.flatten()
        order = flat.abs().argsort(descending=True, stable=True)[: min(k, flat.numel())]
        out = []
        for j in order.tolist():
            e, rest = divmod(j, self.n_layers * self.n_heads)
            layer, head = divmod(rest, self.n_heads)
            target, source = self.labels[e]
            out.append(f"{source} -> (L{layer}H{head} {float(flat[j]):.3g}) -> {target}")
        return out

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON: per edge its nodes, labels, weight, direct parts (per layer, per head) and remainder;
        the summed parts per head; the top 10 strings."""
        edges = []
        for e in range(self.n_edges):
            t, s = (int(v) for v in self.edges[e])
            edges.append(dict(target=t, source=s, target_label=self.labels[e][0], source_label=self.labels[e][1],
                              weight=float(self.weights[e]), direct=self.direct[e].tolist(),
                              remainder=float(self.remainder[e])))
        return dict(n_layers=self.n_layers, n_heads=self.n_heads, edges=edges, by_head=self.by_head().tolist(),
                    top=self.top(10))


# ============================================================ checking the edges
def _node_position(graph: AttributionGraph, node: int) -> int:
    return int(graph.node_site(node)[2])


def _check_edges(graph: AttributionGraph, edges: EdgeList) -> torch.Tensor:
    """[n_edges, 2] (target, source) after checking each is a cross-position edge of the graph."""
    if isinstance(edges, torch.Tensor):
        pairs = edges
    else:
        try:
            pairs = torch.tensor([[int(t), int(s)] for t, s in edges], dtype=torch.long)
        except (TypeError, ValueError) as err:
            raise TypeError("edges must be a list of (target_node, source_node) pairs of graph node indices "
                            f"(as PrunedGraph.edges() gives): {err}") from None
    if pairs.dim() != 2 or pairs.shape[1] != 2 or pairs.shape[0] == 0 or pairs.is_floating_point():
        raise ValueError("edges must be a non-empty list of (target_node, source_node) integer pairs, "
                         f"got shape {tuple(pairs.shape)}")
    pairs = pairs.long().cpu()
    for t, s in pairs.tolist():
        for role, node in (("target", t), ("source", s)):
            if not 0 <= node < graph.n_nodes:
                raise ValueError(f"edge ({t}, {s}): {role} node {node} is out of range (the graph has "
                                 f"{graph.n_nodes} nodes)")
        if graph.node_kind(t) not in ("feature", "target"):
            raise ValueError(f"edge ({t}, {s}): the target {graph.node_label(t)!r} is a {graph.node_kind(t)} node, "
                             "which has no inputs; a target must be a feature or a logit target")
        if graph.node_kind(s) == "target":
            raise ValueError(f"edge ({t}, {s}): the source {graph.node_label(s)!r} is a logit target, not a source")
        if float(graph.adjacency[t, s]) == 0.0:
            raise ValueError(f"edge ({t}, {s}): {graph.node_label(s)!r} -> {graph.node_label(t)!r} is not an edge of "
                             "the graph (its weight is 0)")
        if _node_position(graph, s) == _node_position(graph, t):
            raise ValueError(f"edge ({t}, {s}): {graph.node_label(s)!r} -> {graph.node_label(t)!r} stays at one "
                             "position; only cross-position edges are split by head")
    return pairs


def check_graph_activations(graph: AttributionGraph, layers: Layered, activations: list[torch.Tensor]) -> None:
    """The graph was built from this model, prompt and these transcoders (same active features)."""
    if graph.n_layers != layers.n_layers:
        raise ValueError(f"the graph has {graph.n_layers} layers, the transcoders {layers.n_layers}")
    if graph.n_features:
        l, p, f = graph.features.T
        now = torch.stack([activations[int(a)][int(b), int(c)] for a, b, c in zip(l, p, f)]).cpu()
        if not torch.allclose(now.to(graph.activations.dtype), graph.activations, rtol=1e-4, atol=1e-6):
            raise ValueError("the graph's feature activations differ from this model's and transcoders' on its "
                             "prompt: pass the model and transcoders (same dtype) the graph was built with")


# ============================================================ the frozen run with modified patterns
class _Frozen:
    """The unmodified replacement run's frozen patterns [1, head, dst, src] and norm scales
    [1, pos, 1] (by hook name), error vectors [layer, pos, d_model] (zeroed before
    zero_positions) and token embeddings [pos, d_model]."""

    def __init__(self, model: Transformer, tokens: torch.Tensor, layers: Layered, zero_positions: int) -> None:
        self.model, self.tokens, self.layers = model, tokens, layers
        self.saved: dict[str, torch.Tensor] = {}

        def save(x: torch.Tensor, hook) -> None:
            self.saved[hook.name] = x.detach().clone()

        names = [n for n in model.hook_names if n.endswith(("attn.hook_pattern", "hook_scale"))]
        with model.hooks(fwd_hooks=[(n, save) for n in names]):
            run = replacement_forward(model, tokens, layers, batch=1)
        self.activations = run.activations
        self.errors = torch.stack(run.errors).clone()
        self.errors[:, :zero_positions] = 0
        self.embed = run.embed[0].detach()
        self.pattern_names = [f"blocks.{l}.attn.hook_pattern" for l in range(model.cfg.n_layers)]

    def run(self, slots: list[tuple[int, int, int, int]]) -> ReplacementRun:
        """A replacement run of len(slots) copies; copy b's patterns are the diagonals plus head
        (layer, head)'s entry [p_t, p_s] of slot b = (layer, head, p_t, p_s)."""
        B = len(slots)
        patterns = {}
        for layer, name in enumerate(self.pattern_names):
            orig = self.saved[name][0]  # [head, dst, src]
            eye = torch.eye(orig.shape[-1], dtype=orig.dtype, device=orig.device)
            patterns[name] = repeat(orig * eye, "head dst src -> batch head dst src", batch=B).clone()
        for b, (layer, head, p_t, p_s) in enumerate(slots):
            name = self.pattern_names[layer]
            patterns[name][b, head, p_t, p_s] = self.saved[name][0, head, p_t, p_s]

        def frozen(x: torch.Tensor, hook) -> torch.Tensor:
            if hook.name in patterns:
                return patterns[hook.name]
            return self.saved[hook.name].expand(B, *self.saved[hook.name].shape[1:])

        with self.model.hooks(fwd_hooks=[(n, frozen) for n in self.saved]):
            return replacement_forward(self.model, self.tokens, self.layers, batch=B)


# ============================================================ the split
def _layer_range(graph: AttributionGraph, target: int, sources: list[int]) -> range:
    """The layers whose heads can lie on a path from any of `sources` to `target`."""
    lows = []
    for s in sources:
        kind, layer, _, _ = graph.node_site(s)
        lows.append(0 if kind == "token" else layer + 1)
    t_kind, t_layer, _, _ = graph.node_site(target)
    high = t_layer if t_kind == "feature" else graph.n_layers - 1
    return range(min(lows), high + 1)


def edge_heads(model: Transformer, graph: AttributionGraph, transcoders, edges: EdgeList, *,
               batch_size: int = 64) -> HeadSplit:
    """Split each (target_node, source_node) cross-position edge of `graph` by head (module
    docstring). `model` and `transcoders` are the ones the graph was built with; `edges` a list
    of pairs or a tensor [n_edges, 2] (e.g. `graph.prune().edges()` filtered to cross-position
    edges). `transcoders`: per-layer transcoders (a list) or a cross-layer transcoder, as for
    `attribution_graph` (a CLT feature's edge runs through every MLP it writes, each path split
    the same way). Clear errors for an edge that is not in the graph or stays at one position."""
    layers = check_replacement(model, transcoders)
    if not isinstance(graph, AttributionGraph):
        raise TypeError(f"graph must be an AttributionGraph, got {type(graph).__name__}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    pairs = _check_edges(graph, edges)
    tokens = graph.token_ids.to(model.device)
    if tokens.max() >= model.cfg.d_vocab:
        raise ValueError(f"the graph's tokens go up to {int(tokens.max())}; the model's vocabulary has "
                         f"{model.cfg.d_vocab}: pass the model the graph was built with")
    n_layers, n_heads = model.cfg.n_layers, model.cfg.n_heads
    dtype = model.W_E.dtype

    # One slot per (target, source position, head on the way); each gives every source there.
    groups: dict[tuple[int, int], list[int]] = {}
    for e, (t, s) in enumerate(pairs.tolist()):
        groups.setdefault((t, _node_position(graph, s)), []).append(e)
    slots = []  # (target, p_s, layer, head, edge indices)
    for (t, p_s), members in groups.items():
        for layer in _layer_range(graph, t, [int(pairs[e, 1]) for e in members]):
            slots += [(t, p_s, layer, head, members) for head in range(n_heads)]

    direct = torch.zeros(pairs.shape[0], n_layers, n_heads, dtype=dtype)
    with torch.enable_grad(), frozen_parameters(model, *layers.torch_modules):
        frozen = _Frozen(model, tokens, layers, graph.zero_positions)
        check_graph_activations(graph, layers, frozen.activations)
        for i in range(0, len(slots), batch_size):
            chunk = slots[i: i + batch_size]
            values = _slot_values(graph, layers, frozen, chunk, pairs)
            for (_, _, layer, head, members), vals in zip(chunk, values):
                direct[members, layer, head] = vals.cpu()
    weights = graph.adjacency[pairs[:, 0], pairs[:, 1]].to(dtype)
    labels = [(graph.node_label(t), graph.node_label(s)) for t, s in pairs.tolist()]
    return HeadSplit(edges=pairs, labels=labels, weights=weights, direct=direct,
                     remainder=weights - direct.sum((1, 2)))


def _slot_values(graph: AttributionGraph, layers: Layered, frozen: _Frozen, chunk: list,
                 pairs: torch.Tensor) -> list[torch.Tensor]:
    """For each slot of `chunk`, [len(members)] the direct parts of its edges through its head."""
    p_last = graph.n_pos - 1
    run = frozen.run([(layer, head, _node_position(graph, t), p_s) for t, p_s, layer, head, _ in chunk])
    dtype = run.embed.dtype
    objective = torch.zeros((), dtype=dtype, device=run.embed.device)
    for b, (t, _, _, _, _) in enumerate(chunk):
        kind, t_layer, p_t, index = graph.node_site(t)
        if kind == "feature":
            objective = objective + run.x_in[t_layer][b, p_t] @ layers.encoder(t_layer).detach()[:, index].to(dtype)
        else:
            vector = graph.targets[t - graph.target_nodes.start].vector.to(device=run.embed.device, dtype=dtype)
            objective = objective + run.final[b, p_last] @ vector
    inputs = [run.embed] + run.mlp_out
    grads = torch.autograd.grad(objective, inputs, allow_unused=True)
    g_emb, *g_mlp = [torch.zeros_like(x) if g is None else g for x, g in zip(inputs, grads)]
    out = []
    for b, (_, _, _, _, members) in enumerate(chunk):
        vals = []
        for e in members:
            s = int(pairs[e, 1])
            kind, layer, pos, index = graph.node_site(s)
            if kind == "feature":  # through every MLP output it writes (its own only, per layer)
                decoders = layers.decoders(layer).detach()[:, index].to(dtype)  # [n_out, d_model]
                written = torch.stack([g_mlp[layer + o][b, pos] for o in range(decoders.shape[0])])
                vals.append(float(graph.activations[s]) * (decoders * written).sum())
            elif kind == "error":
                vals.append(frozen.errors[layer, pos] @ g_mlp[layer][b, pos])
            else:
                vals.append(frozen.embed[pos] @ g_emb[b, pos])
        out.append(torch.stack(vals).detach())
    return out


__all__ = ["HeadSplit", "edge_heads"]
