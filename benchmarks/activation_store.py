"""Training a dictionary from an activation store on disk against training it in memory.

    python -m benchmarks.activation_store [--texts 12000,48000,192000] [--features 512] [--threads 1] [--repeats 2]

For each corpus size (a seeded sample of the fact world's training sentences), the shipped
model's blocks.1.hook_resid_post activations are harvested into an activation store
(`interp.store.harvest`, shards of --shard-tokens rows), then a TopK SAE (--features, k 32,
batches of 1024) is trained for one pass over the data twice, each in a fresh process:
  - "store": streamed from the store (`train_dictionary(sae, store)`, --buffer-shards shards in
    memory at a time);
  - "memory": the same rows read into memory first, then `train_dictionary(sae, (x, x))`.
The two modes alternate, --repeats times each (the median throughput, the better of two runs
with the default 2, and the largest peak are reported), with torch on --threads threads and a short OpenMP spin (GOMP_SPINCOUNT=10000, as
the tests use: on shared cores the default spin-wait makes small training loops 10x slower).
Peak memory is the process's peak resident set size (VmHWM, reset just before the phase where
Linux allows) minus its resident size just before the phase (after torch is imported and the SAE
built): for "memory" it includes reading the rows in. (Not ru_maxrss: Linux carries that over
from the parent process through fork and exec, which made a first version report the parent's
size.) Throughput is training tokens per second of training (`record.seconds`) on the same
data, with the same number of steps; the loader alone (one epoch of `store.batches`, against
drawing the same number of random batches from the rows in memory) is timed too, in this process.
Writes benchmarks/results/activation_store.{json,png}.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RESULTS = Path("benchmarks/results/activation_store")
HOOK = "blocks.1.hook_resid_post"
MB = 2 ** 20


def _status(field: str) -> int:
    """A size from /proc/self/status (VmRSS: resident now; VmHWM: the peak of this process image), in bytes."""
    with open("/proc/self/status") as f:
        line = next(line for line in f if line.startswith(field + ":"))
    return int(line.split()[1]) * 1024


def _reset_peak() -> None:
    """Restart VmHWM from the resident size now (Linux: 5 > /proc/self/clear_refs), where allowed."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def child(mode: str, directory: str, steps: int, features: int, buffer_shards: int, threads: int) -> dict:
    """One training run in this process (see the module docstring); its numbers."""
    import torch

    from interp.store import ActivationStore
    from probes.sae import SparseDictionary, train_dictionary

    torch.set_num_threads(threads)
    store = ActivationStore.open(directory)
    sae = SparseDictionary.sae(store.d[HOOK], features, hook=HOOK, activation="topk", k=32, seed=0)
    _reset_peak()
    before = _status("VmRSS")
    if mode == "store":
        record = train_dictionary(sae, store, steps=steps, batch_size=1024, buffer_shards=buffer_shards, progress=False)
    else:
        x = torch.cat([store.read_shard(i, [HOOK])[HOOK] for i in range(store.n_shards)])
        record = train_dictionary(sae, (x, x), steps=steps, batch_size=1024, progress=False)
    peak = _status("VmHWM")  # not ru_maxrss: Linux carries that over from the parent through fork and exec
    return {"mode": mode, "tokens": store.tokens, "steps": steps, "train_seconds": record.seconds,
            "tokens_per_s": steps * 1024 / record.seconds, "peak_mb": (peak - before) / MB,
            "final_loss": record.losses[-1]}


def loader_speed(store, buffer_shards: int) -> dict:
    """Tokens per second of one epoch of `store.batches(1024)` alone, and of as many random
    batches gathered from the same rows held in memory."""
    import torch

    t0 = time.perf_counter()
    n = sum(1 for _ in store.batches(1024, hooks=[HOOK], buffer_shards=buffer_shards, epochs=1))
    streamed = time.perf_counter() - t0
    x = torch.cat([store.read_shard(i, [HOOK])[HOOK] for i in range(store.n_shards)])
    g = torch.Generator(device="cpu").manual_seed(0)
    t0 = time.perf_counter()
    for _ in range(n):
        x[torch.randint(0, x.shape[0], (1024,), generator=g, device="cpu")]
    gathered = time.perf_counter() - t0
    return {"batches": n, "store_tokens_per_s": n * 1024 / streamed, "memory_tokens_per_s": n * 1024 / gathered}


def _run_child(args: list[str]) -> dict:
    out = subprocess.run([sys.executable, "-m", "benchmarks.activation_store", "--child", *args], check=True,
                         capture_output=True, text=True, env=os.environ | {"GOMP_SPINCOUNT": "10000"})
    return json.loads(out.stdout.strip().splitlines()[-1])


