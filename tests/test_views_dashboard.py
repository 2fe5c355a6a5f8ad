"""Neuron and feature dashboards (probes.ffn.neuron_dashboard, probes.sae.feature_dashboard) and
their view (kind "dashboard"), on the shipped fact-world model and transcoders. The numbers are
checked against readouts computed here by hand (one unpadded run per text; W_out[n] through
ln_final's centring and weight and W_U); the view in a real browser (offline): hovering a token
shows its activation, the promoted list starts with the hand-computed token, the histogram's
hover shows its count, and the same payload renders embedded via InterpViews.mount."""

import json
import re

import numpy as np
import pytest
import torch

from interp.checks import IndexRangeError
from interp.views import View
from models import load
from probes.ffn import neuron_dashboard
from probes.sae import feature_dashboard, load_transcoders, plot_dashboard

MJ = "Michael Jordan plays the sport of"
JORDAN = 2  # position of "Jordan" in MJ (after <bos>)
LAYER = 1


@pytest.fixture(scope="module")
def fw():
    return load("factworld")


@pytest.fixture(scope="module")
def texts():
    from analyses.features import corpus

    return corpus(limit=2) + [MJ, "Michael Phelps plays the sport of", "Alexis Jordan plays the sport of"]


@pytest.fixture(scope="module")
def runs(fw, texts):
    """Per text, its own (unpadded) run: MLP `LAYER`'s post [pos, d_mlp] and pre [pos, d_mlp]."""
    out = []
    with torch.no_grad():
        for t in texts:
            _, cache = fw.run_with_cache(t, names_filter=[f"blocks.{LAYER}.mlp.hook_post",
                                                          f"blocks.{LAYER}.mlp.hook_pre"])
            out.append((cache[f"blocks.{LAYER}.mlp.hook_post"][0], cache[f"blocks.{LAYER}.mlp.hook_pre"][0]))
    return out


@pytest.fixture(scope="module")
def neuron(runs, texts):
    """The neuron of MLP `LAYER` that fires most at "Jordan" in "Michael Jordan plays the sport of"."""
    return int(runs[texts.index(MJ)][0][JORDAN].argmax())


@pytest.fixture(scope="module")
def dash(fw, neuron, texts):
    return neuron_dashboard(fw, LAYER, neuron, texts, k=6, bins=15, batch_size=16, progress=False)


@pytest.fixture(scope="module")
def promoted(fw, neuron):
    """The value's logits by hand: W_out[n], centred, times ln_final.w, through W_U -> (ids, logits) top 6."""
    v = fw.get_parameter(f"blocks.{LAYER}.mlp.W_out").detach()[neuron]
    logits = ((v - v.mean()) * fw.get_parameter("ln_final.w").detach()) @ fw.get_parameter("unembed.W_U").detach()
    return logits.topk(6), logits.topk(6, largest=False)


def word(fw, i):
    return fw.to_str_tokens(torch.tensor([int(i)]))[0]


def test_neuron_dashboard_numbers(fw, dash, runs, neuron, texts):
    post = torch.cat([p[:, neuron] for p, _ in runs])
    assert dash.unit == "neuron" and dash.label == f"L{LAYER}N{neuron}" and dash.hook == f"blocks.{LAYER}.mlp.hook_post"
    assert dash.max_activation == pytest.approx(float(post.max()), abs=1e-5)
    assert dash.n_tokens == post.numel() and dash.n_texts == len(texts)
    assert dash.frequency == pytest.approx(float((post > 0).double().mean()))
    # the top contexts are the largest activations, with every token's activation from the text's own run
    assert [c.activation for c in dash.top_examples] == pytest.approx(post.sort(descending=True).values[:6].tolist(),
                                                                     abs=1e-5)
    for c in dash.top_examples:
        assert c.activations == pytest.approx(runs[texts.index(c.text)][0][:, neuron].tolist(), abs=1e-5)
    mj = float(runs[texts.index(MJ)][0][JORDAN, neuron])
    assert mj > 0 and mj <= dash.max_activation + 1e-6
    # histogram of the positive activations, counted here with numpy
    fired = post[post > 0].double().numpy()
    counts, edges = np.histogram(fired, bins=15, range=(0.0, fired.max()))
    assert dash.histogram["counts"] == counts.tolist() and dash.histogram["edges"] == pytest.approx(edges.tolist())


