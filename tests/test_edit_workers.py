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


def test_each_edit_alone_on_workers_any_method_with_given_layers_and_keys(cluster):
    """The editing benchmark's pass: MEMIT with one request per fact, each at the layer its item
    names (the task would trace it otherwise), scored on 2 workers, equals editing and scoring each fact here; the fitted key's cosine
    with each held-out paraphrase's key is returned per fact and matches the one computed here."""
    import torch

    from analyses import factworld_edits as fe
    from analyses.sharded import evaluate_edits_sharded
    from models import load
    from probes.edit import evaluate_edit
    from probes.edit.evaluate import heldout_key_cosines

    model = load("factworld").eval()
    facts = [(s, "sport", t) for s, t in fe.random_edits(2, relation="sport", seed=8, known_by=model)]
    given = [list(f) + [0] for f in facts]  # layer 0: its key statistics are cached by the tests before
    with pytest.raises(ValueError, match="at once"):  # all at once cannot be sharded: only each alone
        evaluate_edits_sharded("factworld", given, "memit", loaded=model, fluency=0)
    report, records = evaluate_edits_sharded("factworld", given, "memit", loaded=model, fluency=0, each_alone=True,
                                             keys=True, workers=2, shard_size=1, progress=False)
    assert [r["layer"] for r in records] == [0, 0] and all(r["trace_seconds"] == 0.0 for r in records)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as each worker runs
    try:
        for (subject, relation, target, layer), record in zip(given, records):
            case = fe.edit_case(subject, relation, target)
            edit = fe.make_edit(model, "memit", case.request, layer, relation, "given")
            assert record["scores"] == {k: v for k, v in vars(evaluate_edit(model, case, edit)).items()}
            cosines = heldout_key_cosines(model, case, edit)
            assert len(cosines) == len(case.paraphrases) > 0
            assert record["heldout_key_cosine"] == pytest.approx(cosines, abs=1e-12)
            assert all(-1.0 <= c <= 1.0 + 1e-12 for c in cosines)
    finally:
        torch.set_num_threads(threads)
    assert report.n_cases == 2 and report.means["efficacy"] == pytest.approx(
        100 * sum(r["scores"]["efficacy"] for r in records) / 2)
    with pytest.raises(ValueError, match="one request at one layer"):
        heldout_key_cosines(model, case, fe.make_edit(model, "ft", case.request, 0, "sport", "given"))
