"""`interp serve`'s API (starlette TestClient): every number equals the library's own call made
directly, bad input answers 400 with the library's message and changes nothing, jobs report
progress and stop when cancelled, and an edit in one session is invisible to every other."""

import threading
import time

import pytest
import torch
from starlette.testclient import TestClient

from analyses.app import create_app
from analyses.serve import is_loopback, network_warning, url
from interp import metrics
from interp.patching import sweep
from probes.edit.stats import hooks_attached

CLEAN = "Michael Jordan plays the sport of"
CORRUPTED = "Michael Phelps plays the sport of"
SUBJECT = "Michael Jordan"
TEXTS = [CLEAN, CORRUPTED, "Michael Jordan was born in", "Alexis Jordan plays the sport of"]


@pytest.fixture(scope="module")
def factworld_model():
    from models import load

    return load("factworld").eval()


@pytest.fixture(scope="module")
def app(factworld_model):
    return create_app(factworld_model, texts=TEXTS, transcoders="factworld")


@pytest.fixture(scope="module")
def client(app):
    with TestClient(app) as c:
        yield c


def H(session):
    return {"X-Interp-Session": session}


def snapshot(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def unchanged(model, snap):
    now = model.state_dict()
    return now.keys() == snap.keys() and all(torch.equal(now[k], snap[k]) for k in snap) and not hooks_attached(model)


def wait(client, job_id, timeout=90):
    end = time.time() + timeout
    while time.time() < end:
        s = client.get(f"/api/jobs/{job_id}").json()
        if s["status"] in ("done", "error", "cancelled"):
            return s
        time.sleep(0.02)
    raise AssertionError(f"job {job_id} did not finish in {timeout} s")


def run_job(client, kind, params, session="t"):
    r = client.post("/api/jobs", json={"kind": kind, "params": params}, headers=H(session))
    assert r.status_code == 202, r.text
    s = wait(client, r.json()["id"])
    assert s["status"] == "done", s
    return s["result"]


def top_prob(model, prompt):
    """The top next token and its probability, computed here (float64 softmax, as the app shows)."""
    with torch.no_grad():
        probs = model(model.to_tokens(prompt))[0, -1].double().softmax(-1)
    i = int(probs.argmax())
    return i, float(probs[i])


def sweep_params(site="head_z_by_pos", **kw):
    return {"clean": CLEAN, "corrupted": CORRUPTED, "answer": "basketball", "counterfactual": "swimming",
            "site": site, **kw}


def direct_sweep(model, site="head_z_by_pos", **kw):
    return sweep(model, CLEAN, CORRUPTED, metrics.logit_diff(model, "basketball", "swimming"), site, progress=False, **kw)


def test_host_warning_and_url():
    assert is_loopback("127.0.0.1") and is_loopback("localhost") and is_loopback("::1")
    assert network_warning("127.0.0.1") is None
    warning = network_warning("0.0.0.0")
    assert "reachable from the network" in warning and "authentication" in warning
    assert url("127.0.0.1", 8765) == "http://127.0.0.1:8765/"


def test_only_json_bodies_and_allowed_hosts(client, factworld_model):
    """A page of another site can send neither a JSON body (the browser would ask first) nor a
    request under another Host name (DNS rebinding) and get an answer."""
    r = client.post("/api/predict", content=b'{"prompt": "Michael Jordan"}', headers={"Content-Type": "text/plain"})
    assert r.status_code == 400 and "Content-Type: application/json" in r.json()["error"]
    guarded = create_app(factworld_model, texts=TEXTS, transcoders=None, allowed_hosts=["127.0.0.1"])
    with TestClient(guarded, base_url="http://127.0.0.1:8765") as ok:
        assert ok.get("/api/info").status_code == 200
    with TestClient(guarded, base_url="http://evil.example:8765") as evil:
        assert evil.get("/api/info").status_code == 400


def test_page_and_assets_are_served(client):
    from interp.views import assets

    page = client.get("/")
    assert page.status_code == 200 and "iv-prompt" in page.text
    assert "default-src 'none'" in page.headers["content-security-policy"]
    script = client.get("/assets/views.js")
    assert script.text == assets()[0]
    assert client.get("/static/app.js").status_code == 200


def test_top_tokens_michael_jordan_is_basketball(client, factworld_model):
    model = factworld_model
    r = client.post("/api/predict", json={"prompt": CLEAN}, headers=H("a"))
    assert r.status_code == 200
    data = r.json()
    top_id, p = top_prob(model, CLEAN)
    assert top_id == model.to_single_token("basketball")
    assert data["top"][0] == {"token": "basketball", "id": top_id, "prob": p}
    assert data["tokens"] == model.to_str_tokens(CLEAN)
    probs = [row["prob"] for row in data["top"]]
    assert probs == sorted(probs, reverse=True) and len(probs) == 10
    view = data["views"][0]
    assert view["kind"] == "table" and view["data"]["rows"][0][1] == "basketball"


def test_views_are_the_packages_own(client, factworld_model):
    """The page gets exactly what the package's views give for the same call."""
    from interp.attribution import direct_logit_attribution
    from interp.views.attention import attention_patterns
    from probes.logit_lens import logit_lens

    model = factworld_model
    att = client.post("/api/attention", json={"prompt": CLEAN}, headers=H("a")).json()
    assert att["views"][0] == attention_patterns(model, CLEAN).payload()
    lens = client.post("/api/logit_lens", json={"prompt": CLEAN, "pos": -1}, headers=H("a")).json()
    assert lens["views"][0] == logit_lens(model, CLEAN).to_view().payload()
    dla = client.post("/api/dla", json={"prompt": CLEAN, "answer": "basketball", "counterfactual": "swimming"},
                      headers=H("a")).json()
    direct = direct_logit_attribution(model, CLEAN, "basketball", "swimming")
    assert dla["views"][0] == direct.to_view().payload()
    assert torch.equal(torch.tensor(dla["heads"], dtype=direct.heads.dtype), direct.heads)
    # without an answer: attribution to the top token
    top = client.post("/api/dla", json={"prompt": CLEAN}, headers=H("a")).json()
    assert top["answer"] == "basketball"


def test_dashboards(client, factworld_model):
    from probes.ffn.dashboard import neuron_dashboard
    from probes.sae import load_transcoders
    from probes.sae.dashboard import feature_dashboard

    model = factworld_model
    head = client.post("/api/dashboard", json={"unit": "head", "layer": 1, "index": 2, "prompt": CLEAN},
                       headers=H("a")).json()
    _, cache = model.run_with_cache(CLEAN, names_filter=["blocks.1.attn.hook_pattern"])
    assert torch.equal(torch.tensor(head["pattern"]), cache["blocks.1.attn.hook_pattern"][0, 2])
    assert head["views"][0]["kind"] == "attention"
    from interp.attribution import direct_logit_attribution

    dla = direct_logit_attribution(model, CLEAN, "basketball")
    assert head["attribution"] == float(dla.heads[1, 2])
    neuron = client.post("/api/dashboard", json={"unit": "neuron", "layer": 1, "index": 7, "prompt": CLEAN},
                         headers=H("a")).json()
    assert neuron["views"][0] == neuron_dashboard(model, 1, 7, TEXTS, progress=False).to_view().payload()
    feature = client.post("/api/dashboard", json={"unit": "feature", "layer": 0, "index": 3}, headers=H("a")).json()
    expected = feature_dashboard(model, load_transcoders("factworld")[0], 3, TEXTS, k=10, progress=False)
    assert feature["views"][0] == expected.to_view().payload()


@pytest.mark.parametrize("site", ["resid_pre", "head_z_by_pos"])
def test_sweep_via_api_equals_library(client, factworld_model, site):
    result = run_job(client, "sweep", sweep_params(site))
    expected = direct_sweep(factworld_model, site)
    got = torch.tensor(result["values"], dtype=expected.values.dtype)
    assert torch.equal(got, expected.values)
    assert result["axes"] == list(expected.axes) and result["labels"] == expected.labels
    assert result["clean_value"] == expected.clean_value and result["corrupted_value"] == expected.corrupted_value
    assert result["views"][0] == expected.to_view().payload()


def test_trace_and_localise_via_api_equal_library(client, factworld_model):
    from probes.causal_trace import trace
    from probes.ffn import localise

    model = factworld_model
    got = run_job(client, "trace", {"prompt": CLEAN, "subject": SUBJECT, "kind": "mlp", "window": 2})
    expected = trace(model, CLEAN, SUBJECT, kind="mlp", window=2, progress=False)
    assert torch.equal(torch.tensor(got["values"], dtype=expected.scores.dtype), expected.scores)
    assert got["corrupted_prob"] == expected.corrupted_prob
    loc = run_job(client, "localise", {"prompt": CLEAN, "target": "basketball", "subject": SUBJECT})
    direct = localise(model, CLEAN, "basketball", subject=SUBJECT)
    assert loc["k"] == direct.k and loc["sites"] == [s.label for s in direct.sites]


def _raised(fn):
    with pytest.raises(Exception) as info:
        fn()
    err = info.value
    return err.args[0] if isinstance(err, KeyError) else str(err)


def test_bad_input_is_400_with_the_librarys_message(client, factworld_model):
    from interp.attribution import direct_logit_attribution
    from probes.causal_trace import trace
    from probes.edit import rome
    from probes.ffn import localise
    from probes.ffn.dashboard import neuron_dashboard

    model = factworld_model
    ld = lambda: metrics.logit_diff(model, "basketball", "swimming")  # noqa: E731
    short = "Michael Phelps plays sport of"
    cases = [
        ("/api/predict", {"prompt": "Michael Jordxn plays"}, lambda: model("Michael Jordxn plays")),
        ("/api/dla", {"prompt": CLEAN, "answer": "hoops"}, lambda: direct_logit_attribution(model, CLEAN, "hoops")),
        ("/api/dashboard", {"unit": "neuron", "layer": 9, "index": 0},
         lambda: neuron_dashboard(model, 9, 0, TEXTS)),
        (("sweep", sweep_params(corrupted=short)), None, lambda: sweep(model, CLEAN, short, ld(), "head_z_by_pos")),
        (("sweep", sweep_params(answer="hoops")), None, lambda: metrics.logit_diff(model, "hoops", "swimming")),
        (("sweep", sweep_params(layers=[9])), None, lambda: sweep(model, CLEAN, CORRUPTED, ld(), "head_z_by_pos",
                                                                  layers=[9])),
        (("sweep", sweep_params(site="head_zz")), None, lambda: sweep(model, CLEAN, CORRUPTED, ld(), "head_zz")),
        (("trace", {"prompt": CLEAN, "subject": "Michael Phelps"}), None, lambda: trace(model, CLEAN, "Michael Phelps")),
        (("localise", {"prompt": CLEAN, "target": "hoops"}), None, lambda: localise(model, CLEAN, "hoops")),
        (("edit", {"prompt": CLEAN, "subject": SUBJECT, "new_target": "soccer", "layer": 7}), None,
         lambda: rome(model, CLEAN, SUBJECT, "soccer", layer=7)),
        (("edit", {"prompt": CLEAN, "subject": SUBJECT, "new_target": "hoops"}), None,
         lambda: rome(model, CLEAN, SUBJECT, "hoops")),
    ]
    snap = snapshot(model)
    for where, body, direct in cases:
        expected = _raised(direct)
        if isinstance(where, tuple):
            r = client.post("/api/jobs", json={"kind": where[0], "params": where[1]}, headers=H("bad"))
        else:
            r = client.post(where, json=body, headers=H("bad"))
        assert r.status_code == 400, (where, r.text)
        assert r.json() == {"error": expected}
        assert unchanged(model, snap), where
    assert client.post("/api/jobs", json={"kind": "nope", "params": {}}).status_code == 400
    assert client.post("/api/predict", json={"prompt": CLEAN, "extra": 1}).json()["error"].startswith("unknown field")


def test_cancel_stops_a_job_and_changes_nothing(client, factworld_model):
    model = factworld_model
    snap = snapshot(model)
    r = client.post("/api/jobs", json={"kind": "sweep", "params": sweep_params("neuron_post_by_pos", batch_size=1)},
                    headers=H("c"))
    assert r.status_code == 202
    job = r.json()["id"]
    end = time.time() + 30
    while client.get(f"/api/jobs/{job}").json()["done"] < 2 and time.time() < end:
        time.sleep(0.01)
    assert client.delete(f"/api/jobs/{job}").status_code == 200
    s = wait(client, job)
    assert s["status"] == "cancelled" and "result" not in s
    assert s["total"] and s["done"] < s["total"]
    assert unchanged(model, snap)
    # the model still answers exactly as before
    again = run_job(client, "sweep", sweep_params("resid_pre"), session="c")
    assert torch.equal(torch.tensor(again["values"]), direct_sweep(model, "resid_pre").values.float())
    assert client.get("/api/jobs/nope").status_code == 404


def test_edit_apply_compare_revert_leaves_weights_identical(client, app, factworld_model):
    from probes.edit import rome

    model = factworld_model
    snap = snapshot(model)
    out = run_job(client, "edit", {"prompt": CLEAN, "subject": SUBJECT, "new_target": "soccer"}, session="ed")
    assert out["after"][0]["token"] == "soccer" and out["before"][0]["token"] == "basketball"
    assert unchanged(model, snap)  # stored in the session, not in the model
    edit = app.state.interp.session("ed").edits[0]
    direct = rome(model, CLEAN, SUBJECT, "soccer", progress=False)
    assert edit.deltas.keys() == direct.deltas.keys()
    assert all(torch.equal(edit.deltas[k], direct.deltas[k]) for k in edit.deltas)
    with edit.applied(model):
        edited_id, edited_p = top_prob(model, CLEAN)
    assert unchanged(model, snap)
    mine = client.post("/api/predict", json={"prompt": CLEAN}, headers=H("ed")).json()["top"][0]
    other = client.post("/api/predict", json={"prompt": CLEAN}, headers=H("other")).json()["top"][0]
    assert (mine["id"], mine["prob"]) == (edited_id, edited_p) and mine["token"] == "soccer"
    assert (other["id"], other["prob"]) == top_prob(model, CLEAN)
    cmp = client.post("/api/edits/compare", json={"prompts": [CLEAN]}, headers=H("ed")).json()
    assert cmp["before"][0][0]["token"] == "basketball" and cmp["after"][0][0]["token"] == "soccer"
    assert unchanged(model, snap)
    assert len(client.get("/api/edits", headers=H("ed")).json()["edits"]) == 1
    assert client.post("/api/edits/revert", json={"index": 3}, headers=H("ed")).status_code == 400
    assert client.post("/api/edits/revert", json={}, headers=H("ed")).json()["reverted"] == 1
    back = client.post("/api/predict", json={"prompt": CLEAN}, headers=H("ed")).json()["top"][0]
    assert (back["id"], back["prob"]) == top_prob(model, CLEAN)
    assert unchanged(model, snap)


def test_concurrent_sessions_are_isolated(client, app, factworld_model):
    """Two tabs sweeping and predicting while a third computes an edit: every result equals the
    same call made alone."""
    from probes.edit import rome

    model = factworld_model
    snap = snapshot(model)
    run_job(client, "edit", {"prompt": CLEAN, "subject": SUBJECT, "new_target": "soccer"}, session="A")
    edit_a = app.state.interp.session("A").edits[0]
    alone = {"B": (direct_sweep(model), top_prob(model, CLEAN))}
    with edit_a.applied(model):
        alone["A"] = (direct_sweep(model), top_prob(model, CLEAN))
    hockey = rome(model, CLEAN, SUBJECT, "hockey", progress=False)
    assert unchanged(model, snap)

    results, errors = {}, []
    start = threading.Barrier(5)

    def tab(name, what):
        try:
            start.wait()
            for round_ in range(2):
                if what == "edit":
                    results[(name, round_)] = run_job(client, "edit", {"prompt": CLEAN, "subject": SUBJECT,
                                                                       "new_target": "hockey"}, session=name)
                    break
                if what == "sweep":
                    results[(name, "sweep", round_)] = run_job(client, "sweep", sweep_params(), session=name)
                else:
                    results[(name, "predict", round_)] = client.post("/api/predict", json={"prompt": CLEAN},
                                                                     headers=H(name)).json()
        except Exception as err:  # reported below
            errors.append(err)

    threads = [threading.Thread(target=tab, args=a) for a in
               [("A", "sweep"), ("B", "sweep"), ("A", "predict"), ("B", "predict"), ("C", "edit")]]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert errors == []
    for name in ("A", "B"):
        expected_sweep, (top_id, p) = alone[name]
        for round_ in range(2):
            got = torch.tensor(results[(name, "sweep", round_)]["values"], dtype=expected_sweep.values.dtype)
            assert torch.equal(got, expected_sweep.values), name
            top = results[(name, "predict", round_)]["top"][0]
            assert (top["id"], top["prob"]) == (top_id, p), name
    edit_c = app.state.interp.session("C").edits[0]
    assert all(torch.equal(edit_c.deltas[k], hockey.deltas[k]) for k in hockey.deltas)
    assert unchanged(model, snap)
    for s in ("A", "C"):
        client.post("/api/edits/revert", json={}, headers=H(s))
