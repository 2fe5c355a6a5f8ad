"""Attribution graphs (probes.graph.build): every edge is checked against an independent run of
the frozen model made with plain hooks (patterns and norm scales set to the clean run's, MLP
outputs held at the clean run's plus the skip path's change), in float64:
  * row sum + constant == value, and the constant is the frozen model's output with every
    source (feature decoder contributions, errors, token embeddings) removed;
  * removing one source moves every target by minus its edge;
  * the transcoders' features plus the errors spliced in reproduce the model's logits;
on the fact-world model with its shipped transcoders and on random models of three
architectures with random ReLU transcoders (one set with a skip connection)."""

import math

import pytest
import torch

from interp.progress import Cancelled, watching
from models import load
from probes.graph.build import attribution_graph, logit_difference_target
from probes.graph.graph import AttributionGraph, Target
from probes.graph.replacement import frozen_parameters, replacement_forward
from probes.sae import SparseDictionary, attached, load_transcoders
from tests.conftest import make_model

PROMPT = "Michael Jordan plays the sport of"


# ============================================================ set-up
def random_transcoders(model, skip: bool, n_features: int = 32, seed: int = 0, offset: int = 10) -> list[SparseDictionary]:
    """ReLU transcoders with non-trivial random weights (about half the features active); `offset`
    shifts the weights' generator seeds."""
    d, out = model.cfg.d_model, []
    for l in range(model.cfg.n_layers):
        tc = SparseDictionary.transcoder(model, l, n_features, activation="relu", skip=skip, seed=seed + l)
        g = torch.Generator().manual_seed(seed + offset + l)
        with torch.no_grad():
            for p, scale in ((tc.W_enc, 1 / d ** 0.5), (tc.b_enc, 0.5), (tc.b_pre, 0.1), (tc.b_dec, 0.1),
                             (tc.W_skip, 0.2 / d ** 0.5)):
                if p is not None:
                    p.copy_(scale * torch.randn(p.shape, generator=g, dtype=torch.float64))
        out.append(tc)
    return out


@pytest.fixture(scope="module")
def factworld():
    model = load("factworld").double()
    tcs = [tc.double() for tc in load_transcoders("factworld")]
    tokens = model.to_tokens(PROMPT)[0]
    graph = attribution_graph(model, PROMPT, tcs, progress=False)
    return model, tcs, tokens, graph


RANDOM = {"gpt2": True, "llama_gqa": False, "neox_partial_rotary": False}  # arch -> skip connection


_RANDOM_CASES: dict = {}


def random_graph(arch: str):
    """(model, transcoders, tokens, graph) of a random float64 model of `arch` (built once)."""
    if arch not in _RANDOM_CASES:
        model = make_model(arch, dtype="float64", seed=3)
        tcs = random_transcoders(model, skip=RANDOM[arch])
        tokens = torch.randint(0, 50, (8,), generator=torch.Generator().manual_seed(5))
        graph = attribution_graph(model, tokens, tcs, targets=[3, 17, 41], batch_size=16, zero_positions=1,
                                  progress=False)
        _RANDOM_CASES[arch] = model, tcs, tokens, graph
    return _RANDOM_CASES[arch]


@pytest.fixture(params=list(RANDOM))
def random_case(request):
    return random_graph(request.param)


@pytest.fixture(params=["factworld"] + list(RANDOM))
def case(request, factworld):
    return factworld if request.param == "factworld" else random_graph(request.param)


# ============================================================ the independent frozen model
def clean_cache(model, tokens, tcs):
    names = [n for n in model.hook_names if n.endswith(("attn.hook_pattern", "hook_scale", "hook_mlp_out"))]
    names += [tc.in_hook for tc in tcs]
    with torch.no_grad():
        logits, cache = model.run_with_cache(tokens[None], names_filter=names)
    return logits[0], cache


