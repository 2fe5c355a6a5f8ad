"""Matplotlib figures for interpretability results, saved as PNG and SVG.

Every function builds a `matplotlib.figure.Figure` directly (no pyplot, no
global state, no display needed) and returns it; `save` writes it to disk:

    fig = layer_head_heatmap(result.values, title="head_z patching", colorbar_label="logit diff")
    save(fig, "out/head_z")          # -> [out/head_z.png, out/head_z.svg]
    save(plot_result(result), "out/resid_pre")

Inputs may be torch tensors (any float dtype, on any device, requiring grad
or not) or numpy arrays. Rows of heatmaps are drawn top to bottom in the
given order (layer 0 at the top). Diverging colour maps are centred, with
symmetric limits, so that the colour of "no effect" is always white.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence, Union

import numpy as np
import torch
from matplotlib import rc_context
from matplotlib.axes import Axes
from matplotlib.colors import Colormap
from matplotlib.figure import Figure

from interp.labels import AXIS_TAGS, display_token, position_labels, tagged

ArrayLike = Union[torch.Tensor, np.ndarray, Sequence[float]]

MAX_TICKS = 40            # more labels than this on one axis are thinned out
MAX_HEATMAP_AXIS = 400    # longer axes are shown as a top-k bar chart instead
POSITIVE_COLOR = "#2166ac"  # the blue end of RdBu (high values)
NEGATIVE_COLOR = "#b2182b"  # the red end of RdBu (low values)
_IMAGE_SUFFIXES = {"png", "svg", "pdf", "jpg", "jpeg", "eps", "ps", "tif", "tiff", "webp"}


# --------------------------------------------------------------------------- inputs

def _to_numpy(values: ArrayLike) -> np.ndarray:
    """A float64 numpy copy of a tensor (detached, on cpu) or array-like."""
    if isinstance(values, torch.Tensor):
        if values.is_complex():
            raise ValueError("complex values cannot be plotted")
        return values.detach().to("cpu", torch.float64).numpy()
    return np.asarray(values, dtype=np.float64)


def _as_2d(values: ArrayLike, what: str = "values") -> np.ndarray:
    arr = _to_numpy(values)
    if arr.ndim != 2:
        raise ValueError(f"{what} must be 2-D, got shape {tuple(arr.shape)}")
    return arr


def _check_labels(labels: Optional[Sequence[Any]], n: int, what: str) -> list[str]:
    """`labels` as strings, checked to have one entry per index; None -> "0".."n-1"."""
    if labels is None:
        return [str(i) for i in range(n)]
    labels = [str(label) for label in labels]
    if len(labels) != n:
        raise ValueError(f"{what}: expected {n} labels (the data's length along that axis), got {len(labels)}")
    return labels


# --------------------------------------------------------------------------- layout helpers

def _tick_positions(n: int, max_ticks: int = MAX_TICKS) -> list[int]:
    """All indices for n <= max_ticks, otherwise every ceil(n / max_ticks)-th one."""
    step = max(1, math.ceil(n / max_ticks))
    return list(range(0, n, step))


def _longest(labels: Sequence[str]) -> int:
    return max((len(label) for label in labels), default=0)


def _heatmap_figsize(n_rows: int, n_cols: int, row_labels: Sequence[str],
                     col_labels: Sequence[str]) -> tuple[float, float]:
    """Width and height in inches: a cell grows with the grid, within 4..22 x 3..16."""
    shown_rows, shown_cols = min(n_rows, MAX_TICKS), min(n_cols, MAX_TICKS)
    width = 2.5 + 0.38 * shown_cols + 0.07 * _longest(row_labels)
    height = 1.6 + 0.3 * shown_rows + 0.07 * _longest(col_labels)
    return float(np.clip(width, 4.0, 22.0)), float(np.clip(height, 3.0, 16.0))


def _new_axes(figsize: tuple[float, float]) -> tuple[Figure, Axes]:
    fig = Figure(figsize=figsize, layout="constrained")
    return fig, fig.add_subplot()


def _root_figure(ax: Axes) -> Figure:
    """The top-level figure of `ax` (not a SubFigure)."""
    fig = ax.figure
    while getattr(fig, "figure", fig) is not fig and fig.figure is not None:
        fig = fig.figure
    return fig


def _symmetric_limits(arr: np.ndarray, center: float) -> tuple[float, float]:
    """(center - r, center + r) with r = max |arr - center|; r = 1 when that is 0 or undefined."""
    finite = arr[np.isfinite(arr)]
    radius = float(np.max(np.abs(finite - center))) if finite.size else 0.0
    if not radius > 0.0:
        radius = 1.0
    return center - radius, center + radius


def _colormap(cmap: Union[str, Colormap]) -> Colormap:
    """`cmap` with NaN cells drawn light grey."""
    import matplotlib
    base = matplotlib.colormaps[cmap] if isinstance(cmap, str) else cmap
    return base.with_extremes(bad="0.85")


def _label_axis_ticks(ax: Axes, row_labels: Sequence[str], col_labels: Sequence[str],
                      rotate_cols: Optional[bool] = None) -> None:
    """Tick labels on an image's axes, thinned above MAX_TICKS; long column labels rotated."""
    rows, cols = _tick_positions(len(row_labels)), _tick_positions(len(col_labels))
    if rotate_cols is None:
        rotate_cols = _longest(col_labels) > 3
    ax.set_yticks(rows, [row_labels[i] for i in rows])
    ax.set_xticks(cols, [col_labels[i] for i in cols], rotation=90 if rotate_cols else 0)


