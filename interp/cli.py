"""The `interp` command line.

    interp verify [--model PATH|factworld] [--dtype float64] [--by-family] [--json FILE]
    interp train-factworld [--out DIR] [--steps N] [--seed S]
    interp eval-factworld [--model factworld|DIR] [--json FILE]
    interp demo
    interp patch [--sites SITE ...] [--clean TEXT --corrupted TEXT --answer W --counterfactual W] [--out DIR]
    interp heads [--out DIR]
    interp trace [--window N] [--out DIR]
    interp probe ["PROMPT"] [--target W] [-k K] [--out DIR]
    interp probe-relation [RELATION] [--limit N] [--out DIR]
    interp translate [--steps N] [--norm-position post|pre] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Callable, Optional, Sequence

# ------------------------------------------------------------------ verify
def _verify_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default=None,
                   help="'factworld', a model directory, or a cached HF id (default: a random GPT-2-shaped model)")
    p.add_argument("--arch", choices=["gpt2", "neox", "llama", "qwen2"], default="gpt2",
                   help="random model: architecture (GPT-2, GPT-NeoX/Pythia, Llama, Qwen2)")
    p.add_argument("--layers", type=int, default=3, help="random model: number of layers")
    p.add_argument("--d-model", type=int, default=84, help="random model: width")
    p.add_argument("--heads", type=int, default=7, help="random model: attention heads")
    p.add_argument("--vocab", type=int, default=500, help="random model: vocabulary size")
    p.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--seq", type=int, default=16, help="tokens per prompt")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--by-family", action="store_true", help="one row per hook family (worst over layers)")
    p.add_argument("--json", type=Path, default=None, help="also write the numbers to this JSON file")


def verify(args: argparse.Namespace) -> int:
    import torch

    from interp.crosscheck import crosscheck, crosscheck_model, random_hf

    dtype = getattr(torch, args.dtype)
    gen = torch.Generator().manual_seed(args.seed)
    if args.model is None:
        hf = random_hf(args.arch, n_layers=args.layers, d_model=args.d_model, n_heads=args.heads, d_vocab=args.vocab,
                       n_ctx=max(64, args.seq), seed=args.seed, dtype=dtype)
        print(f"random {type(hf).__name__}: {args.layers} layers, d_model {args.d_model}, {args.heads} heads "
              f"(d_head {args.d_model // args.heads}), vocab {args.vocab}; norm weights and biases perturbed")
        tokens = torch.randint(0, args.vocab, (args.batch, args.seq), generator=gen)
        report = crosscheck(hf, tokens)
    elif Path(args.model, "config.json").exists() and "interp_format" not in Path(args.model, "config.json").read_text():
        from models.loading import hf_model_from_dir

        hf = hf_model_from_dir(Path(args.model)).to(dtype)
        print(f"HF checkpoint {args.model}: {type(hf).__name__}")
        tokens = torch.randint(0, hf.config.vocab_size, (args.batch, args.seq), generator=gen)
        report = crosscheck(hf, tokens)
    else:
        from models import load

        model = load(args.model).to(dtype)
        print(f"model {args.model}: {model.cfg.n_layers} layers, d_model {model.cfg.d_model}, {model.cfg.n_heads} heads")
        tokens = torch.randint(0, model.cfg.d_vocab, (args.batch, min(args.seq, model.cfg.n_ctx)), generator=gen)
        report = crosscheck_model(model, tokens)
    print(report.table(by_family=args.by_family))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report.to_dict(), indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0 if report.passed else 1


# ------------------------------------------------------------------ fact-world
def _train_args(p: argparse.ArgumentParser) -> None:
    from models.factworld.train import add_arguments

    add_arguments(p)


def train_factworld(args: argparse.Namespace) -> int:
    from models.factworld.train import run

    return run(args)


def _eval_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="factworld", help="'factworld' (default) or a checkpoint directory")
    p.add_argument("--json", type=Path, default=None, help="write the report to this JSON file")


def eval_factworld(args: argparse.Namespace) -> int:
    from models import load
    from models.factworld.evaluate import evaluate, format_report

    report = evaluate(load(args.model))
    print(format_report(report))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0


def demo(args: argparse.Namespace) -> int:
    from analyses.demo import main as demo_main

    return demo_main()


# ------------------------------------------------------------------ analyses
def _analysis(name: str) -> tuple[Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], int], str]:
    """An analyses/NAME.py module as a command: its add_arguments, run and first doc line."""
    import importlib

    module = importlib.import_module(f"analyses.{name}")
    return module.add_arguments, module.run, module.__doc__.splitlines()[0].rstrip(".")


def _probe_relation_args(p: argparse.ArgumentParser) -> None:
    from analyses.probe import add_relation_arguments

    add_relation_arguments(p)


def _probe_relation(args: argparse.Namespace) -> int:
    from analyses.probe import run_relation

    return run_relation(args)


# ------------------------------------------------------------------ entry point
# name -> (add the options, run, help)
COMMANDS: dict[str, tuple[Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], int], str]] = {
    "verify": (_verify_args, verify, "compare our Transformer with HF transformers and TransformerLens on the same weights"),
    "train-factworld": (_train_args, train_factworld, "train the fact-world model from scratch (CPU)"),
    "eval-factworld": (_eval_args, eval_factworld, "top-1 accuracy per relation on training and held-out templates"),
    "demo": (lambda p: None, demo, "top-5 predictions of the fact-world model, then its cross-check"),
    "patch": _analysis("patch"),
    "heads": _analysis("heads"),
    "trace": _analysis("trace"),
    "probe": _analysis("probe"),
    "translate": _analysis("translate"),
    "probe-relation": (_probe_relation_args, _probe_relation, "FFN key-value probing over every fact of a relation"),
}


def main(argv: Optional[Sequence[str]] = None) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    parser = argparse.ArgumentParser(prog="interp", description="Mechanistic interpretability toolkit")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (configure, _, help) in COMMANDS.items():
        configure(sub.add_parser(name, help=help, description=help))
    args = parser.parse_args(argv)
    return COMMANDS[args.command][1](args)


if __name__ == "__main__":
    sys.exit(main())
