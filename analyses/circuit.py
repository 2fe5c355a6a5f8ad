"""The circuit of a clean / corrupted prompt pair: edge scores, the faithfulness curve, a figure.

    interp circuit                                             # Michael Jordan vs Michael Phelps
    interp circuit "CLEAN" "CORRUPTED" ANSWER COUNTERFACTUAL --method eap-ig --edges 20
    interp circuit --compare                                   # also EAP, EAP-IG and exact side by side
    interp circuit --induction --out results/circuit-induction # a 2-layer induction model, trained first (~7 s)

Scores every edge of the model's graph (`interp.circuits.attribute_edges`) by the logit
difference ANSWER - COUNTERFACTUAL, computes the faithfulness of the top-n edges for every n
(every edge outside patched to the corrupted run's value), and draws the circuit: the
smallest top-n reaching --faithfulness F (default 0.9), or --edges N, or with --greedy N
the N edges kept by greedy pruning. The curve covers every n up to 256 (then doubling). Writes
  OUT/circuit.png / .svg / .json   the circuit (edges, scores, faithfulness)
  OUT/circuit.html                 the interactive graph: every edge above a |score| slider (starting at the
                                   circuit's weakest edge), pan / zoom, a panel per node (a head's: its
                                   attention on the clean prompt)
  OUT/faithfulness.png / .json     the faithfulness-vs-edges curve
  OUT/edges.json                   every edge's score
  OUT/methods.json                 with --compare: each method's time and agreement with exact
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Optional, Sequence, Union

from analyses.common import (
    ANSWER, CLEAN, CORRUPTED, COUNTERFACTUAL, AnalysisResult, ModelArg, Outputs, add_model_arguments,
    add_out_argument, as_model, main_for,
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("clean", nargs="?", default=CLEAN)
    p.add_argument("corrupted", nargs="?", default=CORRUPTED)
    p.add_argument("answer", nargs="?", default=ANSWER)
    p.add_argument("counterfactual", nargs="?", default=COUNTERFACTUAL)
    p.add_argument("--method", choices=["eap", "eap-ig", "exact"], default="eap-ig")
    p.add_argument("--steps", type=int, default=5, help="EAP-IG's interpolation steps")
    p.add_argument("--edges", type=int, default=None, help="draw the top N edges (default: the smallest top-n "
                                                            "reaching --faithfulness)")
    p.add_argument("--greedy", type=int, default=None, metavar="N", help="draw the N edges kept by greedy pruning")
    p.add_argument("--faithfulness", "--target", dest="faithfulness", type=float, default=0.9,
                   help="faithfulness the drawn circuit should reach (--target: the old name)")
    p.add_argument("--compare", action="store_true", help="also score with the other methods and compare to exact")
    p.add_argument("--ablation", choices=["corrupted", "mean"], default="corrupted",
                   help="what edges outside the circuit carry: each prompt's corrupted value, or the mean over "
                        "the corrupted prompts")
    p.add_argument("--induction", action="store_true",
                   help="instead of the prompts: train the 2-layer induction model (probes.induction) and use its "
                        "repeated-token pair and metric")
    add_model_arguments(p)
    add_out_argument(p, "results/circuit")


def _curve_figure(curves: dict, target: float, outputs: Outputs) -> None:
    from matplotlib.figure import Figure

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
    outputs.figure(fig, "faithfulness")


def circuit_of_pair(model: ModelArg = "factworld", clean: str = CLEAN, corrupted: str = CORRUPTED,
                    answer: str = ANSWER, counterfactual: str = COUNTERFACTUAL, *, method: str = "eap-ig",
                    steps: int = 5, edges: Optional[int] = None, greedy: Optional[int] = None,
                    faithfulness: float = 0.9, compare: bool = False, ablation: str = "corrupted",
                    induction: bool = False, out: Optional[Union[str, Path]] = None, progress: bool = True,
                    dtype: Optional[str] = None) -> AnalysisResult:
    """Edge scores of the pair by logit(answer) - logit(counterfactual), the faithfulness curve,
    and the circuit drawn: `edges` top edges, or `greedy` edges by greedy pruning, or the
    smallest top-n reaching `faithfulness`. induction=True: instead of the model and
    prompts, train the 2-layer induction model and use its repeated-token pair. `results` holds
    the `EdgeScores` ("scores"), the circuit's `Faithfulness`, the chosen edges and the
    `Circuit` ("circuit": Viewable, `.show()` / `.save_html(path)`: the interactive graph)."""
    from interp.circuits import attribute_edges
    from interp.circuits import faithfulness as circuit_faithfulness

    outputs = Outputs(out)
    if induction:
        model, pair, metric = _induction(progress)
        clean, corrupted, answer = "repeated random tokens", "a different first copy", "the repeat"
    else:
        from interp.metrics import logit_diff

        model = as_model(model, dtype)
        metric = logit_diff(model, answer, counterfactual)
        pair = (clean, corrupted)
    scores = attribute_edges(model, *pair, metric, method=method, steps=steps, progress=progress)
    print(f"{scores.graph}; {method}: {scores.seconds:.3f} s; {scores.metric_name} clean {scores.clean_value:+.3f}, "
          f"corrupted {scores.corrupted_value:+.3f}")
    outputs.result("edges.json", scores)
    curves = {method: _curve(model, pair, metric, scores, ablation)}
    report: dict = {"method": method, "clean": clean, "corrupted": corrupted, "answer": answer,
                    "counterfactual": counterfactual, "n_edges": scores.graph.n_edges,
                    "seconds": scores.seconds, "curve": curves[method]}
    if compare:
        report["methods"] = _compare(model, pair, metric, scores, method, steps, ablation, curves, progress)
        outputs.json("methods.json", report["methods"])
    shown = [(n, f) for n, f in curves[method] if n & (n - 1) == 0 or n == scores.graph.n_edges]
    print("faithfulness of the top n edges: " + ", ".join(f"{n}: {f:.2f}" for n, f in shown))
    chosen, how = _choose(model, pair, metric, scores, curves[method], method, edges, greedy, faithfulness,
                          ablation, progress)
    faith = circuit_faithfulness(model, *pair, metric, chosen, ablation=ablation)
    scored = [(u, d, scores.score(u, d)) for u, d in chosen]
    title = f"{clean!r} -> {answer} vs {corrupted!r}: {how}, faithfulness {faith.value:.2f}"
    _draw(scores, scored, title, curves, faithfulness, outputs)
    view = _view(model, pair, scores, scored, faith, curves[method], title, outputs)
    report["circuit"] = {"how": how, "faithfulness": faith.value, "metric": faith.metric, "full": faith.full,
                         "empty": faith.empty,
                         "edges": [{"upstream": u, "downstream": d, "score": s} for u, d, s in scored]}
    outputs.json("circuit.json", report)
    outputs.json("faithfulness.json", curves)
    print(f"circuit ({how}): faithfulness {faith.value:.3f}")
    for u, d, s in scored[:15]:
        print(f"  {u:>7} -> {d:<9} {s:+.3f}")
    if out is not None:
        print(f"Figures and JSON in {out}/")
    return AnalysisResult("circuit", report, outputs.files, {"scores": scores, "faithfulness": faith, "edges": chosen,
                                                             "circuit": view})


def _induction(progress: bool) -> tuple:
    from probes.induction import InductionMetric, induction_pair, train_induction_model

    model, record = train_induction_model(seed=0, progress=progress)
    pair = induction_pair(model.cfg.d_vocab, half=8, length=model.cfg.n_ctx, seed=1)
    print(f"trained the induction model: loss on the copies {record.second_half_loss:.3f}, elsewhere "
          f"{record.first_half_loss:.3f}")
    return model, pair, InductionMetric(pair[0], half=8)


def _curve(model, pair, metric, scores, ablation: str) -> list:
    from interp.circuits import faithfulness_curve

    return faithfulness_curve(model, *pair, metric, scores, ablation=ablation)


def _compare(model, pair, metric, scores, method: str, steps: int, ablation: str, curves: dict,
             progress: bool) -> dict:
    """Each method's time and agreement with exact scores; their curves are added to `curves`."""
    from interp.attribution import agreement
    from interp.circuits import attribute_edges

    exact = scores if method == "exact" else attribute_edges(model, *pair, metric, method="exact", progress=progress)
    methods = {}
    for other in ("eap", "eap-ig"):
        s = scores if other == method else attribute_edges(model, *pair, metric, method=other, steps=steps,
                                                           progress=False)
        a = agreement(s, exact, k=20)
        methods[other] = {"seconds": s.seconds, "pearson": a.pearson, "spearman": a.spearman,
                          "top20_overlap": a.top_k_overlap}
        if other != method:
            curves[other] = _curve(model, pair, metric, s, ablation)
        print(f"{other} vs exact: {a}; {s.seconds:.3f} s against {exact.seconds:.3f} s "
              f"({exact.seconds / s.seconds:.0f}x)")
    methods["exact"] = {"seconds": exact.seconds}
    if "exact" not in curves:
        curves["exact"] = _curve(model, pair, metric, exact, ablation)
    return methods