# --------------------------------------------------------------------------- heatmaps

def heatmap(values: ArrayLike, *, row_labels: Optional[Sequence[str]] = None,
            col_labels: Optional[Sequence[str]] = None, title: str = "", xlabel: str = "", ylabel: str = "",
            colorbar_label: str = "", center: float = 0.0, cmap: Union[str, Colormap] = "RdBu",
            ax: Optional[Axes] = None, rotate_col_labels: Optional[bool] = None) -> Figure:
    """A diverging heatmap of `values` [n_rows, n_cols], centred at `center`.

    Colour limits are center +- max|values - center| (+-1 when all equal
    `center`), so `center` is the middle of the colour map. Row 0 is drawn at
    the top. Every label is shown for up to 40 rows/columns, every k-th
    beyond. `row_labels` / `col_labels` default to the indices. With `ax`,
    draws into it (and its figure gets the colorbar) and returns its figure.
    """
    arr = _as_2d(values)
    n_rows, n_cols = arr.shape
    row_labels = _check_labels(row_labels, n_rows, "row_labels")
    col_labels = _check_labels(col_labels, n_cols, "col_labels")
    if ax is None:
        fig, ax = _new_axes(_heatmap_figsize(n_rows, n_cols, row_labels, col_labels))
    else:
        fig = _root_figure(ax)
    vmin, vmax = _symmetric_limits(arr, center)
    image = ax.imshow(arr, cmap=_colormap(cmap), vmin=vmin, vmax=vmax, aspect="auto",
                      interpolation="nearest", origin="upper")
    _label_axis_ticks(ax, row_labels, col_labels, rotate_col_labels)
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    colorbar = ax.figure.colorbar(image, ax=ax)
    colorbar.set_label(colorbar_label)
    return fig


def layer_head_heatmap(values: ArrayLike, *, title: str = "", colorbar_label: str = "",
                       layer_labels: Optional[Sequence[str]] = None, head_labels: Optional[Sequence[str]] = None,
                       center: float = 0.0, cmap: Union[str, Colormap] = "RdBu",
                       ax: Optional[Axes] = None) -> Figure:
    """Heatmap of `values` [n_layers, n_heads]: rows "L0".., columns "H0"..

    `layer_labels` / `head_labels` (e.g. the layer numbers of a subset of
    layers) replace the default indices; digit labels get their "L"/"H" prefix.
    """
    arr = _as_2d(values)
    rows = [tagged("layer", s) for s in _check_labels(layer_labels, arr.shape[0], "layer labels")]
    cols = [tagged("head", s) for s in _check_labels(head_labels, arr.shape[1], "head labels")]
    return heatmap(arr, row_labels=rows, col_labels=cols, title=title, xlabel="head", ylabel="layer",
                   colorbar_label=colorbar_label, center=center, cmap=cmap, ax=ax)


