"""Shared timing helpers for the benchmarks (run side by side, in one process)."""

from __future__ import annotations

import json
import os
import statistics
import time
from pathlib import Path
from typing import Callable

import torch


def time_interleaved(fns: dict[str, Callable[[], object]], repeats: int = 5, warmup: int = 1) -> dict[str, float]:
    """Median wall time (seconds) of each function, running them round-robin so that
    machine-wide slowdowns hit all of them alike."""
    with torch.no_grad():
        for _ in range(warmup):
            for fn in fns.values():
                fn()
        times: dict[str, list[float]] = {name: [] for name in fns}
        for _ in range(repeats):
            for name, fn in fns.items():
                t0 = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - t0)
    return {name: statistics.median(ts) for name, ts in times.items()}


def timed(fn: Callable[[], object]) -> tuple[object, float]:
    """(what fn returns, its wall time in seconds)."""
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def round_robin(runs: dict, repeats: int) -> tuple[dict, dict]:
    """(times, outputs) for runs of seconds to minutes (where `time_interleaved` is for short
    ones): each run in turn, `repeats` times, no warm-up; per run its seconds with the load
    average before it (other processes share the cores), and what it returned each time."""
    times: dict = {name: [] for name in runs}
    outputs: dict = {name: [] for name in runs}
    for repeat in range(repeats):
        for name, fn in runs.items():
            load = os.getloadavg()[0]
            output, seconds = timed(fn)
            outputs[name].append(output)
            times[name].append({"s": seconds, "load_average_1min": load})
            print(f"  repeat {repeat + 1}, {name}: {seconds:.1f} s (load average before: {load:.1f})")
    return times, outputs


def write_report(report: dict, path: str | Path) -> None:
    """Write a benchmark's numbers as JSON (creating the folder) and say where."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1))
    print(f"wrote {out}")