def skip_of(tc, x):
    return x @ tc.W_skip if tc.W_skip is not None else torch.zeros_like(x)


def frozen_run(model, tokens, tcs, cache, *, embed=None, mlp_delta=None, mlp_const=None):
    """The model with patterns and norm scales set to the clean run's; MLP l's output = clean +
    skip(x) - skip(x_clean) + mlp_delta[l], or skip(x) + mlp_const[l] (mlp_const given); the
    token embeddings replaced by `embed` [pos, d] if given. Returns (x_in per layer [pos, d],
    logits [pos, vocab], ln_final's output [pos, d])."""
    xs = {}
    hooks = [(n, lambda x, hook: cache[hook.name]) for n in cache if n.endswith(("hook_pattern", "hook_scale"))]
    if embed is not None:
        hooks.append(("hook_embed", lambda x, hook: embed[None]))
    for l, tc in enumerate(tcs):
        def read(x, hook, l=l):
            xs[l] = x[0]

        def write(y, hook, l=l, tc=tc):
            if mlp_const is not None:
                return (skip_of(tc, xs[l]) + mlp_const[l])[None]
            out = cache[tc.out_hook][0] + skip_of(tc, xs[l]) - skip_of(tc, cache[tc.in_hook][0])
            return (out + (mlp_delta[l] if mlp_delta is not None else 0))[None]
        hooks += [(tc.in_hook, read), (tc.out_hook, write)]
    with torch.no_grad(), model.hooks(fwd_hooks=hooks):
        resid = model(tokens[None], stop_at_layer=model.cfg.n_layers)
        final = model.ln_final(resid)[0]
        logits = model(tokens[None])[0]
    return [xs[l] for l in range(len(tcs))], logits, final


def node_values(graph, tcs, xs, final):
    """[n_features + n_targets] the graph's feature pre-activations and target values in a run."""
    pre = [tc.pre_acts(x) for tc, x in zip(tcs, xs)]  # [pos, n_features] per layer
    feats = torch.stack([pre[l][p, f] for l, p, f in graph.features.tolist()]) if graph.n_features else final[:0, 0]
    targets = torch.stack([t.vector @ final[-1] for t in graph.targets])
    return torch.cat([feats, targets])


def value_rows(graph):
    return torch.cat([torch.arange(graph.n_features), torch.arange(graph.target_nodes.start, graph.n_nodes)])


# ============================================================ 1. sums and constants
def test_rows_sum_to_the_values_and_the_constant_is_the_run_with_every_source_removed(case):
    model, tcs, tokens, graph = case
    zp = graph.zero_positions
    _, cache = clean_cache(model, tokens, tcs)
    # The values, read off the clean run.
    xs_clean = [cache[tc.in_hook][0] for tc in tcs]
    _, _, clean_final = frozen_run(model, tokens, tcs, cache)
    rows = value_rows(graph)
    assert torch.allclose(graph.values[rows], node_values(graph, tcs, xs_clean, clean_final), atol=1e-10)
    assert graph.values[graph.error_nodes].isnan().all() and graph.values[graph.token_nodes].isnan().all()
    # Every source removed: token embeddings 0, each MLP writes only b_dec (and its skip path),
    # except at the zeroed positions, where its whole output (minus the skip path) stays.
    const = []
    for l, tc in enumerate(tcs):
        c = tc.b_dec.expand(len(tokens), -1).clone()
        c[:zp] = cache[tc.out_hook][0, :zp] - skip_of(tc, cache[tc.in_hook][0, :zp])
        const.append(c)
    xs, _, final = frozen_run(model, tokens, tcs, cache, embed=torch.zeros(len(tokens), model.cfg.d_model,
                                                                            dtype=torch.float64), mlp_const=const)
    expected = node_values(graph, tcs, xs, final)
    assert torch.allclose(graph.constants[rows], expected, atol=1e-9), (graph.constants[rows] - expected).abs().max()
    # The constants are not trivially the values (the edges carry most of them).
    assert (graph.values[rows] - expected).abs().max() > 0.1


