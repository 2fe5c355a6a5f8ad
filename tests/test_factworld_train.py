"""Training the fact-world model: a tiny configuration, in seconds."""

import torch

from interp.crosscheck import crosscheck_model
from models import load
from models.factworld.train import TrainConfig, train
from models.loading import save


def test_tiny_training_is_deterministic_and_learns(tmp_path):
    cfg = TrainConfig.tiny(steps=40)
    a = train(cfg, progress=False)
    b = train(cfg, progress=False)
    for (n, p), (_, q) in zip(a.model.named_parameters(), b.model.named_parameters()):
        assert torch.equal(p, q), f"{n} differs between two runs with the same seed"
    first, last = sum(a.losses[:5]) / 5, sum(a.losses[-5:]) / 5
    assert last < 0.7 * first, (first, last)
    c = train(TrainConfig.tiny(steps=40, seed=1), progress=False)
    assert not torch.equal(c.model.embed.W_E, a.model.embed.W_E)


def test_trained_checkpoint_saves_loads_and_crosschecks(tmp_path):
    model = train(TrainConfig.tiny(steps=5), progress=False).model
    save(model, tmp_path / "ckpt")
    again = load(tmp_path / "ckpt")
    prompt = "Michael Jordan plays the sport of"
    torch.testing.assert_close(again(prompt), model(prompt))
    assert again.to_str_tokens(prompt) == ["<bos>"] + prompt.split()
    report = crosscheck_model(again, again.to_tokens([prompt, "Alexis Jordan is from"]))
    assert report.passed, report.table()
