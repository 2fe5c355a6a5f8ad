"""The `interp` command line: one sub-command per analysis.

    interp verify [--model PATH|factworld] [--dtype float64] [--by-family] [--json FILE]
    interp train-factworld [--out DIR] [--steps N] [--seed S]
    interp eval-factworld [--model factworld|DIR] [--json FILE]
    interp demo
    interp patch [--sites SITE ...] [--clean TEXT --corrupted TEXT --answer W --counterfactual W] [--out DIR]
    interp heads [--out DIR]
    interp trace [--window N] [--out DIR]
    interp probe ["PROMPT"] [--target W] [-k K] [--out DIR]
    interp probe-relation [RELATION|all] [--method M | --methods M1,M2] [--limit N] [--out DIR]
    interp recall [RELATION] [--limit N] [--out DIR]
    interp edit "PROMPT" TARGET [--method rome|memit|ft] [--layer L] [--save DIR] [--out DIR]
    interp train-transcoders [--features N] [--k K] [--steps S]
    interp transcoders [--out DIR]
    interp features LAYER [INDEX] [--limit N] [--out DIR]
    interp circuit [CLEAN CORRUPTED ANSWER COUNTERFACTUAL] [--method eap|eap-ig|exact] [--edges N] [--compare]
    interp translate [--steps N] [--norm-position post|pre] [--out DIR]

Each command lives in a module with `add_arguments(parser)` and `run(args)`; only the
module of the command being run is imported, so `interp --help` loads no torch.
"""

from __future__ import annotations

import argparse
import sys
from importlib import import_module
from typing import Optional, Sequence

# name -> (module, its add-arguments function, its run function, help)
COMMANDS: dict[str, tuple[str, str, str, str]] = {
    "verify": ("analyses.verify", "add_arguments", "run",
               "compare our Transformer with HF transformers and TransformerLens on the same weights"),
    "train-factworld": ("models.factworld.train", "add_arguments", "run", "train the fact-world model from scratch (CPU)"),
    "eval-factworld": ("analyses.evaluate", "add_arguments", "run",
                       "top-1 accuracy per relation on training and held-out templates"),
    "demo": ("analyses.demo", "add_arguments", "run",
             "the fact-world model's predictions, its FFN probe of Michael Jordan, and its cross-check"),
    "patch": ("analyses.patch", "add_arguments", "run", "activation and attribution patching of a prompt pair"),
    "heads": ("analyses.heads", "add_arguments", "run", "head attribution: direct logit attribution and patching"),
    "trace": ("analyses.trace", "add_arguments", "run", "causal tracing and attention knockout"),
    "probe": ("analyses.probe", "add_arguments", "run", "FFN key-value probing of one fact"),
    "probe-relation": ("analyses.probe_relation", "add_arguments", "run",
                       "where the facts of a relation live: position-aware localisation of every fact"),
    "recall": ("analyses.recall", "add_arguments", "run",
               "the recall chain over a relation: enrichment, extraction per head, linear probes"),
    "edit": ("analyses.edit", "add_arguments", "run",
             "rewrite a stored fact (ROME, MEMIT or FT-L) and show what changed"),
    "train-transcoders": ("analyses.train_transcoders", "add_arguments", "run",
                          "train and ship the fact-world model's transcoders (one per MLP layer)"),
    "transcoders": ("analyses.transcoders", "add_arguments", "run",
                    "the shipped transcoders: evaluation per layer, and subject / fact features against neurons"),
    "features": ("analyses.features", "add_arguments", "run",
                 "the shipped transcoders' features: a table of a layer, or one feature's dashboard"),
    "circuit": ("analyses.circuit", "add_arguments", "run",
                "edge attribution (EAP, EAP-IG, exact path patching) and the circuit of a prompt pair"),
    "translate": ("analyses.translate", "add_arguments", "run",
                  "train the 2017 encoder-decoder to reverse sequences and show its cross-attention"),
}


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="interp", description="Mechanistic interpretability toolkit")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    chosen = next((a for a in argv if not a.startswith("-")), None)
    for name, (module, add, _, help) in COMMANDS.items():
        p = sub.add_parser(name, help=help, description=help)
        if name == chosen:  # only this command's options need its module
            getattr(import_module(module), add)(p)
    args = parser.parse_args(argv)
    module, _, run, _ = COMMANDS[args.command]
    return getattr(import_module(module), run)(args)


if __name__ == "__main__":
    sys.exit(main())