def test_the_target_values_are_the_demeaned_logits(factworld):
    model, tcs, tokens, graph = factworld
    logits, _ = clean_cache(model, tokens, tcs)
    b_U = model.unembed.b_U.detach()
    for i, t in enumerate(graph.targets):
        demeaned = logits[-1, t.token] - logits[-1].mean() - (b_U[t.token] - b_U.mean())
        assert math.isclose(float(graph.values[graph.target_node(i)]), float(demeaned), abs_tol=1e-9)


# ============================================================ 2. edges are direct effects
def test_removing_a_source_moves_every_target_by_minus_its_edge(case):
    model, tcs, tokens, graph = case
    _, cache = clean_cache(model, tokens, tcs)
    xs0, _, final0 = frozen_run(model, tokens, tcs, cache)
    base = node_values(graph, tcs, xs0, final0)
    assert torch.allclose(base, graph.values[value_rows(graph)], atol=1e-10)  # the frozen run is the clean run
    d, n_pos = model.cfg.d_model, len(tokens)
    picks = torch.linspace(0, graph.n_features - 1, 6).long().tolist()
    checked = 0
    for node in picks + [graph.error_node(0, n_pos - 1), graph.error_node(1, 2), graph.token_node(1),
                         graph.token_node(n_pos - 1)]:
        delta = [torch.zeros(n_pos, d, dtype=torch.float64) for _ in tcs]
        embed = None
        kind, layer, pos, index = graph.node_site(node)
        if kind == "feature":
            delta[layer][pos] = -graph.activations[node] * tcs[layer].W_dec[index]
        elif kind == "error":
            # The error vector, independently: the MLP output minus the transcoder's output.
            x = cache[tcs[layer].in_hook][0, pos]
            delta[layer][pos] = -(cache[tcs[layer].out_hook][0, pos] - tcs[layer](x))
        else:
            embed = model.W_E[tokens].detach().clone()
            embed[pos] = 0
        xs, _, final = frozen_run(model, tokens, tcs, cache, embed=embed, mlp_delta=delta)
        moved = node_values(graph, tcs, xs, final) - base
        edge = graph.adjacency[value_rows(graph), node]
        assert torch.allclose(moved, -edge, atol=1e-9), (graph.node_label(node), (moved + edge).abs().max())
        checked += int(edge.abs().max() > 1e-3)
    assert checked >= 6  # the sources picked have real effects


def test_edges_respect_layers_and_positions(case):
    _, _, _, graph = case
    A = graph.adjacency
    src_layer = torch.full((graph.n_nodes,), -1)
    src_pos = torch.full((graph.n_nodes,), -1)
    for i in range(graph.n_nodes):
        kind, layer, pos, _ = graph.node_site(i)
        src_layer[i] = -1 if kind == "token" else layer
        src_pos[i] = pos
    for t in range(graph.n_features):
        l_t, p_t = int(graph.features[t, 0]), int(graph.features[t, 1])
        bad = (src_layer >= l_t) | (src_pos > p_t)
        assert (A[t, bad] == 0).all(), graph.node_label(t)
    # Error and token rows are empty; nothing feeds the targets' columns; targets see everything.
    assert (A[graph.n_features: graph.target_nodes.start] == 0).all()
    assert (A[:, graph.target_nodes] == 0).all()
    assert (A[graph.target_nodes, graph.feature_nodes] != 0).any(1).all()
    # Zeroed positions: no features, and their error columns are zero.
    assert (graph.features[:, 1] >= graph.zero_positions).all()
    for l in range(graph.n_layers):
        assert (A[:, graph.error_node(l, 0)] == 0).all()
    assert (A[graph.target_nodes, graph.error_node(0, graph.n_pos - 1)] != 0).all()


