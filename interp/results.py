"""The one labelled-result base: every analysis returns a tensor with named, labelled axes.

A result has `values` (a tensor), `axes` (its axis names, e.g. ("layer", "pos",
"head")), `labels` (axis -> one label per entry), `title` and `metric_name`, and
`baseline`: the value that means "no effect" (the unpatched run's metric for a
patching sweep, the corrupted probability for a causal trace), or None when the
values are effects already (attributions). On top of that every result has the
same tools: `effect`, `top(k)`, `label_of`, `to_dict`, `save_json`, `plot` (a matplotlib
figure) and its interactive view (`interp.views.Viewable`): `to_view()`, `show()` (inline in
Jupyter, else in the web browser), `save_html(path)` (one self-contained, offline file) and
`_repr_html_` (heatmap or bars, chosen from the axes by `interp.views.results.result_view`).

Subclasses are dataclasses that hold their own fields and say what else goes
into their JSON (`_extra_dict`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional, Union

import torch

from interp.views.page import View, Viewable, json_ready


def write_json(path: Union[str, Path], data: Any) -> Path:
    """Write `data` as indented JSON (NaN and inf as null, tensors as lists), creating parent directories."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(json_ready(data, arrays="lists"), indent=1))
    return path


class LabelledResult(Viewable):
    """Base of every result type (see the module docstring). Subclasses provide the
    attributes values, axes, labels, title, metric_name and baseline (fields or
    properties) and may extend `_extra_dict`."""

    # Subclasses provide values, axes and labels, and may provide method, title, metric_name and
    # baseline (fields or properties); the defaults are read with getattr, not set here, so that
    # they never become dataclass defaults of a subclass.
    DEFAULTS = {"method": "result", "title": "", "metric_name": "value"}

    def _get(self, name: str) -> Any:
        return getattr(self, name, self.DEFAULTS[name])

    @property
    def baseline(self) -> Optional[float]:
        """The value meaning "no effect": the unpatched run's metric (`base_value`) for results that
        have one; None when the values are effects themselves."""
        return getattr(self, "base_value", None)

    @property
    def effect(self) -> torch.Tensor:
        """values - baseline (the values themselves when there is no baseline)."""
        return self.values if self.baseline is None else self.values - self.baseline

    def label_of(self, flat_index: int) -> str:
        """"L1H3 @ of (6)": the labels of one entry, position last."""
        idx = torch.unravel_index(torch.tensor(flat_index), self.values.shape)
        parts = {a: self.labels[a][int(i)] for a, i in zip(self.axes, idx)}
        pos = parts.pop("pos", None)
        return "".join(parts.values()) + (f" @ {pos}" if pos is not None else "")

    def top(self, k: int = 10, by_abs: bool = True) -> list[tuple[str, float]]:
        """The k entries with the largest effect (|effect| by default), as (label, value); NaN entries
        (e.g. a position category no fact has) come last."""
        eff = self.effect.flatten().double()
        key = (eff.abs() if by_abs else eff).nan_to_num(nan=float("-inf"))
        order = key.argsort(descending=True, stable=True)[:k]
        return [(self.label_of(int(i)), float(self.values.flatten()[i])) for i in order]

    def _extra_dict(self) -> dict[str, Any]:
        return {}

    def to_dict(self) -> dict[str, Any]:
        return {
            "method": self._get("method"), "title": self._get("title"), "metric": self._get("metric_name"),
            "baseline": self.baseline,
            "axes": list(self.axes), "labels": self.labels, **self._extra_dict(), "values": self.values.tolist(),
        }

    def save_json(self, path: Union[str, Path]) -> Path:
        return write_json(path, self.to_dict())

    def plot(self, **kwargs: Any):
        """A matplotlib Figure of the values (heatmap or bars, chosen from the axes)."""
        from interp.plot import plot_result

        return plot_result(self, **kwargs)

    def to_view(self, *, title: Optional[str] = None, tokens: Optional[list[str]] = None) -> View:
        """The interactive view (a heatmap with hover, normalised toggle and colour bar, or
        sorted bars with a top-k control; see `interp.views.results.result_view`)."""
        from interp.views.results import result_view

        return result_view(self, title=title, tokens=tokens)


__all__ = ["LabelledResult", "write_json"]
