"""Activation patching of a clean / corrupted prompt pair, with attribution patching beside it.

    interp patch                      # fact-world: Michael Jordan vs Michael Phelps, basketball vs swimming
    python -m analyses.patch --sites resid_pre head_z_by_pos --out results/patch

For each site: patch the clean activation into the corrupted run one site at a
time (denoising), record the logit difference answer - counterfactual,
normalise it to restoration ((patched - corrupted) / (clean - corrupted)),
estimate the same with attribution patching, and write
  OUT/<site>.png / .svg   the normalised restoration, plotted
  OUT/<site>.json         every number (activation and attribution patching)
  OUT/summary.json        baselines, top sites and attribution/patching agreement
"""

from __future__ import annotations

import argparse
import sys
from typing import Optional, Sequence

from tqdm.auto import tqdm

from analyses.common import main_for, add_model_arguments, add_out_argument, add_pair_arguments, load_model, write_json

DEFAULT_SITES = ["resid_pre", "attn_out", "mlp_out", "head_z", "head_z_by_pos", "neuron_post"]


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_model_arguments(p)
    add_pair_arguments(p)
    from interp.patching import SITES

    p.add_argument("--sites", nargs="+", default=DEFAULT_SITES, choices=list(SITES), metavar="SITE",
                   help=f"sites to sweep (default: {' '.join(DEFAULT_SITES)}); any of {', '.join(SITES)}")
    p.add_argument("--direction", choices=["denoise", "noise"], default="denoise")
    p.add_argument("--batch-size", type=int, default=64, help="rows per forward pass")
    add_out_argument(p, "results/patch")


def run(args: argparse.Namespace) -> int:
    from interp import metrics, plot
    from interp.attribution import agreement, attribution_patch
    from interp.patching import sweep

    model = load_model(args)
    metric = metrics.logit_diff(model, args.answer, args.counterfactual)
    summary: dict = {"clean": args.clean, "corrupted": args.corrupted, "answer": args.answer,
                     "counterfactual": args.counterfactual, "direction": args.direction, "sites": {}}
    for site in tqdm(args.sites, desc="sites", disable=args.quiet):
        result = sweep(model, args.clean, args.corrupted, metric, site, direction=args.direction,
                       batch_size=args.batch_size, progress=not args.quiet)
        estimate = attribution_patch(model, args.clean, args.corrupted, metric, site, direction=args.direction)
        agree = agreement(estimate, result, k=10)
        restored = result.normalized()
        paths = plot.save(plot.plot_result(restored), args.out / site)
        data = {"activation_patching": result.to_dict(), "attribution_patching": estimate.to_dict(),
                "normalised": restored.to_dict(), "agreement": vars(agree)}
        write_json(args.out / f"{site}.json", data)
        summary.update(clean_value=result.clean_value, corrupted_value=result.corrupted_value)
        summary["sites"][site] = {"top": restored.top(5), "agreement": vars(agree), "plots": [str(p) for p in paths]}
        print(f"{site:20s} top restorations: "
              + ", ".join(f"{label} {value:.2f}" for label, value in restored.top(3))
              + f" | attribution vs patching: {agree}")
    write_json(args.out / "summary.json", summary)
    print(f"logit difference {args.answer} - {args.counterfactual}: clean {summary['clean_value']:.3f}, "
          f"corrupted {summary['corrupted_value']:.3f}. Plots and JSON in {args.out}/")
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    return main_for("analyses.patch", __doc__, add_arguments, run, argv)


if __name__ == "__main__":
    sys.exit(main())
