"""`interp views`: the gallery writes one offline page and one real screenshot per view."""

import json
import struct

import pytest

from analyses.cli import COMMANDS
from analyses.views import view_gallery


def _png_size(path):
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", data[16:24])


def test_gallery_pages_and_screenshots(tmp_path, browser):
    out = tmp_path / "views"
    result = view_gallery("factworld", out=out, only=["resid_patching", "logit_lens"], progress=False,
                          browser=browser)
    assert set(result.report) == {"resid_patching", "logit_lens"}
    for name in result.report:
        html = (out / f"{name}.html").read_text()
        assert "<script" in html and "https://" not in html
        width, height = _png_size(out / f"{name}.png")
        assert width > 200 and height > 100          # a real picture of the drawn view, not an empty page
    report = json.loads((out / "views.json").read_text())
    assert report["logit_lens"]["kind"] == "lens" and report["resid_patching"]["kind"] == "heatmap"
    assert report["logit_lens"]["load_ms"] > 0
    # the numbers in the page are the sweep's own
    sweep_view = result.results["resid_patching"]
    assert sweep_view.payload()["kind"] == "heatmap"


def test_gallery_rejects_unknown_names_and_writes_nothing(tmp_path):
    with pytest.raises(ValueError, match="unknown view"):
        view_gallery("factworld", out=tmp_path / "v", only=["nope"], progress=False)
    assert not (tmp_path / "v").exists()
    with pytest.raises(ValueError, match="unknown view"):
        view_gallery("factworld", out=tmp_path / "v", given={"nope": None}, progress=False)
    assert not (tmp_path / "v").exists()


def test_views_is_a_command():
    assert COMMANDS["views"][0] == "analyses.views"
