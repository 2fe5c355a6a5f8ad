"""Head attribution: direct logit attribution and per-head patching side by side.

    interp heads                      # fact-world: Michael Jordan vs Michael Phelps, basketball vs swimming
    python -m analyses.heads --out results/heads

Two views of every attention head for the same prompt pair:
- direct logit attribution on the clean prompt: what the head writes straight
  into logit(answer) - logit(counterfactual) at the last position, through the
  final norm with its scale frozen (all parts add up to the logit difference);
- activation patching of the head's output (z, all positions) from the clean
  into the corrupted run, as normalised restoration: its total causal effect,
  direct and through later layers.
A head with a large patching effect but small direct attribution acts through
later components; the attention patterns of the top heads show where they read.

Writes OUT/heads.png / .svg (the two heatmaps), OUT/patterns.png / .svg
(attention of the top heads), OUT/neurons_dla.png / .svg (top neurons by direct
logit attribution) and OUT/heads.json (every number).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Optional, Sequence, Union

import torch
from matplotlib.figure import Figure

from analyses.common import (
    ANSWER, CLEAN, CORRUPTED, COUNTERFACTUAL, AnalysisResult, ModelArg, Outputs, add_batch_size_argument,
    add_model_arguments, add_out_argument, add_pair_arguments, as_model, main_for,
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_model_arguments(p)
    add_pair_arguments(p)
    p.add_argument("--top", type=int, default=4, help="how many top heads' attention patterns to show")
    add_batch_size_argument(p, None, "patched runs (default: as the engine chooses)")
    add_out_argument(p, "results/heads")


def head_attribution(model: ModelArg = "factworld", *, clean: str = CLEAN, corrupted: str = CORRUPTED,
                     answer: str = ANSWER, counterfactual: str = COUNTERFACTUAL, top: int = 4,
                     batch_size: Optional[int] = None, out: Optional[Union[str, Path]] = None, progress: bool = True,
                     dtype: Optional[str] = None) -> AnalysisResult:
    """Direct logit attribution (clean prompt) and head-output patching (clean into corrupted)
    of every head, and the attention of the `top` heads by either; `results` holds the
    `DirectLogitAttribution` ("dla") and the normalised `PatchResult` ("patching")."""
    from interp import metrics, plot
    from interp.attribution import direct_logit_attribution
    from interp.patching import sweep
    from interp.views import attention_patterns

    model = as_model(model, dtype)
    outputs = Outputs(out)
    metric = metrics.logit_diff(model, answer, counterfactual)
    dla = direct_logit_attribution(model, clean, answer, counterfactual)
    patched = sweep(model, clean, corrupted, metric, "head_z", batch_size=batch_size, progress=progress).normalized()

    fig = Figure(figsize=(11, 0.5 * model.cfg.n_layers + 2.5), layout="constrained")
    left, right = fig.subplots(1, 2)
    plot.layer_head_heatmap(dla.heads, ax=left, title="direct logit attribution (clean)",
                            colorbar_label=f"logit {answer} - {counterfactual}")
    plot.layer_head_heatmap(patched.values, ax=right, title="patching head output (all positions)",
                            colorbar_label="normalised restoration")
    fig.suptitle(f"{clean!r} vs {corrupted!r}")
    head_plots = outputs.figure(fig, "heads")
    outputs.view("dla", dla)
    outputs.view("head_patching", patched)

    # Attention of the heads that matter most by either measure.
    n_heads = model.cfg.n_heads
    score = dla.heads.abs() / dla.heads.abs().max() + patched.values.abs() / patched.values.abs().max()
    chosen = [divmod(i, n_heads) for i in score.flatten().argsort(descending=True)[:top].tolist()]
    with torch.no_grad():
        _, cache = model.run_with_cache(clean, names_filter=lambda n: n.endswith("hook_pattern"))
    patterns = torch.stack([cache["pattern", l][0, h] for l, h in chosen])
    tokens = model.to_str_tokens(clean)
    pattern_plots = outputs.figure(plot.attention_patterns(patterns, tokens=tokens,
                                                           titles=[f"L{l}H{h}" for l, h in chosen]), "patterns")
    outputs.view("patterns", attention_patterns(model, clean))
    neuron_labels = [f"L{l}N{n}" for l in range(model.cfg.n_layers) for n in range(model.cfg.d_mlp)]
    neuron_plots = outputs.figure(plot.top_k_bar(dla.neurons.flatten(), neuron_labels, k=20,
                                                 title="neurons: direct logit attribution (clean)",
                                                 xlabel=f"logit {answer} - {counterfactual}"), "neurons_dla")
    report = {
        "clean": clean, "corrupted": corrupted, "answer": answer, "counterfactual": counterfactual,
        "direct_logit_attribution": dla.to_dict(), "head_patching": patched.to_dict(),
        "top_heads": [f"L{l}H{h}" for l, h in chosen],
        "plots": [str(p) for p in head_plots + pattern_plots + neuron_plots],
    }
    outputs.json("heads.json", report)
    _print(dla, patched, chosen, answer, counterfactual, out)
    return AnalysisResult("heads", report, outputs.files, {"dla": dla, "patching": patched})


def _print(dla, patched, chosen: list[tuple[int, int]], answer: str, counterfactual: str, out) -> None:
    print(f"logit difference {answer} - {counterfactual} on the clean prompt: {dla.logit_diff:.3f} "
          f"(sum of all direct attributions {dla.total():.3f})")
    print("per layer, direct: attn " + " ".join(f"{x:+.2f}" for x in dla.attn.tolist())
          + " | mlp " + " ".join(f"{x:+.2f}" for x in dla.mlp.tolist()))
    print(f"{'head':6s} {'direct':>8s} {'patching':>9s}")
    for l, h in chosen:
        print(f"L{l}H{h:<4d} {float(dla.heads[l, h]):8.2f} {float(patched.values[l, h]):9.2f}")
    if out is not None:
        print(f"Plots and JSON in {out}/")


def run(args: argparse.Namespace) -> int:
    return head_attribution(args.model, clean=args.clean, corrupted=args.corrupted, answer=args.answer,
                            counterfactual=args.counterfactual, top=args.top, batch_size=args.batch_size, out=args.out,
                            progress=not args.quiet, dtype=args.dtype).rc


def main(argv: Optional[Sequence[str]] = None) -> int:
    return main_for("analyses.heads", __doc__, add_arguments, run, argv)


if __name__ == "__main__":
    sys.exit(main())