def layer_pos_heatmap(values: ArrayLike, *, tokens: Sequence[str], title: str = "", colorbar_label: str = "",
                      layer_labels: Optional[Sequence[str]] = None, center: float = 0.0,
                      cmap: Union[str, Colormap] = "RdBu", ax: Optional[Axes] = None) -> Figure:
    """Heatmap of `values` [n_layers, n_pos]; columns labelled "tok (i)", rotated."""
    arr = _as_2d(values)
    tokens = _check_labels(tokens, arr.shape[1], "tokens")
    rows = [tagged("layer", s) for s in _check_labels(layer_labels, arr.shape[0], "layer labels")]
    return heatmap(arr, row_labels=rows, col_labels=position_labels(tokens), title=title, xlabel="position",
                   ylabel="layer", colorbar_label=colorbar_label, center=center, cmap=cmap, ax=ax,
                   rotate_col_labels=True)


# --------------------------------------------------------------------------- bars

def _top_indices(arr: np.ndarray, k: int, by_abs: bool) -> np.ndarray:
    """Indices of the k largest entries of 1-D `arr` (by |value| if by_abs), largest first; NaN last."""
    key = np.abs(arr) if by_abs else arr.copy()
    key[np.isnan(key)] = -np.inf
    order = np.argsort(-key, kind="stable")
    return order[:max(0, min(k, arr.size))]


def _hbar(arr: np.ndarray, labels: Sequence[str], *, title: str, xlabel: str, ax: Optional[Axes]) -> Figure:
    """Horizontal bars of 1-D `arr` in the given order, first at the top, values at bar ends."""
    n = arr.size
    if ax is None:
        height = float(np.clip(0.9 + 0.28 * n, 2.5, 16.0))
        width = float(np.clip(5.0 + 0.07 * _longest(labels), 5.0, 14.0))
        fig, ax = _new_axes((width, height))
    else:
        fig = _root_figure(ax)
    colors = [POSITIVE_COLOR if v >= 0 else NEGATIVE_COLOR for v in arr]
    bars = ax.barh(np.arange(n), arr, color=colors)
    ax.bar_label(bars, labels=[f"{v:.3g}" for v in arr], padding=3, fontsize="small")
    ax.set_yticks(np.arange(n), list(labels))
    ax.set_ylim(n - 0.5, -0.5)
    ax.axvline(0.0, color="0.3", linewidth=0.8)
    ax.margins(x=0.18)
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    return fig


def top_k_bar(values: ArrayLike, labels: Sequence[str], *, k: int = 20, title: str = "", by_abs: bool = True,
              xlabel: str = "", ax: Optional[Axes] = None) -> Figure:
    """Horizontal bar chart of the k largest entries of 1-D `values` [n], largest at the top.

    Ranked by |value| when `by_abs`, else by signed value (ties keep input
    order). Positive bars blue, negative red, each value written at its bar's
    end. `labels` [n] names each entry.
    """
    arr = _to_numpy(values)
    if arr.ndim != 1:
        raise ValueError(f"top_k_bar needs 1-D values, got shape {tuple(arr.shape)}")
    labels = _check_labels(labels, arr.size, "labels")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    idx = _top_indices(arr, k, by_abs)
    return _hbar(arr[idx], [labels[i] for i in idx], title=title, xlabel=xlabel, ax=ax)


# --------------------------------------------------------------------------- attention

def _pattern_list(patterns: Union[ArrayLike, Sequence[ArrayLike]]) -> list[np.ndarray]:
    """[n, q, k] tensor, one [q, k] tensor, or a list of [q, k] tensors -> list of 2-D arrays."""
    if isinstance(patterns, (torch.Tensor, np.ndarray)):
        arr = _to_numpy(patterns)
        if arr.ndim == 2:
            return [arr]
        if arr.ndim != 3:
            raise ValueError(f"patterns must be [n_heads, q_pos, k_pos], got shape {tuple(arr.shape)}")
        return list(arr)
    return [_as_2d(p, "each attention pattern") for p in patterns]


