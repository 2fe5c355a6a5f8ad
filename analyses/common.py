"""Options and helpers shared by the analyses: which model, which fact, where results go.

Every analysis is a Python function with keyword arguments that returns an `AnalysisResult`
(its numbers and the files it wrote); its command (`interp NAME`, `python -m analyses.NAME`)
is a thin wrapper: `add_arguments(parser)` declares the flags, `run(args)` calls the function.
The flags mean the same everywhere: --model / --dtype (which model), --out (the output
folder), --quiet (no progress bars), --batch-size (prompts per forward pass), --json (a
JSON file of the numbers), --layer (a layer, negatives from the end).
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Optional, Sequence, Union

from interp.results import write_json

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from models import Transformer

CLEAN = "Michael Jordan plays the sport of"
CORRUPTED = "Michael Phelps plays the sport of"
ANSWER, COUNTERFACTUAL = "basketball", "swimming"

ModelArg = Union["Transformer", str]  # a model, or what `models.load` takes ("factworld", a directory, an HF id)


@dataclass
class AnalysisResult:
    """What an analysis returns: `report`, its numbers (what it writes as JSON), `files`, the
    paths it wrote (none without an output folder), `results`, the library's result objects
    behind the numbers (a `PatchResult` per site, ...), and `passed` (False where the analysis
    is a check that failed). `result["key"]` reads the report."""

    name: str
    report: dict = field(default_factory=dict)
    files: list[Path] = field(default_factory=list)
    results: dict[str, Any] = field(default_factory=dict)
    passed: bool = True

    def __getitem__(self, key: str) -> Any:
        return self.report[key]

    @property
    def rc(self) -> int:
        """The command's exit status: 0 when passed."""
        return 0 if self.passed else 1


class Outputs:
    """Where an analysis writes: nothing when `folder` is None (a Python call that wants only the
    numbers), else JSON and figures under it; every written path is recorded in `files`."""

    def __init__(self, folder: Optional[Union[str, Path]]) -> None:
        self.folder = None if folder is None else Path(folder)
        self.files: list[Path] = []

    def json(self, name: str, data: Any) -> Optional[Path]:
        """Write `data` as FOLDER/name (None, and nothing written, without a folder)."""
        if self.folder is None:
            return None
        path = write_json(self.folder / name, data)
        self.files.append(path)
        return path

    def result(self, name: str, result: Any) -> Optional[Path]:
        """`result.save_json(FOLDER/name)` (a library result's own JSON; nothing without a folder)."""
        if self.folder is None:
            return None
        path = Path(result.save_json(self.folder / name))
        self.files.append(path)
        return path

    def view(self, name: str, viewable: Any) -> Optional[Path]:
        """The interactive view of a result (anything with `to_view()`, or a `View`) as FOLDER/name.html:
        one self-contained page beside the PNG (nothing without a folder)."""
        if self.folder is None:
            return None
        view = viewable.to_view() if hasattr(viewable, "to_view") else viewable
        path = view.save_html(self.folder / f"{name}.html")
        self.files.append(path)
        return path

    def figure(self, fig: "Figure", name: str) -> list[Path]:
        """Save `fig` as FOLDER/name.png and .svg (nothing without a folder)."""
        if self.folder is None:
            return []
        from interp import plot

        paths = plot.save(fig, self.folder / name)
        self.files += paths
        return paths


def as_model(model: ModelArg, dtype: Optional[str] = None) -> "Transformer":
    """A model as it is, or `models.load(model, dtype=dtype)` in eval mode for a name."""
    if isinstance(model, (str, Path)):
        from models import load

        return load(str(model), dtype=dtype).eval()
    if dtype is not None:
        import torch

        have = next(model.parameters()).dtype
        if have != getattr(torch, dtype):
            raise ValueError(f"dtype={dtype!r} given with a model of dtype {have}: convert the model yourself "
                             "(model.double()) or leave dtype out")
    return model


def add_model_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="factworld", help="'factworld' (default), a model directory, or a cached HF id")
    p.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    add_quiet_argument(p)


def add_quiet_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def add_pair_arguments(p: argparse.ArgumentParser) -> None:
    """A clean prompt, a corrupted prompt with the same number of tokens, and the two answers."""
    p.add_argument("--clean", default=CLEAN)
    p.add_argument("--corrupted", default=CORRUPTED)
    p.add_argument("--answer", default=ANSWER)
    p.add_argument("--counterfactual", default=COUNTERFACTUAL)


def add_out_argument(p: argparse.ArgumentParser, default: Optional[str]) -> None:
    """--out DIR (default `default`; None: required)."""
    if default is None:
        p.add_argument("--out", type=Path, required=True, help="output directory (required)")
    else:
        p.add_argument("--out", type=Path, default=Path(default), help=f"output directory (default {default})")


def add_json_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", type=Path, default=None, help="also write the numbers to this JSON file")


def add_batch_size_argument(p: argparse.ArgumentParser, default: Optional[int], what: str = "prompts") -> None:
    p.add_argument("--batch-size", type=int, default=default, help=f"{what} per forward pass")


def load_model(args: argparse.Namespace) -> "Transformer":
    return as_model(args.model, args.dtype)


def main_for(module: str, doc: str, add_arguments: Callable[[argparse.ArgumentParser], None],
             run: Callable[[argparse.Namespace], int], argv: Optional[Sequence[str]] = None) -> int:
    """`python -m analyses.NAME`: parse the analysis' options and run it (the same as `interp NAME`)."""
    parser = argparse.ArgumentParser(prog=f"python -m {module}", description=doc.splitlines()[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


__all__ = ["CLEAN", "CORRUPTED", "ANSWER", "COUNTERFACTUAL", "ModelArg", "AnalysisResult", "Outputs", "as_model",
           "add_model_arguments", "add_quiet_argument", "add_pair_arguments", "add_out_argument",
           "add_json_argument", "add_batch_size_argument", "load_model", "main_for", "write_json"]
