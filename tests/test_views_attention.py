"""The attention view (kind "attention") in a real browser on the shipped fact-world model:
picking a head shows that head, hovered cells and tokens show the pattern's own numbers
(read independently from `run_with_cache`), bad input is a clear error that leaves no hook."""

import math

import pytest
import torch

import models
from interp.checks import IndexRangeError
from interp.views.attention import attention_heads, attention_patterns

PROMPT = "Michael Jordan plays the sport of"


@pytest.fixture(scope="module")
def fw():
    return models.load("factworld")


@pytest.fixture(scope="module")
def patterns(fw):
    """{layer: pattern [head, dst, src]} from a plain cached run."""
    with torch.no_grad():
        _, cache = fw.run_with_cache(PROMPT)
    return {l: cache[f"blocks.{l}.attn.hook_pattern"][0] for l in range(fw.cfg.n_layers)}


def no_hooks(model):
    return not any(hp.has_hooks for hp in model.hook_dict.values())


def test_attention_heads_checks_its_input():
    tokens = ["a", "b", "c"]
    good = torch.rand(2, 3, 3)
    with pytest.raises(ValueError, match=r"\[n_heads, dst, src\]"):
        attention_heads(torch.rand(3, 3), tokens)
    with pytest.raises(ValueError, match="batch axis"):
        attention_heads(torch.rand(1, 2, 3, 3), tokens)
    with pytest.raises(ValueError, match=r"3 destination and 3 source positions but 4 tokens"):
        attention_heads(good, tokens + ["d"])
    with pytest.raises(ValueError, match=r"2 destination and 3 source"):
        attention_heads(torch.rand(2, 2, 3), tokens)
    with pytest.raises(ValueError, match="1 head_names for 2 heads"):
        attention_heads(good, tokens, head_names=["x"])
    with pytest.raises(TypeError, match="list of strings"):
        attention_heads(good, "abc")
    with pytest.raises(TypeError, match="token 1 is int"):
        attention_heads(good, ["a", 2, "c"])
    with pytest.raises(TypeError, match="tensor"):
        attention_heads([[[1.0]]], ["a"])
    view = attention_heads(good, tokens, head_names=["first", "second"], title="t")
    assert view.kind == "attention" and view.data["heads"] == [["first", "second"]]
    assert torch.equal(view.data["patterns"][0], good)


def test_attention_patterns_bad_layer_is_the_toolkit_error_and_leaves_no_hook(fw, patterns):
    with pytest.raises(IndexRangeError, match="layer 4 does not exist in a model with 4 layers"):
        attention_patterns(fw, PROMPT, layers=[0, 4])
    assert no_hooks(fw)
    view = attention_patterns(fw, PROMPT, layers=[-1, 1, 3])
    assert no_hooks(fw)
    assert view.data["groups"] == ["layer 3", "layer 1"]
    assert view.data["heads"][1] == [f"L1H{h}" for h in range(fw.cfg.n_heads)]
    assert torch.allclose(view.data["patterns"][1], patterns[1].float())
    assert attention_patterns(fw, PROMPT, layers=2).data["groups"] == ["layer 2"]


def _hover_cell(page, dst, src):
    """Move the pointer to the centre of cell (dst, src) of the large pattern."""
    canvas = page.locator(".iv-attn-large")
    cell, x0, y0 = (float(canvas.get_attribute(a)) for a in ("data-cell", "data-x0", "data-y0"))
    canvas.hover(position={"x": x0 + (src + 0.5) * cell, "y": y0 + (dst + 0.5) * cell})


def test_attention_view_in_the_browser(fw, patterns, browser, tmp_path):
    tokens = fw.to_str_tokens(PROMPT)
    n = len(tokens)
    page = browser.open(attention_patterns(fw, PROMPT).save_html(tmp_path / "attention.html"))
    try:
        assert browser.problems(page) == []
        assert page.locator(".iv-attn-token").all_inner_texts() == tokens
        assert page.locator(".iv-attn-thumb").count() == fw.cfg.n_heads
        assert page.locator(".iv-attn-large").get_attribute("data-head") == "L0H0"

        # pick layer 2, head 3: the large pattern is that head's
        page.select_option(".iv-controls select", label="layer 2")
        page.locator('.iv-attn-thumb[data-head="L2H3"]').click()
        assert page.locator(".iv-attn-large").get_attribute("data-head") == "L2H3"
        assert page.locator(".iv-attn-thumb[data-selected]").get_attribute("data-head") == "L2H3"
        want = patterns[2][3]
        dst, src = n - 1, 2  # "of" -> "Jordan"
        _hover_cell(page, dst, src)
        canvas = page.locator(".iv-attn-large")
        assert (canvas.get_attribute("data-dst"), canvas.get_attribute("data-src")) == (str(dst), str(src))
        assert math.isclose(float(canvas.get_attribute("data-weight")), float(want[dst, src]), rel_tol=1e-6, abs_tol=1e-7)
        tip = page.locator(".iv-tooltip").inner_text()
        assert f"of ({dst}) -> Jordan ({src}):" in tip
        shown = float(tip.rsplit(":", 1)[1])
        assert math.isclose(shown, float(want[dst, src]), rel_tol=1e-3, abs_tol=1e-6)

        # a different head picked by keyboard shows different numbers
        page.locator('.iv-attn-thumb[data-head="L2H1"]').focus()
        page.keyboard.press("Enter")
        assert page.locator(".iv-attn-large").get_attribute("data-head") == "L2H1"
        _hover_cell(page, dst, src)
        assert math.isclose(float(canvas.get_attribute("data-weight")), float(patterns[2][1][dst, src]),
                            rel_tol=1e-6, abs_tol=1e-7)

        # hovering a token (as destination) shades every token by its row of the pattern
        page.hover(f'.iv-attn-token[data-pos="{dst}"]')
        got = [float(w) for w in page.locator(".iv-attn-token").evaluate_all(
            "els => els.map(e => e.getAttribute('data-weight'))")]
        assert torch.allclose(torch.tensor(got), patterns[2][1][dst].float(), atol=1e-6)
        assert abs(sum(got) - 1) < 1e-5
        # as source: by its column (how much every token attends to it)
        page.locator(".iv-attn-source input").check()
        page.hover('.iv-attn-token[data-pos="1"]')
        got = [float(w) for w in page.locator(".iv-attn-token").evaluate_all(
            "els => els.map(e => e.getAttribute('data-weight'))")]
        assert torch.allclose(torch.tensor(got), patterns[2][1][:, 1].float(), atol=1e-6)
        assert got[0] == 0.0  # <bos> cannot attend forward
        page.mouse.move(1, 1)
        assert page.locator(".iv-attn-token[data-weight]").count() == 0
        assert browser.problems(page) == []
    finally:
        page.context.close()


def test_attention_heads_single_group_has_no_layer_selector(browser, tmp_path):
    pattern = torch.tensor([[[1.0, 0.0], [0.25, 0.75]], [[1.0, 0.0], [0.9, 0.1]]])
    view = attention_heads(pattern, ["x", "y"], head_names=["a", "b"])
    page = browser.open(view.save_html(tmp_path / "heads.html"))
    try:
        assert browser.problems(page) == []
        assert page.locator(".iv-controls select").count() == 0
        page.locator('.iv-attn-thumb[data-head="b"]').click()
        page.hover('.iv-attn-token[data-pos="1"]')
        got = page.locator(".iv-attn-token").evaluate_all("els => els.map(e => +e.getAttribute('data-weight'))")
        assert got == pytest.approx([0.9, 0.1], abs=1e-7)
    finally:
        page.context.close()
