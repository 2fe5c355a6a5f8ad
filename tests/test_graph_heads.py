"""Cross-position edges split by head (probes.graph.heads), checked against an independent frozen
model made of plain hooks, in float64: every attention pattern set to the clean run's diagonal
plus one head's [p_t, p_s] entry, norm scales set to the clean run's, MLP outputs held at the
clean run's plus the skip path's change; removing the source then moves the target by its
one-hop part through that head. With the clean patterns instead, the same harness gives the
graph's edge, which checks the harness."""

import json
import math
import re

import pytest
import torch

from models import load
from probes.graph.build import attribution_graph
from probes.graph.heads import HeadSplit, edge_heads
from probes.sae import SparseDictionary, load_transcoders
from tests.conftest import make_model
from test_graph_build import random_transcoders

PROMPT = "Michael Jordan plays the sport of"


# ============================================================ set-up
def relu_transcoders(model, seed: int = 0, n_features: int = 32) -> list[SparseDictionary]:
    """Random ReLU transcoders (with a skip path) whose weights are all non-trivial."""
    return random_transcoders(model, skip=True, n_features=n_features, seed=seed, offset=50)


@pytest.fixture(scope="module")
def small():
    model = make_model("gpt2", dtype="float64", seed=7)
    with torch.no_grad():  # stronger heads, so that paths with two hops are not negligible
        for l in range(model.cfg.n_layers):
            model.blocks[l].attn.W_O.mul_(4.0)
    tcs = relu_transcoders(model)
    tokens = torch.randint(0, 50, (8,), generator=torch.Generator().manual_seed(11))
    graph = attribution_graph(model, tokens, tcs, targets=[3, 17, 41], batch_size=32, progress=False)
    return model, tcs, tokens, graph


@pytest.fixture(scope="module")
def factworld():
    model = load("factworld").double()
    tcs = [tc.double() for tc in load_transcoders("factworld")]
    graph = attribution_graph(model, PROMPT, tcs, progress=False)
    return model, tcs, model.to_tokens(PROMPT)[0], graph


# ============================================================ the independent frozen model
def clean_cache(model, tokens, tcs):
    names = [n for n in model.hook_names if n.endswith(("attn.hook_pattern", "hook_scale", "hook_mlp_out"))]
    names += [tc.in_hook for tc in tcs]
    with torch.no_grad():
        _, cache = model.run_with_cache(tokens[None], names_filter=names)
    return cache


def skip_of(tc, x):
    return x @ tc.W_skip if tc.W_skip is not None else torch.zeros_like(x)


def patterns_for(model, cache, hop):
    """{hook name: pattern [1, head, dst, src]}: the clean patterns (hop None), or their diagonals
    plus head hop = (layer, head, p_t, p_s)'s entry [p_t, p_s]."""
    out = {}
    for l in range(model.cfg.n_layers):
        name = f"blocks.{l}.attn.hook_pattern"
        clean = cache[name]
        if hop is None:
            out[name] = clean
            continue
        pat = torch.zeros_like(clean)
        idx = torch.arange(clean.shape[-1])
        pat[:, :, idx, idx] = clean[:, :, idx, idx]
        layer, head, p_t, p_s = hop
        if layer == l:
            pat[0, head, p_t, p_s] = clean[0, head, p_t, p_s]
        out[name] = pat
    return out


def frozen_target(model, tcs, tokens, cache, graph, target, patterns, *, mlp_delta=None, embed=None):
    """The target's value (a feature's W_enc column at its transcoder input, or a logit target's
    vector at ln_final's last position) in the frozen run with these patterns."""
    xs = {}
    hooks = [(n, lambda x, hook: patterns[hook.name]) for n in patterns]
    hooks += [(n, lambda x, hook: cache[hook.name]) for n in cache if n.endswith("hook_scale")]
    if embed is not None:
        hooks.append(("hook_embed", lambda x, hook: embed[None]))
    for l, tc in enumerate(tcs):
        def read(x, hook, l=l):
            xs[l] = x[0]

        def write(y, hook, l=l, tc=tc):
            out = cache[tc.out_hook][0] + skip_of(tc, xs[l]) - skip_of(tc, cache[tc.in_hook][0])
            return (out + (mlp_delta[l] if mlp_delta is not None else 0))[None]
        hooks += [(tc.in_hook, read), (tc.out_hook, write)]
    with torch.no_grad(), model.hooks(fwd_hooks=hooks):
        final = model.ln_final(model(tokens[None], stop_at_layer=model.cfg.n_layers))[0]
    kind, layer, pos, index = graph.node_site(target)
    if kind == "feature":
        return float(xs[layer][pos] @ tcs[layer].W_enc.detach()[:, index])
    return float(final[-1] @ graph.targets[target - graph.target_nodes.start].vector)