# ============================================================ 3. the replacement reproduces the model
def test_features_plus_errors_reproduce_the_logits(case):
    model, tcs, tokens, graph = case
    logits, cache = clean_cache(model, tokens, tcs)
    zp = graph.zero_positions
    with torch.enable_grad(), frozen_parameters(model, *tcs):
        run = replacement_forward(model, tokens, tcs, batch=2)
    assert torch.allclose(run.logits, logits, atol=1e-10)
    # The graph's active features, decoded, plus the run's errors, spliced in as the MLP outputs.
    dense = [torch.zeros(len(tokens), tc.cfg.n_features, dtype=torch.float64) for tc in tcs]
    for (l, p, f), a in zip(graph.features.tolist(), graph.activations):
        dense[l][p, f] = a
    xs = {}

    def read(x, hook):
        xs[hook.name] = x[0]

    def write(y, hook):
        l = int(hook.name.split(".")[1])
        tc = tcs[l]
        out = tc.decode(dense[l], xs[tc.in_hook]) + run.errors[l]
        out[:zp] = y[0, :zp]  # zeroed positions: their MLP outputs are constants
        return out[None]
    hooks = [(tc.in_hook, read) for tc in tcs] + [(tc.out_hook, write) for tc in tcs]
    with torch.no_grad():
        spliced = model.run_with_hooks(tokens[None], fwd_hooks=hooks)[0]
    assert torch.allclose(spliced, logits, atol=1e-9)
    # Without the errors it is a different model (the errors are not trivially zero).
    assert max(float(e[zp:].abs().max()) for e in run.errors) > 1e-3


# ============================================================ 4. Michael Jordan
def test_michael_jordan_graph(factworld):
    model, tcs, tokens, graph = factworld
    assert isinstance(graph, AttributionGraph)
    assert graph.targets[0].label == "basketball" and graph.targets[0].token == model.to_single_token("basketball")
    assert graph.targets[0].prob > 0.95 and graph.n_targets == 1  # one token already covers 0.95
    # The active features, counted independently from the attached transcoders.
    with attached(model, tcs), torch.no_grad():
        _, cache = model.run_with_cache(tokens[None], names_filter=lambda n: n.endswith("hook_feature_acts"))
    n_active = sum(int((cache[f"blocks.{l}.transcoder.hook_feature_acts"][0, 1:] != 0).sum()) for l in range(4))
    assert graph.n_features == n_active == graph.settings["n_active_features"]
    assert (graph.n_errors, graph.n_pos) == (4 * 7, 7) and graph.tokens[2] == "Jordan"
    assert graph.adjacency.shape == (n_active + 28 + 7 + 1,) * 2


# ============================================================ targets
def test_explicit_and_logit_difference_targets(factworld):
    model, tcs, tokens, auto = factworld
    diff = logit_difference_target(model, "basketball", "football", prompt=PROMPT)
    graph = attribution_graph(model, PROMPT, tcs, targets=["basketball", "football", diff], max_feature_nodes=20,
                              progress=False)
    a, b = model.to_single_token("basketball"), model.to_single_token("football")
    assert [t.token for t in graph.targets] == [a, b, None]
    with torch.no_grad():
        probs = model(tokens[None])[0, -1].softmax(-1)
    assert math.isclose(graph.targets[1].prob, float(probs[b]), rel_tol=1e-9)
    assert math.isclose(diff.prob, float(probs[a]), rel_tol=1e-9)
    assert logit_difference_target(model, a, b).prob == 0.0
    A = graph.adjacency
    ta, tb, td = (graph.target_node(i) for i in range(3))
    # The same row as the automatic target's (on the 20 features kept here).
    cols = [auto.feature_node(*f) for f in graph.features.tolist()] + list(range(auto.n_features, auto.n_nodes - 1))
    assert torch.allclose(A[ta, : graph.target_nodes.start], auto.adjacency[auto.target_node(0), cols], atol=1e-10)
    assert torch.allclose(A[td], A[ta] - A[tb], atol=1e-9)  # demeaning cancels in a difference
    logits, _ = clean_cache(model, tokens, tcs)
    b_U = model.unembed.b_U.detach()
    expected = logits[-1, a] - logits[-1, b] - (b_U[a] - b_U[b])
    assert math.isclose(float(graph.values[td]), float(expected), abs_tol=1e-9)


