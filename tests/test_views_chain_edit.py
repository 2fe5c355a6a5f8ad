"""The recall-chain view of `interp probe` (kind "chain") and the before / after view of `interp edit`
(kind "edit") in a real browser, offline, on the shipped fact-world model: the numbers the pages
show are the model's own, recomputed here."""

import contextlib
import io
import json

import pytest
import torch

from analyses import factworld_edits as fe
from analyses.anatomy import anatomy, chain_heads, chain_sites, chain_view
from analyses.edit import edit_fact
from interp import Neuron, plot
from interp.words import answer_token, token_text
from models import load

PROMPT = "Michael Jordan plays the sport of"
NEW = "swimming"


@pytest.fixture(scope="module")
def fw():
    return load("factworld").eval()


@pytest.fixture(scope="module")
def chain(fw, tmp_path_factory):
    """The anatomy of Michael Jordan -> basketball, its cheapest call (no other facts for the
    specificity check), with the figure and the page written."""
    out = tmp_path_factory.mktemp("chain")
    with contextlib.redirect_stdout(io.StringIO()):
        report = anatomy(fw, PROMPT, "basketball", "Michael Jordan", "Michael Phelps", "Alexis Jordan", others=None,
                         out=out, plot=plot)
    return report, out


@pytest.fixture(scope="module")
def edited(fw, tmp_path_factory):
    """One ROME edit (Michael Jordan -> swimming at MLP 0) through `interp edit`'s function, its key
    statistics over 2,000 corpus sentences instead of 20,000 (the test's cache starts empty)."""
    out = tmp_path_factory.mktemp("edit")
    full = fe.stats_texts
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(fe, "stats_texts", lambda n=2000, seed=0: full(n, seed))
        result = edit_fact(fw, PROMPT, NEW, layer=0, out=out, progress=False)
    return result, out


def visible_rows(page):
    return page.locator("table.iv-edit-table tbody tr:visible")


# ============================================================ the chain
def test_chain_page_is_written_next_to_the_figure_and_renders(chain, fw, browser):
    report, out = chain
    assert (out / "chain.png").stat().st_size > 0 and (out / "chain.html").stat().st_size > 0
    page = browser.open(out / "chain.html")
    assert browser.problems(page) == []
    assert page.locator(".interp-view").get_attribute("data-kind") == "chain"
    # every AND key, the top-3 carried values and writers, each localised site: one dot each
    dots = page.locator(".iv-chain-dot")
    kinds = [dots.nth(i).get_attribute("data-kind") for i in range(dots.count())]
    assert kinds.count("and_key") == len(report["and_keys"]) > 0
    assert kinds.count("writer") == min(3, len(report["writers"]))
    assert kinds.count("localised") == report["localisation"]["k"]
    assert page.locator(".iv-chain-head").count() == len(report["heads"]) > 0
    # the token labels are the prompt's tokens
    assert page.locator(".iv-chain-token").all_text_contents() == fw.to_str_tokens(PROMPT) == report["tokens"]
    page.context.close()


def test_hovered_and_key_shows_the_models_own_activation(chain, fw, browser):
    """An AND key's dot sits at (its layer, the subject's last token), and its number is the neuron's
    activation there, recomputed from the model's cache."""
    report, out = chain
    key = report["and_keys"][0]
    neuron = Neuron.from_label(key["neuron"])
    tokens = fw.to_str_tokens(PROMPT)
    at = tokens.index("Jordan")
    with torch.no_grad():
        _, cache = fw.run_with_cache(PROMPT)
    activation = float(cache["post", neuron.layer][0, at, neuron.index])
    page = browser.open(out / "chain.html")
    page.hover(f'.iv-chain-dot[data-kind="and_key"][data-label="{key["neuron"]}@{at}"]')
    status = page.locator(".iv-chain-status")
    assert status.get_attribute("data-layer") == str(neuron.layer)
    assert status.get_attribute("data-pos") == str(at)
    assert float(status.get_attribute("data-score")) == pytest.approx(activation, abs=1e-4)
    assert page.locator(".iv-tooltip").is_visible()
    assert f"layer {neuron.layer}, position {at} 'Jordan'" in page.locator(".iv-tooltip").inner_text()
    assert browser.problems(page) == []
    page.context.close()


def test_hovered_writer_and_head_show_the_report_numbers_and_click_opens_details(chain, browser):
    report, out = chain
    label, contribution = report["writers"][0]
    last = len(report["tokens"]) - 1
    page = browser.open(out / "chain.html")
    page.hover(f'.iv-chain-dot[data-kind="writer"][data-label="{label}"]')
    status = page.locator(".iv-chain-status")
    assert status.get_attribute("data-layer") == str(Neuron.from_label(label).layer)
    assert status.get_attribute("data-pos") == str(last)
    assert float(status.get_attribute("data-score")) == pytest.approx(contribution, rel=1e-5)
    head = report["heads"][0]
    layer = int(head["head"][1:].split("H")[0])
    arrow = page.locator(f'.iv-chain-head[data-label="{head["head"]}"]')
    arrow.hover()
    assert status.get_attribute("data-kind") == "head"
    assert status.get_attribute("data-source") == str(report["subject_span"][1] - 1)
    assert status.get_attribute("data-pos") == str(last) and status.get_attribute("data-layer") == str(layer)
    assert float(status.get_attribute("data-score")) == pytest.approx(head["logit"], rel=1e-5)
    assert float(status.get_attribute("data-attention")) == pytest.approx(head["attention"], rel=1e-5)
    arrow.click()
    details = page.locator(".iv-chain-details")
    assert details.get_attribute("data-label") == head["head"] and head["top_token"] in details.inner_text()
    # hiding a kind from the legend hides its dots only
    page.locator('.iv-chain-legend label[data-kind="writer"] input').uncheck()
    assert page.locator('.iv-chain-dot[data-kind="writer"]:visible').count() == 0
    assert page.locator('.iv-chain-dot[data-kind="and_key"]:visible').count() == len(report["and_keys"])
    assert browser.problems(page) == []
    page.context.close()


