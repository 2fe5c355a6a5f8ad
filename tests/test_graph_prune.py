"""probes.graph.prune: influence, find_threshold, pruning and the graph scores on hand-made graphs.

The small graph used throughout: 2 layers, 3 positions, node order
    features f0 = L0 @ pos 1 (node 0), f1 = L0 @ pos 2 (node 1), f2 = L1 @ pos 2 (node 2)
    errors   e(l, p) = 3 + 3 l + p (nodes 3..8; e02 = node 5)
    tokens   t0, t1, t2 = nodes 9, 10, 11
    targets  T = node 12 (and T' = node 13 where there are two)
"""

import math

import pytest
import torch

from probes.graph.graph import AttributionGraph, Target
from probes.graph.prune import (PrunedGraph, edge_scores, find_threshold, graph_scores, influence_of,
                                node_influence, normalize_matrix, prune)

F0, F1, F2, E02, T0, T1, T2, T = 0, 1, 2, 5, 9, 10, 11, 12


def make_graph(edges, n_layers=2, n_pos=3, features=((0, 1, 5), (0, 2, 7), (1, 2, 3)), probs=(1.0,)):
    """An AttributionGraph with adjacency[t, s] = w for each (t, s, w) in edges."""
    feats = torch.tensor(features, dtype=torch.long).reshape(-1, 3)
    n_nodes = len(feats) + (n_layers + 1) * n_pos + len(probs)
    A = torch.zeros(n_nodes, n_nodes, dtype=torch.float64)
    for t, s, w in edges:
        A[t, s] = w
    targets = [Target(label=f"tok{i}", token=i, prob=p, vector=torch.zeros(4)) for i, p in enumerate(probs)]
    values = A.sum(1).clone()
    values[len(feats):len(feats) + (n_layers + 1) * n_pos] = math.nan
    return AttributionGraph(prompt="a b c", token_ids=torch.arange(n_pos), tokens=[f"w{i}" for i in range(n_pos)],
                            n_layers=n_layers, features=feats, activations=torch.ones(len(feats)), targets=targets,
                            adjacency=A, values=values)


# T <- f2 (weight 1); f2 <- f0 (3), e02 (1); f0 <- t1 (1).  Normalised: f2 reads f0 .75, e02 .25.
# Influence (w = 1 on T): f2 = 1, f0 = .75, e02 = .25, t1 = .75 (via f0); everything else 0.
CHAIN = [(T, F2, 1.0), (F2, F0, 3.0), (F2, E02, -1.0), (F0, T1, 2.0)]


def closed_form(A, w):
    """w((I - A_hat)^-1 - I) by a linear solve: x (I - A_hat) = w  <=>  (I - A_hat)^T x^T = w^T."""
    A_hat = A.abs() / A.abs().sum(1, keepdim=True).clamp(min=1e-10)
    eye = torch.eye(A.shape[0], dtype=A.dtype)
    return torch.linalg.solve((eye - A_hat).T, w) - w


def random_graph(seed, n_layers=3, n_pos=4, n_feat=12, n_targets=2, density=0.4):
    """Features at random (layer, pos), sorted; each feature reads earlier-layer features at positions <= its own,
    errors of earlier layers and tokens; targets read everything. Error and token rows are zero."""
    g = torch.Generator().manual_seed(seed)
    layers = torch.randint(0, n_layers, (n_feat,), generator=g)
    pos = torch.randint(1, n_pos, (n_feat,), generator=g)
    feats = sorted(set(zip(layers.tolist(), pos.tolist(), torch.randint(0, 50, (n_feat,), generator=g).tolist())))
    nf = len(feats)
    n_err = n_layers * n_pos
    probs = torch.rand(n_targets, generator=g).tolist()
    edges = []
    sources = [(i, feats[i][0], feats[i][1]) for i in range(nf)]
    sources += [(nf + l * n_pos + p, l, p) for l in range(n_layers) for p in range(n_pos)]
    sources += [(nf + n_err + p, -1, p) for p in range(n_pos)]
    readers = [(i, feats[i][0], feats[i][1]) for i in range(nf)]
    readers += [(nf + n_err + n_pos + k, n_layers, n_pos - 1) for k in range(n_targets)]
    for t, lt, pt in readers:
        for s, ls, ps in sources:
            if ls < lt and ps <= pt and torch.rand(1, generator=g) < density:
                edges.append((t, s, float(torch.randn(1, generator=g))))
    return make_graph(edges, n_layers=n_layers, n_pos=n_pos, features=feats, probs=probs)