def plot(report: dict, path: Path) -> None:
    from matplotlib.figure import Figure

    from interp import plot as iplot

    fig = Figure(figsize=(10, 4), layout="constrained")
    ax, bx = fig.subplots(1, 2)
    for mode, marker in (("memory", "o"), ("store", "s")):
        rows = [r for r in report["runs"] if r["mode"] == mode]
        ax.plot([r["tokens"] / 1e6 for r in rows], [r["peak_mb"] for r in rows], marker=marker, label=mode)
        bx.plot([r["tokens"] / 1e6 for r in rows], [r["tokens_per_s"] / 1e3 for r in rows], marker=marker, label=mode)
    ax.set_xlabel("corpus (million tokens)")
    ax.set_ylabel("peak memory of training (MB, RSS)")
    ax.set_title("memory against corpus size")
    bx.set_xlabel("corpus (million tokens)")
    bx.set_ylabel("training throughput (thousand tokens / s)")
    bx.set_title("throughput, same data and steps")
    for a in (ax, bx):
        a.set_ylim(bottom=0)
        a.legend()
        a.grid(alpha=0.3)
    iplot.save(fig, path, formats=("png",))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--texts", default="12000,48000,192000", help="comma-separated corpus sizes (sentences)")
    p.add_argument("--features", type=int, default=512)
    p.add_argument("--shard-tokens", type=int, default=16384)
    p.add_argument("--buffer-shards", type=int, default=4)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--child", nargs=5, metavar=("MODE", "DIR", "STEPS", "FEATURES", "BUFFER"), default=None,
                   help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        mode, directory, steps, features, buffer_shards = args.child
        print(json.dumps(child(mode, directory, int(steps), int(features), int(buffer_shards), args.threads)))
        return 0

    os.environ.setdefault("GOMP_SPINCOUNT", "10000")  # before torch starts its OpenMP threads
    import torch

    from benchmarks.common import write_report
    from interp.store import harvest
    from models import load
    from models.factworld.corpus import default_corpus

    torch.set_num_threads(args.threads)
    sizes = [int(s) for s in args.texts.split(",")]
    model = load("factworld")
    corpus = default_corpus(max(sizes), seed=0)
    runs, harvests = [], []
    with tempfile.TemporaryDirectory(prefix="store-bench-") as tmp:
        for n in sizes:
            t0 = time.perf_counter()
            store = harvest(model, corpus[:n], [HOOK], Path(tmp) / f"n{n}", shard_tokens=args.shard_tokens,
                            progress=False)
            seconds = time.perf_counter() - t0
            disk = sum(f.stat().st_size for f in store.directory.iterdir())
            harvests.append({"texts": n, "tokens": store.tokens, "shards": store.n_shards, "seconds": seconds,
                             "tokens_per_s": store.tokens / seconds, "disk_mb": disk / MB,
                             "loader": loader_speed(store, args.buffer_shards)})
            steps = store.tokens // 1024  # one pass over the data
            tries: dict[str, list[dict]] = {"store": [], "memory": []}
            for _ in range(args.repeats):
                for mode in tries:
                    tries[mode].append(_run_child([mode, str(store.directory), str(steps), str(args.features),
                                                   str(args.buffer_shards), "--threads", str(args.threads)]))
            for mode, done in tries.items():
                speeds = sorted(r["tokens_per_s"] for r in done)
                run = done[0] | {"texts": n, "peak_mb": max(r["peak_mb"] for r in done),
                                 "tokens_per_s": speeds[len(speeds) // 2], "all_tokens_per_s": speeds,
                                 "all_peak_mb": [r["peak_mb"] for r in done]}
                runs.append(run)
                print(f"{n:>7} texts, {store.tokens:>9,} tokens, {mode:>6}: peak {run['peak_mb']:7.1f} MB, "
                      f"{run['tokens_per_s']:9,.0f} tokens/s ({steps} steps)", flush=True)
    store_runs = [r for r in runs if r["mode"] == "store"]
    mem_runs = [r for r in runs if r["mode"] == "memory"]
    report = {
        "what": __doc__.split("\n\n")[0],
        "hook": HOOK, "features": args.features, "batch_size": 1024, "shard_tokens": args.shard_tokens,
        "buffer_shards": args.buffer_shards, "threads": args.threads, "torch": torch.__version__,
        "harvests": harvests, "runs": runs,
        "summary": {
            "store_peak_mb": [round(r["peak_mb"], 1) for r in store_runs],
            "memory_peak_mb": [round(r["peak_mb"], 1) for r in mem_runs],
            "tokens": [r["tokens"] for r in store_runs],
            "store_over_memory_throughput": [round(s["tokens_per_s"] / m["tokens_per_s"], 3)
                                             for s, m in zip(store_runs, mem_runs)],
            "loader_tokens_per_s": [round(h["loader"]["store_tokens_per_s"]) for h in harvests],
            "harvest_tokens_per_s": [round(h["tokens_per_s"]) for h in harvests],
        },
    }
    write_report(report, RESULTS.with_suffix(".json"))
    plot(report, RESULTS)
    print(json.dumps(report["summary"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
