"""Query-key attribution (probes.graph.qk), in float64, checked against the model itself:
  * the table sums to the model's own hook_attn_scores (a plain run_with_cache) for several
    heads and positions, on the fact-world model and on random models of three layouts (learned
    positions with a transcoder skip path; RMSNorm, rotary and grouped-query attention; parallel
    attention and MLP with partial rotary), and with features dropped by max_feature_nodes; in
    float32 and bfloat16 to their precision;
  * one component taken out of the residual stream entering the head's block (at the key
    position, the query position, or both), with ln1's scale held at the run's, moves the
    model's score by minus its column sum, minus its row sum, or minus both plus their entry;
  * the components are the graph's nodes (labels and node indices match); with a cross-layer
    transcoder a feature's component is its decoders to every layer below the head's, summed;
  * edge_qk picks the head carrying most of an edge; edge_notes reach the graph browser's edge
    hover (in a real, offline browser); bad input is refused and leaves no hooks."""

import copy
import re

import pytest
import torch

from probes.graph import attribution_graph, edge_heads
from probes.graph.qk import EdgeQK, QKAttribution, edge_notes, edge_qk, qk_attribution
from tests.conftest import make_model
from test_clt import graph_case as clt_graph_case, reconstruction as clt_reconstruction
from test_graph_build import no_hooks, random_graph, random_transcoders
from test_graph_heads import factworld  # noqa: F401  (the fact-world graph fixture)



@pytest.fixture(params=["factworld", "gpt2", "llama_gqa", "neox_partial_rotary"])
def case(request, factworld):
    return factworld if request.param == "factworld" else random_graph(request.param)


# ============================================================ the model's own numbers
def model_score(model, tokens, layer, head, q_pos, k_pos, removals=(), scale=None):
    """hook_attn_scores[head, q_pos, k_pos] of a plain run; with `removals` [(pos, vector)]
    subtracted from blocks.{layer}.hook_resid_pre and ln1's scale held at `scale` [1, pos, 1]."""
    hooks = []
    if removals:
        def remove(x, hook):
            x = x.clone()
            for pos, vec in removals:
                x[0, pos] -= vec
            return x
        hooks = [(f"blocks.{layer}.hook_resid_pre", remove), (f"blocks.{layer}.ln1.hook_scale", lambda x, hook: scale)]
    with torch.no_grad(), model.hooks(fwd_hooks=hooks):
        _, cache = model.run_with_cache(tokens[None], names_filter=[f"blocks.{layer}.attn.hook_attn_scores"])
    return float(cache[f"blocks.{layer}.attn.hook_attn_scores"][0, head, q_pos, k_pos])


def component_vectors(model, tcs, tokens, graph, layer, pos):
    """{label: vector [d_model]} of the nameable components at `pos` entering `layer`, computed
    here from a plain cache: the token embedding, each earlier head's output, each graph
    feature's a * W_dec[f] (a from the transcoder on its input) and each error (MLP output
    minus the transcoder's output)."""
    names = ["hook_embed"] + (["hook_pos_embed"] if "hook_pos_embed" in model.hook_dict else [])
    names += [f"blocks.{l}.attn.hook_result" for l in range(layer)]
    names += [n for tc in tcs[:layer] for n in (tc.in_hook, tc.out_hook)]
    with torch.no_grad():
        _, cache = model.run_with_cache(tokens[None], names_filter=list(dict.fromkeys(names)))
        at = f"{graph.tokens[pos]} ({pos})"
        out = {at: cache["hook_embed"][0, pos]}
        if "hook_pos_embed" in cache:
            out[f"position @ {at}"] = cache["hook_pos_embed"][0, pos]
        for l in range(layer):
            for h in range(model.cfg.n_heads):
                out[f"L{l}H{h} out @ {at}"] = cache[f"blocks.{l}.attn.hook_result"][0, pos, h]
            if pos < graph.zero_positions:
                continue
            tc, x = tcs[l], cache[tcs[l].in_hook][0, pos]
            acts = tc.encode(x)
            for layer_, pos_, f in graph.features.tolist():
                if (layer_, pos_) == (l, pos):
                    out[f"L{l}F{f} @ {at}"] = acts[f] * tc.W_dec[f]
            out[f"error L{l} @ {at}"] = cache[tc.out_hook][0, pos] - tc(x)
            if tc.W_skip is not None:
                out[f"skip L{l} @ {at}"] = x @ tc.W_skip
    return out