# ------------------------------------------------------------------ influence
def test_normalize_matrix_rows_sum_to_one_and_zero_rows_stay_zero():
    A = torch.tensor([[0.0, -3.0, 1.0], [0.0, 0.0, 0.0], [2.0, 2.0, 0.0]])
    expected = torch.tensor([[0.0, 0.75, 0.25], [0.0, 0.0, 0.0], [0.5, 0.5, 0.0]])
    assert torch.allclose(normalize_matrix(A), expected)


def test_influence_matches_the_hand_computation_and_the_closed_form():
    graph = make_graph(CHAIN)
    infl = node_influence(graph)
    expected = torch.zeros(graph.n_nodes, dtype=torch.float64)
    expected[[F2, F0, E02, T1]] = torch.tensor([1.0, 0.75, 0.25, 0.75], dtype=torch.float64)
    assert torch.allclose(infl, expected)
    w = torch.zeros(graph.n_nodes, dtype=torch.float64)
    w[T] = 1.0
    assert torch.allclose(infl, closed_form(graph.adjacency, w))


@pytest.mark.parametrize("seed", range(5))
def test_influence_equals_the_closed_form_on_random_graphs(seed):
    graph = random_graph(seed)
    w = torch.zeros(graph.n_nodes, dtype=torch.float64)
    w[graph.target_nodes] = graph.target_probs.double()
    expected = closed_form(graph.adjacency, w)
    assert expected.abs().sum() > 0.1  # something reaches the targets
    assert torch.allclose(node_influence(graph), expected, atol=1e-12)
    assert torch.all(node_influence(graph)[graph.target_nodes] == 0)
    # batched weights: each row its own series
    A_hat = normalize_matrix(graph.adjacency)
    both = influence_of(A_hat, torch.stack([w, 2 * w]))
    assert torch.allclose(both[1], 2 * expected, atol=1e-12)


def test_influence_on_a_cycle_converges_or_says_why_not():
    loop = torch.tensor([[0.0, 1.0], [1.0, 0.0]])  # row-normalised 2-cycle: terms never decay
    with pytest.raises(ValueError, match="cycle"):
        influence_of(loop, torch.tensor([1.0, 0.0]), max_iterations=50)
    damped = torch.tensor([[0.0, 0.5], [0.5, 0.0]], dtype=torch.float64)  # spectral radius 1/2: converges
    w = torch.tensor([1.0, 0.0], dtype=torch.float64)
    exact = torch.linalg.solve((torch.eye(2, dtype=torch.float64) - damped).T, w) - w
    assert torch.allclose(influence_of(damped, w), exact, atol=1e-12)


# ------------------------------------------------------------------ find_threshold
def test_find_threshold_on_known_vectors():
    scores = torch.tensor([2.0, 4.0, 1.0, 3.0])  # sorted 4 3 2 1, cumulative .4 .7 .9 1
    assert find_threshold(scores, 0.0) == 4.0
    assert find_threshold(scores, 0.4) == 4.0
    assert find_threshold(scores, 0.5) == 3.0
    assert find_threshold(scores, 0.75) == 2.0
    assert find_threshold(scores, 0.95) == 1.0
    assert find_threshold(scores, 1.0) == 1.0
    assert find_threshold(torch.tensor([[0.0, 5.0], [5.0, 0.0]]), 0.9) == 5.0  # trailing zeros never needed
    with pytest.raises(ValueError, match="all zero"):
        find_threshold(torch.zeros(3), 0.5)
    with pytest.raises(ValueError, match="non-negative"):
        find_threshold(torch.tensor([1.0, -1.0]), 0.5)
    with pytest.raises(ValueError, match=r"fraction must be a number in \[0, 1\]"):
        find_threshold(scores, 1.5)


