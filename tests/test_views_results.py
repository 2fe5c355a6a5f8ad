"""Interactive views of labelled results (interp.views.results, kinds "heatmap" and "bars"),
checked in a real browser on real fact-world results: the value under the pointer is the
result's own number at that index, the labels name the right layer / head / token, the
normalised toggle shows the independently computed fraction of the clean-corrupted gap, and
a 12 x 10 x 3072 sweep renders and hovers."""

import dataclasses
import math

import numpy as np
import pytest
import torch

from interp import metrics
from interp.attribution import direct_logit_attribution
from interp.patching import PatchResult, sweep
from interp.views import View
from interp.views.results import result_view
from models import load
from probes.causal_trace import trace
from probes.knockout import attention_knockout_all
from probes.knowledge_neurons import knowledge_neurons

CLEAN, CORRUPTED = "Michael Jordan plays the sport of", "Michael Phelps plays the sport of"


@pytest.fixture(scope="module")
def model():
    return load("factworld")


@pytest.fixture(scope="module")
def sweeps(model):
    ld = metrics.logit_diff(model, "basketball", "swimming")
    return {site: sweep(model, CLEAN, CORRUPTED, ld, site) for site in ("resid_pre", "head_z_by_pos", "neuron_post")}


@pytest.fixture(scope="module")
def tokens(model):
    return model.to_str_tokens(CLEAN)


def f32(x) -> float:
    return float(np.float32(float(x)))


def open_result(browser, result, path):
    saved = result.save_html(path)
    assert saved == path and path.exists()
    page = browser.open(path)
    assert browser.problems(page) == []
    return page


def status_of(page, cls="iv-heatmap-status"):
    return page.locator(f".{cls}").evaluate(
        "el => ({row: el.dataset.row, col: el.dataset.col, index: el.dataset.index, label: el.dataset.label,"
        " value: el.dataset.value, raw: el.dataset.raw, text: el.textContent})")


def hover_cell(page, row: int, col: int) -> dict:
    """Move the real pointer to the centre of grid cell (row, col), scrolling it into view."""
    canvas = page.locator("canvas.iv-heatmap-cells")
    cw, ch = float(canvas.get_attribute("data-cell-width")), float(canvas.get_attribute("data-cell-height"))
    page.locator(".iv-heatmap-scroll").evaluate("(el, y) => { el.scrollTop = y; }", max(0.0, row * ch - 100))
    box = canvas.bounding_box()
    page.mouse.move(box["x"] + (col + 0.5) * cw, box["y"] + (row + 0.5) * ch)
    return status_of(page)


def pixel(page, row: int, col: int) -> list[int]:
    """The [r, g, b] drawn at the centre of grid cell (row, col)."""
    return page.locator("canvas.iv-heatmap-cells").evaluate(
        """(c, rc) => { const w = +c.dataset.cellWidth, h = +c.dataset.cellHeight, k = c.width / parseFloat(c.style.width);
           return Array.from(c.getContext('2d').getImageData(Math.floor((rc[1] + 0.5) * w * k),
                                                              Math.floor((rc[0] + 0.5) * h * k), 1, 1).data).slice(0, 3); }""",
        [row, col])


# ------------------------------------------------------------------ dispatch (no browser)

def test_dispatch_follows_the_axes(model, sweeps):
    assert sweeps["resid_pre"].to_view().kind == "heatmap"
    assert sweeps["head_z_by_pos"].to_view().kind == "heatmap"
    assert sweeps["neuron_post"].to_view().kind == "bars"          # (layer, neuron)
    ko = attention_knockout_all(model, CLEAN, "Michael Jordan", "basketball")
    assert ko.to_view().kind == "heatmap"                          # (sources, layer)
    one = dataclasses.replace(ko, probs=ko.probs[0], sources=ko.sources[:1])
    assert one.axes == ("layer",) and one.to_view().kind == "bars"
    assert "interp-view" in sweeps["resid_pre"]._repr_html_()
    view = result_view(sweeps["resid_pre"], title="mine", tokens=[f"t{i}" for i in range(7)])
    assert isinstance(view, View) and view.title == "mine"
    assert view.data["labels"]["pos"][3] == "t3 (3)"


def test_bad_results_are_clear_errors(sweeps):
    r = sweeps["resid_pre"]
    four = dataclasses.replace(r, values=torch.zeros(2, 2, 2, 2), axes=("layer", "pos", "head", "x"))
    with pytest.raises(ValueError, match="cannot show a result with axes"):
        four.to_view()
    with pytest.raises(ValueError, match="tokens: expected 7 labels"):
        r.to_view(tokens=["a", "b"])
    with pytest.raises(ValueError, match="needs a labelled result"):
        result_view(object())


# ------------------------------------------------------------------ heatmaps