def clean_scale(model, tokens, layer):
    with torch.no_grad():
        _, cache = model.run_with_cache(tokens[None], names_filter=[f"blocks.{layer}.ln1.hook_scale"])
    return cache[f"blocks.{layer}.ln1.hook_scale"]


SITES = {  # (layer, head, q_pos, k_pos) per case
    "factworld": [(1, 3, 6, 2), (0, 2, 6, 2), (2, 0, 5, 1), (3, 2, 6, 6), (1, 1, 4, 0)],
    "random": [(1, 0, 7, 3), (1, 2, 5, 5), (0, 1, 6, 2), (1, 1, 4, 0)],
}


def sites(model):
    return SITES["factworld" if model.cfg.n_layers == 4 else "random"]


# ============================================================ the table sums to the score
def test_the_parts_sum_to_the_models_attention_score(case):
    model, tcs, tokens, graph = case
    for layer, head, q_pos, k_pos in sites(model):
        qk = qk_attribution(model, graph, tcs, layer, head, q_pos, k_pos)
        want = model_score(model, tokens, layer, head, q_pos, k_pos)
        assert float(qk.parts.sum()) == pytest.approx(want, abs=1e-9)
        assert qk.score == pytest.approx(want, abs=1e-12)
        assert qk.parts.shape == (len(qk.query_labels), len(qk.key_labels))
        assert qk.query_labels[-1] == qk.key_labels[-1] == "constant"
        with torch.no_grad():
            _, cache = model.run_with_cache(tokens[None], names_filter=[f"blocks.{layer}.attn.hook_pattern"])
        assert qk.pattern == pytest.approx(float(cache[f"blocks.{layer}.attn.hook_pattern"][0, head, q_pos, k_pos]),
                                           abs=1e-12)
        assert float(qk.by_query().sum()) == pytest.approx(want, abs=1e-9)
        assert sum(qk.by_kind().values()) == pytest.approx(want, abs=1e-9)
    assert no_hooks(model)


def test_features_left_out_of_the_graph_go_to_the_constant():
    model, tcs, tokens, _ = random_graph("gpt2")
    small = attribution_graph(model, tokens, tcs, targets=[3, 17], max_feature_nodes=12, batch_size=8,
                              progress=False)
    assert small.n_features == 12 < small.settings["n_active_features"]
    for layer, head, q_pos, k_pos in SITES["random"]:
        qk = qk_attribution(model, small, tcs, layer, head, q_pos, k_pos)
        assert float(qk.parts.sum()) == pytest.approx(model_score(model, tokens, layer, head, q_pos, k_pos),
                                                      abs=1e-9)
        features = [lab for lab, kind in zip(qk.key_labels, qk.key_kinds) if kind == "feature"]
        assert features == [small.node_label(i) for i in range(small.n_features)
                            if small.node_site(i)[1] < layer and small.node_site(i)[2] == k_pos]


@pytest.mark.parametrize("dtype, tol", [(torch.float32, 1e-5), (torch.bfloat16, 3e-2)])
def test_lower_precision_models_add_up_to_their_precision(dtype, tol):
    """The table is float64 whatever the model's dtype; its sum is the model's score to the dtype's precision."""
    _, tcs64, tokens, _ = random_graph("llama_gqa")
    model = make_model("llama_gqa", dtype="float64", seed=3).to(dtype)
    tcs = [copy.deepcopy(tc).to(dtype) for tc in tcs64]  # Module.to works in place: copies
    graph = attribution_graph(model, tokens, tcs, targets=[3], batch_size=16, progress=False)
    for layer, head, q_pos, k_pos in SITES["random"]:
        qk = qk_attribution(model, graph, tcs, layer, head, q_pos, k_pos)
        want = model_score(model, tokens, layer, head, q_pos, k_pos)
        assert qk.parts.dtype == torch.float64
        assert float(qk.parts.sum()) == pytest.approx(want, rel=tol, abs=tol)
    assert no_hooks(model)