def test_auto_targets_follow_the_cumulative_probability(random_case):
    model, tcs, tokens, _ = random_case
    with torch.no_grad():
        probs = model(tokens[None])[0, -1].softmax(-1)
    top = probs.sort(descending=True)
    need = int((top.values.cumsum(0) < 0.5).sum()) + 1  # smallest k with cumulative prob >= 0.5
    graph = attribution_graph(model, tokens, tcs, desired_logit_prob=0.5, max_n_logits=40, progress=False,
                              max_feature_nodes=0)
    assert [t.token for t in graph.targets] == top.indices[:need].tolist() and need > 1
    assert torch.allclose(torch.tensor([t.prob for t in graph.targets], dtype=torch.float64), top.values[:need])
    capped = attribution_graph(model, tokens, tcs, desired_logit_prob=0.5, max_n_logits=2, progress=False,
                               max_feature_nodes=0)
    assert [t.token for t in capped.targets] == top.indices[:2].tolist()
    assert capped.n_features == 0


# ============================================================ max_feature_nodes
def test_max_feature_nodes_picks_features_greedily_by_influence(random_case):
    model, tcs, tokens, full = random_case
    B = 8
    small = attribution_graph(model, tokens, tcs, targets=[t.token for t in full.targets], batch_size=B,
                              max_feature_nodes=B, update_interval=1, progress=False)
    # With one chunk, the features picked are those of highest first-order influence:
    # sum over targets of prob x |A[t, s]| / sum_s |A[t, s]| (in the full graph).
    T = full.adjacency[full.target_nodes]
    w = torch.tensor([t.prob for t in full.targets], dtype=torch.float64)
    first = (w[:, None] * T.abs() / T.abs().sum(1, keepdim=True)).sum(0)[: full.n_features]
    best = set(first.argsort(descending=True)[:B].tolist())
    picked = {full.feature_node(*f) for f in small.features.tolist()}
    assert picked == best and small.n_features == B
    # Their rows are the full graph's, restricted to the kept columns (ascending feature order).
    keep = torch.tensor(sorted(picked))
    cols = torch.cat([keep, torch.arange(full.n_features, full.n_nodes)])
    rows = torch.cat([keep, torch.arange(full.target_nodes.start, full.n_nodes)])
    assert torch.allclose(small.adjacency[value_rows(small)], full.adjacency[rows][:, cols], atol=1e-10)
    assert torch.equal(small.values[value_rows(small)], full.values[rows])
    # Two chunks: the second is the B unvisited features of highest influence through the rows
    # known after the first (targets and first chunk): w ((I - N)^-1 - I), N the known rows normalised.
    two = attribution_graph(model, tokens, tcs, targets=[t.token for t in full.targets], batch_size=B,
                            max_feature_nodes=2 * B, update_interval=1, progress=False)
    known = torch.zeros(full.n_nodes, dtype=torch.bool)
    known[keep] = True
    known[full.target_nodes] = True
    N = torch.where(known[:, None], full.adjacency.abs() / full.adjacency.abs().sum(1, keepdim=True).clamp_min(1e-10),
                    torch.zeros(()))
    weights = torch.zeros(full.n_nodes, dtype=torch.float64)
    weights[full.target_nodes] = w
    eye = torch.eye(full.n_nodes, dtype=torch.float64)
    influence = (weights @ (torch.linalg.inv(eye - N) - eye))[: full.n_features]
    influence[keep] = -math.inf
    second = set(influence.argsort(descending=True)[:B].tolist())
    assert {full.feature_node(*f) for f in two.features.tolist()} == best | second
    # Several chunks: the number asked for, each a real active feature.
    more = attribution_graph(model, tokens, tcs, targets=[t.token for t in full.targets], batch_size=B,
                             max_feature_nodes=3 * B + 1, update_interval=1, progress=False)
    assert more.n_features == 3 * B + 1 and set(map(tuple, more.features.tolist())) <= set(
        map(tuple, full.features.tolist()))


