"""Beyond one process: `probe-relation sport` in one process and on 1 and 2 Ray workers, side by
side in one run, the engine's own cost per shard, and a model of the time on N workers.

    python -m benchmarks.scale                 # the first 40 facts of sport, 2 repeats (about 8 minutes on 2 cores)
    python -m benchmarks.scale --facts 225     # all of sport
    python -m benchmarks.scale --quick         # 12 facts, one repeat

On a local Ray cluster of 2 CPUs (`interp.workers`), first for 1 and 2 workers: the start of the
worker processes (Python, Ray, torch), the task's set-up in them (model, the relation's prepared
batch: an empty task of the same class), and the engine's overhead per shard (an empty task, 20
and 420 shards on started workers: (t420 - t20) / 400). Then, round-robin for --repeats rounds
(the fastest of each kept), all giving the same view, number for number:
- serial: `relation_view` as `interp probe-relation` runs it, with torch's default threads, and
  with one torch thread (what one worker gets): the per-fact cost c;
- 1 and 2 workers: `relation_view_sharded` on the started workers, shards of --shard-size facts,
  the set-up included (as a second relation sees it).
The machine's load average before each run is recorded: other processes share the cores.

The same for the editing benchmark's single edits (`benchmarks.editing --part single --workers N`):
--edits ROME edits of sport facts (seed 1001), each traced, edited, scored and its fluency loss
measured alone, as `analyses.sharded.evaluate_edits_sharded` runs them: serial (default threads
and one thread: the per-edit cost) and on 1 and 2 workers, shards of --edit-shard-size; the
workers' numbers are checked against the one-thread serial run.

The model: T(N) = start + setup + ceil(shards / N) * shard_size * c + shards * overhead / N on N
free cores; checked against the 1- and 2-worker runs here, extrapolated to all of sport,
`probe-relation all` and a CounterFact-sized 20,000 facts, and for editing to the benchmark's
900 ROME edits (3 relations x 3 seeds x 100) and 20,000 edits. Results: stdout,
benchmarks/results/scale.json and scale.png.
"""

from __future__ import annotations

import os

# torch's OpenMP threads spin-wait between parallel regions; on 2 shared cores that spinning
# starves the other processes (tests/conftest.py measures it): a short spin, before torch loads
os.environ.setdefault("GOMP_SPINCOUNT", "10000")

import argparse  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import platform  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from analyses.sharded import EditTask, RelationTask  # noqa: E402
from benchmarks.common import round_robin, timed, write_report  # noqa: E402
from probes.ffn import DEFAULT_METHOD  # noqa: E402

OUT = Path(__file__).resolve().parent / "results"


class Nothing:
    """The empty task: what the engine costs per shard."""

    def setup(self) -> None:
        pass

    def __call__(self, shard: list) -> list:
        return [None] * len(shard)

    def describe(self) -> dict:
        return {"task": "nothing"}


class SetupOnly(RelationTask):
    """The relation's task, set up (model, prepared batch) but localising nothing: the set-up's cost."""

    def __call__(self, shard: list) -> list:
        return [None] * len(shard)


class EditSetupOnly(EditTask):
    """The editing task, set up (model, fluency texts) but editing nothing."""

    def __call__(self, shard: list) -> list:
        return [None] * len(shard)


def _same_edits(a: list, b: list) -> bool:
    keep = ("scores", "loss_after", "layer")
    return [{k: r[k] for k in keep} for r in a] == [{k: r[k] for k in keep} for r in b]


def _same(a, b) -> bool:
    da, db = a.to_dict(), b.to_dict()
    da.pop("seconds"), db.pop("seconds")
    return json.dumps(da, sort_keys=True) == json.dumps(db, sort_keys=True)