# ------------------------------------------------------------------ pruning by hand
def masks(n, nodes, edges):
    node_mask = torch.zeros(n, dtype=torch.bool)
    node_mask[list(nodes)] = True
    edge_mask = torch.zeros(n, n, dtype=torch.bool)
    for t, s in edges:
        edge_mask[t, s] = True
    return node_mask, edge_mask


def test_prune_keeps_what_the_rules_say():
    graph = make_graph(CHAIN)
    always = [T0, T1, T2, T]
    # influence f2 1, f0 .75, t1 .75, e02 .25 (sum 2.75): cumulative .36 .64 .91 1.
    # node_threshold .95 -> threshold .25: f2 f0 t1 e02 pass, f1 and the other errors (0) do not.
    # P = A; I_P + w: T 1, f2 1, f0 .75, e02 .25. Edge scores: (T,f2) 1, (f2,f0) .75, (f0,t1) .75, (f2,e02) .25;
    # edge_threshold .9 -> cumulative .36 .64 .91 -> threshold .75: (f2,e02) dropped, then e02 has no out-edge.
    result = prune(graph, node_threshold=0.95, edge_threshold=0.9)
    node_mask, edge_mask = masks(graph.n_nodes, [F2, F0] + always, [(T, F2), (F2, F0), (F0, T1)])
    assert torch.equal(result.node_mask, node_mask)
    assert torch.equal(result.edge_mask, edge_mask)
    assert result.n_nodes == 6 and result.n_edges == 3
    assert result.nodes.tolist() == [F0, F2, T0, T1, T2, T]
    sub = result.adjacency  # rows/columns in nodes order
    assert sub.shape == (6, 6)
    assert sub[5, 1] == 1.0 and sub[1, 0] == 3.0 and sub[0, 3] == 2.0 and (sub != 0).sum() == 3
    assert sorted(map(tuple, result.edges().tolist())) == sorted([(T, F2), (F2, F0), (F0, T1)])

    # edge_threshold .98: every edge kept, e02 survives (it passed the node threshold; errors are not automatic)
    result = prune(graph, node_threshold=0.95, edge_threshold=0.98)
    node_mask, edge_mask = masks(graph.n_nodes, [F2, F0, E02] + always, [(T, F2), (F2, F0), (F0, T1), (F2, E02)])
    assert torch.equal(result.node_mask, node_mask) and torch.equal(result.edge_mask, edge_mask)

    # node_threshold .9 -> threshold .75: e02 (.25) dropped by the node pass, so f2 reads only f0 in P
    result = prune(graph, node_threshold=0.9, edge_threshold=0.98)
    node_mask, edge_mask = masks(graph.n_nodes, [F2, F0] + always, [(T, F2), (F2, F0), (F0, T1)])
    assert torch.equal(result.node_mask, node_mask) and torch.equal(result.edge_mask, edge_mask)

    # node_threshold .3 -> threshold 1: only f2 passes; in P it has no input, so it goes (features need one)
    result = prune(graph, node_threshold=0.3, edge_threshold=0.98)
    node_mask, edge_mask = masks(graph.n_nodes, always, [])
    assert torch.equal(result.node_mask, node_mask) and torch.equal(result.edge_mask, edge_mask)

    # cumulative: the cumulative share at each node's rank (f2 first: 1/2.75)
    assert result.cumulative[F2] == pytest.approx(1 / 2.75)
    assert result.cumulative[E02] == pytest.approx(1.0)
    assert sorted([result.cumulative[F0].item(), result.cumulative[T1].item()]) == pytest.approx([1.75 / 2.75,
                                                                                                 2.5 / 2.75])