def test_resid_pre_heatmap_hover_colours_and_normalise(browser, sweeps, tokens, tmp_path):
    r = sweeps["resid_pre"]
    page = open_result(browser, r, tmp_path / "resid_pre.html")
    layer, pos = 1, 2  # "Jordan"
    st = hover_cell(page, layer, pos)
    assert (int(st["row"]), int(st["col"])) == (layer, pos)
    assert float(st["value"]) == f32(r.values[layer, pos])
    assert st["label"] == f"L{layer} @ {tokens[pos]} ({pos})" == "L1 @ Jordan (2)"
    assert page.locator(".iv-tooltip").is_visible() and "L1 @ Jordan (2)" in page.inner_text(".iv-tooltip")
    # colours: white is "no effect" (the corrupted run's metric), blue the largest restoration
    bar = page.locator(".iv-heatmap-colorbar")
    assert float(bar.get_attribute("data-center")) == pytest.approx(r.corrupted_value, rel=1e-6)
    eff = (r.values - r.corrupted_value).abs()
    big = divmod(int(eff.argmax()), eff.shape[1])
    small = divmod(int(eff.argmin()), eff.shape[1])
    red, green, blue = pixel(page, *big)
    assert blue > red + 60 and (r.values[big] > r.corrupted_value)
    assert min(pixel(page, *small)) > 235
    # the normalised toggle: fraction of the clean - corrupted gap this cell restores
    page.locator("input.iv-heatmap-normalised").check()
    st = hover_cell(page, layer, pos)
    want = (f32(r.values[layer, pos]) - r.corrupted_value) / (r.clean_value - r.corrupted_value)
    assert float(st["value"]) == pytest.approx(want, rel=1e-6)
    assert float(st["value"]) == pytest.approx(float(r.normalized().values[layer, pos]), rel=1e-5, abs=1e-6)
    assert float(st["raw"]) == f32(r.values[layer, pos])
    assert "clean" in page.inner_text(".iv-heatmap-norm-note")
    page.context.close()


def test_head_by_pos_selector(browser, sweeps, tokens, tmp_path):
    r = sweeps["head_z_by_pos"]  # [layer, pos, head]
    n_layers, n_pos, n_heads = r.values.shape
    page = open_result(browser, r, tmp_path / "heads.html")
    assert page.get_attribute(".iv-heatmap", "data-mode") == "all"
    l, p, h = 1, 6, 3
    st = hover_cell(page, l * n_heads + h, p)  # rows L0H0, L0H1, ...
    assert float(st["value"]) == f32(r.values[l, p, h])
    assert st["label"] == f"L{l}H{h} @ {tokens[p]} ({p})"
    assert st["index"] == f"{l},{p},{h}"
    page.locator("select.iv-heatmap-mode").select_option("unit:2")  # one head, rows = layers
    assert page.locator("canvas.iv-heatmap-cells").get_attribute("data-rows") == str(n_layers)
    st = hover_cell(page, 3, 5)
    assert float(st["value"]) == f32(r.values[3, 5, 2]) and st["label"] == f"L3H2 @ {tokens[5]} (5)"
    page.locator("select.iv-heatmap-mode").select_option("row:0")  # layer 0, rows = heads
    st = hover_cell(page, 1, 2)
    assert float(st["value"]) == f32(r.values[0, 2, 1]) and st["label"] == f"L0H1 @ {tokens[2]} (2)"
    page.context.close()


def test_causal_trace_normalised_to_the_probability_gap(browser, model, tmp_path):
    tr = trace(model, CLEAN, "Michael Jordan", "basketball", n_samples=3)
    page = open_result(browser, tr, tmp_path / "trace.html")
    st = hover_cell(page, 2, 6)
    assert float(st["value"]) == f32(tr.scores[2, 6]) and st["label"] == "L2 @ of (6)"
    page.locator("input.iv-heatmap-normalised").check()
    st = hover_cell(page, 2, 6)
    want = (f32(tr.scores[2, 6]) - tr.corrupted_prob) / (tr.clean_prob - tr.corrupted_prob)
    assert float(st["value"]) == pytest.approx(want, rel=1e-6)
    page.context.close()


def test_large_neuron_sweep_renders_and_hovers(browser, tmp_path):
    n_layers, n_pos, d_mlp = 12, 10, 3072  # GPT-2 small's (layer, pos, neuron): 368,640 cells
    values = torch.randn(n_layers, n_pos, d_mlp, generator=torch.Generator().manual_seed(0))
    labels = {"layer": [f"L{l}" for l in range(n_layers)], "pos": [f"w{i} ({i})" for i in range(n_pos)],
              "neuron": [f"N{n}" for n in range(d_mlp)]}
    r = PatchResult(values, ("layer", "pos", "neuron"), labels, "neuron_post_by_pos", "denoise", "logit diff",
                    3.0, -1.0)
    page = open_result(browser, r, tmp_path / "big.html")
    page.locator("select.iv-heatmap-mode").select_option("row:7")
    assert page.locator("canvas.iv-heatmap-cells").get_attribute("data-rows") == str(d_mlp)
    st = hover_cell(page, 2500, 4)
    assert st["label"] == "L7N2500 @ w4 (4)" and float(st["value"]) == f32(values[7, 4, 2500])
    assert browser.problems(page) == []
    page.context.close()


