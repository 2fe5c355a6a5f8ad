"""Options and helpers shared by the analyses: which model, which fact, where results go."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Callable, Optional, Sequence

from interp.results import write_json

CLEAN = "Michael Jordan plays the sport of"
CORRUPTED = "Michael Phelps plays the sport of"
ANSWER, COUNTERFACTUAL = "basketball", "swimming"


def add_model_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="factworld", help="'factworld' (default), a model directory, or a cached HF id")
    p.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def add_pair_arguments(p: argparse.ArgumentParser) -> None:
    """A clean prompt, a corrupted prompt with the same number of tokens, and the two answers."""
    p.add_argument("--clean", default=CLEAN)
    p.add_argument("--corrupted", default=CORRUPTED)
    p.add_argument("--answer", default=ANSWER)
    p.add_argument("--counterfactual", default=COUNTERFACTUAL)


def add_out_argument(p: argparse.ArgumentParser, default: str) -> None:
    p.add_argument("--out", type=Path, default=Path(default), help=f"output directory (default {default})")


def load_model(args: argparse.Namespace):
    from models import load

    return load(args.model, dtype=args.dtype).eval()


def main_for(module: str, doc: str, add_arguments: Callable[[argparse.ArgumentParser], None],
             run: Callable[[argparse.Namespace], int], argv: Optional[Sequence[str]] = None) -> int:
    """`python -m analyses.NAME`: parse the analysis' options and run it (the same as `interp NAME`)."""
    parser = argparse.ArgumentParser(prog=f"python -m {module}", description=doc.splitlines()[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


__all__ = ["CLEAN", "CORRUPTED", "ANSWER", "COUNTERFACTUAL", "add_model_arguments", "add_pair_arguments",
           "add_out_argument", "load_model", "main_for", "write_json"]
