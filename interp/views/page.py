"""The one way a result becomes HTML: a `View` (a kind, a title, JSON data) rendered by the
package's own script, inline in Jupyter or as one self-contained file.

    view = result.to_view()          # every viewable result has to_view()
    view.save_html("out/sweep.html") # one file: data, script and style inlined
    result.show()                    # inline in Jupyter (via _repr_html_), else opens the file

A view's `data` is plain JSON; tensors go in through `encode_array` (float32, base64: a
head x position x neuron sweep of hundreds of thousands of cells stays a few MB and
decodes in milliseconds). The page makes no network request of any kind: every script and
style comes from `interp/views/static/` and is inlined (checked in the browser tests).
"""

from __future__ import annotations

import base64
import html
import json
import math
import tempfile
import uuid
import webbrowser
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence, Union

import numpy as np
import torch

STATIC = Path(__file__).parent / "static"
CORE_SCRIPT = "core.js"  # defines window.InterpViews; every other script registers kinds on it
STYLE = "views.css"


def static_scripts() -> list[Path]:
    """The package's view scripts, core first, then every kind's file in name order."""
    others = sorted(p for p in STATIC.glob("*.js") if p.name != CORE_SCRIPT)
    return [STATIC / CORE_SCRIPT] + others


def kinds() -> list[str]:
    """The view kinds the shipped scripts render (a script's name is its kind)."""
    return [p.stem for p in static_scripts()[1:]]


def assets() -> tuple[str, str]:
    """(all view scripts concatenated, the style sheet): what every page inlines."""
    script = "\n;\n".join(p.read_text() for p in static_scripts())
    return script, (STATIC / STYLE).read_text()


def encode_array(values: Union[torch.Tensor, np.ndarray, Sequence[float]]) -> dict[str, Any]:
    """{"dtype": "f32", "shape": [...], "b64": ...}: a float array for a view (NaN kept), decoded
    in the page by `InterpViews.array`."""
    if isinstance(values, torch.Tensor):
        arr = values.detach().to("cpu", torch.float32).numpy()
    else:
        arr = np.asarray(values, dtype=np.float32)
    arr = np.ascontiguousarray(arr, dtype="<f4")
    return {"dtype": "f32", "shape": list(arr.shape), "b64": base64.b64encode(arr.tobytes()).decode("ascii")}


def json_ready(x: Any, *, arrays: str = "encoded") -> Any:
    """Plain JSON, recursively: NaN / inf -> None, tuples -> lists, numpy scalars -> numbers, and
    tensors / arrays -> `encode_array` (arrays="encoded", what views carry) or exact nested
    lists (arrays="lists", for numbers a reader compares)."""
    if isinstance(x, (torch.Tensor, np.ndarray)):
        if arrays == "encoded":
            return encode_array(x)
        return json_ready(x.tolist(), arrays=arrays)
    if isinstance(x, np.bool_):
        return bool(x)
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if isinstance(x, (np.floating, np.integer)):
        return json_ready(x.item(), arrays=arrays)
    if isinstance(x, dict):
        return {str(k): json_ready(v, arrays=arrays) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [json_ready(v, arrays=arrays) for v in x]
    return x


def _script_json(data: Any) -> str:
    """JSON safe inside <script type="application/json">: every <, > and & written as a \\u escape
    (JSON.parse reads them back), so no text in the data can close the element or open a comment."""
    text = json.dumps(data, separators=(",", ":"), allow_nan=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


@dataclass
class View:
    """One renderable view: `kind` names the script that draws it (see `kinds()`), `data` its
    JSON (tensors allowed, see `encode_array`), `title` a heading."""

    kind: str
    data: dict[str, Any]
    title: str = ""
    height: Optional[int] = None  # a fixed height in pixels for the inline view (None: as tall as it draws)
    notes: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.kind not in kinds():
            raise ValueError(f"unknown view kind {self.kind!r}; the package renders {kinds()}")

    def payload(self) -> dict[str, Any]:
        """{"kind", "title", "notes", "data"} as plain JSON (what the explorer app sends, too)."""
        return {"kind": self.kind, "title": self.title, "notes": list(self.notes), "data": json_ready(self.data)}

    def fragment(self) -> str:
        """A <div> with its data, style and scripts: works inline in a notebook, and repeated on
        one page (each fragment renders only its own element)."""
        script, style = assets()
        key = "iv-" + uuid.uuid4().hex[:12]
        size = f' style="min-height:{int(self.height)}px"' if self.height else ""
        return (f'<div class="interp-view" id="{key}"{size}></div>\n'
                f'<style>{style}</style>\n'
                f'<script type="application/json" id="{key}-data">{_script_json(self.payload())}</script>\n'
                f"<script>{script}\n;InterpViews.mount(document.getElementById({json.dumps(key)}), "
                f"JSON.parse(document.getElementById({json.dumps(key + '-data')}).textContent));</script>")

    def html(self) -> str:
        """A whole, self-contained HTML document showing the view."""
        title = html.escape(self.title or self.kind)
        return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\n"
                "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; "
                "script-src 'unsafe-inline'; style-src 'unsafe-inline'; img-src data:\">\n"
                f"<title>{title}</title></head>\n<body class=\"interp-page\">\n{self.fragment()}\n</body></html>\n")

    def _repr_html_(self) -> str:
        return self.fragment()

    def save_html(self, path: Union[str, Path]) -> Path:
        """Write the self-contained page to `path` (parent folders made); returns the path."""
        path = Path(path)
        if path.suffix.lower() not in (".html", ".htm"):
            raise ValueError(f"save_html writes an .html file, got {str(path)!r}")
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".part")
        tmp.write_text(self.html(), encoding="utf-8")
        tmp.replace(path)
        return path

    def show(self) -> Optional[Path]:
        """Inline in Jupyter / IPython; elsewhere write a temporary page, open it in the web browser
        and return its path."""
        return show(self)


def _in_notebook() -> bool:
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and shell.__class__.__name__ != "TerminalInteractiveShell"


def show(view: "View") -> Optional[Path]:
    if _in_notebook():
        from IPython.display import display

        display(view)
        return None
    path = Path(tempfile.mkdtemp(prefix="interp-view-")) / f"{view.kind}.html"
    view.save_html(path)
    webbrowser.open(path.as_uri())
    return path


class Viewable:
    """Mixin for results with a view: subclasses define `to_view() -> View`; this gives them
    `show()`, `save_html(path)` and `_repr_html_` (inline in Jupyter)."""

    def to_view(self) -> View:  # pragma: no cover - every subclass defines it
        raise NotImplementedError(f"{type(self).__name__} has no view")

    def show(self) -> Optional[Path]:
        """The result's interactive view: inline in a notebook, else in the web browser."""
        return self.to_view().show()

    def save_html(self, path: Union[str, Path]) -> Path:
        """The result's interactive view as one self-contained HTML file (no network request when opened)."""
        return self.to_view().save_html(path)

    def _repr_html_(self) -> str:
        return self.to_view().fragment()


__all__ = ["View", "Viewable", "assets", "encode_array", "json_ready", "kinds", "show", "static_scripts"]