# ============================================================ each part against the model
@pytest.mark.parametrize("name", ["factworld", "gpt2", "llama_gqa", "neox_partial_rotary"])
def test_taking_a_component_out_moves_the_score_by_its_parts(name, factworld):
    """Rows, columns and single entries, against the model run with that component subtracted from
    the residual stream entering the block (ln1's scale held): token, position, head output,
    feature, skip path, error."""
    model, tcs, tokens, graph = factworld if name == "factworld" else random_graph(name)
    layer, head, q_pos, k_pos = (1, 3, 6, 2) if name == "factworld" else (1, 2, 7, 3)
    qk = qk_attribution(model, graph, tcs, layer, head, q_pos, k_pos)
    scale = clean_scale(model, tokens, layer)
    base = model_score(model, tokens, layer, head, q_pos, k_pos)
    q_vecs = component_vectors(model, tcs, tokens, graph, layer, q_pos)
    k_vecs = component_vectors(model, tcs, tokens, graph, layer, k_pos)
    assert set(q_vecs) <= set(qk.query_labels) and set(k_vecs) <= set(qk.key_labels)
    rows, cols = qk.by_query(), qk.by_key()

    def biggest(kinds, values, kind):
        return max([i for i, k in enumerate(kinds) if k == kind], key=lambda i: abs(float(values[i])))

    kinds = [k for k in ("feature", "error", "head", "token", "position", "skip") if k in qk.key_kinds]
    for kind in kinds:
        i, j = biggest(qk.query_kinds, rows, kind), biggest(qk.key_kinds, cols, kind)
        q_vec, k_vec = q_vecs[qk.query_labels[i]], k_vecs[qk.key_labels[j]]
        no_key = model_score(model, tokens, layer, head, q_pos, k_pos, [(k_pos, k_vec)], scale)
        no_query = model_score(model, tokens, layer, head, q_pos, k_pos, [(q_pos, q_vec)], scale)
        neither = model_score(model, tokens, layer, head, q_pos, k_pos, [(q_pos, q_vec), (k_pos, k_vec)], scale)
        assert no_key - base == pytest.approx(-float(cols[j]), abs=1e-9)
        assert no_query - base == pytest.approx(-float(rows[i]), abs=1e-9)
        assert neither - base + float(rows[i]) + float(cols[j]) == pytest.approx(float(qk.parts[i, j]), abs=1e-9)
        assert abs(float(qk.parts[i, j])) > 1e-6  # a real number is checked
    assert len(kinds) == {"factworld": 5, "gpt2": 6}.get(name, 4) and no_hooks(model)