def test_neuron_value_and_key(fw, dash, promoted, runs, texts, neuron):
    top, bottom = promoted
    assert [t for t, _ in dash.value_top] == [word(fw, i) for i in top.indices]
    assert [v for _, v in dash.value_top] == pytest.approx(top.values.tolist(), abs=1e-5)
    assert [v for _, v in dash.value_bottom] == pytest.approx(bottom.values.tolist(), abs=1e-5)
    best = dash.top_examples[0]
    pre = float(runs[texts.index(best.text)][1][best.pos, neuron])
    assert dash.key_pre_activation == pytest.approx(pre, abs=1e-5)
    assert sum(dash.key_sources.values()) == pytest.approx(pre, abs=1e-4)
    assert pre == pytest.approx(best.activation, abs=1e-5)  # ReLU: where it fires, post = pre
    assert {f"{w}@{p}" for p, w in enumerate(best.tokens[: best.pos + 1])} | {"mlp L0", "position", "biases"} == \
        set(dash.key_sources)


def test_neuron_dashboard_bad_input_is_clear(fw, texts):
    with pytest.raises(IndexRangeError, match="neuron"):
        neuron_dashboard(fw, LAYER, fw.cfg.d_mlp, texts, progress=False)
    with pytest.raises(IndexRangeError):
        neuron_dashboard(fw, fw.cfg.n_layers, 0, texts, progress=False)
    with pytest.raises(ValueError, match="bins"):
        neuron_dashboard(fw, LAYER, 0, texts, bins=0, progress=False)
    with pytest.raises(ValueError, match="no texts"):
        neuron_dashboard(fw, LAYER, 0, [], progress=False)


