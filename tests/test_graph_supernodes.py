"""probes.graph.supernodes: suggested supernodes, on a hand-made graph (two features with the same
edge profile up to scale, one that differs, one with the same profile at another position), on
random graphs (min_similarity is monotone, every grouped pair clears it) and on the fact-world
Michael Jordan graph (every grouped pair's cosine and top promoted token recomputed here), and the
graph browser opening with the suggested groups made."""

import math
from types import SimpleNamespace

import pytest
import torch

from probes.graph.graph import AttributionGraph, Target
from probes.graph.supernodes import Supernode, suggest_supernodes
from probes.graph.view import graph_view

PROMPT = "Michael Jordan plays the sport of"

# features, sorted (layer, pos, index): A, B, C at (L0, pos 2); F at (L0, pos 3); D at (L1, 2); E at (L1, 3)
A, B, C, F, D, E = range(6)
FEATURES = [(0, 2, 1), (0, 2, 4), (0, 2, 7), (0, 3, 2), (1, 2, 3), (1, 3, 5)]
N_LAYERS, N_POS = 2, 4
TOK = [6 + N_LAYERS * N_POS + p for p in range(N_POS)]  # token nodes 14..17
TGT = 6 + N_LAYERS * N_POS + N_POS  # 18
N = TGT + 1


def _hand_graph() -> AttributionGraph:
    """A reads token 2 (1.0) and writes D (0.5) and the target (0.3); B is A times 2 (activation 2);
    C reads tokens 2 and 1 and writes D negatively and E; F at position 3 has exactly A's profile."""
    adj = torch.zeros(N, N, dtype=torch.float64)
    for t, s, w in [(A, TOK[2], 1.0), (D, A, 0.5), (TGT, A, 0.3),
                    (B, TOK[2], 2.0), (D, B, 1.0), (TGT, B, 0.6),
                    (C, TOK[2], 1.0), (C, TOK[1], -1.0), (D, C, -0.5), (E, C, 0.8),
                    (F, TOK[2], 1.0), (D, F, 0.5), (TGT, F, 0.3),
                    (E, TOK[3], 0.7), (TGT, D, 1.2), (TGT, E, 0.9)]:
        adj[t, s] = w
    values = adj.sum(1)
    values[6:TGT] = math.nan
    return AttributionGraph(prompt="a b c d", token_ids=torch.arange(N_POS), tokens=["<bos>", "a", "b", "c"],
                            n_layers=N_LAYERS, features=torch.tensor(FEATURES), targets=[Target("x", 3, 0.5, torch.zeros(4))],
                            activations=torch.tensor([1.0, 2.0, 1.0, 1.0, 1.5, 1.0], dtype=torch.float64),
                            adjacency=adj, values=values)


def _keep_all(graph) -> SimpleNamespace:
    return SimpleNamespace(node_mask=torch.ones(graph.n_nodes, dtype=torch.bool), edge_mask=graph.adjacency != 0,
                           cumulative=torch.linspace(0, 1, graph.n_nodes, dtype=torch.float64))


def _cosine(graph, pruned, i: int, j: int) -> float:
    """Independently: the cosine of [kept in-edges, kept out-edges] of nodes i and j."""
    keep = pruned.edge_mask & pruned.node_mask[:, None] & pruned.node_mask[None, :]
    W = torch.where(keep, graph.adjacency.double(), torch.zeros((), dtype=torch.float64))
    u, v = torch.cat([W[i], W[:, i]]), torch.cat([W[j], W[:, j]])
    return float(u @ v / (u.norm() * v.norm()))


def _grouped(groups) -> set[int]:
    return {n for g in groups for n in g.nodes}


