"""The attribution graph browser (probes.graph.view, view kind "attribution") in a real, offline
browser, on a hand-made AttributionGraph (3 layers, 4 positions, 10 features, one target) with
hand-made pruning masks, so nothing here depends on probes.graph.prune: what the page draws,
hovers, lists, hides and saves is checked against the masks and the adjacency counted here. A large
random graph (3,000 nodes, 30,000 edges, capped at max_nodes) must render and hover cleanly; a real
feature dashboard of the shipped fact-world transcoders mounts in the side panel."""

import json
import math
import re
from types import SimpleNamespace

import pytest
import torch

from interp.views import View
from probes.graph.graph import AttributionGraph, Target
from probes.graph.view import graph_view

TOKENS = ["<bos>", "Michael", "Jordan", "plays"]
FEATURES = [(0, 1, 5), (0, 2, 7), (0, 2, 11), (0, 3, 2), (1, 2, 3), (1, 2, 9), (1, 3, 4), (2, 2, 8), (2, 3, 1),
            (2, 3, 6)]  # (layer, pos, index), sorted
N_LAYERS, N_POS, N_F = 3, 4, len(FEATURES)
N = N_F + N_LAYERS * N_POS + N_POS + 1  # features | errors | tokens | target = 27
DROPPED_FEATURES = [2, 5]
KEPT_ERRORS = [(0, 2), (1, 3), (2, 3)]


def _site(i: int) -> tuple[str, int, int]:
    """(kind, row, pos) of node i, computed from the layout rules (not from graph.py)."""
    if i < N_F:
        layer, pos, _ = FEATURES[i]
        return "feature", layer + 1, pos
    if i < N_F + N_LAYERS * N_POS:
        layer, pos = divmod(i - N_F, N_POS)
        return "error", layer + 1, pos
    if i < N_F + N_LAYERS * N_POS + N_POS:
        return "token", 0, i - N_F - N_LAYERS * N_POS
    return "target", N_LAYERS + 1, N_POS - 1


def _small_graph() -> AttributionGraph:
    g = torch.Generator().manual_seed(0)
    adjacency = torch.zeros(N, N)
    for t in range(N):
        kind, row, pos = _site(t)
        if kind not in ("feature", "target"):
            continue
        for s in range(N):
            _, srow, spos = _site(s)
            if srow < row and spos <= pos:
                adjacency[t, s] = torch.randn((), generator=g) + 0.05
    values = torch.full((N,), float("nan"))
    values[:N_F] = adjacency[:N_F].sum(1) + 0.1
    values[-1] = adjacency[-1].sum() - 0.2
    return AttributionGraph(
        prompt="Michael Jordan plays", token_ids=torch.tensor([0, 11, 12, 13]), tokens=TOKENS, n_layers=N_LAYERS,
        features=torch.tensor(FEATURES), activations=torch.rand(N_F, generator=g) + 0.5,
        targets=[Target("basketball", 21, 0.62, torch.randn(8, generator=g))], adjacency=adjacency, values=values)


def _small_pruning() -> SimpleNamespace:
    g = torch.Generator().manual_seed(1)
    node_mask = torch.ones(N, dtype=torch.bool)
    node_mask[DROPPED_FEATURES] = False
    node_mask[N_F:N_F + N_LAYERS * N_POS] = False
    for layer, pos in KEPT_ERRORS:
        node_mask[N_F + layer * N_POS + pos] = True
    graph = _small_graph()
    edge_mask = (graph.adjacency != 0) & (torch.rand(N, N, generator=g) < 0.6)  # also edges of dropped nodes
    cumulative = (torch.randperm(N, generator=g).double() + 1) / N
    return SimpleNamespace(node_mask=node_mask, edge_mask=edge_mask, cumulative=cumulative)