def test_chain_view_and_figure_share_their_sites_and_bad_input_is_refused(chain):
    report, _ = chain
    view = chain_view(report, "basketball", 4)
    assert view.kind == "chain" and view.data["sites"] == chain_sites(report)
    assert [h["label"] for h in chain_heads(report)] == [h["head"] for h in report["heads"]]
    json.dumps(view.payload(), allow_nan=False)
    with pytest.raises(ValueError, match="outside the model's 2 layers"):
        chain_view(report, "basketball", 2)
    with pytest.raises(ValueError, match="n_layers must be a positive int"):
        chain_view(report, "basketball", 0)


# ============================================================ the edit
def test_edit_page_renders_with_scores_and_the_models_own_probabilities(edited, fw, browser):
    result, out = edited
    edit = result.results["edit"]
    new_id = answer_token(fw, NEW)
    with torch.no_grad():
        before = fw(PROMPT)[0, -1].double().softmax(-1)
        with edit.applied(fw):
            after = fw(PROMPT)[0, -1].double().softmax(-1)
    assert token_text(fw, int(after.argmax())) == NEW  # the edit worked, so efficacy is 100 %
    page = browser.open(out / "edit.html")
    assert browser.problems(page) == []
    assert page.locator(".interp-view").get_attribute("data-kind") == "edit"
    row = page.locator('table.iv-edit-table tr[data-group="edited prompt"]')
    assert row.count() == 1 and row.get_attribute("data-status") == "intended"
    cell = lambda col: float(row.locator(f'td[data-col="{col}"]').get_attribute("data-value"))  # noqa: E731
    assert cell("p_top_after") == pytest.approx(float(after.max()), abs=1e-5)
    assert cell("p_new_after") == pytest.approx(float(after[new_id]), abs=1e-5)
    assert cell("p_top_before") == pytest.approx(float(before.max()), abs=1e-5)
    assert cell("p_old_after") == pytest.approx(float(after[answer_token(fw, "basketball")]), abs=1e-5)
    assert row.locator('td[data-col="top_after"]').inner_text() == NEW
    assert "rgba(27, 120, 55" in row.evaluate("r => getComputedStyle(r).backgroundColor")
    assert float(page.locator('.iv-edit-score[data-score="efficacy_top1"]').get_attribute("data-value")) == 100.0
    page.context.close()


def test_edit_page_marks_exactly_the_neighbours_whose_answer_changed(edited, fw, browser):
    result, out = edited
    edit = result.results["edit"]
    neighbours = result.report["table"]["neighbours keep theirs"]["prompts"]

    def top():
        return [token_text(fw, int(fw(p)[0, -1].argmax())) for p in neighbours]

    with torch.no_grad():
        was = top()
        with edit.applied(fw):
            now = top()
    changed = {p for p, a, b in zip(neighbours, was, now) if a != b}
    page = browser.open(out / "edit.html")
    rows = page.locator('table.iv-edit-table tr[data-group="neighbours keep theirs"]')
    marked = {rows.nth(i).locator('td[data-col="prompt"]').inner_text() for i in range(rows.count())
              if rows.nth(i).get_attribute("data-status") == "changed"}
    assert marked == changed
    for i in range(rows.count()):
        red = "rgba(178, 24, 43" in rows.nth(i).evaluate("r => getComputedStyle(r).backgroundColor")
        assert red == (rows.nth(i).get_attribute("data-status") == "changed")
    page.context.close()


def test_edit_table_sorts_and_filters(edited, browser):
    result, out = edited
    page = browser.open(out / "edit.html")
    n = len(result.report["prompts"])
    values = lambda: [float(v or "nan") for v in  # noqa: E731
                      visible_rows(page).locator('td[data-col="p_new_after"]').evaluate_all(
                          "cells => cells.map(c => c.getAttribute('data-value'))")]
    original = values()
    assert len(original) == n and original != sorted(original, reverse=True)
    page.click('th[data-col="p_new_after"]')
    assert values() == sorted(original, reverse=True)
    page.click('th[data-col="p_new_after"]')
    assert values() == sorted(original)
    page.select_option(".iv-edit-filter select", "neighbours keep theirs")
    groups = visible_rows(page).evaluate_all("rows => rows.map(r => r.getAttribute('data-group'))")
    assert groups == ["neighbours keep theirs"] * len(result.report["table"]["neighbours keep theirs"]["prompts"])
    assert values() == sorted(values())  # the sort holds within the filter
    page.select_option(".iv-edit-filter select", "")
    assert visible_rows(page).count() == n
    assert browser.problems(page) == []
    page.context.close()


def test_the_comparison_is_a_viewable_and_the_json_keeps_its_keys(edited):
    result, out = edited
    comparison = result.results["comparison"]
    assert comparison.to_view().kind == "edit" and 'class="interp-view"' in comparison._repr_html_()
    report = json.loads((out / "edit.json").read_text())
    assert {"request", "old", "method", "layer", "why_layer", "delta_norm", "info", "table", "restored"} <= set(report)
    # the per-group shares of the table and of the page agree
    for group, shares in comparison.group_shares().items():
        assert shares["before"] == pytest.approx(report["table"][group]["before"])
        assert shares["after"] == pytest.approx(report["table"][group]["after"])
    assert (out / "edit.html") in result.files