def model_time(n_workers: int, n_facts: int, shard_size: int, per_fact: float, overhead: float, start: float,
               setup: float) -> float:
    """Seconds for n_facts on n_workers free cores (see the module docstring)."""
    shards = math.ceil(n_facts / shard_size)
    return start + setup + math.ceil(shards / n_workers) * shard_size * per_fact + shards * overhead / n_workers


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--facts", type=int, default=40, help="the first N facts of sport (225: all)")
    p.add_argument("--shard-size", type=int, default=4)
    p.add_argument("--repeats", type=int, default=2, help="round-robin repeats (the fastest of each is kept)")
    p.add_argument("--edits", type=int, default=8, help="ROME edits for the editing runs")
    p.add_argument("--edit-shard-size", type=int, default=2)
    p.add_argument("--quick", action="store_true", help="12 facts, 4 edits, one repeat")
    args = p.parse_args(argv)
    n_facts, repeats = (12, 1) if args.quick else (args.facts, args.repeats)
    n_edits = 4 if args.quick else args.edits
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    import ray

    from analyses.factworld_facts import relation_facts, relation_view
    from analyses.sharded import relation_view_sharded
    from interp.workers import ray_cluster, run_shards
    from models import load

    model = load("factworld").eval()
    n_facts = len(relation_facts("sport", limit=n_facts))
    shard_size, threads = args.shard_size, torch.get_num_threads()
    report: dict = {"machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "torch_threads": threads},
                    "slice": f"the first {n_facts} facts of sport (template 0, greedy, k <= 20)",
                    "n_facts": n_facts, "shard_size": shard_size, "repeats": repeats}
    print(f"probe-relation sport, {report['slice']}; {os.cpu_count()} CPUs; shards of {shard_size} facts; "
          f"fastest of {repeats} round-robin repeats")

    def serial_run(n_threads: int):
        torch.set_num_threads(n_threads)
        try:
            return relation_view(model, "sport", limit=n_facts, progress=False)
        finally:
            torch.set_num_threads(threads)

    def sharded_run(workers: int):
        return relation_view_sharded("factworld", "sport", limit=n_facts, loaded=model, shard_size=shard_size,
                                     workers=workers, progress=False)

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the tasks below, for the workers
    t0 = time.perf_counter()
    with ray_cluster(workers=2):
        start = time.perf_counter() - t0
        print(f"Ray cluster (2 CPUs) started in {start:.1f} s")
        fixed: dict = {}
        for workers in (1, 2):
            # the worker processes start (Python, Ray, torch), then set the task up (model, prepared batch)
            _, t_procs = timed(lambda: run_shards(Nothing(), range(workers), shard_size=1, workers=workers,
                                                   progress=False))
            setup_only = SetupOnly("factworld", "sport", loaded=model, method=DEFAULT_METHOD, max_sites=20)
            _, t_setup = timed(lambda: run_shards(setup_only, range(workers), shard_size=1, workers=workers,
                                                   progress=False))
            _, t20 = timed(lambda: run_shards(Nothing(), range(20), shard_size=1, workers=workers, progress=False))
            _, t420 = timed(lambda: run_shards(Nothing(), range(420), shard_size=1, workers=workers,
                                                progress=False))
            fixed[workers] = {"process_start_s": t_procs, "setup_s": t_setup, "overhead_per_shard_s": (t420 - t20) / 400}
        runs = {f"serial, {threads} threads": lambda: serial_run(threads), "serial, 1 thread": lambda: serial_run(1),
                "1 worker": lambda: sharded_run(1), "2 workers": lambda: sharded_run(2)}
        times, views = round_robin(runs, repeats)
        reference = views[f"serial, {threads} threads"][0]
        for name, seen in views.items():
            if not all(_same(view, reference) for view in seen):
                raise SystemExit(f"{name} gave another view than the serial run")
        editing = _editing(model, n_edits, args.edit_shard_size, repeats, threads)
    best = {name: min(t["s"] for t in ts) for name, ts in times.items()}
    t_serial, t_serial1 = best[f"serial, {threads} threads"], best["serial, 1 thread"]
    per_fact = t_serial1 / n_facts
    report["runs"] = times
    report["fastest_s"] = best
    report["per_fact_s"] = per_fact
    report["ray_start_s"] = start
    report["workers"] = {}
    for w, r in fixed.items():
        run_s = best["1 worker" if w == 1 else f"{w} workers"]
        modelled = model_time(w, n_facts, shard_size, per_fact, r["overhead_per_shard_s"], 0.0, r["setup_s"])
        report["workers"][str(w)] = r | {
            "run_s": run_s, "modelled_run_s": modelled, "from_scratch_s": start + r["process_start_s"] + run_s,
            "speedup_vs_serial": t_serial / run_s, "speedup_vs_serial_1_thread": t_serial1 / run_s}
    print(f"serial ({threads} torch threads): {t_serial:.1f} s; serial (1 thread): {t_serial1:.1f} s "
          f"= {per_fact:.3f} s per fact")
    for w, r in report["workers"].items():
        print(f"{w} worker(s): {r['run_s']:.1f} s on started workers, set-up included (model: {r['modelled_run_s']:.1f} s; "
              f"set-up {r['setup_s']:.1f} s, process start {r['process_start_s']:.1f} s, from scratch "
              f"{r['from_scratch_s']:.1f} s); speed-up {r['speedup_vs_serial']:.2f}x against serial ({threads} threads), "
              f"{r['speedup_vs_serial_1_thread']:.2f}x against one thread")
    print("engine overhead per shard (empty task, started workers): " + ", ".join(
        f"{w} worker(s) {r['overhead_per_shard_s'] * 1e3:.2f} ms" for w, r in fixed.items()))
    runs = fixed

    every = sum(len(relation_facts(r)) for r in ("sport", "country", "occupation"))
    sizes = {f"sport ({len(relation_facts('sport'))} facts)": len(relation_facts("sport")),
             f"probe-relation all ({every} facts)": every, "CounterFact-sized (20,000 facts)": 20000}
    ns = [1, 2, 4, 8, 16, 32, 64]
    o, setup = runs[1]["overhead_per_shard_s"], runs[1]["setup_s"]
    start = start + runs[1]["process_start_s"]
    report["model"] = {
        "formula": "start + setup + ceil(shards / N) * shard_size * per_fact + shards * overhead / N (N free cores)",
        "start_s": start, "setup_s": setup, "overhead_s": o,
        "predicted_s": {name: {str(n): model_time(n, size, shard_size, per_fact, o, start, setup) for n in ns}
                        for name, size in sizes.items()}}
    for name, pred in report["model"]["predicted_s"].items():
        print(f"model, {name}: " + ", ".join(f"N={n}: {s:.0f} s" for n, s in pred.items()))
    report["editing"] = ed = editing
    ed["model"] |= {"start_s": start, "overhead_s": o}  # the cluster's and the engine's, as measured above
    for name, size in {"the editing benchmark's ROME edits (900)": 900, "20,000 edits": 20000}.items():
        ed["model"]["predicted_s"][name] = {str(n): model_time(n, size, ed["shard_size"], ed["per_edit_s"],
                                                                ed["model"]["overhead_s"], ed["model"]["start_s"],
                                                                ed["model"]["setup_s"]) for n in ns}
    for name, pred in ed["model"]["predicted_s"].items():
        print(f"model, {name}: " + ", ".join(f"N={n}: {s:.0f} s" for n, s in pred.items()))
    write_report(report, OUT / "scale.json")
    from interp import plot

    plot.save(_figure(report, ns), OUT / "scale", formats=("png",))
    print(f"wrote {OUT / 'scale.png'}")
    return 0


