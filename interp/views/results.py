"""Interactive views of labelled results (`interp.results.LabelledResult`): the browser
counterpart of `interp.plot.plot_result`, chosen from the result's axes the same way.

    view = result_view(result)          # or result.to_view(); result.show(); result.save_html(path)

Dispatch on `result.axes` (shape [*axes]):
- a direct logit attribution (heads, neurons, per-layer parts): "bars", one group each;
- any 1-D result, and any 2-D result with a "neuron" or "feature" axis: "bars" over all
  entries, sorted by |effect|, top-k shown ("L0N12 @ of (6)" when the result has one position);
- any other 2-D result: "heatmap", rows = the first axis (layer 0 at the top), columns = "pos"
  if there is one ("tok (i)"), else the second axis;
- 3-D results such as (layer, pos, head) or (layer, pos, neuron): "heatmap" with a selector:
  all units as rows ("L0H0", ...), one row-axis entry (e.g. one layer: rows are its neurons),
  or one unit (rows are layers). Only one such slice is drawn at a time, on a canvas, so a
  12 x 10 x 3072 sweep renders and hovers at once.
Anything else raises ValueError.

Colours are diverging and centred on "no effect": the result's `effect` (values - baseline).
The heatmap's "normalised" toggle shows (value - low) / (high - low): for results that know both
ends (a patching sweep's clean and corrupted metric, a causal trace's clean and corrupted
probability, an averaged trace's total effect) the fraction of the clean-vs-corrupted gap that
the cell recovers; for the others effect / max |effect|. The view says which.
"""

from __future__ import annotations

import math
from typing import Any, Optional, Sequence

import torch

from interp.labels import position_labels, tagged
from interp.views.page import View

UNIT_AXES = ("neuron", "feature")  # 2-D results over these are shown as bars
DEFAULT_K = 20
GAP_EPS = 1e-12


# --------------------------------------------------------------------------- labels

def display_labels(result: Any, tokens: Optional[Sequence[str]] = None) -> dict[str, list[str]]:
    """Per-axis display labels of `result` (indices where it has none), checked against its
    shape; `tokens` [n_pos] replace the "pos" labels."""
    values, axes = result.values, tuple(result.axes)
    given = getattr(result, "labels", None) or {}
    out = {}
    for axis, n in zip(axes, values.shape):
        labels = list(tokens) if axis == "pos" and tokens is not None else given.get(axis)
        what = "tokens" if axis == "pos" and tokens is not None else f"labels[{axis!r}]"
        if labels is None:
            labels = [str(i) for i in range(n)]
        if len(labels) != n:
            raise ValueError(f"{what}: expected {n} labels (the result's length along {axis!r}), got {len(labels)}")
        out[axis] = position_labels(labels) if axis == "pos" else [tagged(axis, str(s)) for s in labels]
    return out


def _position_suffix(result: Any, axes: Sequence[str]) -> str:
    """" @ of (6)" for a result measured at one position (`pos` and `tokens`) with no "pos" axis."""
    pos, tokens = getattr(result, "pos", None), getattr(result, "tokens", None)
    if "pos" in axes or not isinstance(pos, int) or not tokens:
        return ""
    if not -len(tokens) <= pos < len(tokens):
        return ""
    pos = pos % len(tokens)
    return f" @ {position_labels(tokens)[pos]}"


# --------------------------------------------------------------------------- numbers

def _finite_max_abs(x: torch.Tensor) -> float:
    x = x.detach().double()
    finite = x[torch.isfinite(x)]
    return float(finite.abs().max()) if finite.numel() else 0.0


def _number(x: Any) -> Optional[float]:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def normalisation(result: Any) -> dict[str, Any]:
    """{"low", "high", "text"}: the normalised value is (value - low) / (high - low).

    Patching sweeps (clean_value, corrupted_value) and causal traces (clean_prob,
    corrupted_prob over `scores`): low = corrupted, high = clean, so 1 = clean behaviour and
    0 = corrupted. Averaged traces (indirect effects, `total_effect`): low = 0, high = the total
    effect. Anything else: effect / max |effect| (low = baseline, high = baseline + max |effect|).
    """
    ends = None
    if hasattr(result, "clean_value") and hasattr(result, "corrupted_value"):
        ends = (_number(result.corrupted_value), _number(result.clean_value), "corrupted", "clean")
    elif hasattr(result, "scores") and hasattr(result, "clean_prob") and hasattr(result, "corrupted_prob"):
        ends = (_number(result.corrupted_prob), _number(result.clean_prob), "corrupted P", "clean P")
    elif hasattr(result, "indirect_effect") and hasattr(result, "total_effect"):
        ends = (0.0, _number(result.total_effect), "no effect", "total effect")
    if ends is not None and ends[0] is not None and ends[1] is not None and abs(ends[1] - ends[0]) > GAP_EPS:
        low, high, low_name, high_name = ends
        text = (f"normalised = (value - {low_name}) / ({high_name} - {low_name}): the fraction of the "
                f"clean-vs-corrupted gap recovered; 1 = {high_name} ({high:.4g}), 0 = {low_name} ({low:.4g})")
        return {"low": low, "high": high, "text": text}
    base = _number(getattr(result, "baseline", None)) or 0.0
    scale = _finite_max_abs(result.effect) or 1.0
    return {"low": base, "high": base + scale,
            "text": f"normalised = effect / max |effect| (max |effect| = {scale:.4g}); this result has no "
                    "clean and corrupted ends to normalise against"}


# --------------------------------------------------------------------------- the two kinds

