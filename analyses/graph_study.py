"""Attribution graphs judged against what the fact world knows: every athlete -> sport fact.

    python -m analyses.graph_study [--limit N] [--localise N] [--out results/graph_study]

For each person with a sport (225 facts, template 0: "{subject} plays the sport of"), builds
the attribution graph over the shipped transcoders (`probes.graph`) and records its
replacement and completeness scores, its size, and its pruned size (0.8 / 0.98). For the first
--localise facts it also runs `probes.ffn.localise(..., unit="feature")` (the fewest feature
sites whose zero ablation removes the fact while the other facts keep >= 95% accuracy) and
reports whether the pruned graph holds those features (over the facts it localises): the share
of the localised sites that are kept nodes, and their influence ranks among the graph's features. Writes OUT/study.json
and OUT/scores.png (the distributions).
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path
from typing import Optional, Sequence, Union

from analyses.common import AnalysisResult, ModelArg, Outputs, add_model_arguments, add_out_argument, as_model, main_for


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--limit", type=int, default=None, help="only the first N facts")
    p.add_argument("--localise", type=int, default=20, help="localise the first N facts with features (0: none)")
    add_model_arguments(p)
    add_out_argument(p, "results/graph_study")


def athlete_facts() -> list[tuple[str, str, str]]:
    """(subject, prompt, sport) of every person with a sport, template 0."""
    from models import factworld

    template = factworld.templates("sport")[0]
    return [(f.subject, template.format(subject=f.subject), f.object) for f in factworld.facts("sport")
            if f.object != "none"]


def spread_athlete_facts(n: int) -> list[tuple[str, str, str]]:
    """n athlete -> sport facts (subject, prompt, sport), evenly spaced over all of them (all of
    them when n is at least their number)."""
    facts = athlete_facts()
    if n >= len(facts):
        return facts
    return [facts[round(i * (len(facts) - 1) / max(n - 1, 1))] for i in range(n)]


def graph_study(model: ModelArg = "factworld", *, limit: Optional[int] = None, localise_n: int = 20,
                out: Optional[Union[str, Path]] = None, progress: bool = True,
                dtype: Optional[str] = None) -> AnalysisResult:
    from analyses.factworld_facts import other_facts_for
    from interp.progress import progress_bar
    from probes.ffn import localise
    from probes.graph import attribution_graph
    from probes.sae import attached, load_transcoders

    model = as_model(model, dtype)
    transcoders = load_transcoders("factworld", device=model.device)
    facts = athlete_facts()[:limit]
    rows = []
    for i, (subject, prompt, sport) in enumerate(progress_bar(facts, progress, desc="graphs")):
        graph = attribution_graph(model, prompt, transcoders, targets=[sport], progress=False)
        pruned = graph.prune()
        scores = graph.scores()
        row = {"subject": subject, "sport": sport, "p": graph.targets[0].prob, **scores,
               "features": graph.n_features, "kept_nodes": pruned.n_nodes, "kept_edges": pruned.n_edges,
               "seconds": graph.settings["seconds"]}
        if i < localise_n:
            with attached(model, transcoders):
                loc = localise(model, prompt, sport, subject=subject, other_facts=other_facts_for(prompt),
                               unit="feature", n_random=0)
            kept = {int(n) for n in pruned.nodes}
            influence = graph.influence()[graph.feature_nodes]
            order = influence.argsort(descending=True).tolist()
            rank = {node: r for r, node in enumerate(order)}
            found = []
            for s in loc.sites:
                where = {"site": s.label, "layer": s.layer, "pos": s.pos, "index": s.index}
                try:
                    node = graph.feature_node(s.layer, s.pos, s.index)
                except KeyError:
                    found.append(where | {"in_graph": False, "kept": False, "rank": None})
                    continue
                found.append(where | {"in_graph": True, "kept": node in kept, "rank": rank[node]})
            row["localisation"] = {"k": loc.k, "sites": found,
                                   "kept_share": (sum(f["kept"] for f in found) / len(found)) if found else None}
        rows.append(row)
    report = {"n_facts": len(rows), "summary": _summary(rows), "facts": rows}
    outputs = Outputs(out)
    outputs.json("study.json", report)
    if outputs.folder is not None:
        outputs.figure(_figure(rows), "scores")
    _print(report)
    return AnalysisResult("graph-study", report, outputs.files)


def _quantiles(values: list[float]) -> dict:
    values = sorted(v for v in values if v == v)
    if not values:
        return {}
    q = statistics.quantiles(values, n=10) if len(values) > 1 else [values[0]] * 9
    return {"min": values[0], "p10": q[0], "median": statistics.median(values), "p90": q[-1], "max": values[-1],
            "mean": statistics.fmean(values)}


def _summary(rows: list[dict]) -> dict:
    located = [r["localisation"] for r in rows if "localisation" in r]
    with_sites = [l for l in located if l["k"] is not None]  # an unlocalised fact's sites are only its ranking
    all_sites = [s for l in with_sites for s in l["sites"]]
    return {"replacement": _quantiles([r["replacement"] for r in rows]),
            "completeness": _quantiles([r["completeness"] for r in rows]),
            "kept_nodes": _quantiles([float(r["kept_nodes"]) for r in rows]),
            "seconds": _quantiles([r["seconds"] for r in rows]),
            "localised": {"facts": len(located), "localised": sum(l["k"] is not None for l in located),
                          "sites": len(all_sites), "sites_in_graph": sum(s["in_graph"] for s in all_sites),
                          "sites_kept": sum(s["kept"] for s in all_sites),
                          "median_rank": statistics.median([s["rank"] for s in all_sites if s["rank"] is not None])
                          if any(s["rank"] is not None for s in all_sites) else None}}


def _figure(rows: list[dict]):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(9, 3.2), layout="constrained")
    for ax, key in zip(fig.subplots(1, 2), ("replacement", "completeness")):
        ax.hist([r[key] for r in rows], bins=30, color="#2166ac")
        ax.set_title(f"{key} score over {len(rows)} athlete -> sport facts", fontsize=9)
        ax.set_xlabel(key)
    return fig


def _print(report: dict) -> None:
    s = report["summary"]
    for key in ("replacement", "completeness", "kept_nodes", "seconds"):
        q = s[key]
        if q:
            print(f"{key:13s} min {q['min']:.3f}  p10 {q['p10']:.3f}  median {q['median']:.3f}  p90 {q['p90']:.3f}  "
                  f"max {q['max']:.3f}")
    loc = s["localised"]
    print(f"localised with features: {loc['localised']} of {loc['facts']} facts; {loc['sites']} sites, "
          f"{loc['sites_in_graph']} active in the graph, {loc['sites_kept']} kept by pruning; median influence rank "
          f"{loc['median_rank']}")


def run(args: argparse.Namespace) -> int:
    graph_study(args.model, limit=args.limit, localise_n=args.localise, out=args.out, progress=not args.quiet,
                dtype=args.dtype)
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    return main_for("analyses.graph_study", __doc__, add_arguments, run, argv)


if __name__ == "__main__":
    sys.exit(main())
