"""Results as view payloads ({kind, title, notes, data}: `interp.views.View.payload()`), which
the page draws with `InterpViews.mount(el, payload)`.

Every result is shown with its own view (`to_view()`); what is not a result (the next tokens,
a localisation's sites) is a "table" view.
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

from interp.views import View
from interp.views.page import json_ready


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
    """JSON-ready values with tensors as exact nested lists (`interp.views.page.json_ready`)."""
    return json_ready(v, arrays="lists")


def result_view(result: Any) -> dict:
    """A result's own view as a payload: result.to_view().payload()."""
    return result.to_view().payload()


def labelled_json(result: Any) -> dict:
    """A labelled result for the page: its view, and its exact values, axes and labels."""
    return {"views": [result_view(result)], "values": result.values.tolist(), "axes": list(result.axes),
            "labels": plain(result.labels), "title": getattr(result, "title", ""),
            "baseline": plain(getattr(result, "baseline", None)), "top": plain(result.top(10))}


__all__ = ["table", "plain", "result_view", "labelled_json"]
