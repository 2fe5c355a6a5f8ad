"""Top-1 accuracy and answer probability of a model on the fact world, per relation, on training
and held-out templates.

    interp eval-factworld [--model factworld|DIR] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="factworld", help="'factworld' (default) or a checkpoint directory")
    p.add_argument("--json", type=Path, default=None, help="write the report to this JSON file")


def run(args: argparse.Namespace) -> int:
    from models import load
    from models.factworld.evaluate import evaluate, format_report

    report = evaluate(load(args.model))
    print(format_report(report))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0