def _editing(model, n_edits: int, shard_size: int, repeats: int, threads: int) -> dict:
    """The editing runs (see the module docstring), on the cluster the caller started."""
    from analyses import factworld_edits as fe
    from analyses.sharded import evaluate_edits_sharded
    from interp.workers import run_shards
    from probes.edit import key_second_moment

    facts = [(s, "sport", t) for s, t in fe.random_edits(n_edits, relation="sport", seed=1001, known_by=model)]
    for layer in range(model.cfg.n_layers):  # cached once, as `benchmarks.editing` does before its edits
        key_second_moment(model, layer, fe.stats_texts(), progress=False)
    print(f"editing: {n_edits} ROME edits of sport facts (traced, edited, scored, fluency), shards of {shard_size}")

    def serial(n_threads: int):
        torch.set_num_threads(n_threads)
        try:
            return evaluate_edits_sharded("factworld", facts, "rome", loaded=model, shard_size=shard_size,
                                          progress=False)[1]
        finally:
            torch.set_num_threads(threads)

    def sharded(workers: int):
        return evaluate_edits_sharded("factworld", facts, "rome", loaded=model, shard_size=shard_size,
                                      workers=workers, progress=False)[1]

    setup = {}
    for workers in (1, 2):
        task = EditSetupOnly("factworld", "rome", loaded=model)
        setup[workers] = timed(lambda: run_shards(task, range(workers), shard_size=1, workers=workers,
                                                   progress=False))[1]
    runs = {f"serial, {threads} threads": lambda: serial(threads), "serial, 1 thread": lambda: serial(1),
            "1 worker": lambda: sharded(1), "2 workers": lambda: sharded(2)}
    times, same = round_robin(runs, repeats)
    reference = same["serial, 1 thread"][0]
    for name in ("1 worker", "2 workers"):
        if not all(_same_edits(r, reference) for r in same[name]):
            raise SystemExit(f"editing on {name} gave other numbers than the one-thread serial run")
    best = {name: min(t["s"] for t in ts) for name, ts in times.items()}
    per_edit = best["serial, 1 thread"] / n_edits
    out = {"n_edits": n_edits, "shard_size": shard_size, "runs": times, "fastest_s": best, "per_edit_s": per_edit,
           "setup_s": setup, "workers_equal_serial_1_thread": True,
           "serial_threads_equal_1_thread": all(_same_edits(r, reference) for r in same[f"serial, {threads} threads"]),
           "model": {"start_s": 0.0, "setup_s": setup[1], "overhead_s": 0.0, "predicted_s": {}}}
    for w in (1, 2):
        run_s = best["1 worker" if w == 1 else "2 workers"]
        out[f"{w}_workers"] = {"run_s": run_s, "modelled_run_s": model_time(w, n_edits, shard_size, per_edit, 0.0, 0.0,
                                                                             setup[w]),
                               "speedup_vs_serial": best[f"serial, {threads} threads"] / run_s,
                               "speedup_vs_serial_1_thread": best["serial, 1 thread"] / run_s}
        print(f"editing, {w} worker(s): {run_s:.1f} s (model {out[f'{w}_workers']['modelled_run_s']:.1f} s), "
              f"speed-up {out[f'{w}_workers']['speedup_vs_serial']:.2f}x against serial ({threads} threads)")
    print(f"editing: {per_edit:.2f} s per edit on one thread; the workers gave the one-thread numbers exactly; "
          f"serial with {threads} threads the same: {out['serial_threads_equal_1_thread']}")
    return out


