"""Direct logit attribution of every transcoder feature (`interp.attribution.feature_logit_attribution`).

    interp feature-logit-attribution                      # Michael Jordan -> basketball vs swimming
    interp feature-logit-attribution "PROMPT" ANSWER [--counterfactual W] [--transcoders DIR] [--top 10]

With the transcoders attached (`probes.sae.attached`; the fact world's shipped ones by
default, else --transcoders DIR), what each feature writes straight into logit(answer)
(- logit(counterfactual)) at the position (default the last), through the final norm with
its scale frozen; per layer also the reconstruction error and the rest of the transcoder's
output, which with the features add up to the MLP output's direct attribution. Prints the
top features; with --out writes OUT/feature_attribution.json and the top-feature bars
OUT/feature_attribution.png / .svg; --json FILE writes the numbers only.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Optional, Sequence, Union

from analyses.common import (
    ANSWER, CLEAN, COUNTERFACTUAL, AnalysisResult, ModelArg, Outputs, add_json_argument, add_model_arguments,
    as_model, main_for,
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("prompt", nargs="?", default=CLEAN)
    p.add_argument("answer", nargs="?", default=ANSWER)
    p.add_argument("--counterfactual", default=None,
                   help=f"attribute logit(answer) - logit(counterfactual) (with the default prompt: {COUNTERFACTUAL})")
    p.add_argument("--transcoders", default="factworld", help="'factworld' (shipped) or a folder of L0, L1, ...")
    p.add_argument("--pos", type=int, default=-1, help="the position read (default the last)")
    p.add_argument("--top", type=int, default=10, help="features to print and plot")
    add_model_arguments(p)
    p.add_argument("--out", type=Path, default=None, help="output directory for the JSON and the plot")
    add_json_argument(p)


def feature_attribution(model: ModelArg = "factworld", prompt: str = CLEAN, answer: Union[str, int] = ANSWER, *,
                        counterfactual: Optional[Union[str, int]] = None,
                        transcoders: Union[str, Path, Sequence] = "factworld", pos: int = -1, top: int = 10,
                        out: Optional[Union[str, Path]] = None, json_path: Optional[Union[str, Path]] = None,
                        dtype: Optional[str] = None) -> AnalysisResult:
    """`feature_logit_attribution` of `prompt` with `transcoders` (a name, a folder, or loaded
    dictionaries) attached for the call only; `results["attribution"]` is the
    `FeatureLogitAttribution`, the report its `to_dict()`."""
    from interp import plot
    from interp.attribution import feature_logit_attribution
    from probes.sae import attached, load_transcoders

    model = as_model(model, dtype)
    dictionaries = (load_transcoders(transcoders, device=model.device) if isinstance(transcoders, (str, Path))
                    else list(transcoders))
    with attached(model, dictionaries):
        result = feature_logit_attribution(model, prompt, answer, counterfactual, pos=pos)
    report = result.to_dict()
    ranked = _ranked(result, top)
    outputs = Outputs(out)
    outputs.json("feature_attribution.json", report)
    if ranked:
        import torch

        target = f"logit {result.answer}" + (f" - {result.counterfactual}" if result.counterfactual else "")
        outputs.figure(plot.top_k_bar(torch.tensor([s for _, s in ranked]), [label for label, _ in ranked],
                                      k=len(ranked), title=f"features: direct attribution ({prompt!r})",
                                      xlabel=target), "feature_attribution")
        outputs.view("feature_attribution", result)
    if json_path is not None:
        outputs.files.append(Outputs(Path(json_path).parent).json(Path(json_path).name, report))
    print(f"{prompt!r}: direct attribution to logit({result.answer})"
          + (f" - logit({result.counterfactual})" if result.counterfactual else "") + f", top {len(ranked)} features:")
    for label, score in ranked:
        print(f"  {label:10s} {score:+.4f}")
    print("per layer, features + error + rest = MLP output: " + "; ".join(
        f"L{l} {float(result.features[i].sum()):+.3f} + {float(result.error[i]):+.3f} + {float(result.rest[i]):+.3f}"
        f" = {float(result.mlp[i]):+.3f}" for i, l in enumerate(result.layers)))
    if outputs.files:
        print("wrote " + ", ".join(str(p) for p in outputs.files))
    return AnalysisResult("feature-logit-attribution", report, outputs.files, {"attribution": result})


def _ranked(result, top: int) -> list[tuple[str, float]]:
    """The `top` features by |attribution|: (label "L{layer}F{index}", attribution)."""
    flat = result.features.flatten()
    n_features = result.features.shape[1]
    order = flat.abs().argsort(descending=True, stable=True)[: max(int(top), 0)].tolist()
    return [(f"L{result.layers[i // n_features]}F{i % n_features}", float(flat[i])) for i in order]


def run(args: argparse.Namespace) -> int:
    counterfactual = args.counterfactual
    if counterfactual is None and args.prompt == CLEAN and args.answer == ANSWER:
        counterfactual = COUNTERFACTUAL
    return feature_attribution(args.model, args.prompt, args.answer, counterfactual=counterfactual,
                               transcoders=args.transcoders, pos=args.pos, top=args.top, out=args.out,
                               json_path=args.json, dtype=args.dtype).rc


def main(argv: Optional[Sequence[str]] = None) -> int:
    return main_for("analyses.feature_attribution", __doc__, add_arguments, run, argv)


if __name__ == "__main__":
    sys.exit(main())
