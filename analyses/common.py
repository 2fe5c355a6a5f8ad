"""Options and helpers shared by the analyses: which model, which fact, where results go.

Every analysis is a Python function with keyword arguments that returns an `AnalysisResult`
(its numbers and the files it wrote); its command (`interp NAME`, `python -m analyses.NAME`)
is a thin wrapper: `add_arguments(parser)` declares the flags, `run(args)` calls the function.
The flags mean the same everywhere: --model / --dtype / --device (which model, in which
precision, where: `--device cuda` loads the weights onto the GPU and every method then works
there), --out (the output
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


class ModelName(str):
    """A model name (what `models.load` takes) that also says where to put the weights: what
    `--model` holds once `--device` is given, so every command's `as_model(args.model, ...)`
    loads onto that device without a `device=` argument of its own."""

    device: Optional[str] = None

    def __new__(cls, name: str, device: Optional[str] = None) -> "ModelName":
        out = super().__new__(cls, str(name))
        out.device = device
        return out


def check_device(device: str) -> str:
    """`device` if torch can place tensors there ('cpu', 'cuda', 'cuda:1', 'mps', ...), else a clear error."""
    import torch

    try:
        where = torch.device(device)
    except RuntimeError as e:
        raise ValueError(f"unknown device {device!r} ({e})") from None
    if where.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} asked for, but torch sees no CUDA GPU here")
    if where.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"device {device!r} asked for, but torch has no MPS backend here")
    return device


def as_model(model: ModelArg, dtype: Optional[str] = None, device: Optional[str] = None) -> "Transformer":
    """A model as it is, or `models.load(model, dtype=dtype)` in eval mode for a name, moved to
    `device` (or the device a `ModelName` carries). A given model is never moved or converted:
    a dtype or device other than its own is an error."""
    import torch

    if device is None and isinstance(model, ModelName):
        device = model.device
    if isinstance(model, (str, Path)):
        from models import load

        loaded = load(str(model), dtype=dtype).eval()
        return loaded.to(check_device(device)) if device is not None else loaded
    if dtype is not None:
        have = next(model.parameters()).dtype
        if have != getattr(torch, dtype):
            raise ValueError(f"dtype={dtype!r} given with a model of dtype {have}: convert the model yourself "
                             "(model.double()) or leave dtype out")
    if device is not None and next(model.parameters()).device != torch.device(device):
        raise ValueError(f"device={device!r} given with a model on {next(model.parameters()).device}: move the "
                         "model yourself (model.to(device)) or leave device out")
    return model


DTYPES = ("float32", "float64", "float16", "bfloat16")


class _ModelAction(argparse.Action):
    """--model NAME, carrying --device whichever comes first."""

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        setattr(namespace, self.dest, ModelName(values, getattr(namespace, "device", None)))


class _DeviceAction(argparse.Action):
    def __call__(self, parser, namespace, values, option_string=None) -> None:
        try:
            check_device(values)
        except ValueError as e:
            parser.error(str(e))
        setattr(namespace, self.dest, values)
        namespace.model = ModelName(getattr(namespace, "model", None) or "factworld", values)


def add_model_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="factworld", action=_ModelAction,
                   help="'factworld' (default), a model directory, or a cached HF id")
    p.add_argument("--dtype", choices=list(DTYPES), default="float32",
                   help="the weights' dtype (float16 / bfloat16: where the method allows; statistics are summed "
                        "in float32 or float64)")
    p.add_argument("--device", default=None, action=_DeviceAction,
                   help="where the model runs: cpu (default), cuda, cuda:1, mps, ...")
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


__all__ = ["CLEAN", "CORRUPTED", "ANSWER", "COUNTERFACTUAL", "ModelArg", "ModelName", "DTYPES", "check_device",
           "AnalysisResult", "Outputs", "as_model",
           "add_model_arguments", "add_quiet_argument", "add_pair_arguments", "add_out_argument",
           "add_json_argument", "add_batch_size_argument", "load_model", "main_for", "write_json"]
