"""The explorer refuses state-changing requests from other origins, answers its own loopback
address, and keeps an edit computed in a job consistent with the session's edits."""

import pytest
from starlette.testclient import TestClient

from analyses.app import create_app
from analyses.app.guard import cross_origin
from analyses.serve import allowed_hosts


@pytest.mark.parametrize("headers, refused", [
    ({"origin": "http://evil.example", "host": "127.0.0.1:8765"}, True),
    ({"sec-fetch-site": "cross-site", "host": "127.0.0.1:8765"}, True),
    ({"sec-fetch-site": "same-site", "host": "127.0.0.1:8765"}, True),
    ({"origin": "null", "host": "127.0.0.1:8765"}, True),
    ({"origin": "http://127.0.0.1:8765", "host": "127.0.0.1:8765", "sec-fetch-site": "same-origin"}, False),
    ({"host": "127.0.0.1:8765"}, False),                       # curl, Python: no browser marks
])
def test_cross_origin_rule(headers, refused):
    assert bool(cross_origin("POST", headers)) == refused
    assert cross_origin("GET", headers) == ""                 # reading is never refused


def test_a_cross_site_post_changes_nothing():
    app = create_app("factworld", transcoders=None)
    state = app.state.interp
    state.add_edit("victim", object())                         # a stand-in edit: it is only counted here
    with TestClient(app) as client:
        r = client.post("/api/edits/revert", content=b"", headers={"Origin": "http://evil.example",
                                                                  "Content-Type": "text/plain",
                                                                  "X-Interp-Session": "victim"})
        assert r.status_code == 403 and "cross-origin" in r.json()["error"]
        assert len(state.session("victim").edits) == 1
        r = client.post("/api/predict", json={"prompt": "Michael Jordan plays the sport of"},
                        headers={"Sec-Fetch-Site": "cross-site"})
        assert r.status_code == 403
        same = client.post("/api/predict", json={"prompt": "Michael Jordan plays the sport of"},
                           headers={"Origin": "http://testserver", "Sec-Fetch-Site": "same-origin"})
        assert same.status_code == 200


def test_loopback_binds_answer_their_own_address():
    assert "127.0.0.2" in allowed_hosts("127.0.0.2") and "localhost" in allowed_hosts("127.0.0.2")
    assert "[::1]" in allowed_hosts("::1")
    assert allowed_hosts("0.0.0.0") is None
    app = create_app("factworld", transcoders=None, allowed_hosts=allowed_hosts("127.0.0.2"))
    with TestClient(app, base_url="http://127.0.0.2:8765") as client:
        assert client.get("/api/info").status_code == 200
    with TestClient(app, base_url="http://example.com") as client:
        assert client.get("/api/info").status_code == 400


def test_job_results_are_stored_under_the_model_lock():
    """The edit a job computed is added before the lock is released: a revert waiting on the lock
    runs after it, never between the computation and the store."""
    app = create_app("factworld", transcoders=None)
    state, jobs = app.state.interp, app.state.jobs
    order = []

    def work(model):
        return "edit"

    def on_done(value):
        order.append(("stored", state.lock._is_owned()))
        return {"ok": True}

    job = jobs.submit("edit", "s", work, on_done)
    job.finished_event.wait(30)
    assert job.status == "done" and order == [("stored", True)]