def attention_patterns(patterns: Union[ArrayLike, Sequence[ArrayLike]], *, tokens: Sequence[str],
                       titles: Optional[Sequence[str]] = None, ncols: int = 4, cmap: str = "Blues") -> Figure:
    """One panel per head: query positions as rows, key positions as columns, colours 0..1.

    `patterns` is [n_heads, q_pos, k_pos] (or a list of [q_pos, k_pos]);
    `tokens` [k_pos] label the keys; queries get the last q_pos tokens (all of
    them in the usual q_pos == k_pos case). `titles` [n_heads], e.g. "L1H3",
    default "head 0"...
    """
    panels = _pattern_list(patterns)
    if not panels:
        raise ValueError("no attention patterns to plot")
    titles = _check_labels(titles, len(panels), "titles") if titles is not None else \
        [f"head {i}" for i in range(len(panels))]
    tokens = [display_token(str(t)) for t in tokens]
    for p in panels:
        _check_labels(tokens, p.shape[1], "tokens (one per key position)")
        if p.shape[0] > p.shape[1]:
            raise ValueError(f"pattern has more query ({p.shape[0]}) than key ({p.shape[1]}) positions")
    ncols = max(1, min(ncols, len(panels)))
    nrows = math.ceil(len(panels) / ncols)
    side = float(np.clip(1.4 + 0.22 * min(len(tokens), MAX_TICKS) + 0.06 * _longest(tokens), 2.5, 9.0))
    fig = Figure(figsize=(min(ncols * side + 1.0, 30.0), min(nrows * side, 30.0)), layout="constrained")
    axes = [fig.add_subplot(nrows, ncols, i + 1) for i in range(len(panels))]
    for ax, pattern, title in zip(axes, panels, titles):
        image = ax.imshow(pattern, cmap=cmap, vmin=0.0, vmax=1.0, aspect="equal", interpolation="nearest")
        labels = position_labels(tokens)
        _label_axis_ticks(ax, labels[len(labels) - pattern.shape[0]:], labels, rotate_cols=True)
        ax.set_title(title)
        ax.set_xlabel("key")
        ax.set_ylabel("query")
    fig.colorbar(image, ax=axes, label="attention")
    return fig


# --------------------------------------------------------------------------- labelled results

def _result_labels(result: Any, axes: tuple[str, ...], shape: tuple[int, ...],
                   tokens: Optional[Sequence[str]]) -> dict[str, list[str]]:
    """Per-axis labels of a result (default: indices), checked against its shape; `tokens` override "pos"."""
    given: Mapping[str, Sequence[str]] = getattr(result, "labels", None) or {}
    labels = {axis: _check_labels(given.get(axis), n, f"labels[{axis!r}]") for axis, n in zip(axes, shape)}
    if tokens is not None and "pos" in labels:
        labels["pos"] = _check_labels(tokens, shape[axes.index("pos")], "tokens")
    return labels


def _display_labels(axis: str, labels: Sequence[str]) -> list[str]:
    """Tick labels for one axis of a result: "tok (i)" for "pos", "L3"/"H2"/"N7" for numbered axes."""
    if axis == "pos":
        return position_labels(labels)
    return [tagged(axis, label) if axis in AXIS_TAGS else label for label in labels]


def _flat_label(axes: tuple[str, ...], labels: Mapping[str, Sequence[str]], index: tuple[int, ...]) -> str:
    """One entry's name from its per-axis labels: "L1N42", "L1H3@5 'Jordan'"."""
    name, pos = "", ""
    for axis, i in zip(axes, index):
        label = labels[axis][i]
        if axis == "pos":
            pos = f"@{i}" if label == str(i) else f"@{i} '{display_token(label)}'"
        elif not name or axis in AXIS_TAGS:
            name += tagged(axis, label)
        else:
            name += f" {tagged(axis, label)}"
    return name + pos


def _flat_top_k_bar(arr: np.ndarray, axes: tuple[str, ...], labels: Mapping[str, Sequence[str]], *,
                    title: str, metric: str, k: int = 20) -> Figure:
    """top_k_bar over all entries of `arr`, naming only the k shown (fast for millions of entries)."""
    idx = _top_indices(arr.ravel(), k, by_abs=True)
    names = [_flat_label(axes, labels, np.unravel_index(i, arr.shape)) for i in idx]
    return _hbar(arr.ravel()[idx], names, title=title, xlabel=metric, ax=None)