def _figure(report: dict, ns: list[int]) -> Figure:
    fig = Figure(figsize=(17, 4.2), layout="constrained")
    left, middle, right = fig.subplots(1, 3)
    names = [f"serial ({report['machine']['torch_threads']} thr.)", "serial (1 thr.)", "1 worker", "2 workers"]
    values = list(report["fastest_s"].values())
    left.bar(names, values, color=["#4d4d4d", "#878787", "#2166ac", "#4393c3"])
    left.scatter([2, 3], [report["workers"]["1"]["modelled_run_s"], report["workers"]["2"]["modelled_run_s"]],
                 color="#b2182b", zorder=3, label="model")
    left.set_ylabel("seconds")
    left.set_title(f"probe-relation sport, {report['n_facts']} facts, {report['machine']['cpus']} shared CPUs "
                   f"(fastest of {report['repeats']})")
    left.legend()
    ed = report["editing"]
    middle.bar(names, list(ed["fastest_s"].values()), color=["#4d4d4d", "#878787", "#2166ac", "#4393c3"])
    middle.scatter([2, 3], [ed["1_workers"]["modelled_run_s"], ed["2_workers"]["modelled_run_s"]], color="#b2182b",
                   zorder=3, label="model")
    middle.set_ylabel("seconds")
    middle.set_title(f"editing: {ed['n_edits']} ROME edits, each alone ({ed['per_edit_s']:.1f} s/edit)")
    middle.legend()
    for name, pred in report["model"]["predicted_s"].items():
        right.plot(ns, [pred[str(n)] for n in ns], marker="o", label=name)
    for name, pred in ed["model"]["predicted_s"].items():
        right.plot(ns, [pred[str(n)] for n in ns], marker="s", ls="--", label=f"editing: {name}")
    right.set_xscale("log", base=2)
    right.set_yscale("log")
    right.set_xlabel("workers (N free cores)")
    right.set_ylabel("modelled seconds")
    right.set_title(f"model: {report['per_fact_s']:.2f} s/fact, {report['model']['overhead_s'] * 1e3:.1f} ms/shard, "
                    f"{report['model']['start_s'] + report['model']['setup_s']:.0f} s to start and set up")
    right.legend(fontsize="small")
    return fig


if __name__ == "__main__":
    raise SystemExit(main())