def test_prune_cleanup_cascades_to_a_fixed_point():
    # T <- f2 (1) and T <- f1 (1); f2 <- f0 (1); f0 <- t1 (1); f1 <- t2 (1). Influence (w = 1): f2 .5 f1 .5,
    # f0 .5, t1 .5, t2 .5. Edge scores: (T,f2) .5 (T,f1) .5 (f2,f0) .5 (f0,t1) .5 (f1,t2) .5: all tie, all kept.
    # Now weaken (f2, f0) relative by giving f2 a second, stronger input from e02 (weight 3):
    # f2 reads e02 .75, f0 .25. Influence: f2 .5, f1 .5, e02 .375, f0 .125, t1 .125, t2 .5 (sum 2.125).
    # Node pass at .999: all with influence > 0 kept. Edge scores: (T,f2) .5 (T,f1) .5 (f1,t2) .5 (f2,e02) .375
    # (f2,f0) .125 (f0,t1) .125 (sum 2.125). edge_threshold .9 -> cumulative .235 .47 .71 .88 .94 -> .125 kept: all.
    # edge_threshold .85 -> threshold .375: (f2,f0) and (f0,t1) dropped -> f0 has neither in- nor out-edge: gone.
    graph = make_graph([(T, F2, 1.0), (T, F1, 1.0), (F2, F0, 1.0), (F2, E02, 3.0), (F0, T1, 1.0), (F1, T2, 1.0)])
    result = prune(graph, node_threshold=0.999, edge_threshold=0.85)
    node_mask, edge_mask = masks(graph.n_nodes, [F1, F2, E02, T0, T1, T2, T], [(T, F2), (T, F1), (F1, T2), (F2, E02)])
    assert torch.equal(result.node_mask, node_mask) and torch.equal(result.edge_mask, edge_mask)
    # T <- f1 tiny: f1 fails the node pass (so its edge to t2 goes; t2 stays as a token); f2 lives on through e02
    graph = make_graph([(T, F2, 1.0), (T, F1, 1e-3), (F2, E02, 1.0), (F1, T2, 1.0)])
    result = prune(graph, node_threshold=0.99, edge_threshold=0.99)
    node_mask, edge_mask = masks(graph.n_nodes, [F2, E02, T0, T1, T2, T], [(T, F2), (F2, E02)])
    assert torch.equal(result.node_mask, node_mask) and torch.equal(result.edge_mask, edge_mask)


def test_edge_scores_are_normalised_weight_times_reach():
    graph = make_graph(CHAIN)
    w = torch.zeros(graph.n_nodes, dtype=torch.float64)
    w[T] = 1.0
    S = edge_scores(graph.adjacency, w)
    expected = torch.zeros_like(S)
    expected[T, F2], expected[F2, F0], expected[F2, E02], expected[F0, T1] = 1.0, 0.75, 0.25, 0.75
    assert torch.allclose(S, expected)


def test_bad_input_is_refused_clearly():
    graph = make_graph(CHAIN)
    for bad in (-0.1, 1.01, float("nan"), "0.5", True):
        with pytest.raises(ValueError, match="node_threshold must be a number in"):
            prune(graph, node_threshold=bad)
        with pytest.raises(ValueError, match="edge_threshold must be a number in"):
            prune(graph, edge_threshold=bad)
    no_targets = make_graph([(F2, F0, 1.0)], probs=())
    for call in (node_influence, prune, graph_scores):
        with pytest.raises(ValueError, match="no targets"):
            call(no_targets)
    zero_prob = make_graph(CHAIN, probs=(0.0,))
    with pytest.raises(ValueError, match="positive sum"):
        prune(zero_prob)
    with pytest.raises(ValueError, match="square"):
        normalize_matrix(torch.zeros(2, 3))
    assert torch.equal(graph.adjacency, make_graph(CHAIN).adjacency)  # nothing changed


