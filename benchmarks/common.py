"""Shared timing helpers for the benchmarks (run side by side, in one process)."""

from __future__ import annotations

import json
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


def write_report(report: dict, path: str | Path) -> None:
    """Write a benchmark's numbers as JSON (creating the folder) and say where."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1))
    print(f"wrote {out}")
