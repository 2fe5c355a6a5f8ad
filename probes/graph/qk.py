"""Query-key attribution: which graph nodes formed an attention head's match.

An attribution graph's edges cross positions through frozen attention patterns, and
`probes.graph.heads` says which head carried an edge (its OV path). This module says why that
head looked there: it splits the head's pre-softmax score at (q_pos, k_pos) into a table over
query-side x key-side components.

Definition. In the frozen local replacement model (attention patterns and norm scales frozen at
the run's values, MLP outputs = transcoder features + error) the residual stream entering
block L at position p is an exact sum of components (the run's own values):
    the token embedding at p                       "Jordan (2)"          (the graph's token node)
    the position embedding at p                    "position @ Jordan (2)" (learned or sinusoidal)
    each earlier layer l's head outputs at p        "L0H1 out @ Jordan (2)"
    each earlier layer's graph features at p        "L0F258 @ Jordan (2)" (a * W_dec[f]; graph nodes;
                                                    for a cross-layer transcoder a * its decoders to
                                                    the layers before L, summed)
    each earlier layer's error at p                 "error L0 @ Jordan (2)" (the graph's error node)
    each earlier transcoder's skip path at p        "skip L0 @ Jordan (2)" (x_in W_skip; only with a skip)
    "constant": b_O, b_dec, and what the graph also leaves to its constants:
        the MLP outputs at positions before graph.zero_positions (BOS), and active features that
        are not nodes of the graph (dropped by max_feature_nodes).
With ln1's scale frozen, ln1 is affine: each component c becomes (c - mean(c)) / scale * w
(RMSNorm: c / scale * w) and ln1's bias b goes to the constant; then q_i = ln(c_i) W_Q[h] (and
b_Q to the constant), rotated at q_pos for rotary models; k_j likewise with the head's key head
(grouped-query attention: key head h // (n_heads / n_kv_heads)) at k_pos. So

    score[h, q_pos, k_pos] = q . k / sqrt(d_head) = sum_ij parts[i, j],
    parts[i, j] = q_i . k_j / sqrt(d_head),

exactly (the tests check the sum against the model's own hook_attn_scores to 1e-9 in float64).
A row sum is a query-side component's whole part ("what at `of` asked"), a column sum a
key-side component's ("what at `Jordan` answered"). The softmax compares a query's scores over
keys, so a part that would be the same for every key moves no attention weight; the table gives
the score, not that difference (compare with the tables at other k_pos).

Supported: per-layer transcoders or a cross-layer transcoder (probes.sae.clt), pre-norm blocks
(sequential or parallel attention and MLP), LayerNorm or RMSNorm, learned, sinusoidal or rotary
positions, grouped-query attention. Post-norm blocks (the
residual stream entering a block is itself normalised) are refused with a clear error.

    graph = attribution_graph(model, "Michael Jordan plays the sport of", tcs)
    qk = qk_attribution(model, graph, tcs, layer=1, head=3, q_pos=6, k_pos=2)
    qk.score, qk.pattern             # the head's score and attention weight of "of" on "Jordan"
    qk.top(5)                        # ["L0F22 @ of (6) x L0F155 @ Jordan (2): +0.297", ...] (query x key)
    qk.top_keys(5)                   # the key-side components by their whole (column) part
    split = edge_heads(model, graph, tcs, cross_edges)
    str(edge_qk(model, graph, tcs, split, e))
    # "L0F258 @ Jordan (2) -> (L1H3 0.488, formed by L0F22 @ of (6) x L0F155 @ Jordan (2) +0.297) -> L3F438 @ of (6)"
    graph.to_view(edge_notes=edge_notes(model, graph, tcs, split))   # the same on the browser's edge hover
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Optional, Sequence, Union

import torch
from einops import einsum

from models import Transformer
from models.components import LayerNorm, rotate
from probes.graph.graph import AttributionGraph
from probes.graph.heads import HeadSplit, check_graph_activations
from probes.graph.replacement import check_replacement, frozen_hook_names
from probes.sae.clt.model import CrossLayerTranscoder, Layered
from probes.sae.dictionary import SparseDictionary

Transcoders = Union[Sequence[SparseDictionary], CrossLayerTranscoder]

CONSTANT = "constant"
KINDS = ("token", "position", "head", "feature", "skip", "error", CONSTANT)


# ============================================================ the result
@dataclass
class QKAttribution:
    """Head (layer, head)'s score at (q_pos, k_pos) split over query-side x key-side components
    (module docstring).

    query_labels [n_q] / key_labels [n_k]: the components, the constant last; query_nodes /
    key_nodes: each component's graph node index, or None (positions, head outputs, skip paths,
    constant); query_kinds / key_kinds: each component's kind (KINDS);
    parts [n_q, n_k] float64 (its sum is the score); score: the model's own pre-softmax score
    (scaled by 1 / sqrt(d_head)); pattern: the model's attention weight of q_pos on k_pos."""

    layer: int
    head: int
    q_pos: int
    k_pos: int
    query_labels: list[str]
    key_labels: list[str]
    query_nodes: list[Optional[int]]
    key_nodes: list[Optional[int]]
    query_kinds: list[str]
    key_kinds: list[str]
    parts: torch.Tensor
    score: float
    pattern: float

    @property
    def head_label(self) -> str:
        return f"L{self.layer}H{self.head}"

    def by_query(self) -> torch.Tensor:
        """[n_q] each query-side component's whole part (row sums)."""
        return self.parts.sum(1)

    def by_key(self) -> torch.Tensor:
        """[n_k] each key-side component's whole part (column sums)."""
        return self.parts.sum(0)

    def _order(self, values: torch.Tensor, k: int) -> list[int]:
        if isinstance(k, bool) or not isinstance(k, int) or k < 0:
            raise ValueError(f"k must be an integer >= 0, got {k!r}")
        return values.abs().argsort(descending=True, stable=True)[: min(k, values.numel())].tolist()

    def top_pairs(self, k: int = 10) -> list[tuple[str, str, float]]:
        """The k largest parts by absolute value: (query label, key label, part), strongest first."""
        n_k = self.parts.shape[1]
        out = []
        for j in self._order(self.parts.flatten(), k):
            i, c = divmod(j, n_k)
            out.append((self.query_labels[i], self.key_labels[c], float(self.parts[i, c])))
        return out

    def top(self, k: int = 10) -> list[str]:
        """The k largest parts as "query x key: part", e.g. "L0F12 @ of (6) x L0F258 @ Jordan (2): +1.23"."""
        return [f"{q} x {key}: {v:+.3g}" for q, key, v in self.top_pairs(k)]

    def top_queries(self, k: int = 10) -> list[str]:
        """The k query-side components with the largest whole parts, "L0F12 @ of (6): +2.1"."""
        rows = self.by_query()
        return [f"{self.query_labels[i]}: {float(rows[i]):+.3g}" for i in self._order(rows, k)]

    def top_keys(self, k: int = 10) -> list[str]:
        """The k key-side components with the largest whole parts, "L0F258 @ Jordan (2): +1.7"."""
        cols = self.by_key()
        return [f"{self.key_labels[j]}: {float(cols[j]):+.3g}" for j in self._order(cols, k)]

    def by_kind(self) -> dict[str, float]:
        """The parts summed by (query kind, key kind), as "feature x error": the share of the
        score that features on both sides form, that errors form, ... (only pairs present)."""
        out: dict[str, float] = {}
        for qk in KINDS:
            rows = [i for i, k in enumerate(self.query_kinds) if k == qk]
            for kk in KINDS:
                cols = [j for j, k in enumerate(self.key_kinds) if k == kk]
                if rows and cols:
                    out[f"{qk} x {kk}"] = float(self.parts[rows][:, cols].sum())
        return out

    def share(self, k: int) -> float:
        """The sum of the k largest parts (by absolute value) over the score."""
        return sum(v for _, _, v in self.top_pairs(k)) / self.score

    def to_dict(self, k: int = 10) -> dict[str, Any]:
        """Plain JSON: the head, positions, score, pattern, the top k pairs, queries and keys."""
        return dict(layer=self.layer, head=self.head, q_pos=self.q_pos, k_pos=self.k_pos, score=self.score,
                    pattern=self.pattern, top=[dict(query=q, key=c, part=v) for q, c, v in self.top_pairs(k)],
                    top_queries=self.top_queries(k), top_keys=self.top_keys(k))


