"""The fact-world model's cross-layer transcoder next to its per-layer transcoders.

    interp clt [--clt factworld|DIR] [--facts 30] [--out results/clt]

Both are judged on the same data:
- per layer, on the 300 held-out-template sentences `interp transcoders` uses: L0 and variance
  explained of each MLP's output (from the clean inputs), dead features;
- every layer spliced in at once: KL to the clean model, CE over all tokens and at the object
  token (`probes.sae.evaluate_layers`), and top-1 accuracy on every held-out-template fact prompt;
- attribution graphs (`probes.graph.attribution_graph`): replacement and completeness scores,
  feature nodes and nodes kept by pruning (0.8 / 0.98), for Michael Jordan (the default
  targets) and for --facts athlete -> sport facts spread evenly over the 225 (the sport as target);
- training time (from the two folders' records).
Writes OUT/clt.json and OUT/clt.png (the graph scores, fact by fact).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import Optional, Sequence, Union


from analyses.common import AnalysisResult, ModelArg, Outputs, add_model_arguments, add_out_argument, as_model, main_for

KINDS = ("per_layer", "clt")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--clt", default="factworld", help="'factworld' (shipped) or a folder written by interp train-clt")
    p.add_argument("--facts", type=int, default=30, help="athlete -> sport facts whose graphs are compared")
    add_model_arguments(p)
    add_out_argument(p, "results/clt")


def spliced_fact_accuracy(model, replacements: dict, prompts: list[str], answers: list[str]) -> dict[str, float]:
    """Top-1 accuracy on the prompts: clean, and with each replacement (name -> per-layer
    transcoders or a CLT) spliced into every layer at once (analyses.transcoders.spliced_accuracy)."""
    from analyses.transcoders import spliced_accuracy

    out = {}
    for name, replacement in replacements.items():
        out["clean"], out[name] = spliced_accuracy(model, replacement, prompts, answers)
    return out


def _graph_row(model, prompt: str, replacement, targets) -> dict:
    from probes.graph import attribution_graph

    graph = attribution_graph(model, prompt, replacement, targets=targets, progress=False)
    pruned = graph.prune()
    return {**graph.scores(), "features": graph.n_features, "kept_nodes": pruned.n_nodes, "kept_edges": pruned.n_edges,
            "p": graph.targets[0].prob, "seconds": graph.settings["seconds"]}


def _training_seconds(clt_dir: Optional[Path]) -> dict:
    from models.checkpoint import shipped_dictionaries

    out = {}
    summary = shipped_dictionaries("factworld") / "training.json"
    if summary.exists():
        out["per_layer"] = sum(v["seconds"] for v in json.loads(summary.read_text()).values())
    if clt_dir is not None and (clt_dir / "cfg.json").exists():
        out["clt"] = json.loads((clt_dir / "cfg.json").read_text()).get("extra", {}).get("training", {}).get("seconds")
    return out


def compare_clt(model: ModelArg = "factworld", *, clt: Union[str, Path] = "factworld", n_facts: int = 30,
                out: Optional[Union[str, Path]] = None, progress: bool = True,
                dtype: Optional[str] = None) -> AnalysisResult:
    """The per-layer transcoders and the CLT side by side (see the module docstring)."""
    from analyses.common import CLEAN
    from analyses.train_transcoders import held_out
    from interp.progress import progress_bar
    from analyses.factworld_facts import heldout_fact_prompts
    from analyses.graph_study import spread_athlete_facts
    from probes.sae import load_transcoders
    from probes.sae.clt import evaluate_layers, load_clt
    from probes.sae.clt.io import shipped_clt

    model = as_model(model, dtype)
    replacements = {"per_layer": load_transcoders("factworld", device=model.device),
                    "clt": load_clt(clt, device=model.device)}
    test, focus = held_out(model)
    report: dict = {"layers": {k: evaluate_layers(model, r, test, focus=focus).to_dict() for k, r in replacements.items()}}
    prompts, answers = heldout_fact_prompts()
    report["fact_accuracy"] = spliced_fact_accuracy(model, replacements, prompts, answers) | {"prompts": len(prompts)}
    report["michael_jordan"] = {k: _graph_row(model, CLEAN, r, None) for k, r in replacements.items()}
    rows = []
    for subject, prompt, sport in progress_bar(spread_athlete_facts(n_facts), progress, desc="graphs"):
        rows.append({"subject": subject, "sport": sport,
                     **{k: _graph_row(model, prompt, r, [sport]) for k, r in replacements.items()}})
    report["facts"] = rows
    report["facts_summary"] = {k: {key: statistics.median(r[k][key] for r in rows)
                                   for key in ("replacement", "completeness", "features", "kept_nodes")}
                               for k in KINDS} if rows else {}
    clt_dir = shipped_clt() if str(clt) == "factworld" and not Path(clt).exists() else Path(clt)
    report["training_seconds"] = _training_seconds(clt_dir)
    outputs = Outputs(out)
    outputs.json("clt.json", report)
    if rows:
        outputs.figure(_figure(rows), "clt")
    _print(report)
    return AnalysisResult("clt", report, outputs.files)


def _figure(rows: list[dict]):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(9, 3.4), layout="constrained")
    for ax, key in zip(fig.subplots(1, 2), ("replacement", "completeness")):
        a, b = [r["per_layer"][key] for r in rows], [r["clt"][key] for r in rows]
        ax.scatter(a, b, s=12, color="#2166ac")
        lo, hi = min(a + b), max(a + b)
        ax.plot([lo, hi], [lo, hi], color="#999999", lw=0.8)
        ax.set_xlabel(f"{key}, per-layer transcoders")
        ax.set_ylabel(f"{key}, cross-layer transcoder")
        ax.set_title(f"{key} score, {len(rows)} athlete -> sport facts", fontsize=9)
    return fig


def _print(report: dict) -> None:
    print("             " + "  ".join(f"{k:>10s}" for k in KINDS))
    layers = report["layers"]
    for l in range(len(layers["clt"]["layers"])):
        for key in ("l0", "variance_explained"):
            print(f"L{l} {key:18s}" + "  ".join(f"{layers[k]['layers'][l][key]:10.4f}" for k in KINDS))
    print("KL, all spliced     " + "  ".join(f"{layers[k]['kl']:10.4f}" for k in KINDS))
    acc = report["fact_accuracy"]
    print("fact accuracy       " + "  ".join(f"{acc[k]:10.4f}" for k in KINDS) + f"   (clean {acc['clean']:.4f})")
    for key in ("replacement", "completeness"):
        print(f"Jordan {key:13s}" + "  ".join(f"{report['michael_jordan'][k][key]:10.4f}" for k in KINDS))
        if report["facts_summary"]:
            print(f"median {key:13s}" + "  ".join(f"{report['facts_summary'][k][key]:10.4f}" for k in KINDS))


def run(args: argparse.Namespace) -> int:
    return compare_clt(args.model, clt=args.clt, n_facts=args.facts, out=args.out, progress=not args.quiet,
                       dtype=args.dtype).rc


def main(argv: Optional[Sequence[str]] = None) -> int:
    return main_for("analyses.clt", __doc__, add_arguments, run, argv)


if __name__ == "__main__":
    sys.exit(main())
