"""The circuit's interactive graph (view kind "graph", interp.circuits.view) in a real, offline
browser, on the shipped fact-world model's Michael Jordan / Michael Phelps circuit: what the page
shows is checked against the EdgeScores tensor and the Graph, counted here independently."""

import math
import re

import pytest
import torch

from interp.circuits import Circuit, Graph, attribute_edges, circuit_view, faithfulness, head_node_views, top_edges
from interp.metrics import logit_diff
from interp.tokens import paired_tokens
from interp.views import Viewable
from models import TransformerConfig, load

CLEAN, CORRUPTED = "Michael Jordan plays the sport of", "Michael Phelps plays the sport of"
N_CIRCUIT = 30


@pytest.fixture(scope="module")
def fact_circuit(tmp_path_factory):
    model = load("factworld").eval()
    metric = logit_diff(model, "basketball", "swimming")
    scores = attribute_edges(model, CLEAN, CORRUPTED, metric, method="eap", progress=False)
    edges = top_edges(scores, N_CIRCUIT)
    faith = faithfulness(model, CLEAN, CORRUPTED, metric, edges)
    clean_tokens, _ = paired_tokens(model, CLEAN, CORRUPTED)
    views = head_node_views(model, clean_tokens)
    circuit = Circuit(scores, edges, faith, title="Michael Jordan", node_views=views)
    path = circuit.save_html(tmp_path_factory.mktemp("circuit") / "circuit.html")
    return {"model": model, "scores": scores, "edges": edges, "path": path, "views": views}


@pytest.fixture
def page(browser, fact_circuit):
    page = browser.open(fact_circuit["path"])
    yield page
    assert browser.problems(page) == []
    page.context.close()


def _abs_scores(scores) -> torch.Tensor:
    """|score| of every edge of the graph, straight from the [U, D] tensor."""
    return scores.scores[scores.graph.edges].abs()


def _shown(page) -> tuple[int, int, float]:
    count = page.locator(".iv-graph-count")
    return (int(count.get_attribute("data-count")), page.locator("path.iv-graph-edge").count(),
            float(count.get_attribute("data-threshold")))


def _set_box(page, t: float) -> None:
    page.eval_on_selector(".iv-graph-threshold", "(el, t) => { el.value = String(t); "
                          "el.dispatchEvent(new Event('input', {bubbles: true})); }", t)


def _viewbox(page) -> list[float]:
    return [float(v) for v in page.get_attribute("svg.iv-graph-svg", "viewBox").split()]


def test_renders_every_node_and_starts_at_the_circuits_weakest_edge(page, fact_circuit):
    scores = fact_circuit["scores"]
    graph = scores.graph
    assert graph.n_edges == 479  # the shipped model's graph: all of it is drawable (under the 2000 cap)
    names = {n.name for n in graph.upstream} | {i.node for i in graph.inputs}
    drawn_nodes = set(page.locator("g.iv-graph-node").evaluate_all("els => els.map(e => e.dataset.node)"))
    assert drawn_nodes == names
    weakest = min(abs(float(scores.scores[graph.index(u, d)])) for u, d in fact_circuit["edges"])
    count, paths, t = _shown(page)
    assert t == weakest
    assert count == paths == int((_abs_scores(scores) >= weakest).sum()) == N_CIRCUIT
    marked = page.locator("path.iv-graph-edge[data-circuit]").evaluate_all(
        "els => els.map(e => [e.dataset.up, e.dataset.down])")
    assert sorted(map(tuple, marked)) == sorted(fact_circuit["edges"])
    assert "479" in page.inner_text(".iv-graph-count")


def test_threshold_shows_exactly_the_edges_at_or_above_it(page, fact_circuit):
    absolute = _abs_scores(fact_circuit["scores"])
    ranked = absolute.sort(descending=True).values
    for t in [float(ranked[99]), float(ranked[0]), 1.0, 0.01, 1e-4, 0.0, float(ranked[0]) * 2]:
        _set_box(page, t)
        count, paths, used = _shown(page)
        want = int((absolute >= t).sum())
        assert used == t and count == want and paths == want, t
    # the slider (log10 |score|): whatever threshold it lands on, the count is the tensor's
    for position in [0.3, 0.6, 0.9]:
        page.eval_on_selector(".iv-graph-slider", "(el, f) => { el.value = String(+el.min + f * (el.max - el.min)); "
                              "el.dispatchEvent(new Event('input', {bubbles: true})); }", position)
        count, paths, used = _shown(page)
        want = int((absolute >= used).sum())
        assert 0 < want < absolute.numel() and count == paths == want
        assert float(page.input_value(".iv-graph-threshold")) == used