def _expected_edges(pruned) -> set[tuple[int, int]]:
    """(source, target) of every masked edge between kept nodes."""
    keep = pruned.node_mask
    both = pruned.edge_mask & keep[:, None] & keep[None, :]
    return {(int(s), int(t)) for t, s in both.nonzero().tolist()}


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    graph, pruned = _small_graph(), _small_pruning()
    path = graph_view(graph, pruned=pruned).save_html(tmp_path_factory.mktemp("attr") / "small.html")
    return SimpleNamespace(graph=graph, pruned=pruned, path=path)


@pytest.fixture
def page(browser, small):
    page = browser.open(small.path)
    yield page
    assert browser.problems(page) == []
    page.context.close()


def _tooltip(page) -> str:
    return page.locator(".iv-tooltip").inner_text()


def _centre(page, selector: str) -> tuple[float, float]:
    box = page.locator(selector).bounding_box()
    return box["x"] + box["width"] / 2, box["y"] + box["height"] / 2


# ---------------------------------------------------------------------------- python side
def test_bad_input_is_a_clear_error():
    graph, pruned = _small_graph(), _small_pruning()
    with pytest.raises(ValueError, match=r"node_mask has shape \(26,\), expected \(27,\)"):
        graph_view(graph, pruned=SimpleNamespace(node_mask=pruned.node_mask[:-1], edge_mask=pruned.edge_mask,
                                                 cumulative=pruned.cumulative))
    with pytest.raises(ValueError, match="edge_mask must be a bool tensor"):
        graph_view(graph, pruned=SimpleNamespace(node_mask=pruned.node_mask, edge_mask=pruned.edge_mask.float(),
                                                 cumulative=pruned.cumulative))
    with pytest.raises(ValueError, match="no 'cumulative'"):
        graph_view(graph, pruned=SimpleNamespace(node_mask=pruned.node_mask, edge_mask=pruned.edge_mask))
    with pytest.raises(ValueError, match="max_nodes must be a positive int"):
        graph_view(graph, pruned=pruned, max_nodes=0)
    with pytest.raises(ValueError, match="node_threshold must be a number in"):
        graph_view(graph, pruned=pruned, node_threshold=1.5)
    with pytest.raises(ValueError, match="dashboards key 99 is not a node: the graph has 27 nodes"):
        graph_view(graph, pruned=pruned, dashboards={99: View("table", {"columns": [], "rows": []})})


def test_to_view_and_max_nodes_cap():
    graph, pruned = _small_graph(), _small_pruning()
    view = graph.to_view(pruned=pruned)
    assert view.kind == "attribution"
    assert {n["node"] for n in view.data["nodes"]} == set(pruned.node_mask.nonzero().flatten().tolist())
    # capped: tokens and the target always, then the 3 kept features/errors of smallest cumulative influence
    frame = list(range(N_F + N_LAYERS * N_POS, N))
    rest = [i for i in range(N_F + N_LAYERS * N_POS) if pruned.node_mask[i]]
    best = sorted(rest, key=lambda i: float(pruned.cumulative[i]))[:3]
    capped = graph_view(graph, pruned=pruned, max_nodes=len(frame) + 3).data
    assert {n["node"] for n in capped["nodes"]} == set(frame) | set(best)
    shown = set(frame) | set(best)
    assert len(capped["edges"]["weight"]) == sum(1 for s, t in _expected_edges(pruned) if s in shown and t in shown)
    assert any("showing the 8 most influential nodes (max_nodes=8)" in n
               for n in graph_view(graph, pruned=pruned, max_nodes=8).notes)


