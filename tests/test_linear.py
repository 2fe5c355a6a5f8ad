"""Linear probes: they separate separable data, stay at chance on noise, and on the fact-world
model decode the answer where the model has it (the last token after the last layer) and not
where every prompt looks the same (the last token's embedding)."""

import pytest
import torch

from analyses.recall import probe_splits
from models import load
from probes.linear import Example, probe_curve, residual_states, role_positions, train_probe


def test_probe_separates_clusters_and_not_noise():
    g = torch.Generator().manual_seed(0)
    centres = torch.randn(3, 16, generator=g) * 4
    labels = [str(i % 3) for i in range(300)]
    x = centres[[int(t) for t in labels]] + torch.randn(300, 16, generator=g)
    probe = train_probe(x[:200], labels[:200])
    assert probe.accuracy(x[200:], labels[200:]) == 1.0
    noise = torch.randn(300, 16, generator=g)
    random_labels = [str(int(i)) for i in torch.randint(0, 3, (300,), generator=g)]
    assert probe.classes == ["0", "1", "2"]
    assert train_probe(noise[:200], random_labels[:200]).accuracy(noise[200:], random_labels[200:]) < 0.6
    with pytest.raises(ValueError, match="labels"):
        train_probe(x, labels[:5])


@pytest.fixture(scope="module")
def fw():
    return load("factworld")


def test_residual_states_are_the_cached_residuals(fw):
    prompts = ["Michael Jordan plays the sport of", "the sport played by Tom Brady is"]
    examples = [Example(prompts[0], "Michael Jordan", "basketball"), Example(prompts[1], "Tom Brady", "football")]
    pos = role_positions(fw, examples, "last subject token")
    assert pos == [2, 6]
    states = residual_states(fw, prompts, pos)
    assert states.shape == (fw.cfg.n_layers + 1, 2, fw.cfg.d_model)
    _, cache = fw.run_with_cache(prompts[1])
    assert torch.allclose(states[2, 1], cache["resid_pre", 2][0, 6], atol=1e-5)
    assert torch.allclose(states[-1, 1], cache["resid_post", fw.cfg.n_layers - 1][0, 6], atol=1e-5)


def test_probe_curve_on_the_fact_world(fw):
    train, test = probe_splits("sport", limit=60)["held-out templates"]
    curve = probe_curve(fw, train, test, "last token")
    assert curve.points == ["embed", "L0", "L1", "L2", "L3"]
    assert curve.test_accuracy[-1] > 0.9  # after the last layer the answer is there
    # The last token's embedding plus position differs only by template: a probe can do no better
    # than guessing one answer per template.
    assert curve.test_accuracy[0] <= curve.chance + 0.1