# ============================================================ cross-layer transcoders
@pytest.mark.parametrize("name", ["relu", "factworld"])
def test_cross_layer_transcoders_features_write_to_every_later_layer(name):
    """With a CLT a layer-l feature's component in the residual stream entering block L is
    a * sum_{l <= l' < L} W_dec[l -> l'][f] (computed here from clt.decoder), its error per layer
    the MLP output minus the CLT's reconstruction; the table still sums to the model's score, and
    taking a feature or an error out moves it by its parts."""
    model, clt, _, tokens, graph = clt_graph_case(name)
    L, head, q_pos, k_pos = (2, 1, 7, 3) if name == "relu" else (3, 2, 6, 2)
    for layer, h in ((1, 0), (L, head)):  # the last one is checked part by part below
        qk = qk_attribution(model, graph, clt, layer, h, q_pos, k_pos)
        assert float(qk.parts.sum()) == pytest.approx(model_score(model, tokens, layer, h, q_pos, k_pos), abs=1e-9)
    names = list(dict.fromkeys(clt.in_hooks + clt.out_hooks))
    with torch.no_grad():
        _, cache = model.run_with_cache(tokens[None], names_filter=names)
        acts = [clt.encode(torch.stack([cache[h][0] for h in clt.in_hooks], dim=1))[:, l] for l in range(clt.n_layers)]
        recon = clt_reconstruction(clt, acts)
    rows, cols = qk.by_query(), qk.by_key()
    scale = clean_scale(model, tokens, L)
    base = model_score(model, tokens, L, head, q_pos, k_pos)
    features = [j for j, kind in enumerate(qk.key_kinds) if kind == "feature"]
    assert {graph.node_site(qk.key_nodes[j])[1] for j in features} >= {0, 1}  # features of several source layers
    checked = 0
    for j in sorted(features, key=lambda j: -abs(float(cols[j])))[:3]:
        _, l, pos, f = graph.node_site(qk.key_nodes[j])
        vec = acts[l][pos, f] * sum(clt.decoder(l, t).detach()[f] for t in range(l, L))
        moved = model_score(model, tokens, L, head, q_pos, k_pos, [(k_pos, vec)], scale) - base
        assert moved == pytest.approx(-float(cols[j]), abs=1e-9)
        checked += l < L - 1  # a feature whose decoders to more than one layer count
    errors = [i for i, kind in enumerate(qk.query_kinds) if kind == "error"]
    for i in errors:
        _, l, pos, _ = graph.node_site(qk.query_nodes[i])
        vec = cache[clt.out_hooks[l]][0, pos] - recon[l][pos]
        moved = model_score(model, tokens, L, head, q_pos, k_pos, [(q_pos, vec)], scale) - base
        assert moved == pytest.approx(-float(rows[i]), abs=1e-9)
    assert checked >= 1 and len(errors) == L and no_hooks(model)


def test_the_components_are_the_graphs_nodes(factworld):
    model, tcs, tokens, graph = factworld
    qk = qk_attribution(model, graph, tcs, 2, 1, 6, 2)
    for labels, nodes, kinds, pos in ((qk.query_labels, qk.query_nodes, qk.query_kinds, 6),
                                      (qk.key_labels, qk.key_nodes, qk.key_kinds, 2)):
        for label, node, kind in zip(labels, nodes, kinds):
            if node is not None:
                assert graph.node_label(node) == label
                assert graph.node_kind(node) == kind and graph.node_site(node)[2] == pos
        features = sorted(n for n, k in zip(nodes, kinds) if k == "feature")
        want = [i for i in range(graph.n_features) if graph.node_site(i)[1] < 2 and graph.node_site(i)[2] == pos]
        assert features == want and len(want) > 20
        assert kinds.count("error") == 2 and kinds.count("head") == 2 * model.cfg.n_heads
        assert kinds.count("token") == kinds.count("position") == kinds.count("constant") == 1
    # At BOS the MLP outputs have no nodes (as in the graph): no features, no errors there.
    bos = qk_attribution(model, graph, tcs, 2, 1, 6, 0)
    assert "feature" not in bos.key_kinds and "error" not in bos.key_kinds
    top = qk.top(3)
    assert len(top) == 3 and all(re.fullmatch(r".+ x .+: [+-][\d.e+-]+", t) for t in top)
    flat = qk.parts.flatten()
    assert qk.top_pairs(1)[0][2] == float(flat[flat.abs().argmax()])
    assert qk.share(qk.parts.numel()) == pytest.approx(1.0, abs=1e-9)
    d = qk.to_dict(4)
    assert d["score"] == qk.score and len(d["top"]) == 4 and len(d["top_keys"]) == 4


