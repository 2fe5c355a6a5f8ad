"""Attribution patching (Nanda 2023; Syed et al. 2023): every activation patch of a sweep
estimated at once, to first order. For a site with base activation a, source activation a' and
the metric's gradient g at the base run,

    metric(patched) ~ metric(base) + sum over the site's elements of (a' - a) * g

One forward and one backward pass for every head, position and neuron. The results are
`PatchResult`s on the same scale, with the same axes and labels, as `interp.patching.sweep` (the
estimated metric after the patch), so `agreement(estimate, actual)` can say how far the
approximation can be trusted on a given model and prompt.
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch

from interp.attribution.gradients import gradient_times_delta
from interp.checks import resolve_positions
from interp.metrics import metric_name, scalar
from interp.patching import (
    DIRECTIONS, Metric, PatchResult, Prompts, SiteKind, _check_site, axis_labels, parse_site, site_layers,
)
from interp.tokens import paired_tokens, str_tokens
from models import Transformer


def site_effects(kind: SiteKind, contrib: torch.Tensor, pos_ids: Sequence[int]) -> torch.Tensor:
    """Per-element first-order effects of one layer's hook [batch, ...] -> one value per site of
    `kind`, its axes in `kind.axes` order after "layer" (as `sweep` lays them out)."""
    dims = {"pos": kind.pos_dim if kind.by_pos else None, kind.unit_axis: kind.unit_dim}
    axes = [a for a in kind.axes[1:]]
    keep = [dims[a] for a in axes]
    summed = contrib.sum(dim=[d for d in range(contrib.dim()) if d not in keep])  # kept dims in ascending order
    summed = summed.permute(*[sorted(keep).index(d) for d in keep])
    if "pos" in axes:
        summed = summed.index_select(axes.index("pos"), torch.as_tensor(list(pos_ids), device=summed.device))
    return summed


def attribution_patch(
    model: Transformer,
    clean: Prompts,
    corrupted: Prompts,
    metric: Metric,
    site: str = "resid_pre",
    *,
    direction: str = "denoise",
    layers: Optional[Sequence[int]] = None,
    positions: Optional[Sequence[int]] = None,
) -> PatchResult:
    """First-order estimate of `interp.patching.sweep(model, clean, corrupted, metric, site, ...)`.

    Same default site, sites, axes and labels as the sweep; `values` holds the estimated metric
    after each patch and `method` says "attribution patching".
    """
    stack, attn, kind = parse_site(site)
    if stack or attn != "attn":
        raise ValueError(f"attribution patching runs on decoder-only Transformers; site {site!r} names another stack")
    _check_site(model, stack, kind)
    if direction not in DIRECTIONS:
        raise ValueError(f"direction must be one of {DIRECTIONS}, got {direction!r}")
    clean_tokens, corrupted_tokens = paired_tokens(model, clean, corrupted)
    base, source = (corrupted_tokens, clean_tokens) if direction == "denoise" else (clean_tokens, corrupted_tokens)
    layer_ids = site_layers(model, kind, model.cfg.n_layers, layers)
    pos_ids = resolve_positions(positions, base.shape[1])
    names = [kind.hook_name(l) for l in layer_ids]

    with torch.enable_grad():
        base_logits, base_cache = model.run_with_cache(base, names_filter=names, incl_bwd=True, metric=metric)
    with torch.no_grad():
        source_logits, source_cache = model.run_with_cache(source, names_filter=names)
        base_value, source_value = scalar(metric(base_logits)), scalar(metric(source_logits))
        per_layer = [site_effects(kind, gradient_times_delta(base_cache[name + "_grad"],
                                                             source_cache[name] - base_cache[name]), pos_ids)
                     for name in names]
        values = (base_value + torch.stack(per_layer)).to(torch.float64)

    clean_value, corrupted_value = (source_value, base_value) if direction == "denoise" else (base_value, source_value)
    n_units = values.shape[kind.axes.index(kind.unit_axis)] if kind.unit_axis is not None else 0
    tokens = str_tokens(model, clean_tokens)
    return PatchResult(
        values, kind.axes, axis_labels(kind.axes, layer_ids, pos_ids, n_units, tokens), site, direction,
        metric_name(metric), clean_value, corrupted_value, tokens, method="attribution patching",
    )


__all__ = ["attribution_patch"]