def _values(result: Any) -> torch.Tensor:
    values = result.values
    if not isinstance(values, torch.Tensor):
        values = torch.as_tensor(values)
    if values.is_complex():
        raise ValueError("complex values cannot be viewed")
    axes = tuple(result.axes)
    if len(axes) != values.dim():
        raise ValueError(f"result has axes {axes} but values of shape {tuple(values.shape)}")
    return values.detach().to("cpu", torch.float32)


def heatmap_data(result: Any, tokens: Optional[Sequence[str]] = None) -> dict[str, Any]:
    """The "heatmap" kind's data for a 2-D or 3-D result (see the module docstring)."""
    values, axes = _values(result), tuple(result.axes)
    if values.dim() not in (2, 3):
        raise ValueError(f"a heatmap needs a 2-D or 3-D result, got axes {axes}")
    col = axes.index("pos") if "pos" in axes[1:] else 1
    extra = [i for i in range(1, values.dim()) if i != col]
    return {
        "values": values, "axes": list(axes), "labels": display_labels(result, tokens),
        "row_axis": 0, "col_axis": col, "extra_axis": extra[0] if extra else None,
        "pos_axis": axes.index("pos") if "pos" in axes else None,
        "baseline": _number(getattr(result, "baseline", None)) or 0.0,
        "metric": str(getattr(result, "metric_name", "") or "value"),
        "norm": normalisation(result),
    }


def _bar_group(name: str, values: torch.Tensor, axes: Sequence[str], labels: dict[str, list[str]], *,
               baseline: float = 0.0, suffix: str = "") -> dict[str, Any]:
    """One selectable set of bars: `values` [*axes] shown flat, each entry named from `labels`."""
    return {"name": name, "values": values.detach().to("cpu", torch.float32), "axes": list(axes),
            "labels": labels, "baseline": baseline, "suffix": suffix}


def bars_data(result: Any, tokens: Optional[Sequence[str]] = None, k: int = DEFAULT_K) -> dict[str, Any]:
    """The "bars" kind's data for any result: all its entries, one group."""
    values, axes = _values(result), tuple(result.axes)
    group = _bar_group(", ".join(axes), values, axes, display_labels(result, tokens),
                       baseline=_number(getattr(result, "baseline", None)) or 0.0,
                       suffix=_position_suffix(result, axes))
    return {"groups": [group], "metric": str(getattr(result, "metric_name", "") or "value"), "k": k}


def _is_direct_logit_attribution(result: Any) -> bool:
    parts = ("heads", "neurons", "attn_bias", "mlp_bias")
    return all(isinstance(getattr(result, a, None), torch.Tensor) for a in parts)


def dla_bars_data(result: Any, k: int = DEFAULT_K) -> dict[str, Any]:
    """Bars for a direct logit attribution: per head [layer, head], per neuron [layer, neuron] and
    per layer (embeddings, each layer's attention and MLP with their biases, the final bias)."""
    heads, neurons = result.heads.detach().float(), result.neurons.detach().float()
    n_layers, n_heads = heads.shape
    layer = [f"L{l}" for l in range(n_layers)]
    parts = torch.stack([result.attn.detach().float(), result.mlp.detach().float()], dim=1).flatten()
    names = [f"L{l} {what}" for l in range(n_layers) for what in ("attn", "MLP")]
    scalars = [(n, _number(getattr(result, a, None))) for n, a in
               (("embed", "embed"), ("pos_embed", "pos_embed"), ("final bias", "final_bias"))]
    scalars = [(n, v) for n, v in scalars if v is not None]
    parts = torch.cat([torch.tensor([v for _, v in scalars[:2]]), parts, torch.tensor([v for _, v in scalars[2:]])])
    names = [n for n, _ in scalars[:2]] + names + [n for n, _ in scalars[2:]]
    groups = [
        _bar_group("heads", heads, ("layer", "head"), {"layer": layer, "head": [f"H{h}" for h in range(n_heads)]}),
        _bar_group("neurons", neurons, ("layer", "neuron"),
                   {"layer": layer, "neuron": [f"N{n}" for n in range(neurons.shape[1])]}),
        _bar_group("per layer", parts, ("component",), {"component": names}),
    ]
    return {"groups": groups, "metric": str(getattr(result, "metric_name", "") or "value"), "k": k}


def result_view(result: Any, *, title: Optional[str] = None, tokens: Optional[Sequence[str]] = None) -> View:
    """The interactive view of a labelled result (heatmap or bars, chosen from its axes as the
    module docstring says). `title` overrides the result's title, `tokens` its "pos" labels."""
    for attr in ("values", "axes"):
        if not hasattr(result, attr):
            raise ValueError(f"result_view needs a labelled result with `values` and `axes`; "
                             f"{type(result).__name__} has no {attr!r}")
    title = title if title is not None else str(getattr(result, "title", "") or "")
    axes = tuple(result.axes)
    if _is_direct_logit_attribution(result):
        return View("bars", dla_bars_data(result), title=title,
                    notes=[f"logit difference {_number(getattr(result, 'logit_diff', None)) or 0:.4g} = sum of all "
                           "parts; choose heads, neurons or per-layer parts"])
    ndim = len(axes)
    if ndim == 1 or (ndim == 2 and any(a in UNIT_AXES for a in axes)):
        return View("bars", bars_data(result, tokens), title=title)
    if ndim in (2, 3):
        return View("heatmap", heatmap_data(result, tokens), title=title)
    raise ValueError(f"result_view cannot show a result with axes {axes} (shape {tuple(result.values.shape)}); "
                     "supported: any 1-D, 2-D or 3-D result")


__all__ = ["result_view", "heatmap_data", "bars_data", "dla_bars_data", "normalisation", "display_labels"]