# ---------------------------------------------------------------------------- the page
def test_renders_the_masks_nodes_and_edges_in_layout(page, small):
    kept = set(small.pruned.node_mask.nonzero().flatten().tolist())
    nodes = page.locator("path.iv-attr-node")
    assert nodes.count() == len(kept)
    assert {int(v) for v in nodes.evaluate_all("els => els.map(e => e.getAttribute('data-node'))")} == kept
    edges = page.eval_on_selector_all("path.iv-attr-edge", "els => els.map(e => [+e.dataset.source, +e.dataset.target,"
                                      " +e.dataset.weight])")
    expected = _expected_edges(small.pruned)
    assert len(edges) == len(expected) and {(s, t) for s, t, _ in edges} == expected
    for s, t, w in edges:
        assert math.isclose(w, float(small.graph.adjacency[t, s]), rel_tol=1e-6)
    count = page.locator(".iv-attr-count")
    assert int(count.get_attribute("data-nodes")) == len(kept) and int(count.get_attribute("data-edges")) == len(expected)
    # layout: y by row (tokens lowest, target highest), x by position, a cell's nodes by influence
    boxes = page.eval_on_selector_all("path.iv-attr-node", "els => els.map(e => { const b = e.getBoundingClientRect();"
                                      " return [+e.dataset.node, b.x + b.width / 2, b.y + b.height / 2]; })")
    at = {i: (x, y) for i, x, y in boxes}
    for i in kept:
        for j in kept:
            (_, ri, pi), (_, rj, pj) = _site(i), _site(j)
            if ri < rj:
                assert at[i][1] > at[j][1], (i, j)
            if pi < pj:
                assert at[i][0] < at[j][0], (i, j)
            if (ri, pi) == (rj, pj) and small.pruned.cumulative[i] < small.pruned.cumulative[j]:
                assert at[i][0] < at[j][0], (i, j)
    labels = page.locator(".iv-attr-token-label").all_text_contents()
    assert labels == TOKENS


def test_hover_edge_shows_its_weight_and_node_highlights_its_edges(page, small):
    graph = small.graph
    # edges whose midpoint is not covered by another element
    free = page.evaluate("""() => Array.from(document.querySelectorAll('path.iv-attr-edge')).map(e => {
        const b = e.getBoundingClientRect(), x = b.x + b.width / 2, y = b.y + b.height / 2;
        return document.elementFromPoint(x, y) === e ? [+e.dataset.edge, x, y] : null; }).filter(v => v)""")
    assert len(free) >= 5
    for k, x, y in free[:6]:
        page.mouse.move(x, y)
        edge = page.locator(f'path.iv-attr-edge[data-edge="{k}"]')
        assert edge.get_attribute("data-hover") == "1"
        s, t = int(edge.get_attribute("data-source")), int(edge.get_attribute("data-target"))
        m = re.fullmatch(r"(.*) -> (.*): (\S+)", _tooltip(page).strip())
        assert m and m.group(1) == graph.node_label(s) and m.group(2) == graph.node_label(t)
        assert math.isclose(float(m.group(3)), float(graph.adjacency[t, s]), rel_tol=1e-5)
    page.mouse.move(1, 1)
    # hover the target node: its label, value, and exactly its kept incoming edges highlighted
    target = N - 1
    page.hover(f'path.iv-attr-node[data-node="{target}"]')
    text = _tooltip(page)
    assert text.startswith("logit basketball") and "p = 0.62" in text
    hl = page.eval_on_selector_all("path.iv-attr-edge[data-hl]", "els => els.map(e => +e.dataset.source)")
    assert sorted(hl) == sorted(s for s, t in _expected_edges(small.pruned) if t == target)
    feature = 3  # L0F2 @ plays (3)
    page.hover(f'path.iv-attr-node[data-node="{feature}"]')
    text = _tooltip(page)
    assert text.startswith("L0F2 @ plays (3)")
    shown = re.search(r"^activation (\S+)\s+pre-activation (\S+)$", text, re.M)
    assert math.isclose(float(shown.group(1)), float(graph.activations[feature]), rel_tol=1e-4)
    assert math.isclose(float(shown.group(2)), float(graph.values[feature]), rel_tol=1e-4)
    influence = re.search(r"influence \(cumulative\) (\S+)", text)
    assert math.isclose(float(influence.group(1)), float(small.pruned.cumulative[feature]), rel_tol=1e-3)