def independent_part(model, tcs, tokens, cache, graph, target, source, hop=None):
    """The target's change when the source is removed (its decoder contribution a * W_dec[f]
    taken out of its MLP output, its error vector taken out, or its token embedding zeroed), in
    the frozen run with the clean patterns (hop None: the edge) or the one-hop patterns."""
    patterns = patterns_for(model, cache, hop)
    base = frozen_target(model, tcs, tokens, cache, graph, target, patterns)
    kind, layer, pos, index = graph.node_site(source)
    delta = [torch.zeros(len(tokens), model.cfg.d_model, dtype=torch.float64) for _ in tcs]
    embed = None
    x = cache[tcs[layer].in_hook][0, pos] if layer is not None else None
    if kind == "feature":
        delta[layer][pos] = -tcs[layer].encode(x)[index] * tcs[layer].W_dec[index]
    elif kind == "error":
        delta[layer][pos] = -(cache[tcs[layer].out_hook][0, pos] - tcs[layer](x))
    else:
        embed = model.W_E[tokens].detach().clone()
        embed[pos] = 0
    removed = frozen_target(model, tcs, tokens, cache, graph, target, patterns, mlp_delta=delta, embed=embed)
    return base - removed


def cross_edges(graph, min_weight=1e-6):
    """(target, source) pairs of every cross-position edge with |weight| > min_weight."""
    A = graph.adjacency
    out = []
    for t, s in (A.abs() > min_weight).nonzero().tolist():
        if graph.node_site(t)[2] != graph.node_site(s)[2]:
            out.append((t, s))
    return out


def kind_pair(graph, edge):
    t, s = edge
    return graph.node_kind(s), graph.node_kind(t), graph.node_site(s)[1], graph.node_site(t)[1]


def sample_by_kind(graph, edges, per_kind):
    """Up to per_kind edges of each (source kind, target kind, source layer, target layer), strongest first."""
    groups: dict = {}
    for e in sorted(edges, key=lambda e: -abs(float(graph.adjacency[e[0], e[1]]))):
        groups.setdefault(kind_pair(graph, e), []).append(e)
    return [e for g in groups.values() for e in g[:per_kind]]


# ============================================================ 1. the parts, independently
def test_each_head_part_is_the_one_hop_run_and_the_parts_add_up(small):
    model, tcs, tokens, graph = small
    cache = clean_cache(model, tokens, tcs)
    edges = sample_by_kind(graph, cross_edges(graph), per_kind=3)
    kinds = {kind_pair(graph, e)[:2] for e in edges}
    assert {("feature", "feature"), ("feature", "target"), ("error", "feature"), ("token", "feature"),
            ("token", "target")} <= kinds
    split = edge_heads(model, graph, tcs, edges, batch_size=16)
    assert isinstance(split, HeadSplit) and split.direct.shape == (len(edges), 2, model.cfg.n_heads)
    # By construction: the parts and the remainder are the edge.
    assert torch.equal(split.weights, graph.adjacency[[t for t, _ in edges], [s for _, s in edges]])
    total = split.direct.sum((1, 2)) + split.remainder
    assert torch.allclose(total, split.weights, rtol=0, atol=1e-12)
    checked = 0
    for e, (t, s) in enumerate(edges):
        # The harness gives the graph's edge with the clean patterns.
        edge = independent_part(model, tcs, tokens, cache, graph, t, s)
        assert math.isclose(edge, float(graph.adjacency[t, s]), abs_tol=1e-10), graph.node_label(s)
        p_t, p_s = graph.node_site(t)[2], graph.node_site(s)[2]
        for layer in range(model.cfg.n_layers):
            for head in range(model.cfg.n_heads):
                want = independent_part(model, tcs, tokens, cache, graph, t, s, hop=(layer, head, p_t, p_s))
                got = float(split.direct[e, layer, head])
                assert math.isclose(got, want, abs_tol=1e-10), (graph.node_label(s), graph.node_label(t), layer, head)
                checked += abs(want) > 1e-3
    assert checked >= 20  # real, non-zero parts were compared
    # Heads split the edges in earnest: several heads carry parts, and some edges keep a remainder.
    assert (split.direct.abs() > 1e-3).flatten(1).sum(1).max() >= 3
    assert split.remainder.abs().max() > 1e-5  # two hops (rounding is ~1e-17)


def test_batching_does_not_change_the_parts(small):
    model, tcs, _, graph = small
    edges = sample_by_kind(graph, cross_edges(graph), per_kind=2)
    a = edge_heads(model, graph, tcs, edges, batch_size=64)
    b = edge_heads(model, graph, tcs, torch.tensor(edges), batch_size=5)
    assert torch.allclose(a.direct, b.direct, rtol=0, atol=1e-12) and torch.equal(a.edges, b.edges)


