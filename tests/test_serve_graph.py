"""The explorer's attribution-graph job ("graph"): through the API its counts, pruning, targets and
scores equal `probes.graph.attribution_graph` called directly; bad input (no transcoders, an
unknown target word, a threshold out of range) answers 400 with the library's message; cancel stops
it and leaves every weight bit-identical with no hook attached; a tab with a ROME edit gets the
graph of the edited model while another tab gets the clean one; and in a real browser the graph
started from the page draws exactly the pruned graph's nodes without a console problem."""

import time

import pytest
import torch
from starlette.testclient import TestClient

from analyses.app import LOOPBACK_HOSTS, create_app
from probes.edit.stats import hooks_attached
from probes.graph import attribution_graph
from probes.sae import load_transcoders
from test_serve import H, wait
from test_serve import run_job as run_session_job
from test_serve_browser import serving

CLEAN = "Michael Jordan plays the sport of"
SUBJECT = "Michael Jordan"
TEXTS = [CLEAN, "Michael Phelps plays the sport of", "Michael Jordan was born in"]


def run_job(client, kind, params, session="g"):
    """A finished job's result, in this file's own session by default."""
    return run_session_job(client, kind, params, session)


@pytest.fixture(scope="module")
def model():
    from models import load

    return load("factworld").eval()


@pytest.fixture(scope="module")
def transcoders():
    return load_transcoders("factworld")


@pytest.fixture(scope="module")
def app(model):
    return create_app(model, texts=TEXTS, transcoders="factworld")


@pytest.fixture(scope="module")
def client(app):
    with TestClient(app) as c:
        yield c


@pytest.fixture(scope="module")
def direct(model, transcoders):
    """The clean graph of CLEAN, built here, and its pruning at the defaults (0.8, 0.98)."""
    graph = attribution_graph(model, CLEAN, transcoders, progress=False)
    return graph, graph.prune(node_threshold=0.8, edge_threshold=0.98)