def test_click_lists_exactly_the_nodes_kept_edges(page, small):
    expected = _expected_edges(small.pruned)
    for node in (N - 1, 7, N_F + 0 * N_POS + 2):  # the target, L2F8 @ Jordan, error L0 @ Jordan
        page.click(f'path.iv-attr-node[data-node="{node}"]')
        panel = page.locator(".iv-attr-panel")
        assert panel.get_attribute("data-node") == str(node)
        assert panel.locator("h4").inner_text() == small.graph.node_label(node)
        rows_in = panel.locator(".iv-attr-in tr.iv-attr-edge-row").evaluate_all(
            "els => els.map(e => [+e.dataset.source, +e.dataset.target, +e.dataset.weight])")
        rows_out = panel.locator(".iv-attr-out tr.iv-attr-edge-row").evaluate_all(
            "els => els.map(e => [+e.dataset.source, +e.dataset.target, +e.dataset.weight])")
        assert {(s, t) for s, t, _ in rows_in} == {e for e in expected if e[1] == node}
        assert {(s, t) for s, t, _ in rows_out} == {e for e in expected if e[0] == node}
        for rows in (rows_in, rows_out):
            mags = [abs(w) for _, _, w in rows]
            assert mags == sorted(mags, reverse=True)
            for s, t, w in rows:
                assert math.isclose(w, float(small.graph.adjacency[t, s]), rel_tol=1e-6)
    assert page.locator(f'path.iv-attr-node[data-node="{N_F + 2}"][data-selected]').count() == 1


def test_influence_slider_hides_the_right_nodes(page, small):
    keep, cum = small.pruned.node_mask, small.pruned.cumulative
    for value in (0.5, 0.3, 1.0):
        page.eval_on_selector(".iv-attr-slider", "(el, v) => { el.value = String(v); "
                              "el.dispatchEvent(new Event('input', {bubbles: true})); }", value)
        visible = {i for i in keep.nonzero().flatten().tolist()
                   if _site(i)[0] in ("token", "target") or float(cum[i]) <= value}
        hidden = set(keep.nonzero().flatten().tolist()) - visible
        if value < 1:
            assert hidden and any(_site(i)[0] in ("feature", "error") for i in visible)
        shown = page.eval_on_selector_all("path.iv-attr-node:not([data-hidden])", "els => els.map(e => +e.dataset.node)")
        assert set(shown) == visible
        assert page.locator("path.iv-attr-node[data-hidden]").count() == len(hidden)
        edges = {e for e in _expected_edges(small.pruned) if e[0] in visible and e[1] in visible}
        drawn = page.eval_on_selector_all("path.iv-attr-edge:not([data-hidden])",
                                          "els => els.map(e => [+e.dataset.source, +e.dataset.target])")
        assert {tuple(e) for e in drawn} == edges
        count = page.locator(".iv-attr-count")
        assert int(count.get_attribute("data-nodes")) == len(visible)
        assert int(count.get_attribute("data-edges")) == len(edges)
        if hidden:  # a hidden node is not drawn
            assert not page.locator(f'path.iv-attr-node[data-node="{min(hidden)}"]').is_visible()