# ------------------------------------------------------------------ bars

def bar_rows(page):
    return [tuple(r) for r in page.locator(".iv-bar-row").evaluate_all(
        "rows => rows.map(r => [r.dataset.label, +r.dataset.value])")]


def test_direct_logit_attribution_bars(browser, model, tmp_path):
    dla = direct_logit_attribution(model, CLEAN, "basketball", "swimming")
    page = open_result(browser, dla, tmp_path / "dla.html")
    n_layers, n_heads = dla.heads.shape
    order = dla.heads.flatten().abs().argsort(descending=True)
    want = [(f"L{int(i) // n_heads}H{int(i) % n_heads}", f32(dla.heads.flatten()[i])) for i in order]
    assert bar_rows(page) == want[:min(20, n_heads * n_layers)]
    page.locator("input.iv-bars-k").fill("5")
    assert page.locator(".iv-bar-row").count() == 5
    first = page.locator(".iv-bar-row").first
    first.hover()
    st = status_of(page, "iv-bars-status")
    assert (st["label"], float(st["value"])) == want[0]
    assert "#2166ac" in first.locator(".iv-bar").get_attribute("style") or dla.heads.flatten()[order[0]] < 0
    page.locator("select.iv-bars-group").select_option(label=f"neurons ({dla.neurons.numel()})")
    page.locator("input.iv-bars-k").fill("7")
    rows = bar_rows(page)
    d_mlp = dla.neurons.shape[1]
    top = dla.neurons.flatten().abs().argsort(descending=True)[:7]
    assert rows == [(f"L{int(i) // d_mlp}N{int(i) % d_mlp}", f32(dla.neurons.flatten()[i])) for i in top]
    neg = [i for i, (_, v) in enumerate(rows) if v < 0]
    if neg:
        assert "#b2182b" in page.locator(".iv-bar-row").nth(neg[0]).locator(".iv-bar").get_attribute("style")
    page.locator("select.iv-bars-group").select_option(index=2)  # per layer: the parts add up
    page.locator("input.iv-bars-k").fill("100")
    total = sum(v for _, v in bar_rows(page))
    assert total == pytest.approx(dla.logit_diff, rel=1e-4, abs=1e-3)
    page.context.close()


def test_knowledge_neuron_bars_name_the_position(browser, model, tmp_path):
    kn = knowledge_neurons(model, CLEAN, "basketball", steps=8)
    page = open_result(browser, kn, tmp_path / "kn.html")
    flat = kn.attributions.flatten()
    d_mlp = kn.attributions.shape[1]
    i = int(flat.abs().argmax())
    rows = bar_rows(page)
    assert len(rows) == 20
    assert rows[0] == (f"L{kn.layers[i // d_mlp]}N{i % d_mlp} @ of (6)", f32(flat[i]))
    values = [abs(v) for _, v in rows]
    assert values == sorted(values, reverse=True)
    page.locator(".iv-bar-row").nth(3).hover()
    st = status_of(page, "iv-bars-status")
    assert (st["label"], float(st["value"])) == rows[3]
    page.locator("input.iv-bars-order").check()  # the same top 20, in index order
    labels = [lab for lab, _ in bar_rows(page)]
    assert sorted(labels) == sorted(lab for lab, _ in rows) and labels != [lab for lab, _ in rows]
    page.context.close()


def test_average_trace_nan_cells_and_total_effect_normalisation(browser, tmp_path):
    from probes.trace_average import AverageTrace

    ie = torch.tensor([[0.1, float("nan"), 0.3], [0.0, float("nan"), -0.2]])
    avg = AverageTrace(ie, ["first subject", "middle subject", "last subject"], [5, 0, 5], 0.5, 0.8, 0.3, 5, 0,
                       "mlp", 1)
    page = open_result(browser, avg, tmp_path / "avg.html")
    st = hover_cell(page, 1, 1)
    assert st["label"] == "L1 middle subject" and math.isnan(float(st["value"])) and "n/a" in st["text"]
    assert pixel(page, 1, 1) == [221, 221, 221]  # NaN is grey, not a colour
    page.locator("input.iv-heatmap-normalised").check()
    st = hover_cell(page, 0, 2)
    assert float(st["value"]) == pytest.approx(f32(0.3) / 0.5, rel=1e-6)  # fraction of the total effect
    page.context.close()


def test_feature_attribution_is_bars_over_features():
    from interp.attribution.features import FeatureLogitAttribution

    fla = FeatureLogitAttribution(torch.tensor([[0.5, -2.0, 0.1]]), torch.zeros(1), torch.zeros(1), [2],
                                  ["a", "b"], "x", None)
    view = fla.to_view()
    assert view.kind == "bars"
    group = view.data["groups"][0]
    assert group["labels"] == {"layer": ["L2"], "feature": ["F0", "F1", "F2"]} and group["suffix"] == ""
