"""An edit of a model's weights: deltas per parameter, applied and reverted exactly.

    with edit.applied(model):          # the weights are restored bit-identically on exit, also on errors
        model("Michael Jordan plays the sport of")
    edit.apply(model); edit.revert(model)
    edit.save(model, "edited/")        # a new directory with the edited model; the model itself is untouched

`apply` keeps a copy of each original tensor and `revert` copies it back, so reverting does
not depend on floating-point subtraction undoing an addition.
"""

from __future__ import annotations

import contextlib
import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Union

import torch

from models.transformer import Transformer


@dataclass
class Edit:
    method: str  # "rome", "memit" or "ft"
    deltas: dict[str, torch.Tensor]  # parameter name -> the change added to it
    info: dict[str, Any] = field(default_factory=dict)  # what was edited, where and how (JSON-ready)
    keys: dict[int, torch.Tensor] = field(default_factory=dict, repr=False)  # layer -> keys K [n, d_mlp] fitted at
    _originals: dict[int, dict[str, torch.Tensor]] = field(default_factory=dict, repr=False)

    def _check(self, model: Transformer) -> dict[str, torch.nn.Parameter]:
        params = dict(model.named_parameters())
        for name, delta in self.deltas.items():
            if name not in params:
                raise KeyError(f"the edit changes {name!r}, which this model does not have")
            if tuple(params[name].shape) != tuple(delta.shape):
                raise ValueError(f"the edit's delta for {name} has shape {list(delta.shape)}, the model's "
                                 f"parameter {list(params[name].shape)}")
        return params

    def is_applied(self, model: Transformer) -> bool:
        return id(model) in self._originals

    def apply(self, model: Transformer) -> None:
        """Add the deltas to the model's weights (in place); refuses to apply twice."""
        if self.is_applied(model):
            raise RuntimeError("this edit is already applied to this model; revert it first")
        params = self._check(model)
        originals = {name: params[name].detach().clone() for name in self.deltas}
        with torch.no_grad():
            for name, delta in self.deltas.items():
                params[name].add_(delta.to(params[name].dtype).to(params[name].device))
        self._originals[id(model)] = originals

    def revert(self, model: Transformer) -> None:
        """Put back the exact weights the model had before `apply`."""
        if not self.is_applied(model):
            raise RuntimeError("this edit is not applied to this model")
        params = dict(model.named_parameters())
        with torch.no_grad():
            for name, original in self._originals.pop(id(model)).items():
                params[name].copy_(original)

    @contextlib.contextmanager
    def applied(self, model: Transformer) -> Iterator[Transformer]:
        self.apply(model)
        try:
            yield model
        finally:
            self.revert(model)

    def save(self, model: Transformer, path: Union[str, Path]) -> Path:
        """Write the edited model (a copy; `model` is not changed) to a new or empty directory,
        never the shipped fact-world checkpoint."""
        from models.loading import check_not_shipped, save

        path = Path(path)
        check_not_shipped(path)
        if path.exists() and any(path.iterdir()):
            raise FileExistsError(f"{path} exists and is not empty: give a new directory for the edited model")
        edited = copy.deepcopy(model)
        self.apply(edited)
        self._originals.pop(id(edited), None)
        return save(edited, path)

    def norm(self) -> float:
        """Frobenius norm of all deltas together."""
        return float(sum(float(d.double().pow(2).sum()) for d in self.deltas.values()) ** 0.5)


__all__ = ["Edit"]