def snapshot(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def unchanged(model, snap, grads=None):
    now = model.state_dict()
    same = now.keys() == snap.keys() and all(torch.equal(now[k], snap[k]) for k in snap)
    if grads is not None:
        same = same and [p.requires_grad for p in model.parameters()] == grads
    return same and not hooks_attached(model)






def expect_same_graph(result, graph, pruned):
    """The job's numbers are the directly built graph's."""
    assert result["counts"] == {"features": graph.n_features, "errors": graph.n_errors, "tokens": graph.n_pos,
                                "targets": graph.n_targets, "nodes": graph.n_nodes,
                                "active_features": graph.settings["n_active_features"]}
    assert result["pruned"] == {"nodes": int(pruned.node_mask.sum()), "edges": int(pruned.edge_mask.sum())}
    assert [(t["label"], t["token"]) for t in result["targets"]] == [(t.label, t.token) for t in graph.targets]
    assert [t["prob"] for t in result["targets"]] == pytest.approx([t.prob for t in graph.targets], rel=1e-6)
    scores = graph.scores()
    assert result["scores"] == pytest.approx(scores, rel=1e-5)
    view = result["views"][0]
    assert view["kind"] == "attribution"
    assert view["data"]["n_nodes_kept"] == int(pruned.node_mask.sum())
    assert view["data"]["n_nodes_total"] == graph.n_nodes
    assert sorted(n["node"] for n in view["data"]["nodes"]) == pruned.nodes.tolist()


def test_graph_job_equals_the_direct_call(client, model, transcoders, direct):
    snap, grads = snapshot(model), [p.requires_grad for p in model.parameters()]
    graph, pruned = direct
    result = run_job(client, "graph", {"prompt": CLEAN})
    expect_same_graph(result, graph, pruned)
    assert result["targets"][0]["label"] == "basketball" and result["tokens"] == model.to_str_tokens(CLEAN)
    # dashboards of the most influential kept features ride along (at most 8), keyed by node list index
    view = result["views"][0]["data"]
    influence = graph.influence()
    kept_features = sorted((i for i in pruned.nodes.tolist() if graph.node_kind(i) == "feature"),
                           key=lambda i: -float(influence[i]))
    shown = {view["nodes"][int(k)]["node"] for k in view["dashboards"]}
    assert shown == set(kept_features[:8]) and all(p["kind"] == "dashboard" for p in view["dashboards"].values())
    assert unchanged(model, snap, grads)

    # explicit target words and thresholds are passed through
    words = ["basketball", "soccer"]
    result = run_job(client, "graph", {"prompt": CLEAN, "targets": "basketball, soccer", "node_threshold": 0.5,
                                       "edge_threshold": 0.9})
    graph2 = attribution_graph(model, CLEAN, transcoders, targets=words, progress=False)
    pruned2 = graph2.prune(node_threshold=0.5, edge_threshold=0.9)
    expect_same_graph(result, graph2, pruned2)
    assert [t["label"] for t in result["targets"]] == words
    assert result["pruned"]["nodes"] < int(pruned.node_mask.sum())
    assert unchanged(model, snap, grads)


def _raised(fn):
    with pytest.raises(Exception) as info:
        fn()
    err = info.value
    return err.args[0] if isinstance(err, KeyError) else str(err)


def test_bad_input_is_400_and_changes_nothing(client, model, transcoders, direct):
    snap = snapshot(model)
    graph, _ = direct
    cases = [
        ({"prompt": CLEAN, "targets": ["hoops"]},
         _raised(lambda: attribution_graph(model, CLEAN, transcoders, targets=["hoops"], progress=False))),
        ({"prompt": CLEAN, "node_threshold": 1.5}, _raised(lambda: graph.prune(node_threshold=1.5))),
        ({"prompt": CLEAN, "edge_threshold": -0.1}, _raised(lambda: graph.prune(edge_threshold=-0.1))),
        ({"prompt": "Michael Jordxn plays"}, _raised(lambda: model("Michael Jordxn plays"))),
    ]
    for params, expected in cases:
        r = client.post("/api/jobs", json={"kind": "graph", "params": params}, headers=H("bad"))
        assert r.status_code == 400 and r.json() == {"error": expected}, (params, r.text)
    r = client.post("/api/jobs", json={"kind": "graph", "params": {"prompt": CLEAN, "layers": [1]}}, headers=H("bad"))
    assert r.status_code == 400 and r.json()["error"].startswith("unknown field")
    r = client.post("/api/jobs", json={"kind": ["graph"], "params": {}}, headers=H("bad"))
    assert r.status_code == 400 and "graph" in r.json()["error"]
    # a model without transcoders: a clear refusal
    bare = create_app(model, texts=TEXTS, transcoders=None)
    with TestClient(bare) as c:
        assert c.get("/api/info").json()["transcoders"] is False
        r = c.post("/api/jobs", json={"kind": "graph", "params": {"prompt": CLEAN}})
        assert r.status_code == 400 and "no transcoders" in r.json()["error"]
    assert unchanged(model, snap)


def test_cancel_stops_the_graph_and_changes_nothing(client, model):
    snap, grads = snapshot(model), [p.requires_grad for p in model.parameters()]
    r = client.post("/api/jobs", json={"kind": "graph", "params": {"prompt": CLEAN, "batch_size": 1}}, headers=H("c"))
    assert r.status_code == 202, r.text
    job = r.json()["id"]
    end = time.time() + 30
    while client.get(f"/api/jobs/{job}").json()["done"] < 3 and time.time() < end:
        time.sleep(0.005)
    assert client.post(f"/api/jobs/{job}/cancel").status_code == 200
    s = wait(client, job)
    assert s["status"] == "cancelled" and "result" not in s
    assert s["desc"] == "attribution graph" and s["total"] and s["done"] < s["total"]
    assert unchanged(model, snap, grads)


def test_a_tabs_edit_changes_its_graph_only(client, app, model, transcoders, direct):
    snap = snapshot(model)
    run_job(client, "edit", {"prompt": CLEAN, "subject": SUBJECT, "new_target": "soccer"}, session="ed")
    edit = app.state.interp.session("ed").edits[0]
    assert unchanged(model, snap)
    edited = run_job(client, "graph", {"prompt": CLEAN, "targets": "basketball"}, session="ed")
    clean = run_job(client, "graph", {"prompt": CLEAN, "targets": "basketball"}, session="other")
    with edit.applied(model):
        expected = attribution_graph(model, CLEAN, transcoders, targets=["basketball"], progress=False)
    assert unchanged(model, snap)
    expected_clean = attribution_graph(model, CLEAN, transcoders, targets=["basketball"], progress=False)
    expect_same_graph(edited, expected, expected.prune())
    expect_same_graph(clean, expected_clean, expected_clean.prune())
    p_edited, p_clean = edited["targets"][0]["prob"], clean["targets"][0]["prob"]
    assert p_clean > 0.9 and p_edited < 0.5 * p_clean, (p_clean, p_edited)
    # the default targets follow the edit: soccer tops the edited tab's graph, basketball the clean one's
    mine = run_job(client, "graph", {"prompt": CLEAN}, session="ed")
    assert mine["targets"][0]["label"] == "soccer"
    theirs = run_job(client, "graph", {"prompt": CLEAN}, session="other")
    expect_same_graph(theirs, *direct)
    assert client.post("/api/edits/revert", json={}, headers=H("ed")).json()["reverted"] == 1
    assert unchanged(model, snap)


# ---------------------------------------------------------------------------- the page
@pytest.fixture(scope="module")
def server(model):
    app = create_app(model, texts=TEXTS, transcoders="factworld", allowed_hosts=LOOPBACK_HOSTS)
    with serving(app) as url:
        yield url, app


def test_the_graph_from_the_page(browser, server, model, direct):
    url, app = server
    graph, pruned = direct
    snap = snapshot(model)
    page = browser.open(url + "/", offline=True, allow=(url,), wait_for="body[data-ready]")
    assert page.input_value("#iv-prompt") == CLEAN and page.input_value("#iv-graph-form [name=prompt]") == ""
    page.click("#iv-graph-start")  # the prompt field empty: the page's prompt
    page.wait_for_selector("#iv-graph[data-status=done], #iv-graph[data-status=error]", timeout=60_000)
    assert page.get_attribute("#iv-graph", "data-status") == "done", page.inner_text("#iv-error")
    page.wait_for_selector("#iv-graph-result[data-kind=graph] .interp-view[data-rendered]")
    result = page.locator("#iv-graph-result")
    n_kept = int(pruned.node_mask.sum())
    assert int(result.get_attribute("data-nodes-kept")) == n_kept
    assert int(result.get_attribute("data-features")) == graph.n_features
    drawn = page.eval_on_selector_all("#iv-graph-result path.iv-attr-node", "els => els.map(e => +e.dataset.node)")
    assert sorted(drawn) == pruned.nodes.tolist() and len(drawn) == n_kept
    assert "basketball" in page.inner_text("#iv-graph-summary")
    assert page.get_attribute("#iv-graph-progress", "value") == page.get_attribute("#iv-graph-progress", "max")
    # the most influential kept feature: clicking it opens the side panel with its dashboard drawn
    influence = graph.influence()
    top = max((i for i in pruned.nodes.tolist() if graph.node_kind(i) == "feature"), key=lambda i: float(influence[i]))
    page.click(f'#iv-graph-result path.iv-attr-node[data-node="{top}"]')
    panel = page.locator("#iv-graph-result .iv-attr-panel")
    assert panel.get_attribute("data-node") == str(top)
    page.wait_for_selector("#iv-graph-result .iv-attr-panel .iv-attr-dashboard .interp-view[data-rendered]")
    assert page.locator("#iv-dashboard .interp-view").count() == 0  # the graph's clicks open nothing else
    with app.state.interp.lock:
        assert unchanged(model, snap)
    assert browser.problems(page) == []
    page.context.close()
