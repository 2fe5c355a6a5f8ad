"""Where the toolkit creates tensors, checked on a CPU-only machine.

On a GPU, a tensor made by `torch.zeros(n)` (no `device=`) lands on the CPU and breaks, or slows,
the first operation that mixes it with the model's tensors; on the CPU it goes unnoticed. The
`placement()` context manager records every call of a tensor factory (torch.tensor, zeros, ones,
full, empty, arange, eye, linspace, randn, rand, randint, randperm, as_tensor, ...) made from the
toolkit's own code (interp/, probes/, models/, analyses/) while it is open, and flags:
  - "device": a factory called without `device=` (so on a GPU model it would make a CPU tensor;
    a tensor meant for the CPU says `device="cpu"`). `as_tensor` / `tensor` of a tensor keep that
    tensor's device and are not flagged;
  - "dtype": with `dtype=model_dtype` given, a floating-point tensor made without `dtype=` that is
    not of the model's dtype (run on a float64 model: float32 defaults show up).
Each finding names the file, line, function and factory, so a failing test says what to fix.
"""

from __future__ import annotations

import sys
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Optional

import torch
from torch.overrides import TorchFunctionMode

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = tuple(str(ROOT / p) + "/" for p in ("interp", "probes", "models", "analyses"))
FACTORIES = {torch.tensor, torch.as_tensor, torch.zeros, torch.ones, torch.full, torch.empty, torch.arange, torch.eye,
             torch.linspace, torch.logspace, torch.randn, torch.rand, torch.randint, torch.randperm,
             torch.scalar_tensor, torch.tril_indices, torch.triu_indices}
_TORCH = str(Path(torch.__file__).parent) + "/"


@dataclass(frozen=True)
class Finding:
    kind: str  # "device" | "dtype"
    file: str  # relative to the repository
    line: int
    function: str
    factory: str
    detail: str = ""

    def __str__(self) -> str:
        return f"{self.file}:{self.line} in {self.function}: torch.{self.factory} {self.kind} {self.detail}".rstrip()


@dataclass
class Recorder(TorchFunctionMode):
    dtype: Optional[torch.dtype] = None
    findings: list[Finding] = field(default_factory=list)
    calls: int = 0

    def __post_init__(self) -> None:
        super().__init__()

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        if func in FACTORIES:
            site = _caller()
            if site is not None:
                self.calls += 1
                self._check(func, args, kwargs, out, site)
        return out

    def _check(self, func, args, kwargs, out, site) -> None:
        file, line, function = site
        name = getattr(func, "__name__", str(func))
        from_tensor = func in (torch.tensor, torch.as_tensor) and args and isinstance(args[0], torch.Tensor)
        if "device" not in kwargs and not from_tensor:
            self.findings.append(Finding("device", file, line, function, name, "(no device=)"))
        if (self.dtype is not None and isinstance(out, torch.Tensor) and out.is_floating_point()
                and "dtype" not in kwargs and not from_tensor and out.dtype != self.dtype):
            self.findings.append(Finding("dtype", file, line, function, name, f"(made {out.dtype}, model {self.dtype})"))


def _caller() -> Optional[tuple[str, int, str]]:
    """(file relative to the repository, line, function) of the toolkit frame that called the factory;
    None when the call came from elsewhere (torch itself, a test, a library)."""
    frame = sys._getframe(2)
    while frame is not None and (frame.f_code.co_filename.startswith(_TORCH) or frame.f_code.co_filename == __file__):
        frame = frame.f_back
    if frame is None:
        return None
    path = frame.f_code.co_filename
    if not path.startswith(PACKAGES):
        return None
    return str(Path(path).relative_to(ROOT)), frame.f_lineno, frame.f_code.co_name


@contextmanager
def placement(dtype: Optional[torch.dtype] = None) -> Iterator[Recorder]:
    """Record the toolkit's tensor factories inside the block (see the module docstring)."""
    recorder = Recorder(dtype)
    with recorder:
        yield recorder


def report(findings: list[Finding]) -> str:
    """One line per distinct finding, sorted."""
    return "\n".join(sorted({str(f) for f in findings}))
