"""The `interp` command line: one sub-command per analysis.

    interp verify [--model PATH|factworld] [--dtype float64] [--by-family] [--json FILE]
    interp train-factworld --out DIR | --force [--steps N] [--seed S]
    interp eval-factworld [--model factworld|DIR] [--json FILE]
    interp demo
    interp patch [--sites SITE ...] [--clean TEXT --corrupted TEXT --answer W --counterfactual W] [--out DIR]
    interp heads [--out DIR]
    interp trace [--window N] [--out DIR]
    interp probe ["PROMPT"] [--target W] [-k K] [--out DIR]
    interp probe-relation [RELATION|all] [--method M | --methods M1,M2] [--limit N] [--out DIR]
    interp recall [RELATION] [--limit N] [--out DIR]
    interp edit "PROMPT" NEW_TARGET [--method rome|memit|ft] [--layer L] [--save DIR] [--out DIR]
    interp evaluate-edits [--method rome|memit|ft] [-n N] [--relation R] [--layer L] [--seed S] [--out DIR]
    interp train-transcoders --out DIR | --force [--model M] [--features N] [--k K] [--steps S]
    interp train-clt --out DIR | --force [--model M] [--features N] [--k K] [--steps S] [--tokens T]
    interp clt [--clt factworld|DIR] [--facts N] [--out DIR]
    interp transcoders [--out DIR]
    interp features LAYER [INDEX] [--limit N] [--out DIR]
    interp feature-logit-attribution ["PROMPT" ANSWER] [--counterfactual W] [--transcoders DIR] [--top N] [--out DIR]
    interp train-sae --hook NAME --out DIR [--model M] [--texts FILE] [--features N] [--k K] [--steps S] [--force]
    interp knowledge-neurons ["PROMPT" TARGET] [--layer L ...] [--steps N] [-k K] [--out DIR] [--json FILE]
    interp process-weights MODEL --out DIR --fold-value-biases|--keep-value-biases [--no-fold-ln] [--force]
    interp circuit [CLEAN CORRUPTED ANSWER COUNTERFACTUAL] [--method eap|eap-ig|exact] [--edges N] [--compare]
    interp translate [--steps N] [--norm-position post|pre] [--out DIR]
    interp serve [--model factworld|DIR] [--port N] [--host H]
    interp views [--out results/views] [--only NAME ...] [--no-screenshots]
    interp graph ["PROMPT"] [--target W ...] [--transcoders factworld|DIR] [--node-threshold T] [--max-memory-mb M]
                 [--out DIR]

Each command lives in a module with `add_arguments(parser)` and `run(args)`, a thin wrapper over
the module's Python function (e.g. `analyses.patch.patch_pair`, returning an
`analyses.common.AnalysisResult`); only the module of the command being run is imported, so
`interp --help` loads no torch. The same flag means the same thing in every command: --model,
--dtype, --out (output folder), --quiet (no progress bars), --batch-size, --json FILE, --layer.
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
    "evaluate-edits": ("analyses.edit", "add_evaluate_arguments", "run_evaluate",
                       "edit random fact-world facts and score them CounterFact-style (evaluate_edits)"),
    "train-transcoders": ("analyses.train_transcoders", "add_arguments", "run",
                          "train and ship the fact-world model's transcoders (one per MLP layer)"),
    "train-clt": ("analyses.train_clt", "add_arguments", "run",
                  "train and ship the fact-world model's cross-layer transcoder (one encoder per layer, "
                  "writing to every later MLP)"),
    "clt": ("analyses.clt", "add_arguments", "run",
            "the cross-layer transcoder next to the per-layer transcoders: L0, variance explained, KL and fact "
            "accuracy spliced in, graph replacement and completeness scores"),
    "transcoders": ("analyses.transcoders", "add_arguments", "run",
                    "the shipped transcoders: evaluation per layer, and subject / fact features against neurons"),
    "features": ("analyses.features", "add_arguments", "run",
                 "the shipped transcoders' features: a table of a layer, or one feature's dashboard"),
    "feature-logit-attribution": ("analyses.feature_attribution", "add_arguments", "run",
                                  "direct logit attribution of every transcoder feature (feature_logit_attribution)"),
    "train-sae": ("analyses.train_sae", "add_arguments", "run",
                  "train a sparse autoencoder on any hook point and save it (--out required)"),
    "knowledge-neurons": ("analyses.knowledge", "add_arguments", "run",
                          "knowledge neurons of one fact: integrated gradients over the MLP neurons"),
    "process-weights": ("analyses.process_weights", "add_arguments", "run",
                        "fold norms, centre weights as TransformerLens does, and save the copy (--out required)"),
    "circuit": ("analyses.circuit", "add_arguments", "run",
                "edge attribution (EAP, EAP-IG, exact path patching) and the circuit of a prompt pair"),
    "translate": ("analyses.translate", "add_arguments", "run",
                  "train the 2017 encoder-decoder to reverse sequences and show its cross-attention"),
    "graph": ("analyses.graph", "add_arguments", "run",
              "the attribution graph of a prompt over transcoders: pruned, saved, drawn and as a browser page"),
    "views": ("analyses.views", "add_arguments", "run",
              "one offline HTML page and one screenshot per kind of interactive view, on the shipped model"),
    "serve": ("analyses.serve", "add_arguments", "run",
              "the local explorer app in the web browser (binds 127.0.0.1; no authentication)"),
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