def _choose(model, pair, metric, scores, curve: list, method: str, edges: Optional[int], greedy: Optional[int],
            target: float, ablation: str, progress: bool) -> tuple[list, str]:
    from interp.circuits import greedy_circuit, top_edges

    if greedy:
        chosen = greedy_circuit(model, *pair, metric, scores, greedy, ablation=ablation, progress=progress)
        return chosen, f"greedy pruning to {greedy} edges"
    n = edges
    if n is None:
        n = next((n for n, f in curve if f >= target), scores.graph.n_edges)
    return top_edges(scores, n), f"top {n} edges by |{method} score|"


def _draw(scores, scored: list, title: str, curves: dict, target: float, outputs: Outputs) -> None:
    if outputs.folder is None:
        return
    from interp.circuits.figure import plot_circuit

    outputs.files += plot_circuit(scores.graph, scored, outputs.folder / "circuit", title=title) or []
    _curve_figure(curves, target, outputs)


def _view(model, pair, scores, scored: list, faith, curve: list, title: str, outputs: Outputs):
    """The circuit as a `Circuit` (Viewable; a head's panel shows its attention on the clean
    prompt), written as OUT/circuit.html when there is a folder."""
    from interp.circuits import Circuit, head_node_views
    from interp.tokens import paired_tokens

    clean_tokens, _ = paired_tokens(model, *pair)
    circuit = Circuit(scores, scored, faith, curve, title, head_node_views(model, clean_tokens))
    if outputs.folder is not None:
        outputs.files.append(circuit.save_html(outputs.folder / "circuit.html"))
    return circuit


def run(args: argparse.Namespace) -> int:
    return circuit_of_pair(args.model, args.clean, args.corrupted, args.answer, args.counterfactual,
                           method=args.method, steps=args.steps, edges=args.edges, greedy=args.greedy,
                           faithfulness=args.faithfulness, compare=args.compare, ablation=args.ablation,
                           induction=args.induction, out=args.out, progress=not args.quiet, dtype=args.dtype).rc


def main(argv: Optional[Sequence[str]] = None) -> int:
    return main_for("analyses.circuit", __doc__, add_arguments, run, argv)


if __name__ == "__main__":
    sys.exit(main())