def test_pin_group_save_and_load(page, small):
    members = [1, 4]  # L0F7 @ Jordan, L1F3 @ Jordan
    ids = [f"{FEATURES[i][0]}_{FEATURES[i][2]}_{FEATURES[i][1]}" for i in members]
    for i in members:
        page.click(f'path.iv-attr-node[data-node="{i}"]', modifiers=["Shift"])
    assert page.locator("path.iv-attr-node[data-pinned]").count() == 2
    assert page.locator(".iv-attr-panel").get_attribute("data-node") is None  # shift-click pins, opens nothing
    page.click(f'path.iv-attr-node[data-node="{N - 1}"]')  # the target: pinned with its panel's button
    page.click("button.iv-attr-pin")
    assert page.locator("button.iv-attr-pin").inner_text() == "unpin"
    assert page.locator("path.iv-attr-node[data-pinned]").count() == 3
    for node_id in ids:
        page.check(f'input.iv-attr-select[data-node-id="{node_id}"]')
    page.fill("input.iv-attr-group-name", "Jordan detector")
    page.click("button.iv-attr-group")
    group = page.locator('.iv-attr-supernode[data-name="Jordan detector"]')
    assert group.get_attribute("data-members") == ",".join(ids)
    # a label typed for the target (its panel is open)
    page.fill("input.iv-attr-label-input", "says basketball")
    page.press("input.iv-attr-label-input", "Enter")
    with page.expect_download() as info:
        page.click("button.iv-attr-save")
    saved = json.loads(open(info.value.path(), encoding="utf-8").read())
    target_id = f"{N_LAYERS + 1}_21_{N_POS - 1}"
    assert saved["pinned"] == ids + [target_id]
    assert saved["supernodes"] == [{"name": "Jordan detector", "nodes": ids}]
    assert saved["labels"] == {target_id: "says basketball"}
    assert saved["qParams"]["supernodes"] == [["Jordan detector"] + ids]
    # the mini subgraph: the supernode and the target, with the summed edges between them
    mini = page.locator("svg.iv-attr-mini")
    assert mini.locator(".iv-attr-mini-node").count() == 2
    # clear, then load the JSON back
    page.click("button.iv-attr-clear")
    assert page.locator("path.iv-attr-node[data-pinned]").count() == 0
    assert page.locator(".iv-attr-supernode").count() == 0
    saved["pinned"].append("9_9_9")  # an id this graph does not have: reported, ignored
    page.fill("textarea.iv-attr-load-text", json.dumps(saved))
    page.click("button.iv-attr-load")
    assert page.locator('.iv-attr-supernode[data-name="Jordan detector"]').get_attribute("data-members") == ",".join(ids)
    assert {int(v) for v in page.eval_on_selector_all("path.iv-attr-node[data-pinned]", "els => els.map(e => e.dataset.node)")} \
        == set(members + [N - 1])
    assert "9_9_9" in page.locator(".iv-attr-message").inner_text()
    page.fill("textarea.iv-attr-load-text", "{not json")
    page.click("button.iv-attr-load")
    assert page.locator(".iv-attr-message").get_attribute("data-error") == "1"
    assert page.locator("path.iv-attr-node[data-pinned]").count() == 3  # a bad file changes nothing


def test_dashboard_is_mounted_on_click(browser, small, tmp_path):
    from models import load
    from probes.sae import feature_dashboard, load_transcoders

    model, transcoders = load("factworld"), load_transcoders("factworld")
    node = 4  # L1F3 @ Jordan
    layer, _, index = FEATURES[node]
    board = feature_dashboard(model, transcoders[layer], index, ["Michael Jordan plays the sport of",
                                                                 "Michael Phelps plays the sport of"], progress=False)
    path = graph_view(small.graph, pruned=small.pruned, dashboards={node: board.to_view()}).save_html(tmp_path / "d.html")
    page = browser.open(path)
    page.click('path.iv-attr-node[data-node="1"]')
    assert page.locator(".iv-attr-dashboard").count() == 0
    page.click(f'path.iv-attr-node[data-node="{node}"]')
    mounted = page.locator(".iv-attr-panel .iv-attr-dashboard .interp-view[data-kind=dashboard][data-rendered]")
    assert mounted.count() == 1
    assert mounted.locator(".iv-dash-header").get_attribute("data-label") == board.to_view().data["label"]
    assert mounted.locator(".iv-dash-context").count() == len(board.to_view().data["contexts"]) > 0
    assert browser.problems(page) == []
    page.context.close()


