"""Top-1 accuracy and answer probability of a model on the fact world, per relation, on training
and held-out templates.

    interp eval-factworld [--model factworld|DIR] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Optional, Union

from analyses.common import AnalysisResult, ModelArg, add_json_argument, add_quiet_argument, as_model


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="factworld", help="'factworld' (default) or a checkpoint directory")
    add_json_argument(p)
    add_quiet_argument(p)


def eval_factworld(model: ModelArg = "factworld", *, json_path: Optional[Union[str, Path]] = None,
                   progress: bool = True) -> AnalysisResult:
    """Top-1 accuracy and P(answer) per relation on training and held-out templates
    (`models.factworld.evaluate.evaluate`); the report is {relation: {"train": ..., "heldout": ...}}."""
    from models.factworld.evaluate import evaluate, format_report

    report = evaluate(as_model(model), progress=progress)
    print(format_report(report))
    files = []
    if json_path is not None:
        json_path = Path(json_path)
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(report, indent=2) + "\n")
        files.append(json_path)
        print(f"wrote {json_path}")
    return AnalysisResult("eval-factworld", report, files)


def run(args: argparse.Namespace) -> int:
    return eval_factworld(args.model, json_path=args.json, progress=not args.quiet).rc