# ============================================================ the model is left alone; bad input
def no_hooks(model) -> bool:
    return all(not hp._hooks["fwd"] and not hp._hooks["bwd"] for hp in model.hook_dict.values())


def test_the_model_is_left_unchanged_even_when_cancelled():
    model = make_model("gpt2", dtype="float64", seed=1)
    tcs = random_transcoders(model, skip=True)
    tcs[0].b_enc.requires_grad_(False)
    before = {n: (p.detach().clone(), p.requires_grad) for n, p in model.named_parameters()}
    tokens = torch.arange(1, 9)
    graph = attribution_graph(model, tokens, tcs, targets=[4], batch_size=4, progress=False)
    assert graph.n_features > 8 and no_hooks(model)

    def stop(done, total, desc):
        if done >= 4:
            raise Cancelled("stop")
    with pytest.raises(Cancelled), watching(stop):
        attribution_graph(model, tokens, tcs, targets=[4], batch_size=4)
    assert no_hooks(model)
    for n, p in model.named_parameters():
        assert torch.equal(p, before[n][0]) and p.requires_grad == before[n][1], n
    assert not tcs[0].b_enc.requires_grad and tcs[0].W_enc.requires_grad and tcs[1].W_skip.requires_grad


def test_bad_input_is_refused_clearly():
    model = make_model("gpt2", dtype="float64", seed=1)
    tcs = random_transcoders(model, skip=False)
    tokens = torch.arange(1, 7)
    with pytest.raises(ValueError, match=r"missing for layer\(s\) \[1\]"):
        attribution_graph(model, tokens, tcs[:1])
    with pytest.raises(ValueError, match="two transcoders for layer 0"):
        attribution_graph(model, tokens, [tcs[0], tcs[0]])
    sae = SparseDictionary.sae(24, 16, hook="blocks.0.hook_resid_pre", k=4, dtype="float64")
    with pytest.raises(ValueError, match="transcoder writing"):
        attribution_graph(model, tokens, [sae, tcs[1]])
    odd = SparseDictionary.transcoder(model, 1, 8, in_hook="blocks.0.hook_resid_post", k=4)
    with pytest.raises(ValueError, match="must read one of"):
        attribution_graph(model, tokens, [tcs[0], odd])
    with pytest.raises(ValueError, match="zero_positions"):
        attribution_graph(model, tokens, tcs, zero_positions=6)
    with pytest.raises(ValueError, match="batch_size"):
        attribution_graph(model, tokens, tcs, batch_size=0)
    with pytest.raises(ValueError, match="desired_logit_prob"):
        attribution_graph(model, tokens, tcs, desired_logit_prob=1.5)
    with pytest.raises(ValueError, match="outside the vocabulary"):
        attribution_graph(model, tokens, tcs, targets=[50])
    with pytest.raises(ValueError, match="more than once"):
        attribution_graph(model, tokens, tcs, targets=[3, 3])
    with pytest.raises(ValueError, match="vector must be"):
        attribution_graph(model, tokens, tcs, targets=[Target("x", None, 0.0, torch.zeros(5))])
    with pytest.raises(ValueError, match="integer tensor"):
        attribution_graph(model, torch.zeros(2, 3, dtype=torch.long), tcs)
    with pytest.raises(TypeError, match="SparseDictionary"):
        attribution_graph(model, tokens, tcs[0])
    assert no_hooks(model)
