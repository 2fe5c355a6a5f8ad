"""Activation patching of a clean / corrupted prompt pair, with attribution patching beside it.

    interp patch                      # fact-world: Michael Jordan vs Michael Phelps, basketball vs swimming
    python -m analyses.patch --sites resid_pre head_z_by_pos --out results/patch
    analyses.patch.patch_pair(model, sites=["resid_pre"], out=None)    # in Python: an AnalysisResult

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
from pathlib import Path
from typing import Optional, Sequence, Union

from analyses.common import (
    ANSWER, CLEAN, CORRUPTED, COUNTERFACTUAL, AnalysisResult, ModelArg, Outputs, add_batch_size_argument,
    add_model_arguments, add_out_argument, add_pair_arguments, as_model, main_for,
)
from interp.progress import progress_bar

DEFAULT_SITES = ["resid_pre", "attn_out", "mlp_out", "head_z", "head_z_by_pos", "neuron_post"]


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_model_arguments(p)
    add_pair_arguments(p)
    from interp.patching import SITES

    p.add_argument("--sites", nargs="+", default=DEFAULT_SITES, choices=list(SITES), metavar="SITE",
                   help=f"sites to sweep (default: {' '.join(DEFAULT_SITES)}); any of {', '.join(SITES)}")
    p.add_argument("--direction", choices=["denoise", "noise"], default="denoise")
    add_batch_size_argument(p, 64, "patched runs")
    add_out_argument(p, "results/patch")


def patch_pair(model: ModelArg = "factworld", *, clean: str = CLEAN, corrupted: str = CORRUPTED,
               answer: str = ANSWER, counterfactual: str = COUNTERFACTUAL, sites: Sequence[str] = DEFAULT_SITES,
               direction: str = "denoise", batch_size: int = 64, out: Optional[Union[str, Path]] = None,
               progress: bool = True, dtype: Optional[str] = None) -> AnalysisResult:
    """Activation patching (and attribution patching beside it) of every site in `sites` for
    the prompt pair, by logit(answer) - logit(counterfactual). `results[site]` is the sweep's
    `PatchResult`; with `out`, the plots and JSON described in the module docstring."""
    from interp import metrics, plot
    from interp.attribution import agreement, attribution_patch
    from interp.patching import sweep

    sites = list(sites)
    if not sites:
        raise ValueError("no sites given: name at least one (interp.patching.SITES)")
    model = as_model(model, dtype)
    outputs = Outputs(out)
    metric = metrics.logit_diff(model, answer, counterfactual)
    summary: dict = {"clean": clean, "corrupted": corrupted, "answer": answer, "counterfactual": counterfactual,
                     "direction": direction, "sites": {}}
    results = {}
    for site in progress_bar(sites, progress, desc="sites"):
        result = sweep(model, clean, corrupted, metric, site, direction=direction, batch_size=batch_size,
                       progress=progress)
        estimate = attribution_patch(model, clean, corrupted, metric, site, direction=direction)
        agree = agreement(estimate, result, k=10)
        restored = result.normalized()
        paths = outputs.figure(plot.plot_result(restored), site)
        outputs.view(site, restored)
        outputs.json(f"{site}.json", {"activation_patching": result.to_dict(), "attribution_patching": estimate.to_dict(),
                                      "normalised": restored.to_dict(), "agreement": vars(agree)})
        summary.update(clean_value=result.clean_value, corrupted_value=result.corrupted_value)
        summary["sites"][site] = {"top": restored.top(5), "agreement": vars(agree), "plots": [str(p) for p in paths]}
        results[site] = result
        print(f"{site:20s} top restorations: "
              + ", ".join(f"{label} {value:.2f}" for label, value in restored.top(3))
              + f" | attribution vs patching: {agree}")
    outputs.json("summary.json", summary)
    print(f"logit difference {answer} - {counterfactual}: clean {summary['clean_value']:.3f}, "
          f"corrupted {summary['corrupted_value']:.3f}." + (f" Plots and JSON in {out}/" if out is not None else ""))
    return AnalysisResult("patch", summary, outputs.files, results)


def run(args: argparse.Namespace) -> int:
    return patch_pair(args.model, clean=args.clean, corrupted=args.corrupted, answer=args.answer,
                      counterfactual=args.counterfactual, sites=args.sites, direction=args.direction,
                      batch_size=args.batch_size, out=args.out, progress=not args.quiet, dtype=args.dtype).rc


def main(argv: Optional[Sequence[str]] = None) -> int:
    return main_for("analyses.patch", __doc__, add_arguments, run, argv)


if __name__ == "__main__":
    sys.exit(main())
