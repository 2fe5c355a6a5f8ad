"""Editing benchmark on the shipped fact-world model: ROME, MEMIT and FT-L on the same facts,
CounterFact-style, and whether localisation predicts where editing works.

    python -m benchmarks.editing [--rome 200 --memit 100 --layers-facts 100] [--quick]

- ROME: N single edits (random athlete -> another sport, seeded), each applied alone, at the
  layer the fact's causal trace picks (`probes.edit.choose_layer`).
- FT-L: the same facts and layers, one at a time.
- MEMIT: M edits at once, at the layers the traces pick most often.
- Localisation vs editing: for K facts, a ROME edit at every layer; its success (efficacy and
  paraphrase top-1, and P(target) on the held-out paraphrases) against the causal trace's MLP
  effect at that layer (last subject token) and the number of the fact's subject-only
  localisation sites in that layer. Pearson and Spearman correlations over (fact, layer) pairs,
  and how often the best layer to edit is the trace's layer.
Writes benchmarks/results/editing.json and editing.png; prints a table.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Optional, Sequence

import torch
from matplotlib.figure import Figure

from analyses import factworld_edits as fe
from analyses.edit import make_edit
from analyses.factworld_facts import other_facts
from interp import plot
from interp.progress import progress_bar
from interp.results import write_json
from models import factworld, load
from probes.edit import EditReport, choose_layer, evaluate_edits, key_second_moment, mean_key, memit
from probes.ffn import SUBJECT_ROLES, localise

OUT = Path(__file__).resolve().parent / "results"


def _pearson(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double() - a.double().mean(), b.double() - b.double().mean()
    return float((a * b).sum() / (a.norm() * b.norm()).clamp_min(1e-12))


def _ranks(x: torch.Tensor) -> torch.Tensor:
    order = x.argsort()
    ranks = torch.empty_like(order, dtype=torch.float64)
    ranks[order] = torch.arange(len(x), dtype=torch.float64)
    for v in x.unique():  # ties share their mean rank
        tie = x == v
        ranks[tie] = ranks[tie].mean()
    return ranks


def correlations(x: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
    return {"pearson": _pearson(x, y), "spearman": _pearson(_ranks(x), _ranks(y))}


def _key_statistics(model, report: dict) -> dict[int, torch.Tensor]:
    """Every layer's key statistics, timed uncached, then written to the cache for the edits."""
    start = time.perf_counter()
    stats = {l: key_second_moment(model, l, fe.stats_texts(), cache=False, progress=False)
             for l in range(model.cfg.n_layers)}
    report["key_stats_seconds_all_layers"] = time.perf_counter() - start
    for l in range(model.cfg.n_layers):  # and into the cache, for the edits below
        key_second_moment(model, l, fe.stats_texts(), progress=False)
    return stats


def _single_edits(model, n: int, fluency: list[str], report: dict) -> tuple[dict, list[int]]:
    """ROME and FT-L: n single edits, each at its fact's traced layer."""
    cases = [fe.edit_case(s, "sport", t) for s, t in fe.random_edits(n, seed=0, known_by=model)]
    layers = [choose_layer(model, c.request.prompt, c.request.subject, c.old)[0]
              for c in progress_bar(cases, desc="choosing layers (causal traces)")]
    report["traced_layers"] = dict(Counter(layers))
    tables = {}
    for method in ("rome", "ft"):
        edits = [make_edit(model, method, c.request, l, "sport", "causal trace")
                 for c, l in progress_bar(list(zip(cases, layers)), desc=f"{method} edits")]
        tables[method] = evaluate_edits(model, cases, edits, fluency, method=method, progress=False)
    return tables, layers


