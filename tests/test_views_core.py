"""The view machinery: a View becomes one self-contained page that renders in a real browser
(system Chromium, network refused) with no console error; data round-trips exactly."""

import json
import math
import re

import pytest
import torch

from interp.views import View, assets, encode_array, kinds


def test_every_static_file_is_offline():
    script, style = assets()
    for text in (script, style):
        # the only URL allowed is the SVG namespace, which is a name, not a request
        urls = [u for u in re.findall(r"https?://[^\s\"')]+", text) if u != "http://www.w3.org/2000/svg"]
        assert urls == []
        assert "@import" not in text and "fetch(" not in text and "XMLHttpRequest" not in text


def test_unknown_kind_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown view kind 'nope'"):
        View("nope", {})


def test_save_html_needs_html_suffix(tmp_path):
    with pytest.raises(ValueError, match=r"\.html"):
        View("table", {"columns": [], "rows": []}).save_html(tmp_path / "x.png")
    assert list(tmp_path.iterdir()) == []


def test_numpy_scalars_are_plain_json():
    import numpy as np

    p = View("table", {"b": np.bool_(True), "i": np.int64(3), "f": np.float32(0.5)}).payload()
    assert p["data"] == {"b": True, "i": 3, "f": 0.5}
    View("table", {"b": np.bool_(False)}).html()


def test_payload_encodes_tensors_and_non_finite():
    t = torch.tensor([[1.5, float("nan")], [-2.0, 3.25]], dtype=torch.float64)
    p = View("table", {"t": t, "x": float("inf")}).payload()
    assert p["data"]["x"] is None
    enc = p["data"]["t"]
    assert enc["shape"] == [2, 2] and enc["dtype"] == "f32"
    json.dumps(p, allow_nan=False)  # valid JSON


@pytest.mark.parametrize("nasty", ["</script><script>console.error('injected')</script>",
                                   "<!--<script>", "a & b <!-- x --> <script></script>"])
def test_script_cannot_be_closed_by_data(browser, tmp_path, nasty):
    path = View("table", {"columns": ["a"], "rows": [[nasty]]}, title=nasty).save_html(tmp_path / "t.html")
    page = browser.open(path)
    assert browser.problems(page) == []
    assert nasty in page.inner_text(".interp-view")
    page.context.close()


def test_array_round_trip_in_browser(browser, tmp_path):
    t = torch.tensor([[0.1, -2.5, float("nan")], [1e-7, 3e5, 0.0]])
    enc = encode_array(t)
    path = View("table", {"columns": [], "rows": []}).save_html(tmp_path / "a.html")
    page = browser.open(path)
    back = page.evaluate("(enc) => { const a = InterpViews.array(enc); return {shape: a.shape, v: Array.from(a.data),"
                         " at: a.at(1, 1)}; }", enc)
    assert back["shape"] == [2, 3]
    want = t.flatten().tolist()
    for got, w in zip(back["v"], want):
        assert (math.isnan(got) and math.isnan(w)) or math.isclose(got, w, rel_tol=1e-6)
    assert math.isclose(back["at"], 3e5, rel_tol=1e-6)
    nested = page.evaluate("() => Array.from(InterpViews.array([[1, null], [3, 4]]).data)")
    assert nested[0] == 1 and math.isnan(nested[1]) and nested[3] == 4
    page.context.close()


def test_table_sorts_on_click_and_fragments_repeat(browser, tmp_path):
    view = View("table", {"columns": ["name", "score"], "rows": [["a", 1.0], ["b", 3.0], ["c", 2.0]]})
    page_html = "<!DOCTYPE html><html><body>" + view.fragment() + view.fragment() + "</body></html>"
    path = tmp_path / "two.html"
    path.write_text(page_html)
    page = browser.open(path)
    assert page.locator(".interp-view[data-rendered]").count() == 2
    first = page.locator(".interp-view").first
    first.locator("th", has_text="score").click()
    assert first.locator("tbody tr td:first-child").all_inner_texts() == ["b", "c", "a"]
    second = page.locator(".interp-view").nth(1)
    assert second.locator("tbody tr td:first-child").all_inner_texts() == ["a", "b", "c"]
    assert browser.problems(page) == []
    page.context.close()


def test_a_failing_view_reports_console_error(browser, tmp_path):
    """The harness itself can fail: a broken draw function is caught as a console error."""
    view = View("table", {"columns": None, "rows": 5})
    page = browser.open(view.save_html(tmp_path / "bad.html"), wait_for=".iv-error")
    assert any("console.error" in p for p in browser.problems(page))
    page.context.close()


def test_network_requests_are_caught(browser, tmp_path):
    path = tmp_path / "net.html"
    path.write_text('<!DOCTYPE html><html><body><img src="http://127.0.0.1:9/x.png"></body></html>')
    page = browser.open(path, wait_for=None)
    page.wait_for_timeout(200)
    assert any("network request" in p for p in browser.problems(page))
    page.context.close()


def test_kinds_lists_table():
    assert "table" in kinds()
