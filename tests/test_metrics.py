"""interp.metrics on hand-made logits."""

import pytest
import torch

from interp import metrics


def logits():
    x = torch.zeros(2, 3, 5, dtype=torch.float64)  # [batch, pos, d_vocab]
    x[0, -1] = torch.tensor([0.0, 2.0, 1.0, 0.0, 0.0])
    x[1, -1] = torch.tensor([3.0, 0.0, 0.0, 1.0, 0.0])
    x[:, 0, 4] = 10.0
    return x


def test_logit_diff_per_prompt_tokens_and_mean():
    ld = metrics.logit_diff(None, [1, 0], [2, 3])
    assert float(ld(logits())) == pytest.approx(((2 - 1) + (3 - 1)) / 2)
    assert float(metrics.logit_diff(None, 4, 1, pos=0)(logits())) == pytest.approx(10.0)


def test_probability_and_log_prob():
    x = logits()
    p = metrics.probability(None, 1)(x)
    expected = x[:, -1].softmax(-1)[:, 1].mean()
    assert float(p) == pytest.approx(float(expected))
    assert float(metrics.log_prob(None, 1)(x)) == pytest.approx(float(x[:, -1].log_softmax(-1)[:, 1].mean()))


def test_at_scores_many_runs_at_once():
    """`at` takes logits of one position with leading run dims: [run, batch, d_vocab] -> [run]."""
    ld = metrics.logit_diff(None, [1, 0], [2, 3])
    runs = torch.stack([logits()[:, -1], 2 * logits()[:, -1]])
    assert ld.at(runs).tolist() == pytest.approx([1.5, 3.0])


def test_normalized():
    ld = metrics.logit_diff(None, [1, 0], [2, 3])
    norm = metrics.normalized(ld, clean_value=3.5, corrupted_value=1.5)
    assert float(norm(logits())) == pytest.approx(0.0)
    assert norm.pos == -1 and metrics.is_positional(norm)
    with pytest.raises(ValueError, match="same metric value"):
        metrics.normalized(ld, 1.0, 1.0)


def test_bad_tokens():
    with pytest.raises(ValueError, match="'basketball' needs a model"):
        metrics.logit_diff(None, "basketball", 1)
    with pytest.raises(ValueError, match="3 token ids for a batch of 2"):
        metrics.probability(None, [1, 2, 3])(logits())