# ============================================================ edges
def test_edge_qk_attributes_the_head_that_carried_the_edge():
    model, tcs, tokens, graph = random_graph("gpt2")
    pruned = graph.prune(node_threshold=0.9, edge_threshold=0.99)
    cross = [(t, s) for t, s in pruned.edges().tolist() if graph.node_site(t)[2] != graph.node_site(s)[2]][:12]
    split = edge_heads(model, graph, tcs, cross, batch_size=16)
    for e in range(split.n_edges):
        eq = edge_qk(model, graph, tcs, split, e)
        assert isinstance(eq, EdgeQK) and isinstance(eq.qk, QKAttribution)
        layer, head = divmod(int(split.direct[e].abs().flatten().argmax()), split.n_heads)
        t, s = cross[e]
        assert (eq.qk.layer, eq.qk.head) == (layer, head) and eq.direct == float(split.direct[e, layer, head])
        assert (eq.qk.q_pos, eq.qk.k_pos) == (graph.node_site(t)[2], graph.node_site(s)[2])
        same = qk_attribution(model, graph, tcs, layer, head, eq.qk.q_pos, eq.qk.k_pos)
        assert torch.equal(eq.qk.parts, same.parts)
        if s in eq.qk.key_nodes:
            assert eq.source_key_part == pytest.approx(float(same.parts[:, same.key_nodes.index(s)].sum()))
        else:
            assert eq.source_key_part is None and graph.node_site(s)[1] is not None
        assert str(eq).startswith(f"{graph.node_label(s)} -> (L{layer}H{head} ")
        assert str(eq).endswith(f") -> {graph.node_label(t)}") and ", formed by " in str(eq)
    forced = edge_qk(model, graph, tcs, split, 0, head=(1, 0))
    assert (forced.qk.layer, forced.qk.head) == (1, 0)


# ============================================================ bad input
def test_bad_input_is_refused_clearly():
    model, tcs, tokens, graph = random_graph("gpt2")
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    with pytest.raises(ValueError, match=r"layer must be an integer in \[0, 2\)"):
        qk_attribution(model, graph, tcs, 2, 0, 5, 2)
    with pytest.raises(ValueError, match=r"head must be an integer in \[0, 3\)"):
        qk_attribution(model, graph, tcs, 1, 3, 5, 2)
    with pytest.raises(ValueError, match=r"q_pos .*8 positions"):
        qk_attribution(model, graph, tcs, 1, 0, 8, 2)
    with pytest.raises(ValueError, match=r"k_pos .*8 positions"):
        qk_attribution(model, graph, tcs, 1, 0, 5, -1)
    with pytest.raises(ValueError, match="k_pos=6 is after q_pos=5: the model is causal"):
        qk_attribution(model, graph, tcs, 1, 0, 5, 6)
    with pytest.raises(ValueError, match=r"missing for layer\(s\) \[1\]"):
        qk_attribution(model, graph, tcs[:1], 1, 0, 5, 2)
    other = random_transcoders(model, skip=True, seed=5)
    with pytest.raises(ValueError, match="feature activations differ"):
        qk_attribution(model, graph, other, 1, 0, 5, 2)
    with pytest.raises(TypeError, match="graph must be an AttributionGraph"):
        qk_attribution(model, "graph", tcs, 1, 0, 5, 2)
    post = make_model("transformer_2017", dtype="float64")
    with pytest.raises(ValueError, match="pre-norm blocks only; this model has norm_position='post'"):
        qk_attribution(post, graph, tcs, 1, 0, 5, 2)
    split = edge_heads(model, graph, tcs, [next((t, s) for t, s in graph.prune().edges().tolist()
                                                if graph.node_site(t)[2] != graph.node_site(s)[2])])
    with pytest.raises(ValueError, match=r"edge must be an index in \[0, 1\)"):
        edge_qk(model, graph, tcs, split, 1)
    with pytest.raises(ValueError, match=r"head must be a \(layer, head\) pair"):
        edge_qk(model, graph, tcs, split, 0, head=3)
    with pytest.raises(TypeError, match="split must be a HeadSplit"):
        edge_qk(model, graph, tcs, "split", 0)
    other_model, other_tcs, _, other_graph = random_graph("llama_gqa")
    with pytest.raises(ValueError, match="pass the graph the split was made from"):
        edge_qk(other_model, other_graph, other_tcs, split, 0)
    with pytest.raises(ValueError, match="pass the graph the split was made from"):
        edge_notes(other_model, other_graph, other_tcs, split)
    assert no_hooks(other_model)
    with pytest.raises(ValueError, match="k must be an integer"):
        qk_attribution(model, graph, tcs, 1, 0, 5, 2).top(-1)
    assert no_hooks(model) and no_hooks(post)
    for n, p in model.named_parameters():
        assert torch.equal(p, before[n]), n