def plot_result(result: Any, *, title: Optional[str] = None, tokens: Optional[Sequence[str]] = None) -> Figure:
    """The natural figure for a labelled result (e.g. `PatchResult`).

    Needs `result.values` (tensor/array), `result.axes` (axis names) and
    `result.labels` (axis name -> list of str, missing axes default to
    indices); uses `result.title` and `result.metric_name` if present.
    `tokens` overrides `labels["pos"]`. Dispatch on `axes`:
    ("layer", "head") -> layer_head_heatmap; ("layer", "pos") -> layer_pos_heatmap;
    ("layer", "pos", "head") -> heatmap with one row per "L{l}H{h}";
    any "neuron" axis or an axis longer than 400 -> top-20 bar over all entries;
    other 1-D -> bars in order; other 2-D -> heatmap. Else ValueError.
    """
    arr = _to_numpy(result.values)
    axes = tuple(result.axes)
    if len(axes) != arr.ndim:
        raise ValueError(f"result has axes {axes} but values of shape {tuple(arr.shape)}")
    labels = _result_labels(result, axes, arr.shape, tokens)
    title = title if title is not None else (getattr(result, "title", None) or "")
    metric = getattr(result, "metric_name", None) or ""
    if arr.ndim >= 1 and ("neuron" in axes or max(arr.shape) > MAX_HEATMAP_AXIS):
        return _flat_top_k_bar(arr, axes, labels, title=title, metric=metric)
    if axes == ("layer", "head"):
        return layer_head_heatmap(arr, title=title, colorbar_label=metric, layer_labels=labels["layer"],
                                  head_labels=labels["head"])
    if axes == ("layer", "pos"):
        return layer_pos_heatmap(arr, tokens=labels["pos"], title=title, colorbar_label=metric,
                                 layer_labels=labels["layer"])
    if axes == ("layer", "pos", "head"):
        return _layer_head_by_pos(arr, labels, title=title, metric=metric)
    if arr.ndim == 1:
        return _hbar(arr, _display_labels(axes[0], labels[axes[0]]), title=title, xlabel=metric, ax=None)
    if arr.ndim == 2:
        return heatmap(arr, row_labels=_display_labels(axes[0], labels[axes[0]]),
                       col_labels=_display_labels(axes[1], labels[axes[1]]), title=title,
                       xlabel=axes[1], ylabel=axes[0], colorbar_label=metric)
    raise ValueError(f"plot_result cannot plot a result with axes {axes} (shape {tuple(arr.shape)}); "
                     "supported: ('layer','head'), ('layer','pos'), ('layer','pos','head'), any axes with "
                     "'neuron', or any other 1-D / 2-D result")


def _layer_head_by_pos(arr: np.ndarray, labels: Mapping[str, Sequence[str]], *, title: str,
                       metric: str) -> Figure:
    """[n_layers, n_pos, n_heads] -> heatmap with rows L0H0, L0H1, ..., columns positions."""
    n_layers, n_pos, n_heads = arr.shape
    rows = [tagged("layer", labels["layer"][l]) + tagged("head", labels["head"][h])
            for l in range(n_layers) for h in range(n_heads)]
    grid = arr.transpose(0, 2, 1).reshape(n_layers * n_heads, n_pos)
    return heatmap(grid, row_labels=rows, col_labels=position_labels(labels["pos"]), title=title,
                   xlabel="position", ylabel="layer, head", colorbar_label=metric, rotate_col_labels=True)


# --------------------------------------------------------------------------- saving

def _close(fig: Figure) -> None:
    """Release `fig` from pyplot's registry if pyplot made it (figures built here are not registered)."""
    pyplot = sys.modules.get("matplotlib.pyplot")
    if pyplot is not None:
        pyplot.close(fig)


def save(fig: Figure, path: Union[str, Path], formats: Sequence[str] = ("png", "svg"), dpi: int = 150) -> list[Path]:
    """Write `fig` as `path`.{format} for each format, creating parent directories; closes `fig`.

    An image suffix on `path` ("out/x.png") is dropped, any other dot in the
    name is kept ("out/L1.5" -> "out/L1.5.png"). Returns the written paths.
    """
    formats = [f.lower().lstrip(".") for f in formats]
    if not formats or not all(formats):
        raise ValueError(f"need at least one non-empty format, got {formats}")
    path = Path(path)
    if path.suffix.lower().lstrip(".") in _IMAGE_SUFFIXES | set(formats):
        path = path.with_suffix("")
    path.parent.mkdir(parents=True, exist_ok=True)
    written = []
    try:
        for fmt in formats:
            out = path.with_name(f"{path.name}.{fmt}")
            metadata = {"Date": None} if fmt == "svg" else None  # reproducible SVG files: no date,
            with rc_context({"svg.hashsalt": "interp"}):           # and the same element ids every run
                fig.savefig(out, format=fmt, dpi=dpi, metadata=metadata, bbox_inches="tight")
            written.append(out)
    finally:
        _close(fig)
    return written
