"""Edits scored on Ray workers: `interp evaluate-edits --workers 2` gives the one-process numbers,
and resumes from its shard file."""

import json

import pytest

from analyses.cli import main
from analyses.edit import evaluate_random_edits
from test_workers import cluster, one_thread  # noqa: F401  (the one-thread reference, one local cluster per module)


def test_evaluate_edits_on_two_workers_equals_one_process(tmp_path, cluster):
    serial = evaluate_random_edits("factworld", method="rome", n=2, seed=3, layer=0, fluency=20, progress=False)
    sharded = evaluate_random_edits("factworld", method="rome", n=2, seed=3, layer=0, fluency=20, progress=False,
                                    workers=2, shard_size=1, out=tmp_path / "a")
    again = evaluate_random_edits("factworld", method="rome", n=2, seed=3, layer=0, fluency=20, progress=False,
                                  workers=2, shard_size=1, out=tmp_path / "a", resume=True)
    a, b = serial.results["report"], sharded.results["report"]
    assert a.means == b.means and a.score == b.score and a.loss_before == b.loss_before
    assert a.loss_after == b.loss_after
    assert [c["request"] for c in a.cases] == [c["request"] for c in b.cases]
    assert [{k: v for k, v in c.items() if k != "request"} for c in a.cases] == \
        [{k: v for k, v in c.items() if k != "request"} for c in b.cases]
    lines = (tmp_path / "a" / "evaluate_edits.shards.jsonl").read_text().splitlines()
    assert len(lines) == 1 + 2  # the header and one line per shard of 1 edit
    assert again.results["report"].means == a.means  # resumed from the file: every shard was there
    with pytest.raises(ValueError, match="at once"):
        evaluate_random_edits("factworld", method="memit", n=2, workers=2)


def test_evaluate_edits_command_takes_the_ray_flags(tmp_path, cluster):
    out = tmp_path / "cli"
    assert main(["evaluate-edits", "--method", "ft", "-n", "2", "--layer", "0", "--fluency", "0", "--seed", "5",
                 "--workers", "2",
                 "--shard-size", "1", "--out", str(out), "--quiet"]) == 0
    report = json.loads((out / "evaluate_edits.json").read_text())
    assert report["n_cases"] == 2 and report["layers"] == [0, 0]
    assert (out / "evaluate_edits.shards.jsonl").exists()
