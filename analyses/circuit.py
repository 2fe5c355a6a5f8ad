"""The circuit of a clean / corrupted prompt pair: edge scores, the faithfulness curve, a figure.

    interp circuit                                             # Michael Jordan vs Michael Phelps
    interp circuit "CLEAN" "CORRUPTED" ANSWER COUNTERFACTUAL --method eap-ig --edges 20
    interp circuit --compare                                   # also EAP, EAP-IG and exact side by side
    interp circuit --induction --out results/circuit-induction # a 2-layer induction model, trained first (~7 s)

Scores every edge of the model's graph (`interp.circuits.attribute_edges`) by the logit
difference ANSWER - COUNTERFACTUAL, computes the faithfulness of the top-n edges for every n
(every edge outside patched to the corrupted run's value), and draws the circuit: the
smallest top-n reaching --target faithfulness (default 0.9), or --edges N, or with --greedy N
the N edges kept by greedy pruning. The curve covers every n up to 256 (then doubling). Writes
  OUT/circuit.png / .svg / .json   the circuit (edges, scores, faithfulness)
  OUT/faithfulness.png / .json     the faithfulness-vs-edges curve
  OUT/edges.json                   every edge's score
  OUT/methods.json                 with --compare: each method's time and agreement with exact
"""

from __future__ import annotations

import argparse
import sys
from typing import Optional, Sequence

