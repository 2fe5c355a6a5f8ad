"""Causal tracing (Meng et al. 2022) and attention knockout (Geva et al. 2023).

    interp trace                      # fact-world: Michael Jordan -> basketball, and all athletes -> sport
    python -m analyses.trace --window 1 --out results/trace

1. One fact: Gaussian noise (3 x the embedding std, 10 samples) on the subject's
   embeddings; restore the clean residual stream / MLP output / attention
   output at each (layer, position) and record P(answer). Also symmetric token
   replacement (the subject replaced by --replacement, same token length).
2. The average indirect effect over every athlete -> sport fact of the
   fact-world model, positions grouped as in ROME (first / last subject token,
   first subsequent token, last token, ...).
3. Attention knockout: block attention from the subject, the relation words or
   the last position into the last position, one window of layers at a time.

The ROME default window (10 layers) is meant for 48-layer models: on a model
of 4 layers it covers every layer and every row looks the same, so this
analysis defaults to --window 1 (pass --window 10 for the library default).

Writes PNG + SVG plots and one JSON per result into OUT.
"""

from __future__ import annotations

import argparse
import sys
from typing import Optional, Sequence

from tqdm.auto import tqdm

from analyses.common import main_for, ANSWER, CLEAN, add_model_arguments, add_out_argument, load_model, write_json

KINDS = ("resid", "mlp", "attn")


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_model_arguments(p)
    p.add_argument("--prompt", default=CLEAN)
    p.add_argument("--subject", default="Michael Jordan")
    p.add_argument("--answer", default=ANSWER)
    p.add_argument("--replacement", default="Michael Phelps",
                   help="subject for symmetric token replacement (same number of tokens)")
    p.add_argument("--window", type=int, default=1, help="layers restored together for mlp / attn (ROME: 10)")
    p.add_argument("--samples", type=int, default=10, help="noise samples")
    p.add_argument("--noise", type=float, default=3.0, help="noise std in units of the embedding std")
    p.add_argument("--relation", default="sport", help="fact-world relation to average over (factworld only)")
    p.add_argument("--no-average", action="store_true", help="skip the average over all facts")
    add_out_argument(p, "results/trace")


def _plot_trace(result, path, plot) -> list:
    fig = plot.layer_pos_heatmap(result.values, tokens=result.labels["pos"], title=result.title,
                                 colorbar_label=result.metric_name)
    return plot.save(fig, path)


def run(args: argparse.Namespace) -> int:
    from interp import plot
    from probes.causal_trace import trace
    from probes.knockout import attention_knockout_all
    from probes.trace_average import average_trace

    model = load_model(args)
    progress = not args.quiet
    summary: dict = {"prompt": args.prompt, "subject": args.subject, "answer": args.answer, "window": args.window}
    jobs = [(kind, "noise") for kind in KINDS] + [("resid", "replace")]
    for kind, corruption in tqdm(jobs, desc="causal traces", disable=not progress):
        result = trace(model, args.prompt, args.subject, args.answer, kind=kind, window=args.window,
                       noise=args.noise, n_samples=args.samples, corruption=corruption,
                       replacement_subject=args.replacement if corruption == "replace" else None, progress=False)
        name = f"trace_{kind}" + ("_replace" if corruption == "replace" else "")
        paths = _plot_trace(result, args.out / name, plot)
        result.save_json(args.out / f"{name}.json")
        peak = result.indirect_effect.flatten().argmax()
        layer, pos = divmod(int(peak), result.scores.shape[1])
        summary[name] = {"clean_prob": result.clean_prob, "corrupted_prob": result.corrupted_prob,
                         "peak": {"layer": layer, "pos": result.labels["pos"][pos],
                                  "indirect_effect": float(result.indirect_effect[layer, pos])},
                         "plots": [str(p) for p in paths]}
        print(f"{name:20s} P({args.answer}) clean {result.clean_prob:.3f}, corrupted {result.corrupted_prob:.4f}; "
              f"largest indirect effect {float(result.indirect_effect[layer, pos]):.3f} at L{layer}, "
              f"{result.labels['pos'][pos]}")

    knock = attention_knockout_all(model, args.prompt, args.subject, args.answer, window=args.window, progress=False)
    paths = plot.save(plot.heatmap(knock.values, row_labels=knock.labels["sources"], col_labels=knock.labels["layer"],
                                   title=knock.title, xlabel="layer", ylabel="blocked edges into the last position",
                                   colorbar_label="change in P(answer), %"), args.out / "knockout")
    knock.save_json(args.out / "knockout.json")
    summary["knockout"] = {"change_percent": dict(zip(knock.labels["sources"], knock.values.tolist())),
                           "plots": [str(p) for p in paths]}
    for source, row in zip(knock.labels["sources"], knock.values.tolist()):
        print(f"knockout {source:>8s} -> last, per layer: " + " ".join(f"{v:+6.1f}%" for v in row))

    if not args.no_average and args.model == "factworld":
        from analyses.factworld_facts import triples
        from models import factworld

        facts = triples([f for f in factworld.facts(args.relation) if f.object != "none"],
                        factworld.templates(args.relation)[0])
        for kind in tqdm(KINDS, desc=f"average traces over {len(facts)} facts", disable=not progress):
            avg = average_trace(model, facts, kind=kind, window=args.window, noise=args.noise,
                                n_samples=args.samples, progress=progress)
            paths = plot.save(plot.heatmap(avg.values, row_labels=avg.labels["layer"],
                                           col_labels=avg.labels["category"], title=avg.title,
                                           xlabel="position", ylabel="layer", colorbar_label="average indirect effect"),
                              args.out / f"average_{kind}")
            avg.save_json(args.out / f"average_{kind}.json")
            summary[f"average_{kind}"] = {"plots": [str(p) for p in paths], **avg.to_dict()}
            print(f"average {kind}: " + "; ".join(
                f"{c}: " + " ".join("  nan" if v != v else f"{v:.2f}" for v in avg.values[:, i].tolist())
                for i, c in enumerate(avg.labels["category"])))
    write_json(args.out / "summary.json", summary)
    print(f"Plots and JSON in {args.out}/")
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    return main_for("analyses.trace", __doc__, add_arguments, run, argv)


if __name__ == "__main__":
    sys.exit(main())