# ---------------------------------------------------------------------------- hand-made graph
def test_same_profile_up_to_scale_is_grouped_the_other_is_not():
    graph = _hand_graph()
    pruned = _keep_all(graph)
    assert _cosine(graph, pruned, A, B) == pytest.approx(1.0)
    assert _cosine(graph, pruned, A, F) == pytest.approx(1.0)  # the same profile, at another position
    assert _cosine(graph, pruned, A, C) < 0.5
    groups = suggest_supernodes(graph, pruned)
    assert [g.nodes for g in groups] == [[A, B]]
    (g,) = groups
    assert isinstance(g, Supernode) and g.score == pytest.approx(1.0)
    assert g.name == "b (2) L0" and "2 features" in g.reason
    assert g.to_dict() == {"name": "b (2) L0", "nodes": [A, B]}
    # a threshold of -1 groups everything a cell holds (complete linkage down to -1), still never across cells
    loose = suggest_supernodes(graph, pruned, min_similarity=-1.0)
    assert [g.nodes for g in loose] == [[A, B, C]]
    # a layer band of 2 puts D (L1 @ 2) in A's cell; its profile differs, so nothing changes at 0.8
    assert [g.nodes for g in suggest_supernodes(graph, pruned, layer_band=2)] == [[A, B]]
    assert suggest_supernodes(graph, pruned) == suggest_supernodes(graph, pruned)  # deterministic


def test_dropped_edges_and_nodes_do_not_count():
    graph = _hand_graph()
    pruned = _keep_all(graph)
    pruned.edge_mask[B, TOK[2]] = False  # B no longer reads token 2: its profile is no longer A's
    assert _cosine(graph, pruned, A, B) < 0.8
    assert suggest_supernodes(graph, pruned) == []
    pruned = _keep_all(graph)
    pruned.node_mask[B] = False  # a dropped feature is never suggested
    assert suggest_supernodes(graph, pruned, min_similarity=-1.0)[0].nodes == [A, C]


def test_bad_input_is_a_clear_error():
    graph, pruned = _hand_graph(), _keep_all(_hand_graph())
    with pytest.raises(ValueError, match=r"min_similarity must be a cosine similarity in \[-1, 1\]"):
        suggest_supernodes(graph, pruned, min_similarity=1.5)
    with pytest.raises(ValueError, match="max_groups must be a positive int"):
        suggest_supernodes(graph, pruned, max_groups=0)
    with pytest.raises(ValueError, match="give both model and transcoders"):
        suggest_supernodes(graph, pruned, transcoders=[])
    with pytest.raises(ValueError, match="pruned has no 'edge_mask'"):
        suggest_supernodes(graph, SimpleNamespace(node_mask=pruned.node_mask))
    view_groups = [{"name": "g", "nodes": [A, B]}]
    with pytest.raises(ValueError, match="two supernodes are named 'g'"):
        graph_view(graph, pruned=pruned, supernodes=view_groups + [{"name": "g", "nodes": [C]}])
    with pytest.raises(ValueError, match="node 1 is in two supernodes, 'g' and 'h'"):
        graph_view(graph, pruned=pruned, supernodes=view_groups + [{"name": "h", "nodes": [B]}])
    with pytest.raises(ValueError, match=r"holds 99: nodes are graph node indices, ints in \[0, 19\)"):
        graph_view(graph, pruned=pruned, supernodes=[{"name": "g", "nodes": [99]}])


def test_view_ships_the_groups_as_node_ids():
    graph = _hand_graph()
    pruned = _keep_all(graph)
    pruned.node_mask[C] = False
    data = graph_view(graph, pruned=pruned, supernodes=suggest_supernodes(graph, _keep_all(graph), min_similarity=-1)).data
    # circuit-tracer ids "{layer}_{index}_{pos}"; C is not shown, so it is left out (with a note)
    assert data["supernodes"] == [{"name": "b (2) L0", "nodes": ["0_1_2", "0_4_2"]}]
    assert "supernodes" not in graph_view(graph, pruned=pruned).data