def test_dashboards_keep_json_and_png(dash, tmp_path):
    out = json.loads(json.dumps(dash.to_dict()))
    assert {"label", "max_activation", "layer", "index", "hook", "top_examples", "value_top", "value_bottom",
            "key_sources", "key_pre_activation", "histogram", "frequency", "n_tokens", "n_texts", "notes",
            "unit"} == set(out)
    assert out["label"] == dash.label and out["top_examples"][0]["token"] == dash.top_examples[0].token
    png = plot_dashboard(dash, tmp_path / f"{dash.label}.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    view = dash.to_view()
    assert view.kind == "dashboard" and view.payload()["data"]["label"] == dash.label


def tip_text(page, root):
    return page.locator(f"{root} .iv-tooltip").inner_text()


def test_neuron_dashboard_in_browser(browser, tmp_path, fw, dash, promoted, runs, texts, neuron):
    path = dash.save_html(tmp_path / "neuron.html")
    page = browser.open(path)
    assert browser.problems(page) == []
    header = page.locator(".iv-dash-header")
    assert header.get_attribute("data-label") == dash.label and dash.hook in header.inner_text()
    assert page.locator(".iv-dash-context").count() == len(dash.top_examples)
    # the top token of the first context: outlined; hovering it shows its activation
    first = page.locator(".iv-dash-context[data-rank='0']")
    top = first.locator(".iv-dash-token[data-top]")
    assert top.count() == 1 and "iv-selected" in top.get_attribute("class")
    best = dash.top_examples[0]
    by_hand = runs[texts.index(best.text)][0][:, neuron]
    top.hover()
    shown = float(re.search(r"activation (\S+)", tip_text(page, ".interp-view")).group(1))
    assert shown == pytest.approx(float(by_hand[best.pos]), rel=1e-5)
    # every token of that strip carries its own activation
    for tok in first.locator(".iv-dash-token").all():
        p = int(tok.get_attribute("data-pos"))
        assert float(tok.get_attribute("data-activation")) == pytest.approx(float(by_hand[p]), abs=1e-6)
    # the promoted list starts with the hand-computed token and logit
    best_logits, _ = promoted
    row = page.locator(".iv-dash-promoted .iv-dash-row").first
    assert row.get_attribute("data-token") == word(fw, best_logits.indices[0])
    assert float(row.get_attribute("data-logit")) == pytest.approx(float(best_logits.values[0]), abs=1e-5)
    # the key's bars sum to the pre-activation
    total = sum(float(s.get_attribute("data-value")) for s in page.locator(".iv-dash-source").all())
    assert total == pytest.approx(dash.key_pre_activation, abs=1e-4)
    assert float(page.locator(".iv-dash-sum").get_attribute("data-sum")) == pytest.approx(total, abs=1e-5)
    # histogram: hover the fullest bin, the tooltip shows its count
    counts = dash.histogram["counts"]
    fullest = int(np.argmax(counts))
    page.locator(f".iv-dash-bin[data-bin='{fullest}']").hover()
    assert f"count {counts[fullest]}" in tip_text(page, ".interp-view")
    assert browser.problems(page) == []
    page.context.close()


def test_feature_dashboard_view_and_embedding(browser, tmp_path, fw, dash, texts):
    tc = load_transcoders("factworld")[LAYER]
    with torch.no_grad():
        _, cache = fw.run_with_cache(MJ, names_filter=[tc.in_hook])
        acts = tc.encode(cache[tc.in_hook])[0]  # [pos, n_features]
    feature = int(acts[JORDAN].argmax())
    fdash = feature_dashboard(fw, tc, feature, texts, k=4, bins=10, batch_size=16, progress=False)
    assert fdash.unit == "feature" and fdash.label == f"L{LAYER}F{feature}"
    # a host page (here: a table view) mounts both dashboards into its own elements
    host = View("table", {"columns": ["a"], "rows": [["host"]]}).save_html(tmp_path / "host.html")
    page = browser.open(host)
    for i, payload in enumerate((fdash.to_view().payload(), dash.to_view().payload())):
        page.evaluate("([p, i]) => { const el = document.createElement('div'); el.id = 'emb' + i;"
                      " document.body.appendChild(el); InterpViews.mount(el, p); }", [payload, i])
        assert page.locator(f"#emb{i}[data-rendered][data-kind='dashboard']").count() == 1
    assert page.locator("#emb0 .iv-dash-header").get_attribute("data-label") == fdash.label
    assert page.locator("#emb1 .iv-dash-header").get_attribute("data-label") == dash.label
    # hovering a feature token shows the activation the encoder gives on that text
    rank = next((r for r, c in enumerate(fdash.top_examples) if c.text == MJ), 0)
    c = fdash.top_examples[rank]
    with torch.no_grad():
        _, cache = fw.run_with_cache(c.text, names_filter=[tc.in_hook])
        want = float(tc.encode(cache[tc.in_hook])[0, c.pos, feature])
    page.locator(f"#emb0 .iv-dash-context[data-rank='{rank}'] .iv-dash-token[data-top]").hover()
    shown = float(re.search(r"activation (\S+)", tip_text(page, "#emb0")).group(1))
    assert shown == pytest.approx(want, rel=1e-5)
    assert browser.problems(page) == []
    page.context.close()


def test_a_dashboard_of_a_unit_that_never_fires_renders(browser, tmp_path):
    from probes.sae.dashboard import FeatureDashboard

    empty = FeatureDashboard(0, 3, "blocks.0.mlp.hook_post", [], [], [], None, None,
                             {"counts": [0, 0, 0], "edges": [0.0, 1 / 3, 2 / 3, 1.0]}, 0.0, 5, 1,
                             ["the neuron never fires on these texts"], unit="neuron")
    page = browser.open(empty.save_html(tmp_path / "empty.html"))
    assert browser.problems(page) == []
    text = page.inner_text(".interp-view")
    assert "L0N3" in text and "never fires" in text and "no key sources" in text and "no value logits" in text
    assert page.locator(".iv-dash-token").count() == 0
    page.context.close()