from analyses.common import (
    ANSWER, CLEAN, CORRUPTED, COUNTERFACTUAL, add_model_arguments, add_out_argument, load_model, main_for, write_json,
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("clean", nargs="?", default=CLEAN)
    p.add_argument("corrupted", nargs="?", default=CORRUPTED)
    p.add_argument("answer", nargs="?", default=ANSWER)
    p.add_argument("counterfactual", nargs="?", default=COUNTERFACTUAL)
    p.add_argument("--method", choices=["eap", "eap-ig", "exact"], default="eap-ig")
    p.add_argument("--steps", type=int, default=5, help="EAP-IG's interpolation steps")
    p.add_argument("--edges", type=int, default=None, help="draw the top N edges (default: the smallest top-n "
                                                            "reaching --target)")
    p.add_argument("--greedy", type=int, default=None, metavar="N", help="draw the N edges kept by greedy pruning")
    p.add_argument("--target", type=float, default=0.9, help="faithfulness the drawn circuit should reach")
    p.add_argument("--compare", action="store_true", help="also score with the other methods and compare to exact")
    p.add_argument("--ablation", choices=["corrupted", "mean"], default="corrupted",
                   help="what edges outside the circuit carry: each prompt's corrupted value, or the mean over "
                        "the corrupted prompts")
    p.add_argument("--induction", action="store_true",
                   help="instead of the prompts: train the 2-layer induction model (probes.induction) and use its "
                        "repeated-token pair and metric")
    add_model_arguments(p)
    add_out_argument(p, "results/circuit")


def _curve_figure(curves: dict, target: float, path) -> None:
    from matplotlib.figure import Figure

    from interp import plot

    fig = Figure(figsize=(6, 3.6), layout="constrained")
    ax = fig.subplots()
    for name, curve in curves.items():
        ns, fs = zip(*curve)
        ax.plot([max(n, 0.5) for n in ns], fs, marker="o", label=name)
    ax.axhline(target, color="#b2182b", linestyle="--", linewidth=0.8)
    ax.set_xscale("log")
    ax.set_xlabel("edges kept (top n by |score|; 0 drawn at 0.5)")
    ax.set_ylabel("faithfulness")
    ax.legend(fontsize="small")
    plot.save(fig, path)


def run(args: argparse.Namespace) -> int:
    from interp.attribution import agreement
    from interp.circuits import attribute_edges, faithfulness, faithfulness_curve, greedy_circuit, top_edges
    from interp.circuits.figure import plot_circuit
    from interp.metrics import logit_diff

    if args.induction:
        from probes.induction import InductionMetric, induction_pair, train_induction_model

        model, record = train_induction_model(seed=0, progress=not args.quiet)
        pair = induction_pair(model.cfg.d_vocab, half=8, length=model.cfg.n_ctx, seed=1)
        metric = InductionMetric(pair[0], half=8)
        args.clean, args.corrupted, args.answer = "repeated random tokens", "a different first copy", "the repeat"
        print(f"trained the induction model: loss on the copies {record.second_half_loss:.3f}, elsewhere "
              f"{record.first_half_loss:.3f}")
    else:
        model = load_model(args)
        metric = logit_diff(model, args.answer, args.counterfactual)
        pair = (args.clean, args.corrupted)
    scores = attribute_edges(model, *pair, metric, method=args.method, steps=args.steps, progress=not args.quiet)
    print(f"{scores.graph}; {args.method}: {scores.seconds:.3f} s; {scores.metric_name} clean {scores.clean_value:+.3f}, "
          f"corrupted {scores.corrupted_value:+.3f}")
    scores.save_json(args.out / "edges.json")
    curves = {args.method: faithfulness_curve(model, *pair, metric, scores, ablation=args.ablation)}
    report: dict = {"method": args.method, "clean": args.clean, "corrupted": args.corrupted, "answer": args.answer,
                    "counterfactual": args.counterfactual, "n_edges": scores.graph.n_edges,
                    "seconds": scores.seconds, "curve": curves[args.method]}
    if args.compare:
        exact = scores if args.method == "exact" else attribute_edges(model, *pair, metric, method="exact",
                                                                      progress=not args.quiet)
        methods = {}
        for method in ("eap", "eap-ig"):
            s = scores if method == args.method else attribute_edges(model, *pair, metric, method=method,
                                                                     steps=args.steps, progress=False)
            a = agreement(s, exact, k=20)
            methods[method] = {"seconds": s.seconds, "pearson": a.pearson, "spearman": a.spearman,
                               "top20_overlap": a.top_k_overlap}
            if method != args.method:
                curves[method] = faithfulness_curve(model, *pair, metric, s, ablation=args.ablation)
            print(f"{method} vs exact: {a}; {s.seconds:.3f} s against {exact.seconds:.3f} s "
                  f"({exact.seconds / s.seconds:.0f}x)")
        methods["exact"] = {"seconds": exact.seconds}
        curves.setdefault("exact", faithfulness_curve(model, *pair, metric, exact, ablation=args.ablation))
        report["methods"] = methods
        write_json(args.out / "methods.json", methods)
    shown = [(n, f) for n, f in curves[args.method] if n & (n - 1) == 0 or n == scores.graph.n_edges]
    print("faithfulness of the top n edges: " + ", ".join(f"{n}: {f:.2f}" for n, f in shown))
    if args.greedy:
        chosen = greedy_circuit(model, *pair, metric, scores, args.greedy, ablation=args.ablation,
                                progress=not args.quiet)
        how = f"greedy pruning to {args.greedy} edges"
    else:
        n = args.edges
        if n is None:
            n = next((n for n, f in curves[args.method] if f >= args.target), scores.graph.n_edges)
        chosen = top_edges(scores, n)
        how = f"top {n} edges by |{args.method} score|"
    faith = faithfulness(model, *pair, metric, chosen, ablation=args.ablation)
    edges = [(u, d, scores.score(u, d)) for u, d in chosen]
    plot_circuit(scores.graph, edges, args.out / "circuit",
                 title=f"{args.clean!r} -> {args.answer} vs {args.corrupted!r}: {how}, faithfulness {faith.value:.2f}")
    report["circuit"] = {"how": how, "faithfulness": faith.value, "metric": faith.metric, "full": faith.full,
                         "empty": faith.empty, "edges": [{"upstream": u, "downstream": d, "score": s} for u, d, s in edges]}
    write_json(args.out / "circuit.json", report)
    _curve_figure(curves, args.target, args.out / "faithfulness")
    write_json(args.out / "faithfulness.json", curves)
    print(f"circuit ({how}): faithfulness {faith.value:.3f}")
    for u, d, s in edges[:15]:
        print(f"  {u:>7} -> {d:<9} {s:+.3f}")
    print(f"Figures and JSON in {args.out}/")
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    return main_for("analyses.circuit", __doc__, add_arguments, run, argv)


if __name__ == "__main__":
    sys.exit(main())