# ============================================================ 2. one hop only: no remainder
def test_layer0_mlp_to_layer1_feature_edges_are_all_one_hop(small):
    """From a layer-0 MLP output (feature or error) to a layer-1 feature the only crossings lie in
    layer 1's attention, one hop: the heads' parts are the whole edge. From a token embedding to
    a layer-1 feature there are two-hop paths (layer 0 then layer 1): a remainder is left."""
    model, tcs, _, graph = small
    edges = sample_by_kind(graph, cross_edges(graph), per_kind=30)  # the strongest of each kind
    one_hop = [e for e in edges if kind_pair(graph, e) in {("feature", "feature", 0, 1), ("error", "feature", 0, 1)}]
    two_hop = [e for e in edges if kind_pair(graph, e) == ("token", "feature", None, 1)]
    assert len(one_hop) == 60 and len(two_hop) == 30
    split = edge_heads(model, graph, tcs, one_hop + two_hop)
    n = len(one_hop)
    assert split.remainder[:n].abs().max() < 1e-9
    assert split.weights[:n].abs().min() > 1e-3
    assert torch.equal(split.direct[:n, 0], torch.zeros_like(split.direct[:n, 0]))  # layer-0 heads are below the source
    assert split.remainder[n:].abs().max() > 1e-5  # rounding is ~1e-17
    # With the remainder zero, the one-hop parts of layer 1 add up to the edge.
    assert torch.allclose(split.direct[:n, 1].sum(1), split.weights[:n], rtol=0, atol=1e-9)


# ============================================================ 3. Michael Jordan: who moves the subject
def test_jordan_to_of_edges_are_carried_by_layer1_heads(factworld):
    model, tcs, tokens, graph = factworld
    pruned = graph.prune()
    jordan, of = 2, 6
    assert graph.tokens[jordan].strip() == "Jordan" and graph.tokens[of].strip() == "of"
    edges = [(t, s) for t, s in pruned.edges().tolist()
             if graph.node_site(s)[2] == jordan and graph.node_site(t)[2] == of and graph.node_kind(s) == "feature"]
    edges = sorted(edges, key=lambda e: -abs(float(graph.adjacency[e[0], e[1]])))[:16]
    assert len(edges) == 16
    split = edge_heads(model, graph, tcs, edges)
    by_head = split.by_head()
    # Nearly all of these edges is one hop, and the hops are made in layer 1.
    assert float(split.remainder.abs().sum()) < 0.02 * float(split.weights.abs().sum())
    assert float(by_head[1].sum()) > 0.7 * float(split.weights.sum())
    top_layer, top_head = divmod(int(by_head.argmax()), model.cfg.n_heads)
    assert (top_layer, top_head) == (1, 3)
    # The carrying head attends from "of" to "Jordan" in the clean run (docs/recall.md: 0.99).
    cache = clean_cache(model, tokens, tcs)
    assert float(cache["blocks.1.attn.hook_pattern"][0, 3, of, jordan]) > 0.9
    # The strongest two parts, independently.
    for e in range(2):
        t, s = edges[e]
        for head in (1, 3):
            want = independent_part(model, tcs, tokens, cache, graph, t, s, hop=(1, head, of, jordan))
            assert math.isclose(float(split.direct[e, 1, head]), want, abs_tol=1e-8)
    assert "-> (L1H3 " in split.top(1)[0]


# ============================================================ 4. the result and bad input
def test_top_and_to_dict(small):
    model, tcs, _, graph = small
    edges = sample_by_kind(graph, cross_edges(graph), per_kind=1)
    split = edge_heads(model, graph, tcs, edges)
    top = split.top(4)
    assert len(top) == 4
    flat = split.direct.flatten().abs()
    e, rest = divmod(int(flat.argmax()), 2 * model.cfg.n_heads)
    layer, head = divmod(rest, model.cfg.n_heads)
    t, s = edges[e]
    part = float(split.direct[e, layer, head])
    want = f"{graph.node_label(s)} -> (L{layer}H{head} {part:.3g}) -> {graph.node_label(t)}"
    assert top[0] == want
    values = [float(re.search(r"\(L\d+H\d+ (\S+)\)", line).group(1)) for line in top]
    assert [abs(v) for v in values] == sorted((abs(v) for v in values), reverse=True)
    d = json.loads(json.dumps(split.to_dict()))
    assert len(d["edges"]) == len(edges) and d["top"][:4] == top
    first = d["edges"][0]
    assert (first["target"], first["source"]) == edges[0]
    assert math.isclose(sum(map(sum, first["direct"])) + first["remainder"], first["weight"], abs_tol=1e-12)