@dataclass
class EdgeQK:
    """One cross-position edge of a HeadSplit with the query-key attribution of the head that
    carries most of it, at (target position, source position).

    source / target: the nodes' labels; weight: the edge; direct: the head's one-hop part of it
    (HeadSplit.direct); qk: the head's score split; source_key_part: the source node's own
    key-side part of the score (its column sum: did the feature the head moved also draw the
    head's attention?), None when the source is not a key-side component (a feature at or
    above the head's layer)."""

    source: str
    target: str
    weight: float
    direct: float
    qk: QKAttribution
    source_key_part: Optional[float] = None

    def describe(self, k: int = 1) -> str:
        """The source, the head with its part of the edge and the k largest query-key pairs, the
        target: "L0F258 @ Jordan (2) -> (L1H3 0.488, formed by L0F22 @ of (6) x L0F155 @ Jordan (2)
        +0.297) -> L3F438 @ of (6)"."""
        pairs = "; ".join(f"{q} x {c} {v:+.3g}" for q, c, v in self.qk.top_pairs(k))
        return f"{self.source} -> ({self.qk.head_label} {self.direct:.3g}, formed by {pairs}) -> {self.target}"

    def __str__(self) -> str:
        return self.describe(1)


# ============================================================ the residual stream as components
def _check_int(value, name: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value < high:
        raise ValueError(f"{name} must be an integer in [0, {high}), got {value!r}")
    return value


def _check_layout(model: Transformer) -> None:
    cfg = model.cfg
    if cfg.norm_position != "pre":
        raise ValueError(f"query-key attribution supports pre-norm blocks only; this model has norm_position="
                         f"{cfg.norm_position!r} (the residual stream entering a block is normalised, not a sum "
                         "of components)")


class _Parts:
    """Components being collected: labels, graph nodes (or None), kinds (KINDS), vectors
    [d_model], and the running constant."""

    def __init__(self, like: torch.Tensor) -> None:
        self.labels: list[str] = []
        self.nodes: list[Optional[int]] = []
        self.kinds: list[str] = []
        self.vectors: list[torch.Tensor] = []
        self.constant = torch.zeros_like(like)

    def add(self, label: str, node: Optional[int], kind: str, vector: torch.Tensor) -> None:
        self.labels.append(label)
        self.nodes.append(node)
        self.kinds.append(kind)
        self.vectors.append(vector)

    def finish(self, total: torch.Tensor, name: str, pos: int) -> "_Parts":
        """Append the constant; check the components add up to `total` (the model's value)."""
        self.add(CONSTANT, None, CONSTANT, self.constant)
        self.stacked = torch.stack(self.vectors)  # [n, d_model]
        tol = 1e-9 if total.dtype == torch.float64 else 1e3 * torch.finfo(total.dtype).eps  # float32: 1.2e-4
        gap = float((self.stacked.sum(0) - total).abs().max())
        if gap > tol * (1 + float(total.abs().max())):
            raise RuntimeError(f"the components at position {pos} do not add up to {name} (largest difference "
                               f"{gap:.3g}): this model's block layout is not supported")
        return self


class _Run:
    """One forward pass of the model on the graph's prompt, cached at the sites the components
    need (hooked as the graph's own run hooks them), and every layer's features there."""

    def __init__(self, model: Transformer, graph: AttributionGraph, layers: Layered, layer: int):
        self.model, self.graph, self.layers, self.layer = model, graph, layers, layer
        names = ["hook_embed", f"blocks.{layer}.hook_resid_pre", f"blocks.{layer}.ln1.hook_scale",
                 f"blocks.{layer}.attn.hook_attn_scores", f"blocks.{layer}.attn.hook_pattern"]
        names += ["hook_pos_embed"] if "hook_pos_embed" in model.hook_dict else []
        for l in range(layer):
            names += [f"blocks.{l}.attn.hook_z", layers.out_hooks[l]]  # z, not hook_result: the graph's forward
        names += layers.in_hooks  # every layer's, to check the graph's features
        names += frozen_hook_names(model)  # hooked as the graph's run hooks them (same kernels, same numbers)
        names = list(dict.fromkeys(names))
        tokens = graph.token_ids.to(model.device)[None]
        with torch.no_grad():
            _, cache = model.run_with_cache(tokens, names_filter=names)
            self.cache = {n: cache[n][0] for n in names}  # batch axis dropped
            dtype = model.W_E.dtype
            self.acts = [layers.activate(layers.pre_acts(self.cache[h], l), l).to(dtype)  # [pos, n_features] each
                         for l, h in enumerate(layers.in_hooks)]

    def check_graph(self) -> None:
        """The graph's feature activations are this run's (same model, prompt and transcoders)."""
        check_graph_activations(self.graph, self.layers, self.acts)

    def components(self, pos: int) -> "_Parts":
        """The residual stream entering `layer` at `pos` as components (module docstring), the
        constant last; checked to add up to the model's hook_resid_pre there."""
        model, graph, cache, L = self.model, self.graph, self.cache, self.layer
        at = f"{graph.tokens[pos]} ({pos})"
        parts = _Parts(cache["hook_embed"][pos])
        parts.add(graph.node_label(graph.token_node(pos)), graph.token_node(pos), "token", cache["hook_embed"][pos])
        if "hook_pos_embed" in cache:
            parts.add(f"position @ {at}", None, "position", cache["hook_pos_embed"][pos])
        for l in range(L):
            W_O = model.blocks[l].attn.W_O.detach()
            z = cache[f"blocks.{l}.attn.hook_z"][pos]  # [head, d_head]
            result = einsum(z, W_O, "head d_head, head d_head d_model -> head d_model")
            for h in range(model.cfg.n_heads):
                parts.add(f"L{l}H{h} out @ {at}", None, "head", result[h])
            parts.constant += model.blocks[l].attn.b_O.detach()
            self._mlp_components(parts, l, pos, at)
        return parts.finish(cache[f"blocks.{L}.hook_resid_pre"][pos], f"blocks.{L}.hook_resid_pre", pos)

    def _mlp_components(self, parts: "_Parts", l: int, pos: int, at: str) -> None:
        """What layer l's transcoder and MLP add at `pos`: the graph's layer-l features, each
        a * (its decoders to layers l..L-1 summed: one row for a per-layer transcoder, several
        for a cross-layer one); MLP l's skip path and error; b_dec[l] and active features that
        are not graph nodes to the constant; before graph.zero_positions MLP l's whole output
        to the constant (no nodes there, as in the graph)."""
        graph, layers, L = self.graph, self.layers, self.layer
        mlp_out = self.cache[layers.out_hooks[l]][pos]
        if pos < graph.zero_positions:
            parts.constant += mlp_out
            return
        dtype = mlp_out.dtype
        acts = {i: self.acts[i][pos] for i in range(l + 1)}
        xs = {i: self.cache[layers.in_hooks[i]][pos] for i in range(l + 1)}
        written = layers.decoders(l).detach()[: L - l].sum(0).to(dtype)  # [n_features, d_model] to layers l..L-1
        kept = torch.zeros_like(acts[l], dtype=torch.bool)
        for node in ((graph.features[:, 0] == l) & (graph.features[:, 1] == pos)).nonzero().flatten().tolist():
            f = int(graph.features[node, 2])
            kept[f] = True
            parts.add(graph.node_label(node), node, "feature", acts[l][f] * written[f])
        dropped = (acts[l] != 0) & ~kept  # active, but not nodes (max_feature_nodes)
        parts.constant += acts[l][dropped] @ written[dropped]
        reconstruction = layers.output(l, acts, xs).to(dtype)
        from_features = torch.zeros_like(mlp_out)
        for i in range(l + 1):
            decoders = layers.decoders(i).detach()  # [layers it writes to, from i on, n_features, d_model]
            if l - i < decoders.shape[0]:
                from_features += acts[i] @ decoders[l - i].to(dtype)
        skip = layers.skip(l, xs[l])
        if skip is not None:
            parts.add(f"skip L{l} @ {at}", None, "skip", skip.to(dtype))
            from_features += skip.to(dtype)
        parts.constant += reconstruction - from_features  # b_dec[l]
        parts.add(graph.node_label(graph.error_node(l, pos)), graph.error_node(l, pos), "error",
                  mlp_out - reconstruction)

    def projected(self, pos: int, which: str, head: int) -> tuple["_Parts", torch.Tensor]:
        """The components at `pos` through the frozen ln1 and head `head`'s query ("q") or key
        ("k") map, rotated at `pos` for rotary models: the components and [n, d_head] (float64,
        whatever the model's dtype, so the table adds up to rounding), the constant last."""
        model, L = self.model, self.layer
        parts = self.components(pos)
        vectors = parts.stacked.double()
        ln = model.blocks[L].ln1
        scale = self.cache[f"blocks.{L}.ln1.hook_scale"][pos].double()  # [1]
        if isinstance(ln, LayerNorm):
            vectors = vectors - vectors.mean(-1, keepdim=True)
        normed = vectors / scale * ln.w.detach().double()
        if isinstance(ln, LayerNorm):
            normed[-1] = normed[-1] + ln.b.detach().double()
        attn = model.blocks[L].attn
        if which == "q":
            W, b = attn.W_Q.detach()[head], attn.b_Q.detach()[head]
        else:
            kv = head // (model.cfg.n_heads // model.cfg.n_kv_heads)
            W, b = attn.W_K.detach()[kv], attn.b_K.detach()[kv]
        out = einsum(normed, W.double(), "n d_model, d_model d_head -> n d_head")
        out[-1] = out[-1] + b.double()
        if model.cfg.positional == "rotary":
            cos, sin = attn.rotary_cos[pos: pos + 1].double(), attn.rotary_sin[pos: pos + 1].double()  # [1, rotary_dim]
            out = rotate(out[:, None, None], cos, sin, model.cfg.rotary_dim)[:, 0, 0]  # as [batch, pos, head, d_head]
        return parts, out


# ============================================================ the attribution
def _check(model: Transformer, graph: AttributionGraph, transcoders: Transcoders, layer, head, q_pos,
           k_pos) -> Layered:
    if not isinstance(model, Transformer):
        raise TypeError(f"model must be a models.Transformer, got {type(model).__name__}")
    _check_layout(model)
    layers = check_replacement(model, transcoders)
    if not isinstance(graph, AttributionGraph):
        raise TypeError(f"graph must be an AttributionGraph, got {type(graph).__name__}")
    cfg = model.cfg
    _check_int(layer, "layer", 0, cfg.n_layers)
    _check_int(head, "head", 0, cfg.n_heads)
    _check_int(q_pos, f"q_pos (the graph has {graph.n_pos} positions)", 0, graph.n_pos)
    _check_int(k_pos, f"k_pos (the graph has {graph.n_pos} positions)", 0, graph.n_pos)
    if k_pos > q_pos:
        raise ValueError(f"k_pos={k_pos} is after q_pos={q_pos}: the model is causal, a query attends only to "
                         "keys at or before it")
    if graph.token_ids.max() >= cfg.d_vocab or graph.n_layers != cfg.n_layers:
        raise ValueError("the graph was not built with this model (its tokens or layers do not fit): pass the "
                         "model the graph was built with")
    return layers


def qk_attribution(model: Transformer, graph: AttributionGraph, transcoders: Transcoders, layer: int, head: int,
                   q_pos: int, k_pos: int) -> QKAttribution:
    """Head (layer, head)'s pre-softmax score from `q_pos` to `k_pos` on the graph's prompt,
    split over query-side x key-side components (module docstring). `model` and
    `transcoders` are the ones the graph was built with (checked: the same active features).
    The model is left as it was (no hooks remain)."""
    layers = _check(model, graph, transcoders, layer, head, q_pos, k_pos)
    with torch.no_grad():
        run = _Run(model, graph, layers, layer)
        run.check_graph()
        queries, q = run.projected(q_pos, "q", head)
        keys, k = run.projected(k_pos, "k", head)
        parts = einsum(q, k, "n_q d_head, n_k d_head -> n_q n_k") / math.sqrt(model.cfg.d_head)
    return QKAttribution(
        layer=layer, head=head, q_pos=q_pos, k_pos=k_pos, query_labels=queries.labels, key_labels=keys.labels,
        query_nodes=queries.nodes, key_nodes=keys.nodes, query_kinds=queries.kinds, key_kinds=keys.kinds,
        parts=parts.detach().cpu(),
        score=float(run.cache[f"blocks.{layer}.attn.hook_attn_scores"][head, q_pos, k_pos]),
        pattern=float(run.cache[f"blocks.{layer}.attn.hook_pattern"][head, q_pos, k_pos]))


def _check_split(graph: AttributionGraph, split: HeadSplit) -> None:
    """`split` is a HeadSplit of `graph`'s edges (its labels are the graph's)."""
    if not isinstance(split, HeadSplit):
        raise TypeError(f"split must be a HeadSplit (probes.graph.edge_heads), got {type(split).__name__}")
    if not isinstance(graph, AttributionGraph):
        raise TypeError(f"graph must be an AttributionGraph, got {type(graph).__name__}")
    for e, (target, source) in enumerate(split.edges.tolist()):
        if not (0 <= target < graph.n_nodes and 0 <= source < graph.n_nodes) or (
                graph.node_label(target), graph.node_label(source)) != tuple(split.labels[e]):
            raise ValueError(f"the split's edge {e} ({split.labels[e][1]} -> {split.labels[e][0]}) is not between "
                             "those nodes of this graph: pass the graph the split was made from")


def edge_qk(model: Transformer, graph: AttributionGraph, transcoders: Transcoders, split: HeadSplit,
            edge: int, *, head: Optional[tuple[int, int]] = None) -> EdgeQK:
    """The query-key attribution of the head that carries edge `edge` of `split` (an index into
    split.edges): by default the head with the largest |direct part|, or `head` = (layer, head);
    at (the target's position, the source's position)."""
    _check_split(graph, split)
    if isinstance(edge, bool) or not isinstance(edge, int) or not 0 <= edge < split.n_edges:
        raise ValueError(f"edge must be an index in [0, {split.n_edges}) into split.edges, got {edge!r}")
    target, source = (int(v) for v in split.edges[edge])
    direct = split.direct[edge]  # [n_layers, n_heads]
    if head is None:
        layer, h = divmod(int(direct.abs().flatten().argmax()), split.n_heads)
    else:
        if not (isinstance(head, tuple) and len(head) == 2):
            raise ValueError(f"head must be a (layer, head) pair, got {head!r}")
        layer, h = head
        _check_int(layer, "head's layer", 0, split.n_layers)
        _check_int(h, "head's head", 0, split.n_heads)
    p_t, p_s = graph.node_site(target)[2], graph.node_site(source)[2]
    qk = qk_attribution(model, graph, transcoders, layer, h, p_t, p_s)
    own = [j for j, node in enumerate(qk.key_nodes) if node == source]
    return EdgeQK(source=split.labels[edge][1], target=split.labels[edge][0], weight=float(split.weights[edge]),
                  direct=float(direct[layer, h]), qk=qk,
                  source_key_part=float(qk.parts[:, own[0]].sum()) if own else None)


def edge_notes(model: Transformer, graph: AttributionGraph, transcoders: Transcoders,
               split: HeadSplit, *, k: int = 1) -> dict[tuple[int, int], str]:
    """{(target, source): note} for every edge of `split`, for the graph browser's edge hover
    (`graph.to_view(edge_notes=...)`): the head carrying most of the edge, its part, and the k
    largest query-key pairs of its score, one per line:
        via L1H3 0.488 (score 9.97, attention 0.994), formed by
          L0F22 @ of (6) x L0F155 @ Jordan (2) +0.297
    One attribution per (head, positions)."""
    _check_split(graph, split)
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be an integer >= 1, got {k!r}")
    done: dict[tuple[int, int, int, int], QKAttribution] = {}
    out = {}
    for e in range(split.n_edges):
        target, source = (int(v) for v in split.edges[e])
        layer, head = divmod(int(split.direct[e].abs().flatten().argmax()), split.n_heads)
        site = (layer, head, graph.node_site(target)[2], graph.node_site(source)[2])
        if site not in done:
            done[site] = qk_attribution(model, graph, transcoders, *site)
        qk = done[site]
        lines = [f"via {qk.head_label} {float(split.direct[e, layer, head]):.3g} (score {qk.score:.3g}, "
                 f"attention {qk.pattern:.3g}), formed by"]
        lines += [f"  {q} x {c} {v:+.3g}" for q, c, v in qk.top_pairs(k)]
        out[(target, source)] = "\n".join(lines)
    return out


__all__ = ["QKAttribution", "EdgeQK", "qk_attribution", "edge_qk", "edge_notes"]
