"""Results as view payloads ({kind, title, notes, data}: `interp.views.View.payload()`), which
the page draws with `InterpViews.mount(el, payload)`.

A result that has `to_view()` is shown with its own view; one that has none yet falls back to
a "table" view of the same numbers (`labelled_table`), so the app works with whatever views
the package ships.
"""

from __future__ import annotations

import math
from typing import Any, Optional, Sequence

import torch

from interp.views import View

MAX_TABLE_ROWS = 2000


def table(title: str, columns: Sequence[str], rows: Sequence[Sequence[Any]], *, notes: Sequence[str] = (),
          numeric: Optional[Sequence[bool]] = None, highlight: Sequence[int] = ()) -> dict:
    """A "table" payload (rows of plain values; NaN shown as n/a)."""
    data: dict[str, Any] = {"columns": list(columns), "rows": [[plain(v) for v in r] for r in rows]}
    if numeric is not None:
        data["numeric"] = list(numeric)
    if highlight:
        data["highlight"] = list(highlight)
    return View("table", data, title=title, notes=list(notes)).payload()


def plain(v: Any) -> Any:
    """JSON-ready scalars and containers: tensors -> lists, NaN / inf -> None, tuples -> lists."""
    if isinstance(v, torch.Tensor):
        return plain(v.tolist())
    if isinstance(v, float):
        return v if math.isfinite(v) else None
    if isinstance(v, dict):
        return {str(k): plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [plain(x) for x in v]
    if hasattr(v, "item") and callable(v.item):  # numpy scalars
        return plain(v.item())
    return v


def own_view(result: Any) -> Optional[dict]:
    """result.to_view().payload() where the result has a view of its own, else None."""
    to_view = getattr(result, "to_view", None)
    if to_view is None:
        return None
    try:
        view = to_view()
    except NotImplementedError:
        return None
    return view.payload() if isinstance(view, View) else None


def labelled_table(result: Any, title: Optional[str] = None) -> dict:
    """A labelled result (values, axes, labels) as a table: one row per entry, its labels then its value."""
    values = result.values.detach().double()
    axes = list(result.axes)
    flat = values.flatten()
    n = flat.numel()
    notes = []
    order = range(n)
    if n > MAX_TABLE_ROWS:
        order = flat.abs().nan_to_num(nan=-1.0).argsort(descending=True)[:MAX_TABLE_ROWS].tolist()
        notes.append(f"the {MAX_TABLE_ROWS} largest |values| of {n}")
    rows = []
    for i in order:
        idx = torch.unravel_index(torch.tensor(int(i)), values.shape)
        rows.append([result.labels[a][int(j)] for a, j in zip(axes, idx)] + [float(flat[int(i)])])
    name = getattr(result, "metric_name", "value")
    return table(title if title is not None else getattr(result, "title", ""), axes + [name], rows, notes=notes,
                 numeric=[False] * len(axes) + [True])


def result_view(result: Any, title: Optional[str] = None) -> dict:
    """The result's own view, else its table."""
    return own_view(result) or labelled_table(result, title)


def labelled_json(result: Any) -> dict:
    """A labelled result for the page: its view, and its exact values, axes and labels."""
    return {"views": [result_view(result)], "values": result.values.tolist(), "axes": list(result.axes),
            "labels": plain(result.labels), "title": getattr(result, "title", ""),
            "baseline": plain(getattr(result, "baseline", None)), "top": plain(result.top(10))}


__all__ = ["table", "plain", "own_view", "labelled_table", "result_view", "labelled_json", "MAX_TABLE_ROWS"]
