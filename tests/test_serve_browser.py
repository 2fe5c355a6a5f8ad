"""`interp serve` in a real browser: uvicorn on 127.0.0.1 (a free port, in a thread) and the
system Chromium, with every request outside the app refused. The page loads without a console
error, the prompt's top token is basketball, a sweep started from the page shows exactly
`interp.patching.sweep`'s values, bad input shows the library's message, and an edit applied and
reverted from the page leaves every weight bit-identical."""

import json
import re
import contextlib
import socket
import threading
import time

import pytest
import torch
import uvicorn

from analyses.app import LOOPBACK_HOSTS, create_app
from interp import metrics
from interp.patching import sweep
from probes.edit.stats import hooks_attached

CLEAN = "Michael Jordan plays the sport of"
CORRUPTED = "Michael Phelps plays the sport of"


@pytest.fixture(scope="module")
def model():
    from models import load

    return load("factworld").eval()


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def serving(app):
    """`app` on a real uvicorn server on a free loopback port, in a thread; yields its URL."""
    port = free_port()
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    end = time.time() + 20
    while not srv.started and time.time() < end:
        time.sleep(0.05)
    assert srv.started, "uvicorn did not start"
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        srv.should_exit = True
        thread.join(10)


@pytest.fixture(scope="module")
def server(model):
    app = create_app(model, texts=[CLEAN, CORRUPTED], transcoders=None, allowed_hosts=LOOPBACK_HOSTS)
    with serving(app) as url:
        yield url, app


def snapshot(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def unchanged(app, model, snap):
    """Every weight as in `snap` and no hook attached, read under the app's model lock (so no
    computation of a session with an edit is under way)."""
    with app.state.interp.lock:
        now = model.state_dict()
        return all(torch.equal(now[k], snap[k]) for k in snap) and not hooks_attached(model)


def run_prompt(page, text):
    page.fill("#iv-prompt", text)
    page.evaluate("document.getElementById('iv-top').removeAttribute('data-top-token')")
    page.click("#iv-run")
    page.wait_for_selector("#iv-top[data-top-token]", timeout=30_000)
    page.wait_for_selector("body:not([data-busy])", timeout=30_000, state="attached")
    return page.get_attribute("#iv-top", "data-top-token")


def start_job(page, kind, fields, selects=()):
    page.select_option("#iv-job-kind", kind)
    scope = f"#iv-job-form fieldset[data-kind={kind}]"
    for name, value in fields.items():
        page.fill(f"{scope} [name={name}]", value)
    for name, value in selects:
        page.select_option(f"{scope} [name={name}]", value)
    page.evaluate("document.getElementById('iv-job').removeAttribute('data-status')")
    page.click("#iv-job-start")
    page.wait_for_selector("#iv-job[data-status=done], #iv-job[data-status=error]", timeout=60_000)
    return page.get_attribute("#iv-job", "data-status")


def test_the_explorer_in_a_browser(browser, server, model):
    url, app = server
    snap = snapshot(model)
    page = browser.open(url + "/", offline=True, allow=(url,), wait_for="body[data-ready]")

    # the prompt: top token computed independently
    with torch.no_grad():
        top = int(model(model.to_tokens(CLEAN))[0, -1].argmax())
    assert model.to_single_token("basketball") == top
    assert run_prompt(page, CLEAN) == "basketball"
    assert "basketball" in page.inner_text("#iv-top .iv-table tbody tr")
    for section in ("#iv-lens", "#iv-attention", "#iv-dla"):
        assert page.query_selector(f"{section} .interp-view[data-rendered]") is not None, section

    # click a head in the attribution bars: its dashboard opens
    bar = page.query_selector("#iv-dla .iv-bar-row[data-label^=L]")
    label = bar.get_attribute("data-label")
    bar.click()
    page.wait_for_selector("#iv-dashboard[data-unit] .interp-view[data-rendered]")
    layer, kind, index = re.match(r"L(\d+)([HN])(\d+)", label).groups()
    assert page.get_attribute("#iv-dashboard", "data-unit") == {"H": "head", "N": "neuron"}[kind]
    assert (page.get_attribute("#iv-dashboard", "data-layer"), page.get_attribute("#iv-dashboard", "data-index")) \
        == (layer, index)
    assert browser.problems(page) == []

    # a sweep from the page shows the library's numbers exactly
    status = start_job(page, "sweep", {"clean": CLEAN, "corrupted": CORRUPTED, "answer": "basketball",
                                       "counterfactual": "swimming"}, [("site", "head_z_by_pos")])
    assert status == "done"
    shown = torch.tensor(json.loads(page.get_attribute("#iv-job-result", "data-values")))
    expected = sweep(model, CLEAN, CORRUPTED, metrics.logit_diff(model, "basketball", "swimming"), "head_z_by_pos",
                     progress=False)
    assert torch.equal(shown.to(expected.values.dtype), expected.values)
    assert page.get_attribute("#iv-job-result .interp-view", "data-kind") == "heatmap"
    # ... and the heatmap shows them: hover cells, read the cell's index and value from its status line
    canvas = page.query_selector("#iv-job-result canvas.iv-heatmap-cells")
    canvas.scroll_into_view_if_needed()
    box, cw, ch = canvas.bounding_box(), float(canvas.get_attribute("data-cell-width")), \
        float(canvas.get_attribute("data-cell-height"))
    seen = set()
    for r, c in [(0, 0), (5, 6), (7, 6), (int(canvas.get_attribute("data-rows")) - 1, 2)]:
        page.mouse.move(box["x"] + (c + 0.5) * cw, box["y"] + (r + 0.5) * ch)
        status = page.query_selector("#iv-job-result .iv-heatmap-status")
        index = tuple(int(i) for i in status.get_attribute("data-index").split(","))
        assert float(status.get_attribute("data-raw")) == float(expected.values[index].float())
        seen.add(index)
    assert len(seen) == 4

    # bad input: the library's message on the page, nothing changed
    short = "Michael Phelps plays sport of"
    with pytest.raises(ValueError) as info:
        sweep(model, CLEAN, short, metrics.logit_diff(model, "basketball", "swimming"), "head_z_by_pos")
    assert start_job(page, "sweep", {"corrupted": short}) == "error"
    page.wait_for_selector("#iv-error[data-error]")
    assert page.get_attribute("#iv-error", "data-error") == str(info.value)
    assert unchanged(app, model, snap)

    # an edit: apply (the page's predictions change), compare, revert
    status = start_job(page, "edit", {"prompt": CLEAN, "subject": "Michael Jordan", "new_target": "soccer"})
    assert status == "done"
    page.wait_for_selector("#iv-edits[data-count='1']", state="attached")
    assert unchanged(app, model, snap)
    assert run_prompt(page, CLEAN) == "soccer"
    page.click("#iv-edit-compare")
    page.wait_for_selector("#iv-compare .interp-view[data-rendered]")
    assert "soccer" in page.inner_text("#iv-compare")
    page.click("#iv-edit-revert")
    page.wait_for_selector("#iv-edits[data-count='0']", state="attached")
    assert run_prompt(page, CLEAN) == "basketball"
    assert unchanged(app, model, snap)

    # the one problem: Chromium logs the refused job's HTTP 400 as a console error
    problems = browser.problems(page)
    assert len(problems) == 1 and "status of 400" in problems[0], problems
    page.context.close()