# ============================================================ the graph browser
def test_edge_notes_reach_the_browsers_edge_hover(browser, tmp_path):
    model, tcs, tokens, graph = random_graph("gpt2")
    pruned = graph.prune(node_threshold=0.9, edge_threshold=0.99)
    cross = [(t, s) for t, s in pruned.edges().tolist() if graph.node_site(t)[2] != graph.node_site(s)[2]][:40]
    split = edge_heads(model, graph, tcs, cross, batch_size=16)
    notes = edge_notes(model, graph, tcs, split, k=2)
    assert set(notes) == set(cross)
    for e, (t, s) in enumerate(cross):
        layer, head = divmod(int(split.direct[e].abs().flatten().argmax()), split.n_heads)
        qk = qk_attribution(model, graph, tcs, layer, head, graph.node_site(t)[2], graph.node_site(s)[2])
        (q1, k1, v1), (q2, k2, v2) = qk.top_pairs(2)
        assert notes[(t, s)] == (f"via L{layer}H{head} {float(split.direct[e, layer, head]):.3g} (score "
                                 f"{qk.score:.3g}, attention {qk.pattern:.3g}), formed by\n  {q1} x {k1} {v1:+.3g}\n"
                                 f"  {q2} x {k2} {v2:+.3g}")
    view = graph.to_view(pruned=pruned, edge_notes=notes)
    data = view.payload()["data"]
    shipped, ids = data["edges"], [n["node"] for n in data["nodes"]]
    for a, b, note in zip(shipped["source"], shipped["target"], shipped["note"]):
        assert note == notes.get((ids[b], ids[a]))
    assert sum(n is not None for n in shipped["note"]) == len(cross)
    page = browser.open(view.save_html(tmp_path / "notes.html"))
    free = page.evaluate("""() => Array.from(document.querySelectorAll('path.iv-attr-edge')).map(e => {
        const b = e.getBoundingClientRect(), x = b.x + b.width / 2, y = b.y + b.height / 2;
        return document.elementFromPoint(x, y) === e ? [+e.dataset.edge, x, y] : null; }).filter(v => v)""")
    hovered = 0
    for k, x, y in free:
        edge = page.locator(f'path.iv-attr-edge[data-edge="{k}"]')
        s, t = int(edge.get_attribute("data-source")), int(edge.get_attribute("data-target"))
        if (t, s) not in notes:
            continue
        page.mouse.move(x, y)
        first, rest = page.locator(".iv-tooltip").inner_text().rstrip().split("\n", 1)
        assert first.startswith(f"{graph.node_label(s)} -> {graph.node_label(t)}: ") and rest == notes[(t, s)]
        hovered += 1
        if hovered == 3:
            break
    assert hovered >= 1 and browser.problems(page) == []
    page.context.close()
    with pytest.raises(ValueError, match=r"edge_notes keys are \(target, source\) pairs"):
        graph.to_view(pruned=pruned, edge_notes={(graph.n_nodes, 0): "x"})
    with pytest.raises(ValueError, match="must be a string"):
        graph.to_view(pruned=pruned, edge_notes={cross[0]: 3})