# ------------------------------------------------------------------ property test on random DAGs
@pytest.mark.parametrize("seed", range(12))
def test_prune_properties_on_random_graphs(seed):
    graph = random_graph(seed, density=0.5)
    tokens_and_targets = torch.zeros(graph.n_nodes, dtype=torch.bool)
    tokens_and_targets[graph.token_nodes] = True
    tokens_and_targets[graph.target_nodes] = True
    inner = torch.arange(graph.n_nodes) < graph.token_nodes.start
    is_feature = torch.arange(graph.n_nodes) < graph.n_features
    previous = None
    for edge_threshold in (0.3, 0.6, 0.8, 0.9, 0.98, 1.0):
        r = prune(graph, node_threshold=0.8, edge_threshold=edge_threshold)
        assert isinstance(r, PrunedGraph)
        assert r.node_mask[tokens_and_targets].all()
        assert not r.edge_mask[~r.node_mask].any() and not r.edge_mask[:, ~r.node_mask].any()
        assert not r.edge_mask[graph.adjacency == 0].any()  # only real edges
        out_edge, in_edge = r.edge_mask.any(0), r.edge_mask.any(1)
        assert (out_edge[r.node_mask & inner]).all()  # kept features and errors feed something kept
        assert (in_edge[r.node_mask & is_feature]).all()  # kept features read something kept
        if previous is not None:  # a higher edge threshold keeps a superset
            assert not (previous.node_mask & ~r.node_mask).any()
            assert not (previous.edge_mask & ~r.edge_mask).any()
        previous = r
    # the node pass: a higher node threshold lets through a superset (before the edge pass and cleanup)
    infl = node_influence(graph)
    passed = [infl >= find_threshold(infl, t) for t in (0.2, 0.5, 0.8, 0.95, 1.0)]
    for low, high in zip(passed, passed[1:]):
        assert not (low & ~high).any()
    for t in (0.2, 0.5, 0.8, 0.95):
        kept = prune(graph, node_threshold=t).node_mask
        assert not (kept & ~tokens_and_targets & ~(infl >= find_threshold(infl, t))).any()
        share = infl[infl >= find_threshold(infl, t)].sum() / infl.sum()
        assert share >= t - 1e-12


# ------------------------------------------------------------------ scores
def test_replacement_is_one_without_error_edges_and_falls_as_errors_grow():
    clean = make_graph([(T, F2, 1.0), (F2, F0, 3.0), (F0, T1, 2.0), (T, F1, 1.0), (F1, T2, 1.0)])
    assert graph_scores(clean) == {"replacement": pytest.approx(1.0), "completeness": pytest.approx(1.0)}
    previous = 1.0
    for err in (0.5, 1.0, 3.0, 10.0):
        graph = make_graph([(T, F2, 1.0), (F2, F0, 3.0), (F2, E02, err), (F0, T1, 2.0), (T, F1, 1.0), (F1, T2, 1.0)])
        scores = graph_scores(graph)
        assert scores["replacement"] < previous
        previous = scores["replacement"]


def test_scores_by_hand_and_by_a_linear_solve():
    graph = make_graph(CHAIN)
    # tokens: t1 .75; errors: e02 .25 -> replacement .75.
    # rows: f2 is .25 error; I + w: T 1, f2 1, f0 .75, e02 .25, t1 .75 (sum 3.75)
    # completeness = (1 + .75 * 1 + .75 + .25 + .75) / 3.75
    scores = graph_scores(graph)
    assert scores["replacement"] == pytest.approx(0.75)
    assert scores["completeness"] == pytest.approx(3.5 / 3.75)

    for seed in range(4):
        graph = random_graph(seed + 100, n_targets=3)
        w = torch.zeros(graph.n_nodes, dtype=torch.float64)
        w[graph.target_nodes] = graph.target_probs.double()
        infl = closed_form(graph.adjacency, w)
        A = graph.adjacency.abs()
        A_hat = A / A.sum(1, keepdim=True).clamp(min=1e-10)
        tok, err = infl[graph.token_nodes].sum(), infl[graph.error_nodes].sum()
        error_share = torch.stack([A_hat[i, graph.error_nodes].sum() for i in range(graph.n_nodes)])
        reach = infl + w
        completeness = ((1 - error_share) * reach).sum() / reach.sum()
        scores = graph_scores(graph)
        assert scores["replacement"] == pytest.approx(float(tok / (tok + err)), abs=1e-10)
        assert scores["completeness"] == pytest.approx(float(completeness), abs=1e-10)
        assert 0 < scores["replacement"] < 1 and 0 < scores["completeness"] < 1


def test_the_graph_methods_delegate_here():
    graph = make_graph(CHAIN)
    assert torch.equal(graph.influence(), node_influence(graph))
    assert torch.equal(graph.prune(0.95, 0.9).edge_mask, prune(graph, 0.95, 0.9).edge_mask)
    assert graph.scores() == graph_scores(graph)
