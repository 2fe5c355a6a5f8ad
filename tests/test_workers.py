"""The shard engine (interp.workers) on Ray: the same numbers as the one-process run with 1 and 2
workers, a worker killed in the middle of a shard, resumed runs, and refused results files.

One local Ray cluster of 2 CPUs for the module (starting one costs seconds); the analyses run
on the shipped fact-world model over small slices.
"""

import json
import os
import signal
import sys

import pytest
import ray
import torch

from analyses.sharded import RelationTask, relation_view_sharded
from analyses.factworld_facts import relation_facts, relation_view, triples
from interp.workers import ray_cluster, read_results, run_shards, shards_of
from models import factworld, load
from probes.edit.stats import key_second_moment
from probes.edit.stats_sharded import key_second_moment_sharded
from probes.trace_average import average_trace
from probes.trace_sharded import average_trace_sharded

N_FACTS = 4
# the tasks below are defined here, and the workers cannot import this module: send them by value
ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """The one-process references on one torch thread, as each worker runs: torch's CPU kernels
    may round a few float32 results differently with more threads (docs/scale.md)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def cluster():
    with ray_cluster(workers=2):
        yield


@pytest.fixture(scope="module")
def model():
    return load("factworld").eval()


@pytest.fixture(scope="module")
def serial(model):
    """The plain one-process relation view of the first facts of "sport" (no engine at all)."""
    return relation_view(model, "sport", limit=N_FACTS, progress=False)


def same_view(a, b) -> bool:
    da, db = a.to_dict(), b.to_dict()
    da.pop("seconds"), db.pop("seconds")
    return json.dumps(da, sort_keys=True) == json.dumps(db, sort_keys=True)


class Double:
    """A task without a model: doubles numbers."""

    def __init__(self, factor: int = 2) -> None:
        self.factor = factor

    def setup(self) -> None:
        self.ready = True

    def __call__(self, shard):
        assert self.ready
        return [x * self.factor for x in shard]

    def describe(self):
        return {"factor": self.factor}


class Niceness:
    """A task without a model: each item's answer is the worker process's niceness."""

    def setup(self) -> None:
        pass

    def __call__(self, shard):
        return [os.nice(0) for _ in shard]

    def describe(self):
        return {"task": "niceness"}


class Once:
    """Wraps a task: the first time (per marker file) the shard holding `item` runs, the worker
    process kills itself (signal 9) after its first item, or raises (raise_=True)."""

    def __init__(self, task, item, marker, raise_=False) -> None:
        self.task, self.item, self.marker, self.raise_ = task, item, str(marker), raise_

    def setup(self) -> None:
        self.task.setup()

    def describe(self):
        return self.task.describe()

    def __call__(self, shard):
        first = self.task(shard[:1])
        if self.item in shard and not os.path.exists(self.marker):
            open(self.marker, "w").close()
            if self.raise_:
                raise RuntimeError("stopped on purpose")
            os.kill(os.getpid(), signal.SIGKILL)  # in the middle of the shard
        return first + self.task(shard[1:])


def test_one_and_two_workers_give_the_serial_numbers(cluster, model, serial, tmp_path):
    for workers in (1, 2):  # (the one-process run through the engine: the resume test)
        view = relation_view_sharded("factworld", "sport", limit=N_FACTS, loaded=model, shard_size=1,
                                     workers=workers, out=tmp_path / f"w{workers}.jsonl", progress=False)
        assert same_view(view, serial), workers
        header, done, _ = read_results(tmp_path / f"w{workers}.jsonl")
        assert sorted(done) == list(range(N_FACTS)) and header["n_items"] == N_FACTS
    assert serial.n_known == N_FACTS and serial.n_localised >= 2  # a slice with real localisations to compare


def test_a_killed_worker_is_replaced_and_its_shard_redone(cluster, model, serial, tmp_path):
    subjects = [f.subject for f in relation_facts("sport", limit=N_FACTS)]
    task = Once(RelationTask("factworld", "sport", loaded=model, method="greedy", max_sites=20), subjects[2],
                tmp_path / "killed")
    records = run_shards(task, subjects, shard_size=2, workers=2, out=tmp_path / "r.jsonl", progress=False)
    assert (tmp_path / "killed").exists()  # a worker did die, in the middle of shard 1
    assert records == [serial_record(serial, s) for s in subjects]
    lines = (tmp_path / "r.jsonl").read_text().splitlines()
    assert sorted(json.loads(line)["shard"] for line in lines[1:]) == [0, 1]  # each shard written once


def serial_record(view, subject):
    return {"object": view.objects[subject], "k": view.localised[subject], "sites": view.sites[subject],
            "roles": view.roles[subject], "random_flips": view.random_flips[subject],
            "reason": view.reasons.get(subject)}


def test_workers_run_at_this_processs_priority(cluster):
    """Ray's default would start them at niceness 15: beside one busy process on 2 cores they got
    almost no CPU (measured: the editing benchmark's workers at 4-6% CPU each)."""
    assert run_shards(Niceness(), range(2), shard_size=1, workers=2, progress=False) == [os.nice(0)] * 2


def test_workers_die_too_often_stops_with_the_finished_shards_kept(cluster, tmp_path):
    class AlwaysDies(Double):
        def __call__(self, shard):
            if 5 in shard:
                os.kill(os.getpid(), signal.SIGKILL)
            return super().__call__(shard)

    with pytest.raises(RuntimeError, match="died 2 times"):
        run_shards(AlwaysDies(), list(range(8)), shard_size=2, workers=1, out=tmp_path / "r.jsonl", retries=1,
                   progress=False)
    _, done, _ = read_results(tmp_path / "r.jsonl")
    # Shard 2 (holding 5) never finished; what finished before the run stopped is kept (which of the
    # shards queued beside it ran first is up to Ray: 1 and 3 may or may not be there).
    assert 0 in done and 2 not in done
    assert done == {i: [2 * x for x in range(2 * i, 2 * i + 2)] for i in done}


def test_resume_after_a_crash_and_a_half_written_line(model, serial, tmp_path):
    out = tmp_path / "sport.jsonl"
    subjects = [f.subject for f in relation_facts("sport", limit=N_FACTS)]
    task = Once(RelationTask("factworld", "sport", loaded=model, method="greedy", max_sites=20), subjects[3],
                tmp_path / "stopped", raise_=True)
    with pytest.raises(RuntimeError, match="stopped on purpose"):
        run_shards(task, subjects, shard_size=1, out=out, progress=False)
    _, done, _ = read_results(out)
    assert sorted(done) == [0, 1, 2]
    kept = out.read_bytes()
    with open(out, "ab") as f:  # a crash while writing shard 3: half a line
        f.write(b'{"shard":3,"results":[{"object":"gol')
    assert sorted(read_results(out)[1]) == [0, 1, 2]
    records = run_shards(task, subjects, shard_size=1, out=out, resume=True, progress=False)
    assert records == [serial_record(serial, s) for s in subjects]
    after = out.read_bytes()
    assert after.startswith(kept) and after.endswith(b"\n")  # the finished shards kept, the half line gone
    assert [json.loads(line)["shard"] for line in after[len(kept):].splitlines()] == [3]  # only shard 3 ran again


def test_results_of_another_task_or_configuration_are_refused(tmp_path):
    out = tmp_path / "r.jsonl"
    assert run_shards(Double(), range(5), shard_size=2, out=out, progress=False) == [0, 2, 4, 6, 8]
    before = out.read_bytes()
    with pytest.raises(ValueError, match=r"another task or configuration \(describe differ: factor: file 2, this run 3"):
        run_shards(Double(3), range(5), shard_size=2, out=out, resume=True, progress=False)
    with pytest.raises(ValueError, match="items_sha256"):
        run_shards(Double(), range(1, 6), shard_size=2, out=out, resume=True, progress=False)
    with pytest.raises(ValueError, match="n_items.*shard_size|shard_size"):
        run_shards(Double(), range(5), shard_size=3, out=out, resume=True, progress=False)
    assert out.read_bytes() == before  # refused, untouched
    (tmp_path / "cut.jsonl").write_text('{"format":"interp sh')  # a crash while writing the header
    assert run_shards(Double(), range(5), shard_size=2, out=tmp_path / "cut.jsonl", resume=True,
                      progress=False) == [0, 2, 4, 6, 8]
    (tmp_path / "other.jsonl").write_text('{"not": "a header"}\n')
    with pytest.raises(ValueError, match="not a results file of run_shards"):
        run_shards(Double(), range(5), shard_size=2, out=tmp_path / "other.jsonl", resume=True, progress=False)
    # the same options on other weights: refused too
    other = load("factworld").eval()
    with torch.no_grad():
        other.blocks[0].mlp.W_in[0, 0] += 1.0
    a = RelationTask("factworld", "sport", loaded=load("factworld").eval(), method="greedy", max_sites=20)
    b = RelationTask(other, "sport", method="greedy", max_sites=20)
    assert a.describe()["model_hash"] != b.describe()["model_hash"]


def test_bad_input(tmp_path):
    with pytest.raises(ValueError, match="shard_size must be a positive integer"):
        run_shards(Double(), range(3), shard_size=0)
    with pytest.raises(ValueError, match="resume=True needs out="):
        run_shards(Double(), range(3), shard_size=1, resume=True)
    with pytest.raises(ValueError, match="workers must be None or a non-negative integer"):
        run_shards(Double(), range(3), shard_size=1, workers=-1)
    with pytest.raises(TypeError, match="items must be JSON-ready"):
        run_shards(Double(), [torch.ones(1)], shard_size=1)
    with pytest.raises(TypeError, match="must have setup"):
        run_shards(lambda shard: shard, range(3), shard_size=1)

    class Short(Double):
        def __call__(self, shard):
            return super().__call__(shard)[:-1]

    with pytest.raises(ValueError, match="one result per item"):
        run_shards(Short(), range(3), shard_size=2, progress=False)
    assert shards_of(list(range(5)), 2) == [[0, 1], [2, 3], [4]]

    class NotJson(Double):
        def __call__(self, shard):
            return [object() for _ in shard]

    with pytest.raises(TypeError, match="results for shard 0 are not JSON-ready"):
        run_shards(NotJson(), range(3), shard_size=2, out=tmp_path / "r.jsonl", progress=False)
    assert read_results(tmp_path / "r.jsonl")[1] == {}  # nothing half-written


def test_key_statistics_and_average_trace_sharded(cluster, model, tmp_path):
    ref = key_second_moment(model, 1, cache=False, max_tokens=6000, batch_size=64, progress=False)
    one = key_second_moment_sharded("factworld", 1, max_tokens=6000, batch_size=64, batches_per_shard=1,
                                    loaded=model, workers=2, progress=False)
    assert torch.equal(one, ref)  # one batch per shard: key_second_moment's own sums, in its order
    here = key_second_moment_sharded("factworld", 1, max_tokens=6000, batch_size=64, batches_per_shard=2,
                                     loaded=model, progress=False)
    two = key_second_moment_sharded("factworld", 1, max_tokens=6000, batch_size=64, batches_per_shard=2,
                                    loaded=model, workers=2, progress=False)
    assert torch.equal(here, two) and torch.allclose(here, ref, rtol=1e-12, atol=0)

    facts = triples([f for f in factworld.facts("sport") if f.object != "none"][:3], factworld.templates("sport")[0])
    facts.append((facts[0][0], facts[0][1], facts[1][2] if facts[1][2] != facts[0][2] else facts[2][2]))  # skipped
    want = average_trace(model, facts, kind="mlp", window=1, n_samples=3, progress=False)
    got = average_trace_sharded("factworld", facts, kind="mlp", window=1, n_samples=3, loaded=model, shard_size=2,
                                workers=2, out=tmp_path / "avg.jsonl", progress=False)
    assert want.n_skipped == 1 and want.n_facts == 3
    assert json.dumps(got.to_dict(), sort_keys=True) == json.dumps(want.to_dict(), sort_keys=True)


def test_feature_table_sharded(cluster, model, tmp_path):
    from analyses.features import corpus
    from probes.sae import load_transcoders
    from probes.sae.dashboard import feature_table
    from probes.sae.dashboard_sharded import feature_table_sharded

    transcoder = load_transcoders("factworld")[1]
    texts = corpus(8)
    want = feature_table(model, transcoder, texts, batch_size=48, progress=False)
    got = feature_table_sharded("factworld", transcoder, texts, batch_size=48, batches_per_shard=2, loaded=model,
                                workers=2, out=tmp_path / "L1.jsonl", progress=False)
    assert len(want.rows) > 100 and len(read_results(tmp_path / "L1.jsonl")[1]) == -(-len(texts) // 96) > 1
    assert json.dumps(got.to_dict()) == json.dumps(want.to_dict())


def test_commands_resume_from_their_shard_files(tmp_path, capsys):
    """`interp probe-relation` and `interp features` with --resume: the first run writes the shard
    file, the second reads every shard from it and writes the same JSON; a changed option is refused."""
    from analyses.cli import main

    for argv, name in ((["probe-relation", "sport", "--limit", "3", "--shard-size", "2"], "sport"),
                       (["features", "1", "--limit", "3", "--batch-size", "16", "--shard-size", "2"], "L1_features")):
        argv = argv + ["--out", str(tmp_path), "--quiet", "--resume"]
        assert main(argv) == 0
        first = json.loads((tmp_path / f"{name}.json").read_text())
        assert main(argv) == 0
        assert "shards there already" in capsys.readouterr().out
        second = json.loads((tmp_path / f"{name}.json").read_text())
        first.pop("seconds", None), second.pop("seconds", None)
        assert first == second
        header, done, _ = read_results(tmp_path / f"{name}.shards.jsonl")
        assert len(done) == -(-header["n_items"] // header["shard_size"]) >= 2  # every shard there
    with pytest.raises(ValueError, match="another task or configuration"):
        main(["probe-relation", "sport", "--limit", "3", "--shard-size", "2", "--max-sites", "5", "--out",
              str(tmp_path), "--quiet", "--resume"])
