"""`interp probe` and `interp probe-relation` end to end: the fact-world model and a GPT-2 checkpoint directory."""

import json

import pytest
import torch

from helpers import build_hf_tokenizer
from analyses.cli import main
from interp.crosscheck import random_gpt2
from models import load


def test_probe_michael_jordan(tmp_path, capsys):
    assert main(["probe", "--target", "basketball", "-k", "5", "--random-draws", "2", "--out", str(tmp_path),
                 "--quiet"]) == 0
    out = capsys.readouterr().out
    report = json.loads((tmp_path / "probe.json").read_text())
    neurons = report["fact_neurons"]["neurons"]
    assert len(neurons) == 5 and neurons[0]["contribution"] >= neurons[-1]["contribution"]
    # The ranking is the model's own direct attribution: recompute the top neuron's contribution.
    model = load("factworld")
    with torch.no_grad():
        _, cache = model.run_with_cache(report["prompt"])
    top = neurons[0]
    assert top["activation"] == pytest.approx(float(cache["post", top["layer"]][0, -1, top["index"]]), abs=1e-5)
    rows = report["and_detection"]["rows"]
    assert report["and_detection"]["first_only"].startswith("Michael Phelps")
    assert all(r["is_and"] == (r["full"] > 0 and max(r["first_only"], r["last_only"]) <= 0.25 * r["full"]) for r in rows)
    zero = report["validation"]["interventions"][0]
    assert zero["mode"] == "zero" and zero["p_after"] < zero["p_before"]
    assert report["knowledge_neurons"]["overlap_with_fact_neurons"]["k"] == 5
    for name in ("contributions_and_ablation", "keys"):
        assert (tmp_path / f"{name}.png").stat().st_size > 0 and (tmp_path / f"{name}.svg").exists()
    assert "AND test" in out and "localised" in out


def test_probe_relation_limit(tmp_path, capsys):
    assert main(["probe-relation", "sport", "--limit", "3", "--out", str(tmp_path), "--quiet"]) == 0
    data = json.loads((tmp_path / "relation.json").read_text())
    assert data["n_facts"] == 3 and len(data["localised"]) == 3
    assert sum(data["layer_histogram"].values()) > 0
    assert (tmp_path / "relation.png").exists()


def test_probe_gpt2_checkpoint_directory(tmp_path, capsys):
    """Any supported model: a GPT-2 saved as an HF directory with its tokenizer (no fact-world facts,
    so no AND test or specificity groups unless given)."""
    path = tmp_path / "gpt2"
    random_gpt2(n_layers=2, d_model=32, n_heads=4, d_vocab=300, n_ctx=64).save_pretrained(str(path))
    build_hf_tokenizer(path, vocab_size=300)
    assert main(["probe", "Michael Jordan plays the sport of", "--model", str(path), "--target", " the",
                 "-k", "3", "--random-draws", "1", "--out", str(tmp_path / "out"), "--quiet",
                 "--other", "the dog sat on| the"]) == 0
    report = json.loads((tmp_path / "out" / "probe.json").read_text())
    assert len(report["fact_neurons"]["neurons"]) == 3
    assert report["validation"]["specificity"]["given"]["n"] == 1
    assert "AND test skipped" in capsys.readouterr().out