def test_large_random_graph_renders_and_hovers(browser, tmp_path):
    g = torch.Generator().manual_seed(3)
    n_layers, n_pos, n_targets = 4, 12, 1
    n_f = 3000 - n_layers * n_pos - n_pos - n_targets
    feats = torch.stack([torch.randint(0, n_layers, (n_f,), generator=g), torch.randint(1, n_pos, (n_f,), generator=g),
                         torch.arange(n_f)], 1)
    feats = feats[sorted(range(n_f), key=lambda i: tuple(feats[i].tolist()))]
    n = 3000
    rows = torch.cat([feats[:, 0] + 1, torch.arange(n_layers).repeat_interleave(n_pos) + 1, torch.zeros(n_pos, dtype=torch.long),
                      torch.full((n_targets,), n_layers + 1)])
    s, t = torch.randint(0, n, (90_000,), generator=g), torch.randint(0, n, (90_000,), generator=g)
    ok = rows[s] < rows[t]
    s, t = s[ok][:30_000], t[ok][:30_000]
    adjacency = torch.zeros(n, n)
    adjacency[t, s] = torch.randn(s.numel(), generator=g)
    n_edges = int((adjacency != 0).sum())
    assert n_edges > 29_000
    graph = AttributionGraph(
        prompt="random", token_ids=torch.arange(n_pos), tokens=[f"t{i}" for i in range(n_pos)], n_layers=n_layers,
        features=feats, activations=torch.rand(n_f, generator=g), targets=[Target("x", 3, 0.5, torch.zeros(4))],
        adjacency=adjacency, values=torch.randn(n, generator=g))
    cumulative = (torch.randperm(n, generator=g).double() + 1) / n
    pruned = SimpleNamespace(node_mask=torch.ones(n, dtype=torch.bool), edge_mask=adjacency != 0, cumulative=cumulative)
    view = graph_view(graph, pruned=pruned, max_nodes=400)
    assert len(view.data["nodes"]) == 400
    page = browser.open(view.save_html(tmp_path / "big.html"))
    assert page.locator("path.iv-attr-node").count() == 400
    assert page.locator("path.iv-attr-edge").count() == len(view.data["edges"]["weight"]) > 0
    page.click("button.iv-attr-fit")  # the whole (wide) graph in view
    ms = float(page.get_attribute(".interp-view", "data-render-ms"))
    print(f"\nlarge graph: {len(view.data['edges']['weight'])} edges drawn, render {ms:.0f} ms in the page")
    assert ms < 5000
    for i in range(0, 400, 80):
        page.locator("path.iv-attr-node").nth(i).hover(force=True)
        assert page.locator(".iv-tooltip").is_visible()
    page.locator("path.iv-attr-node").nth(5).click(force=True)
    assert page.locator(".iv-attr-panel").get_attribute("data-node") is not None
    assert browser.problems(page) == []
    page.context.close()


def _viewbox(page) -> list[float]:
    return [float(v) for v in page.get_attribute("svg.iv-attr-svg", "viewBox").split()]


def test_pan_and_zoom_through_the_viewbox(page):
    home = _viewbox(page)
    x, y = _centre(page, "svg.iv-attr-svg")
    page.mouse.move(x, y)
    page.mouse.wheel(0, -400)
    zoomed = _viewbox(page)
    assert zoomed[2] < home[2] and zoomed[3] < home[3]
    node = page.locator('path.iv-attr-node[data-node="7"]')
    nx, ny = _centre(page, 'path.iv-attr-node[data-node="7"]')
    page.mouse.move(nx, ny)
    page.mouse.down()
    page.mouse.move(nx + 60, ny + 30, steps=4)
    page.mouse.up()
    dragged = _viewbox(page)
    assert dragged[0] < zoomed[0] and dragged[1] < zoomed[1] and dragged[2] == zoomed[2]
    assert page.locator(".iv-attr-panel").get_attribute("data-node") is None  # a drag is not a click
    page.click("button.iv-attr-reset")
    assert _viewbox(page) == home
    node.click()
    assert page.locator(".iv-attr-panel").get_attribute("data-node") == "7"