# ---------------------------------------------------------------------------- random graphs
def _random_graph(seed: int) -> AttributionGraph:
    """3 cells of 8 features (L0 @ 1, L0 @ 2, L1 @ 2); each feature's edges are one of 3 prototypes
    times a random scale plus noise, so similarities spread over [-1, 1]."""
    g = torch.Generator().manual_seed(seed)
    feats = sorted((layer, pos, idx) for layer, pos in ((0, 1), (0, 2), (1, 2)) for idx in range(8))
    n_f, n_layers, n_pos = len(feats), 2, 3
    n = n_f + n_layers * n_pos + n_pos + 1
    target = n - 1
    proto = torch.randn(3, n, n, generator=g, dtype=torch.float64)
    adj = torch.zeros(n, n, dtype=torch.float64)
    for i, (layer, pos, _) in enumerate(feats):
        k = int(torch.randint(0, 3, (), generator=g))
        scale = float(torch.rand((), generator=g)) + 0.5
        noise = float(torch.rand((), generator=g))
        sources = [n_f + n_layers * n_pos + p for p in range(pos + 1)] + \
                  [j for j, (lj, pj, _) in enumerate(feats) if lj < layer and pj <= pos]
        readers = [target] + [j for j, (lj, pj, _) in enumerate(feats) if lj > layer and pj >= pos]
        for s in sources:
            adj[i, s] = scale * (proto[k, 0, s] + noise * torch.randn((), generator=g, dtype=torch.float64))
        for t in readers:
            if adj[t, i] == 0:
                adj[t, i] = scale * (proto[k, 1, t] + noise * torch.randn((), generator=g, dtype=torch.float64))
    return AttributionGraph(prompt="p", token_ids=torch.arange(n_pos), tokens=["<bos>", "u", "v"], n_layers=n_layers,
                            features=torch.tensor(feats), activations=torch.rand(n_f, generator=g) + 0.5,
                            targets=[Target("x", 1, 0.5, torch.zeros(4))], adjacency=adj, values=adj.sum(1))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_min_similarity_is_monotone_and_never_mixes_cells(seed):
    graph = _random_graph(seed)
    pruned = _keep_all(graph)
    previous = None
    sizes = []
    for threshold in [-1.0, -0.5, 0.0, 0.3, 0.5, 0.7, 0.8, 0.9, 0.95, 0.99, 1.0]:
        groups = suggest_supernodes(graph, pruned, min_similarity=threshold, max_groups=1000)
        grouped = _grouped(groups)
        assert sum(len(g.nodes) for g in groups) == len(grouped)  # no node in two groups
        if previous is not None:
            assert grouped <= previous, threshold
        previous = grouped
        sizes.append(len(grouped))
        for g in groups:
            assert len(g.nodes) >= 2 and g.nodes == sorted(g.nodes)
            assert len({tuple(graph.features[i, :2].tolist()) for i in g.nodes}) == 1  # one (layer, position)
            cosines = [_cosine(graph, pruned, i, j) for i in g.nodes for j in g.nodes if i < j]
            assert min(cosines) >= threshold - 1e-9 and g.score == pytest.approx(min(cosines))
    assert sizes[0] == graph.n_features and sizes[-1] < sizes[0]  # -1 groups each cell whole; 1.0 far fewer


# ---------------------------------------------------------------------------- the fact-world graph
@pytest.fixture(scope="module")
def jordan():
    from models import load
    from probes.graph import attribution_graph
    from probes.sae import load_transcoders

    model, transcoders = load("factworld"), load_transcoders("factworld")
    graph = attribution_graph(model, PROMPT, transcoders)
    return SimpleNamespace(model=model, transcoders=transcoders, graph=graph, pruned=graph.prune())


def _top_token(model, transcoder, index: int) -> int:
    """Independently: argmax over the vocabulary of the decoder row through ln_final (centred, weight) and W_U."""
    d = transcoder.W_dec[index].double()
    d = (d - d.mean()) * model.get_parameter("ln_final.w").double()
    return int((d @ model.W_U.double()).argmax())