def _hover_point(page, up: str, down: str):
    """A point on the edge's path where it is the topmost element (screen coordinates)."""
    return page.evaluate("""([up, down]) => {
        const p = [...document.querySelectorAll('path.iv-graph-edge')].find(e => e.dataset.up === up && e.dataset.down === down);
        const L = p.getTotalLength(), m = p.getScreenCTM();
        for (let f = 0.5; f < 1; f += 0.02) for (const g of [f, 1 - f]) {
            const q = p.getPointAtLength(g * L), x = m.a * q.x + m.c * q.y + m.e, y = m.b * q.x + m.d * q.y + m.f;
            if (document.elementFromPoint(x, y) === p) return [x, y];
        }
        return null; }""", [up, down])


def test_hovering_an_edge_shows_its_score(page, fact_circuit):
    scores = fact_circuit["scores"]
    _set_box(page, 0.5)
    checked = 0
    for u, d, _ in scores.top(6):
        point = _hover_point(page, u, d)
        if point is None:
            continue
        page.mouse.move(*point)
        text = page.inner_text(".iv-tooltip")
        m = re.fullmatch(r"(\S+) -> (\S+): (\S+)", text.strip())
        assert m and (m[1], m[2]) == (u, d), text
        want = float(scores.scores[scores.graph.index(u, d)])
        assert math.isclose(float(m[3]), want, rel_tol=1e-5)
        checked += 1
    assert checked >= 4
    page.mouse.move(1, 1)
    assert not page.locator(".iv-tooltip").is_visible()


def test_clicking_a_node_opens_its_panel_with_its_edges(page, fact_circuit):
    scores = fact_circuit["scores"]
    graph = scores.graph
    name = "L1H1"
    page.click(f'g.iv-graph-node[data-node="{name}"]')
    panel = page.locator(".iv-graph-panel")
    assert panel.is_visible() and panel.get_attribute("data-node") == name
    rows = panel.locator("tr.iv-graph-edge-row").evaluate_all(
        "els => els.map(e => [e.dataset.up, e.dataset.down, +e.dataset.score])")
    u = [n.name for n in graph.upstream].index(name)
    want_out = {(name, graph.inputs[d].name) for d in graph.edges[u].nonzero().flatten().tolist()}
    want_in = {(graph.upstream[w].name, i.name) for d, i in enumerate(graph.inputs) if i.node == name
               for w in graph.edges[:, d].nonzero().flatten().tolist()}
    assert {(a, b) for a, b, _ in rows} == want_out | want_in and len(rows) == len(want_out | want_in)
    for a, b, s in rows:
        assert s == float(scores.scores[graph.index(a, b)])
    # the head's own view (its attention on the clean prompt) is mounted in the panel
    nested = panel.locator(".iv-graph-node-view .interp-view[data-rendered]")
    assert nested.count() == 1 and nested.get_attribute("data-kind") == fact_circuit["views"][name].kind
    panel.locator(".iv-graph-close").click()
    assert not panel.is_visible()


