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
    assert "AND test" in out and "Localised with k" in out
    # The anatomy: AND keys at the subject's last token, each key split by source summing to its
    # pre-activation; heads; localisation with positions; the chain figure.
    anatomy = report["anatomy"]
    assert anatomy["subject_span"] == [1, 3] and anatomy["and_keys"]
    for key in anatomy["and_keys"]:
        layer, index = (int(x) for x in key["neuron"][1:].split("N"))
        pre = cache["pre", layer][0, 2, index]
        assert sum(key["parts"]["Michael Jordan"].values()) == pytest.approx(float(pre), abs=1e-4)
        assert key["activation"][0] > 0 and max(key["activation"][1:]) <= 0.25 * key["activation"][0]
    loc = anatomy["localisation"]
    assert loc["k"] is not None and loc["k"] == len(loc["sites"]) and all("@" in s for s in loc["sites"])
    assert loc["validation"]["random_flips"] == 0
    assert "localisation_at_subject" in anatomy
    assert (tmp_path / "chain.png").stat().st_size > 0


def test_probe_relation_limit(tmp_path, capsys):
    assert main(["probe-relation", "sport", "--limit", "3", "--out", str(tmp_path), "--quiet"]) == 0
    data = json.loads((tmp_path / "sport.json").read_text())
    assert data["n_facts"] == 3 and len(data["localised"]) == 3 and data["method"] == "greedy"
    done = {s: k for s, k in data["localised"].items() if k is not None}
    assert done and all(len(data["sites"][s]) == k == len(data["roles"][s]) for s, k in done.items())
    assert data["within"]["20"] == len(done) and 0 <= data["random_rate"] <= 1
    assert (tmp_path / "sport.png").exists()
    assert "facts localised" in capsys.readouterr().out


def test_recall_limit(tmp_path, capsys):
    assert main(["recall", "sport", "--limit", "12", "--out", str(tmp_path), "--quiet"]) == 0
    data = json.loads((tmp_path / "sport.json").read_text())
    assert data["n_facts"] == 12 and len(data["extraction_rate"]) == 4 and len(data["extraction_rate"][0]) == 4
    assert sum(data["top_moved_site"].values()) == 12
    assert all(0 <= r <= 1 for r in data["enrichment_rate_among_objects"])
    assert set(data["probes"]) == {"held-out subjects, last subject token", "held-out subjects, last token",
                                   "held-out templates, last subject token", "held-out templates, last token"}
    assert (tmp_path / "sport.png").exists() and "extraction rate per head" in capsys.readouterr().out


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