def test_jordan_graph_groups(jordan):
    graph, pruned, model = jordan.graph, jordan.pruned, jordan.model
    for with_tokens in (False, True):
        extra = (jordan.transcoders, model) if with_tokens else ()
        groups = suggest_supernodes(graph, pruned, *extra, min_similarity=0.8)
        print(f"\n{'with' if with_tokens else 'without'} top tokens: {len(groups)} groups, sizes "
              f"{[len(g.nodes) for g in groups]}: {[g.name for g in groups]}")
        assert groups, "the Jordan graph has features with near-identical edge profiles"
        assert len({g.name for g in groups}) == len(groups)
        kept = set(pruned.nodes.tolist())
        for g in groups:
            assert set(g.nodes) <= kept and all(graph.node_kind(i) == "feature" for i in g.nodes)
            layers_pos = {tuple(graph.features[i, :2].tolist()) for i in g.nodes}
            assert len(layers_pos) == 1
            layer, pos = layers_pos.pop()
            assert g.name.startswith(f"{graph.tokens[pos].strip()} ({pos}) L{layer}")
            for i in g.nodes:
                for j in g.nodes:
                    if i < j:
                        assert _cosine(graph, pruned, i, j) >= 0.8 - 1e-9, (g.name, i, j)
            if with_tokens:
                tops = {_top_token(model, jordan.transcoders[layer], int(graph.features[i, 2])) for i in g.nodes}
                assert len(tops) == 1
                assert g.name.endswith(": " + model.to_str_tokens(torch.tensor(list(tops)))[0].strip())
    # tokens only for the names: the same groups as without a model, named by their most common top token
    named = suggest_supernodes(graph, pruned, jordan.transcoders, model, same_top_token=False)
    print(f"named by the most common top token: {[g.name for g in named]}")
    assert [g.nodes for g in named] == [g.nodes for g in suggest_supernodes(graph, pruned)]
    for g in named:
        layer = int(graph.features[g.nodes[0], 0])
        tops = [_top_token(model, jordan.transcoders[layer], int(graph.features[i, 2])) for i in g.nodes]
        counts = {t: tops.count(t) for t in tops}
        most = max(counts.values())
        words = sorted(model.to_str_tokens(torch.tensor([t]))[0] for t in counts if counts[t] == most)
        share = "" if most == len(tops) else f" ({most}/{len(tops)})"
        assert g.top_token == words[0] and g.name.split(" #")[0].endswith(f": {words[0].strip()}{share}"), g.name
    strict = suggest_supernodes(graph, pruned, min_similarity=0.95, max_groups=1000)
    assert _grouped(strict) <= _grouped(suggest_supernodes(graph, pruned, min_similarity=0.8, max_groups=1000))


def test_browser_opens_with_the_suggested_groups(browser, jordan, tmp_path):
    graph, pruned = jordan.graph, jordan.pruned
    groups = suggest_supernodes(graph, pruned)
    assert len(groups) >= 2
    page = browser.open(graph_view(graph, pruned=pruned, supernodes=groups).save_html(tmp_path / "jordan.html"))
    shown = page.eval_on_selector_all(".iv-attr-subgraph .iv-attr-supernode",
                                      "els => els.map(e => [e.dataset.name, e.dataset.members])")
    expected = [[g.name, ",".join(f"{int(graph.features[i, 0])}_{int(graph.features[i, 2])}_{int(graph.features[i, 1])}"
                                  for i in g.nodes)] for g in groups]
    assert shown == expected
    pinned = {int(v) for v in page.eval_on_selector_all("path.iv-attr-node[data-pinned]", "els => els.map(e => e.dataset.node)")}
    assert pinned == _grouped(groups)
    assert page.locator("svg.iv-attr-mini .iv-attr-mini-node").count() == len(groups)
    # editable: ungroup the first; its members stay pinned, loose
    page.locator(".iv-attr-supernode").first.locator("button.iv-attr-ungroup").click()
    assert page.locator(".iv-attr-supernode").count() == len(groups) - 1
    assert page.locator(".iv-attr-pinned-item").count() == len(groups[0].nodes)
    assert browser.problems(page) == []
    page.context.close()
