"""The analysis commands end to end on the shipped fact-world model: files written, numbers consistent."""

import json

import pytest
import torch

from analyses.cli import main
from models import load


@pytest.fixture(scope="module")
def fw():
    return load("factworld")


def logit_diff(model, prompt, a="basketball", b="swimming"):
    with torch.no_grad():
        logits = model(prompt)[0, -1]
    return float(logits[model.to_single_token(a)] - logits[model.to_single_token(b)])


def check_plots(paths):
    assert paths
    for p in paths:
        with open(p, "rb") as f:
            head = f.read(8)
        assert head.startswith(b"\x89PNG") if p.endswith(".png") else head.startswith(b"<?xml")


def test_interp_patch(tmp_path, fw, capsys):
    assert main(["patch", "--sites", "resid_pre", "head_z", "--out", str(tmp_path), "--quiet"]) == 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["clean_value"] == pytest.approx(logit_diff(fw, summary["clean"]), abs=1e-4)
    assert summary["corrupted_value"] == pytest.approx(logit_diff(fw, summary["corrupted"]), abs=1e-4)
    resid = json.loads((tmp_path / "resid_pre.json").read_text())
    norm = torch.tensor(resid["normalised"]["values"])
    # The prompts differ only in "Jordan"/"Phelps" (position 2): restoring the residual there, entering
    # layer 0, makes the corrupted run the clean run; positions before it change nothing.
    assert resid["normalised"]["labels"]["pos"][2] == "Jordan (2)"
    assert norm[0, 2] == pytest.approx(1.0, abs=1e-4)
    assert norm[:, :2].abs().max() < 1e-4
    assert -1 <= resid["agreement"]["pearson"] <= 1
    for site in ("resid_pre", "head_z"):
        check_plots(summary["sites"][site]["plots"])
    assert "head_z" in capsys.readouterr().out


def test_interp_heads(tmp_path, fw):
    assert main(["heads", "--out", str(tmp_path), "--quiet", "--top", "2"]) == 0
    report = json.loads((tmp_path / "heads.json").read_text())
    dla = report["direct_logit_attribution"]
    assert dla["logit_diff"] == pytest.approx(logit_diff(fw, report["clean"]), abs=1e-4)
    assert dla["sum_of_parts"] == pytest.approx(dla["logit_diff"], abs=1e-4)
    assert len(report["top_heads"]) == 2
    assert torch.tensor(report["head_patching"]["values"]).shape == (fw.cfg.n_layers, fw.cfg.n_heads)
    check_plots(report["plots"])


def test_interp_trace(tmp_path, fw):
    assert main(["trace", "--out", str(tmp_path), "--quiet", "--no-average", "--samples", "2"]) == 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    resid = json.loads((tmp_path / "trace_resid.json").read_text())
    scores = torch.tensor(resid["values"])
    # Restoring the last layer's output at the last position restores the clean logits exactly.
    assert scores[-1, -1] == pytest.approx(summary["trace_resid"]["clean_prob"], abs=1e-5)
    assert summary["trace_resid"]["corrupted_prob"] < summary["trace_resid"]["clean_prob"]
    for name in ("trace_resid", "trace_mlp", "trace_attn", "trace_resid_replace", "knockout"):
        check_plots(summary[name]["plots"])