def test_bad_edges_are_refused_with_a_clear_message(small):
    model, tcs, _, graph = small
    A = graph.adjacency
    same = next((t, s) for t, s in (A != 0).nonzero().tolist() if graph.node_site(t)[2] == graph.node_site(s)[2])
    with pytest.raises(ValueError, match="stays at one position"):
        edge_heads(model, graph, tcs, [same])
    zero = next((t, s) for t, s in (A == 0).nonzero().tolist()
                if graph.node_kind(t) == "feature" and graph.node_kind(s) == "feature")
    with pytest.raises(ValueError, match="not an edge of the graph"):
        edge_heads(model, graph, tcs, [zero])
    with pytest.raises(ValueError, match="out of range"):
        edge_heads(model, graph, tcs, [(graph.n_nodes, 0)])
    with pytest.raises(ValueError, match="token node, which has no inputs"):
        edge_heads(model, graph, tcs, [(graph.token_node(3), graph.token_node(1))])
    with pytest.raises(ValueError, match="non-empty"):
        edge_heads(model, graph, tcs, [])
    good = cross_edges(graph)[:1]
    with pytest.raises(ValueError, match="batch_size"):
        edge_heads(model, graph, tcs, good, batch_size=0)
    with pytest.raises(ValueError, match="built with"):
        edge_heads(model, graph, relu_transcoders(model, seed=99), good)


# ============================================================ 4. a cross-layer transcoder
class _CLTLayer:
    """One source layer of a CLT, with what the harness above reads of a transcoder."""

    def __init__(self, clt, layer):
        self.in_hook, self.out_hook, self.W_skip = clt.in_hooks[layer], clt.out_hooks[layer], None
        self.W_enc = clt.W_enc[layer].detach()


def clt_part(model, clt, views, tokens, cache, graph, target, source, hop=None, own_layer_only=False):
    """The target's change when a CLT feature is removed from every MLP output it writes (or,
    own_layer_only, from its own layer's alone), in the frozen run with the clean or one-hop patterns."""
    patterns = patterns_for(model, cache, hop)
    base = frozen_target(model, views, tokens, cache, graph, target, patterns)
    _, layer, pos, index = graph.node_site(source)
    delta = [torch.zeros(len(tokens), model.cfg.d_model, dtype=torch.float64) for _ in views]
    a = float(graph.activations[source])
    for o in range(1 if own_layer_only else clt.n_layers - layer):
        delta[layer + o][pos] = -a * clt.W_dec[layer][o, index].detach()
    return base - frozen_target(model, views, tokens, cache, graph, target, patterns, mlp_delta=delta)


def test_a_cross_layer_transcoders_edges_split_by_head_through_every_mlp_it_writes():
    from tests.test_clt import random_clt, random_model

    model = random_model(3)
    with torch.no_grad():  # stronger heads, so that every hop carries something
        for l in range(model.cfg.n_layers):
            model.blocks[l].attn.W_O.mul_(3.0)
    clt = random_clt(model)
    tokens = torch.randint(0, 50, (6,), generator=torch.Generator().manual_seed(3))
    graph = attribution_graph(model, tokens, clt, targets=[3, 17], batch_size=16, progress=False)
    views = [_CLTLayer(clt, l) for l in range(clt.n_layers)]
    cache = clean_cache(model, tokens, views)
    edges = [e for e in sample_by_kind(graph, cross_edges(graph), per_kind=2) if graph.node_kind(e[1]) == "feature"
             and graph.node_site(e[1])[1] == 0]
    assert {graph.node_kind(t) for t, _ in edges} == {"feature", "target"}
    split = edge_heads(model, graph, clt, edges, batch_size=7)
    through_later = 0.0
    for e, (t, s) in enumerate(edges):
        assert math.isclose(clt_part(model, clt, views, tokens, cache, graph, t, s), float(graph.adjacency[t, s]),
                            abs_tol=1e-10)
        p_t, p_s = graph.node_site(t)[2], graph.node_site(s)[2]
        for layer in range(model.cfg.n_layers):
            for head in range(model.cfg.n_heads):
                hop = (layer, head, p_t, p_s)
                want = clt_part(model, clt, views, tokens, cache, graph, t, s, hop)
                assert math.isclose(float(split.direct[e, layer, head]), want, abs_tol=1e-10), (e, layer, head)
                own = clt_part(model, clt, views, tokens, cache, graph, t, s, hop, own_layer_only=True)
                through_later = max(through_later, abs(want - own))
    assert through_later > 1e-3  # the decoders to later MLPs carry part of the head's share
    assert (split.direct.abs() > 1e-3).sum() >= 5
    # and the query-key attribution of the carrying head reads the same split
    from probes.graph import edge_qk

    layer, head = divmod(int(split.direct[0].abs().flatten().argmax()), split.n_heads)
    assert f"(L{layer}H{head} " in str(edge_qk(model, graph, clt, split, 0)) and "formed by" in str(
        edge_qk(model, graph, clt, split, 0))
