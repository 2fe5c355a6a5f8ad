"""The logit lens as a result (`LogitLens`: still `labels, logits = ...`) and as a view (kind
"lens") in a real browser on the shipped fact-world model; the numbers shown are checked
against the model's own output and an independent read of the residual stream."""

import math
import pickle

import pytest
import torch

import models
from interp.checks import IndexRangeError
from probes.logit_lens import LogitLens, logit_lens

PROMPT = "Michael Jordan plays the sport of"


@pytest.fixture(scope="module")
def fw():
    return models.load("factworld")


@pytest.fixture(scope="module")
def final_probs(fw):
    """[d_vocab]: the model's next-token distribution at the last position."""
    with torch.no_grad():
        return fw(PROMPT)[0, -1].softmax(-1)


def _independent_lens(model, prompt, pos):
    """[n_layers + 1, d_vocab]: resid_pre of each block and the last resid_post, through a
    LayerNorm written out here (each state with its own scale) and W_U / b_U."""
    with torch.no_grad():
        _, cache = model.run_with_cache(prompt)
    n = model.cfg.n_layers
    states = torch.stack([cache[f"blocks.{l}.hook_resid_pre"][0, pos] for l in range(n)]
                         + [cache[f"blocks.{n - 1}.hook_resid_post"][0, pos]])
    sd = model.state_dict()
    x = states - states.mean(-1, keepdim=True)
    x = x / (x.pow(2).mean(-1, keepdim=True) + model.cfg.norm_eps).sqrt()
    x = x * sd["ln_final.w"] + sd["ln_final.b"]
    return x @ sd["unembed.W_U"] + sd["unembed.b_U"]


def test_logit_lens_still_unpacks_and_is_right(fw, final_probs):
    lens = logit_lens(fw, PROMPT, pos=-1, target="basketball")
    labels, logits = lens
    assert isinstance(lens, LogitLens) and isinstance(lens, tuple) and len(lens) == 2
    assert labels == ["embed"] + [f"L{l}" for l in range(fw.cfg.n_layers)] == lens.labels
    assert logits is lens.logits and logits.shape == (fw.cfg.n_layers + 1, fw.cfg.d_vocab)
    assert torch.allclose(logits, _independent_lens(fw, PROMPT, -1), atol=1e-4)
    assert torch.allclose(logits[-1].softmax(-1), final_probs, atol=1e-6)
    # top tokens and the tracked target, against independent sorts of the same rows
    order = logits.argsort(-1, descending=True)
    assert lens.top_tokens[-1][0] == fw.tokenizer.token_str(int(final_probs.argmax()))
    assert lens.top_ids.tolist() == order[:, :10].tolist()
    bball = fw.to_single_token("basketball")
    assert lens.target == bball and lens.target_token == "basketball"
    assert lens.target_ranks.tolist() == [(row == bball).nonzero().item() for row in order]
    assert torch.allclose(lens.target_probs, logits.softmax(-1)[:, bball])
    assert lens.top_ranks[:, 0].tolist() == [0] * len(labels)
    back = pickle.loads(pickle.dumps(lens))
    assert back.top_tokens == lens.top_tokens and back.target == bball and torch.equal(back.logits, logits)


def test_logit_lens_bad_input_is_clear(fw):
    with pytest.raises(ValueError, match="not a single token"):
        logit_lens(fw, PROMPT, target="xylophonist")
    with pytest.raises(ValueError, match="k .* positive integer"):
        logit_lens(fw, PROMPT, k=0)
    with pytest.raises(IndexRangeError):
        logit_lens(fw, PROMPT, pos=7)
    assert not any(hp.has_hooks for hp in fw.hook_dict.values())
    lens = logit_lens(fw, PROMPT, k=3)
    assert lens.target is None and lens.target_probs is None and len(lens.top_tokens[0]) == 3
    with pytest.raises(ValueError, match=r"k must be an integer in 1\.\.3"):
        lens.to_view(k=4)
    assert lens.to_view(k=2).data["target"] is None


def test_lens_view_in_the_browser(fw, final_probs, browser, tmp_path):
    pos = 2  # "Jordan": the view works at any position, not only the last
    lens = logit_lens(fw, PROMPT, target="basketball")
    page = browser.open(lens.save_html(tmp_path / "lens.html"))
    try:
        assert browser.problems(page) == []
        rows = page.locator("tbody tr")
        assert rows.count() == fw.cfg.n_layers + 1
        assert page.locator("th.iv-lens-label").all_inner_texts() == lens.labels
        last = len(lens.labels) - 1
        top = page.locator(f'td.iv-lens-cell[data-row="{last}"][data-col="0"]')
        argmax = fw.tokenizer.token_str(int(final_probs.argmax()))
        assert top.get_attribute("data-token") == argmax == "basketball"
        assert math.isclose(float(top.get_attribute("data-prob")), float(final_probs.max()), rel_tol=1e-5)
        top.hover()
        tip = page.locator(".iv-tooltip").inner_text()
        assert argmax in tip and "rank 0" in tip
        shown = float(tip.split("prob ")[1].split()[0])
        assert math.isclose(shown, float(final_probs.max()), rel_tol=5e-3)
        # a lower cell: its probability and rank are the model's own at that row
        second = page.locator(f'td.iv-lens-cell[data-row="{last}"][data-col="1"]')
        token = second.get_attribute("data-token")
        p = float(final_probs[fw.to_single_token(token)])
        assert math.isclose(float(second.get_attribute("data-prob")), p, rel_tol=1e-5)
        assert second.get_attribute("data-rank") == "1"
        second.hover()
        assert float(page.locator(".iv-tooltip").inner_text().split("prob ")[1].split()[0]) == pytest.approx(p, rel=5e-3)  # 3 significant digits
        # the tracked target per row: rank and probability from an independent sort
        indep = _independent_lens(fw, PROMPT, -1)
        bball = fw.to_single_token("basketball")
        ranks = [int(c) for c in page.locator("td.iv-lens-target").evaluate_all(
            "els => els.map(e => e.getAttribute('data-rank'))")]
        assert ranks == [int((row > row[bball]).sum()) for row in indep]
        probs = page.locator("td.iv-lens-target").evaluate_all("els => els.map(e => +e.getAttribute('data-prob'))")
        assert torch.allclose(torch.tensor(probs), indep.softmax(-1)[:, bball].float(), atol=1e-5)
        assert browser.problems(page) == []
    finally:
        page.context.close()
    # another position renders too, with the prompt's lensed token marked
    page = browser.open(logit_lens(fw, PROMPT, pos=pos, k=5).save_html(tmp_path / "lens2.html"))
    try:
        assert browser.problems(page) == []
        assert page.locator(".iv-lens-prompt .iv-selected").inner_text() == "Jordan"
        assert page.locator("td.iv-lens-target").count() == 0
        assert page.locator('td.iv-lens-cell[data-row="0"]').count() == 5
    finally:
        page.context.close()