def _memit_edits(model, n: int, layers: list[int], stats: dict, fluency: list[str], report: dict) -> EditReport:
    """MEMIT: n edits at once, at the layer the single edits' traces picked most often."""
    mem_cases = [fe.edit_case(s, "sport", t) for s, t in fe.random_edits(n, seed=1, known_by=model)]
    mem_layers = sorted({max(set(layers), key=layers.count)})
    edit = memit(model, [c.request for c in mem_cases], layers=mem_layers, stats=stats, prefixes=factworld.openers(),
                 rewrites=[fe.rewrite_prompts(c.request.subject, "sport") for c in mem_cases],
                 keep=[fe.keep_prompts(c.request.subject, "sport") for c in mem_cases], **fe.MEMIT_SETTINGS)
    table = evaluate_edits(model, mem_cases, [edit], fluency, method="memit", progress=False)
    keys = torch.stack([mean_key(model, mem_layers[0], [c.request.prompt], c.request.subject) for c in mem_cases])
    unit = keys / keys.norm(dim=-1, keepdim=True)
    off = (unit @ unit.T)[~torch.eye(len(keys), dtype=torch.bool)]
    report["memit_key_cosine"] = {"mean": float(off.mean()), "max": float(off.max())}
    table.seconds_per_edit = edit.info["seconds"] / len(mem_cases)
    report["memit_layers"] = mem_layers
    return table


def _every_layer_rows(model, subject: str, new_target: str) -> list[dict]:
    """One fact: a ROME edit at every layer, with the trace effect and localisation sites there."""
    from probes.causal_trace import trace

    case = fe.edit_case(subject, "sport", new_target)
    tr = trace(model, case.request.prompt, subject, case.old, kind="mlp", window=1, progress=False)
    at = tr.subject_span[1] - 1
    loc = localise(model, case.request.prompt, case.old, subject=subject, other_facts=other_facts(subject, "sport"),
                   roles=SUBJECT_ROLES, max_sites=40, candidates=128)
    sites_per_layer = Counter(s.layer for s in loc.sites) if loc.k else Counter()
    rows = []
    for layer in range(model.cfg.n_layers):
        e = make_edit(model, "rome", case.request, layer, "sport", "every layer")
        scores = evaluate_edits(model, [case], [e], progress=False).cases[0]
        rows.append({"subject": subject, "layer": layer, "trace": float(tr.scores[layer, at]),
                     "sites": sites_per_layer.get(layer, 0), "localised_at_subject": loc.k is not None,
                     "efficacy": scores["efficacy_top1"], "paraphrase": scores["paraphrase_top1"],
                     "success": (scores["efficacy_top1"] + scores["paraphrase_top1"]) / 2})
    return rows


def _localisation_vs_editing(model, n: int) -> dict:
    """Does localisation predict where editing works? n facts, a ROME edit at every layer."""
    n_layers = model.cfg.n_layers
    lf = fe.random_edits(n, seed=2, known_by=model)
    rows = [r for subject, t in progress_bar(lf, desc="edit at every layer") for r in _every_layer_rows(model, subject, t)]
    success = torch.tensor([r["success"] for r in rows])
    trace_effect = torch.tensor([r["trace"] for r in rows])
    sites = torch.tensor([float(r["sites"]) for r in rows])
    best_is_traced = 0
    for subject, _ in lf:
        mine = [r for r in rows if r["subject"] == subject]
        best = max(mine, key=lambda r: (r["success"], -r["layer"]))["layer"]
        best_is_traced += best == max(mine, key=lambda r: r["trace"])["layer"]
    return {
        "n_facts": len(lf), "rows": rows,
        "success_vs_trace": correlations(trace_effect, success),
        "success_vs_sites": correlations(sites, success),
        "best_layer_is_trace_layer": best_is_traced,
        "success_by_layer": [float(success[[r["layer"] == l for r in rows]].mean()) for l in range(n_layers)],
        "trace_by_layer": [float(trace_effect[[r["layer"] == l for r in rows]].mean()) for l in range(n_layers)],
        "sites_by_layer": [float(sites[[r["layer"] == l for r in rows]].mean()) for l in range(n_layers)],
    }


