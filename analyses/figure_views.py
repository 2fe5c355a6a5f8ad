"""Interactive pages for the numbers behind an analysis' matplotlib figure.

    grid = Grid(counts, ("layer", "role"), {"layer": ["0", "1"], "role": roles}, title="sites")
    outputs.view("sport", grid)                         # heatmap (or bars for 1-D) via result_view
    outputs.view("methods", table_view("methods", ["relation", "share"], [["sport", 0.9]]))

`Grid` is the smallest labelled result (`interp.results.LabelledResult`): a tensor with named,
labelled axes and no baseline, so `to_view()` gives the package's heatmap or bars.
`table_view` is the "table" kind with the numbers as they are (floats, ints, strings, None).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Sequence

import torch

from interp.results import LabelledResult
from interp.views.page import View


@dataclass
class Grid(LabelledResult):
    """values [*axes] with labels[axis] (one string per entry); the values are the numbers
    themselves (no baseline)."""

    values: torch.Tensor
    axes: tuple[str, ...]
    labels: dict[str, list[str]] = field(default_factory=dict)
    title: str = ""
    metric_name: str = "value"
    method: str = "figure"

    def __post_init__(self) -> None:
        self.values = torch.as_tensor(self.values).detach().to(torch.float32)
        self.axes = tuple(self.axes)
        if self.values.dim() != len(self.axes):
            raise ValueError(f"Grid: values of shape {tuple(self.values.shape)} need {self.values.dim()} axis names, "
                             f"got {self.axes}")
        for axis, labels in self.labels.items():
            if axis not in self.axes:
                raise ValueError(f"Grid: labels for unknown axis {axis!r}; axes are {self.axes}")
            n = self.values.shape[self.axes.index(axis)]
            if len(labels) != n:
                raise ValueError(f"Grid: labels[{axis!r}] has {len(labels)} entries, the values have {n} along it")
        self.labels = {a: [str(s) for s in self.labels.get(a, range(n))] for a, n in zip(self.axes, self.values.shape)}


def _cell(v: Any) -> Any:
    """A table cell: numbers as floats or ints (NaN/inf as None), tensors as numbers, the rest as strings."""
    if v is None or isinstance(v, (bool, str)):
        return v if not isinstance(v, bool) else str(v)
    if isinstance(v, torch.Tensor):
        v = v.item()
    if isinstance(v, int):
        return v
    if isinstance(v, float):
        return v if math.isfinite(v) else None
    return str(v)


def table_view(title: str, columns: Sequence[str], rows: Sequence[Sequence[Any]], *,
               notes: Sequence[str] = ()) -> View:
    """A "table" View: `columns` [n_cols] names, `rows` [n_rows][n_cols] cells."""
    columns = [str(c) for c in columns]
    for i, row in enumerate(rows):
        if len(row) != len(columns):
            raise ValueError(f"table_view: row {i} has {len(row)} cells, the table has {len(columns)} columns")
    cells = [[_cell(v) for v in row] for row in rows]
    numeric = [bool(cells) and all(c is None or isinstance(c, (int, float)) for c in col) for col in zip(*cells)] \
        if cells else [False] * len(columns)
    return View("table", {"columns": columns, "rows": cells, "numeric": numeric}, title=title, notes=list(notes))


__all__ = ["Grid", "table_view"]
