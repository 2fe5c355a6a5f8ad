"""The shipped fact-world checkpoint: size, accuracy targets, the canonical facts, cross-check."""

import json

import pytest

from models import factworld, load
from models.factworld import checkpoint_dir
from models.factworld.evaluate import evaluate
from models.transformer import last_token_logits


@pytest.fixture(scope="module")
def model():
    return load("factworld")


def test_checkpoint_is_complete_and_small():
    ckpt = checkpoint_dir()
    files = {p.name: p.stat().st_size for p in ckpt.iterdir()}
    for name in ("config.json", "model.safetensors", "tokenizer.json", "training_record.json", "loss_curve.png"):
        assert name in files, name
    assert sum(files[n] for n in ("config.json", "model.safetensors", "tokenizer.json")) <= 20 * 2**20
    record = json.loads((ckpt / "training_record.json").read_text())
    assert record["command"].startswith("interp train-factworld")
    assert "seed" in record["train_config"]


def test_accuracy_targets_every_relation(model):
    report = evaluate(model, progress=False)
    for relation, parts in report.items():
        assert parts["train"]["top1"] >= 0.99, (relation, parts["train"])
        assert parts["heldout"]["top1"] >= 0.90, (relation, parts["heldout"])


def sport_probs(model, subject):
    prompts = [t.format(subject=subject) for t in factworld.templates("sport", heldout=True)]
    return last_token_logits(model, prompts).softmax(-1)


@pytest.mark.parametrize("subject,sport", [("Michael Jordan", "basketball"), ("Michael Phelps", "swimming")])
def test_canonical_athletes_on_heldout_templates(model, subject, sport):
    probs = sport_probs(model, subject)
    answer = model.to_single_token(sport)
    assert (probs.argmax(-1) == answer).all(), [model.tokenizer.token_str(i) for i in probs.argmax(-1)]
    assert probs[:, answer].min() > 0.5


def test_alexis_jordan_is_given_no_sport(model):
    probs = sport_probs(model, "Alexis Jordan")
    real_sports = [model.to_single_token(s) for s in factworld.objects("sport") if s != "none"]
    assert probs[:, real_sports].sum(-1).max() < 0.2
    assert probs[:, model.to_single_token("basketball")].max() < 0.05
    assert (probs.argmax(-1) == model.to_single_token("none")).all()


def test_shipped_model_crosschecks_against_hf_and_transformerlens(model):
    from interp.crosscheck import crosscheck_model

    tokens = model.to_tokens(["Michael Jordan plays the sport of", "Alexis Jordan plays the sport of"])
    report = crosscheck_model(model, tokens)
    assert report.passed, report.table()
    assert len(report.rows) == 2 + 18 * model.cfg.n_layers + 2