def _print_report(report: dict, tables: dict, n_layers: int) -> None:
    print(f"key statistics, all {n_layers} layers, 20,000 sentences: {report['key_stats_seconds_all_layers']:.1f} s")
    print(f"traced layers of the {tables['rome'].n_cases} ROME facts: {report['traced_layers']}; MEMIT layers "
          f"{report['memit_layers']}; cosine between the MEMIT subjects' keys: mean "
          f"{report['memit_key_cosine']['mean']:.2f}, max {report['memit_key_cosine']['max']:.2f}")
    header = ["efficacy", "paraphrase", "neighbourhood", "efficacy_top1", "paraphrase_top1", "neighbourhood_top1",
              "attribute_top1"]
    print(f"{'method':8s} {'n':>4s} " + " ".join(f"{h[:14]:>14s}" for h in header) + "   score  loss+%  s/edit")
    for m, t in tables.items():
        print(f"{m:8s} {t.n_cases:4d} " + " ".join(f"{t.means[h]:14.1f}" for h in header)
              + f"  {t.score:6.1f}  {t.loss_increase:6.2f}  {t.seconds_per_edit:6.2f}")
    lv = report["localisation_vs_editing"]
    print(f"localisation vs editing ({lv['n_facts']} facts x {n_layers} layers): success by layer "
          + ", ".join(f"L{l} {v:.2f}" for l, v in enumerate(lv["success_by_layer"]))
          + f"; vs trace effect {lv['success_vs_trace']}; vs subject sites {lv['success_vs_sites']}; "
          f"best layer = traced layer for {lv['best_layer_is_trace_layer']} of {lv['n_facts']}")


def _figure(report: dict, tables: dict, n_layers: int) -> Figure:
    lv = report["localisation_vs_editing"]
    fig = Figure(figsize=(12, 4), layout="constrained")
    a, b = fig.subplots(1, 2)
    x = torch.arange(n_layers, dtype=torch.float64)
    a.plot(x, lv["success_by_layer"], marker="o", label="ROME success (efficacy, paraphrase)")
    a.plot(x, lv["trace_by_layer"], marker="s", label="causal trace: P(answer) restored by MLP")
    peak = max(lv["sites_by_layer"]) or 1.0
    a.plot(x, [v / peak for v in lv["sites_by_layer"]], marker="^", label="subject-only localisation sites (scaled)")
    a.set_xticks(x.tolist(), [f"MLP {l}" for l in range(n_layers)])
    a.set_title(f"edit at every layer ({lv['n_facts']} facts)")
    a.legend(fontsize="small")
    a.set_ylim(-0.05, 1.05)
    names = list(tables)
    metrics = ["efficacy", "paraphrase", "neighbourhood", "attribute_top1"]
    width = 0.8 / len(names)
    for i, m in enumerate(names):
        b.bar([j + i * width for j in range(len(metrics))], [tables[m].means[k] for k in metrics], width, label=m)
    b.set_xticks([j + 0.4 - width / 2 for j in range(len(metrics))], metrics)
    b.set_ylabel("%")
    b.set_title("CounterFact-style scores (attribute: top-1 kept)")
    b.legend(fontsize="small")
    return fig


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rome", type=int, default=200)
    p.add_argument("--memit", type=int, default=100)
    p.add_argument("--layers-facts", type=int, default=100)
    p.add_argument("--quick", action="store_true", help="20 / 20 / 10 facts")
    args = p.parse_args(argv)
    if args.quick:
        args.rome, args.memit, args.layers_facts = 20, 20, 10
    model = load("factworld")
    fluency = fe.fluency_texts(200)
    report: dict = {"settings": {"rome": fe.ROME_SETTINGS, "memit": fe.MEMIT_SETTINGS}}
    stats = _key_statistics(model, report)
    tables, layers = _single_edits(model, args.rome, fluency, report)
    tables["memit"] = _memit_edits(model, args.memit, layers, stats, fluency, report)
    report["tables"] = {m: t.to_dict() for m, t in tables.items()}
    report["localisation_vs_editing"] = _localisation_vs_editing(model, args.layers_facts)
    OUT.mkdir(parents=True, exist_ok=True)
    write_json(OUT / "editing.json", report)
    _print_report(report, tables, model.cfg.n_layers)
    plot.save(_figure(report, tables, model.cfg.n_layers), OUT / "editing")
    return 0


if __name__ == "__main__":
    sys.exit(main())
