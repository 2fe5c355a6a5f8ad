"""The `interp verify` command."""

import json

from analyses.cli import main


def test_verify_prints_table_and_passes(capsys, tmp_path):
    rc = main(["verify", "--layers", "2", "--d-model", "30", "--heads", "5", "--vocab", "64", "--seq", "8",
               "--json", str(tmp_path / "v.json")])
    out = capsys.readouterr().out
    assert rc == 0
    assert "blocks.1.attn.hook_pattern" in out and "overall: PASS" in out
    data = json.loads((tmp_path / "v.json").read_text())
    assert data["passed"] and data["logits_vs_hf"] < 1e-4
    assert len(data["rows"]) == 2 + 2 * 18 + 2


def test_verify_float64_by_family(capsys):
    assert main(["verify", "--layers", "1", "--d-model", "12", "--heads", "3", "--vocab", "20",
                 "--dtype", "float64", "--by-family"]) == 0
    out = capsys.readouterr().out
    assert "tolerance 1e-09" in out and "*.attn.hook_z" in out
