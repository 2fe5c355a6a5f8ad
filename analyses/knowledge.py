"""Knowledge neurons of one fact (Dai et al. 2022): integrated-gradients attribution of every
MLP neuron to the answer (`probes.knowledge_neurons`), on its own.

    interp knowledge-neurons "Michael Jordan plays the sport of" basketball [--layer L ...] [--steps 20] [-k 10]
    python -m analyses.knowledge "PROMPT" TARGET --out results/knowledge-neurons

Prints the top k neurons with their attribution, the neurons above the paper's adaptive
threshold (0.2 x the largest) and per layer the completeness check (the sum of a layer's
attributions against output(full) - output(layer zeroed)); with --out writes
OUT/knowledge_neurons.json and the attribution heatmap OUT/knowledge_neurons.png / .svg;
--json FILE writes the numbers only.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Optional, Sequence, Union

from analyses.common import (
    ANSWER, CLEAN, AnalysisResult, ModelArg, Outputs, add_batch_size_argument, add_json_argument,
    add_model_arguments, as_model, main_for,
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("prompt", nargs="?", default=CLEAN)
    p.add_argument("target", nargs="?", default=ANSWER, help="the answer word (or a token id)")
    p.add_argument("--layer", type=int, action="append", default=None, dest="layers",
                   help="a layer to attribute (repeatable; default every layer)")
    p.add_argument("--pos", type=int, default=-1, help="the position whose MLP activations are scaled")
    p.add_argument("--steps", type=int, default=20, help="integrated-gradients steps (paper: 20)")
    p.add_argument("--output", choices=["prob", "logit"], default="prob", help="attribute the probability or logit")
    p.add_argument("-k", type=int, default=10, help="top neurons to print")
    add_batch_size_argument(p, None, "scaled copies")
    add_model_arguments(p)
    p.add_argument("--out", type=Path, default=None, help="output directory for the JSON and the plot")
    add_json_argument(p)


def knowledge_neuron_report(model: ModelArg = "factworld", prompt: str = CLEAN, target: Union[str, int] = ANSWER,
                            *, layers: Optional[Sequence[int]] = None, pos: int = -1, steps: int = 20,
                            output: str = "prob", k: int = 10, batch_size: Optional[int] = None,
                            out: Optional[Union[str, Path]] = None, json_path: Optional[Union[str, Path]] = None,
                            progress: bool = True, dtype: Optional[str] = None) -> AnalysisResult:
    """`probes.knowledge_neurons.knowledge_neurons` with its report printed and saved; the report is
    the result's `to_dict()` plus the per-layer completeness, `results["knowledge_neurons"]` the
    `KnowledgeNeuronResult`."""
    from interp import plot
    from probes.knowledge_neurons import completeness_gap, knowledge_neurons

    model = as_model(model, dtype)
    result = knowledge_neurons(model, prompt, target, layers=layers, pos=pos, steps=steps, batch_size=batch_size,
                               output=output, progress=progress)
    completeness = {}
    for i, layer in enumerate(result.layers):
        completeness[layer] = {"sum": result.layer_total(layer),
                               "expected": result.full_output - float(result.zeroed_outputs[i]),
                               "gap": completeness_gap(result, layer)}
    report = result.to_dict() | {"completeness": completeness}
    outputs = Outputs(out)
    outputs.json("knowledge_neurons.json", report)
    outputs.figure(plot.plot_result(result), "knowledge_neurons")
    outputs.view("knowledge_neurons", result)
    if json_path is not None:
        outputs.files.append(Outputs(Path(json_path).parent).json(Path(json_path).name, report))
    print(f"{result.prompt!r} -> {result.target_str!r}: {output} {result.full_output:.4f}; top {k} knowledge "
          f"neurons (integrated gradients, {steps} steps, position {result.pos}):")
    for n, score in result.top(k):
        print(f"  {n.label:14s} {score:+.4f}")
    selected = result.selected()
    print(f"{len(selected)} above {result.threshold} x the largest: " + " ".join(n.label for n, _ in selected[:20])
          + (" ..." if len(selected) > 20 else ""))
    for layer, c in completeness.items():
        print(f"layer {layer}: attributions sum to {c['sum']:+.4f}, {output}(full) - {output}(layer zeroed) = "
              f"{c['expected']:+.4f}")
    if outputs.files:
        print("wrote " + ", ".join(str(p) for p in outputs.files))
    return AnalysisResult("knowledge-neurons", report, outputs.files, {"knowledge_neurons": result})


def run(args: argparse.Namespace) -> int:
    target = int(args.target) if args.target.isdigit() else args.target
    return knowledge_neuron_report(args.model, args.prompt, target, layers=args.layers, pos=args.pos,
                                   steps=args.steps, output=args.output, k=args.k, batch_size=args.batch_size,
                                   out=args.out, json_path=args.json, progress=not args.quiet, dtype=args.dtype).rc


def main(argv: Optional[Sequence[str]] = None) -> int:
    return main_for("analyses.knowledge", __doc__, add_arguments, run, argv)


if __name__ == "__main__":
    sys.exit(main())
