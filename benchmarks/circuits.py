"""Edge attribution against exact edge patching on the fact-world model, one run.

    python -m benchmarks.circuits

Two tasks: Michael Jordan vs Michael Phelps (basketball - swimming; one prompt pair) and 16
athlete pairs of the same token length (each pair's sport - the other's; the logit difference
averaged). For each: EAP, EAP-IG (5 steps), exact edge patching with its rows batched (256
rows per forward pass) and exact edge patching one edge per forward pass (as ACDC-style tools
run it). Median wall times over round-robin repeats; the agreement of EAP and EAP-IG with
exact (Pearson, Spearman, top-20 overlap over all 479 edges). Results: stdout and
benchmarks/results/circuits.json.
"""

from __future__ import annotations

import platform

import torch

from benchmarks.common import time_interleaved, write_report
from interp.attribution import agreement
from interp.circuits import attribute_edges
from interp.metrics import logit_diff
from models import factworld, load


def athlete_pairs(model, n: int = 16) -> tuple[list[str], list[str], list[str], list[str]]:
    """n (clean, corrupted) sport prompts of the same length with different sports."""
    facts = [f for f in factworld.facts("sport") if f.object != "none"]
    prompts = {f.subject: f"{f.subject} plays the sport of" for f in facts}
    by_len: dict[int, list] = {}
    for f in facts:
        by_len.setdefault(len(model.to_str_tokens(prompts[f.subject])), []).append(f)
    group = max(by_len.values(), key=len)
    clean, corrupted, answers, counterfactuals = [], [], [], []
    for a, b in zip(group, group[1:] + group[:1]):
        if a.object != b.object and len(clean) < n:
            clean.append(prompts[a.subject]), corrupted.append(prompts[b.subject])
            answers.append(a.object), counterfactuals.append(b.object)
    return clean, corrupted, answers, counterfactuals


def main() -> int:
    torch.set_num_threads(max(1, torch.get_num_threads()))
    model = load("factworld")
    clean, corrupted, answers, counterfactuals = athlete_pairs(model)
    tasks = {
        "Michael Jordan vs Michael Phelps": ("Michael Jordan plays the sport of", "Michael Phelps plays the sport of",
                                             logit_diff(model, "basketball", "swimming")),
        f"{len(clean)} athlete pairs": (clean, corrupted, logit_diff(model, answers, counterfactuals)),
    }
    report: dict = {"machine": platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
                    "tasks": {}}
    for name, (c, k, metric) in tasks.items():
        batch = 1 if isinstance(c, str) else len(c)
        runs = {
            "eap": lambda: attribute_edges(model, c, k, metric, method="eap"),
            "eap-ig": lambda: attribute_edges(model, c, k, metric, method="eap-ig", steps=5),
            "exact (batched)": lambda: attribute_edges(model, c, k, metric, method="exact", progress=False),
            "exact (one edge per pass)": lambda: attribute_edges(model, c, k, metric, method="exact", batch_size=batch,
                                                                 progress=False),
        }
        times = time_interleaved(runs, repeats=3)
        scores = {m: fn() for m, fn in runs.items()}
        exact = scores["exact (batched)"]
        entry = {"n_edges": exact.graph.n_edges, "prompts": batch, "seconds": times}
        for m in ("eap", "eap-ig"):
            a = agreement(scores[m], exact, k=20)
            entry[m] = {"pearson": a.pearson, "spearman": a.spearman, "top20_overlap": a.top_k_overlap,
                        "speedup_vs_exact_batched": times["exact (batched)"] / times[m],
                        "speedup_vs_exact_one_per_pass": times["exact (one edge per pass)"] / times[m]}
            print(f"{name}: {m} {times[m] * 1e3:.1f} ms; exact batched {times['exact (batched)'] * 1e3:.0f} ms "
                  f"({entry[m]['speedup_vs_exact_batched']:.0f}x), one edge per pass "
                  f"{times['exact (one edge per pass)'] * 1e3:.0f} ms ({entry[m]['speedup_vs_exact_one_per_pass']:.0f}x); "
                  f"vs exact: {a}")
        diff = (scores["exact (batched)"].values - scores["exact (one edge per pass)"].values).abs().max()
        entry["exact_batched_vs_one_per_pass_max_diff"] = float(diff)
        report["tasks"][name] = entry
    write_report(report, "benchmarks/results/circuits.json")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