def test_zoom_and_pan_move_the_viewbox(page):
    x, y, w, h = _viewbox(page)
    page.click(".iv-graph-zoom-in")
    x1, y1, w1, h1 = _viewbox(page)
    assert math.isclose(w1, w / 1.25, rel_tol=1e-3) and math.isclose(h1, h / 1.25, rel_tol=1e-3)
    assert math.isclose(x1 + w1 / 2, x + w / 2, abs_tol=0.05)  # zoomed about the centre
    box = page.locator("svg.iv-graph-svg").bounding_box()
    cx, cy = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    page.mouse.move(cx, cy)
    page.mouse.wheel(0, -300)
    page.wait_for_function("w => +document.querySelector('svg.iv-graph-svg').getAttribute('viewBox').split(' ')[2] < w",
                           arg=w1 - 1e-6)
    x2, y2, w2, h2 = _viewbox(page)
    assert w2 < w1
    # drag 100 px right and 50 px down: the view follows the pointer (viewBox moves the other way)
    _drag(page, cx - 50, cy - 25, 100, 50)
    x3, y3, w3, h3 = _viewbox(page)
    k = w2 / box["width"]
    assert math.isclose(x3, x2 - 100 * k, abs_tol=0.05) and math.isclose(y3, y2 - 50 * k, abs_tol=0.05)
    assert (w3, h3) == (w2, h2)
    page.click(".iv-graph-reset")
    assert _viewbox(page) == [x, y, w, h]
    # a drag that starts on a node pans and opens nothing
    node = page.locator('g.iv-graph-node[data-node="embed"]').bounding_box()
    _drag(page, node["x"] + node["width"] / 2, node["y"] + node["height"] / 2, -40, -30)
    assert _viewbox(page)[:2] == [round(x + 40 * w / box["width"], 2), round(y + 30 * w / box["width"], 2)]
    assert not page.locator(".iv-graph-panel").is_visible()


def _drag(page, sx: float, sy: float, dx: float, dy: float) -> None:
    page.mouse.move(sx, sy)
    page.mouse.down()
    page.mouse.move(sx + dx / 2, sy + dy / 2)
    page.mouse.move(sx + dx, sy + dy)
    page.mouse.up()


def test_a_large_graph_draws_at_most_the_cap_and_stays_fast(browser, tmp_path):
    graph = Graph(TransformerConfig(n_layers=12, d_model=48, n_heads=12, d_vocab=20, n_ctx=8))
    gen = torch.Generator().manual_seed(0)
    scores = torch.randn(graph.edges.shape, generator=gen, dtype=torch.float64).masked_fill(~graph.edges, float("nan"))
    view = circuit_view(graph, scores, threshold=0.0)
    assert any("2000" in n for n in view.notes)
    page = browser.open(view.save_html(tmp_path / "big.html"))
    count, paths, _ = _shown(page)
    assert count == graph.n_edges > 20000 and paths == 2000
    ms = page.evaluate("""() => { const el = document.querySelector('.iv-graph-threshold'), t0 = performance.now();
        for (const t of [0.5, 0.1, 0.0, 1.0, 0.0]) { el.value = String(t); el.dispatchEvent(new Event('input')); }
        return (performance.now() - t0) / 5; }""")
    assert ms < 400, f"one redraw of 2000 edges took {ms:.0f} ms"
    _set_box(page, 3.0)
    count, paths, _ = _shown(page)
    assert count == paths == int((scores[graph.edges].abs() >= 3.0).sum())
    assert browser.problems(page) == []
    page.context.close()


def test_bad_input_is_a_clear_error(fact_circuit):
    scores = fact_circuit["scores"]
    graph = scores.graph
    with pytest.raises(ValueError, match="shape"):
        circuit_view(graph, scores.scores[:, :-1])
    with pytest.raises(KeyError, match="L9H0"):
        circuit_view(graph, scores, node_views={"L9H0": fact_circuit["views"]["L0H0"]})
    with pytest.raises(ValueError, match="not an edge"):
        circuit_view(graph, scores, [("MLP3", "L0H0.q")])
    with pytest.raises(ValueError, match="max_drawn"):
        circuit_view(graph, scores, max_drawn=0)


def test_interp_circuit_writes_circuit_html(browser, tmp_path):
    from analyses.circuit import circuit_of_pair

    out = tmp_path / "circuit"
    result = circuit_of_pair(method="eap", edges=12, out=out, progress=False)
    html = out / "circuit.html"
    assert html in result.files and (out / "circuit.png").exists()
    circuit = result.results["circuit"]
    assert isinstance(circuit, Viewable) and len(circuit.edges) == 12
    page = browser.open(html)
    count, paths, t = _shown(page)
    absolute = _abs_scores(result.results["scores"])
    assert count == paths == int((absolute >= t).sum()) == 12
    page.click('g.iv-graph-node[data-node="L0H0"]')
    assert page.locator(".iv-graph-node-view .interp-view[data-rendered]").count() == 1
    assert browser.problems(page) == []
    page.context.close()
