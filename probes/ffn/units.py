"""The units that localisation ranks and ablates: MLP neurons (hook_post) or, with transcoders
attached (`probes.sae.attached`), their features (transcoder.hook_feature_acts). Both are
[batch, pos, units] activations whose unit u writes act[u] * value[u] into the residual stream."""

from __future__ import annotations

from typing import Optional, Union

from interp import names as hook_names
from interp.sites import Feature, Neuron
from models.transformer import Transformer

UNITS = {"neuron": (Neuron, "post"), "feature": (Feature, "feature_acts")}
Site = Union[Neuron, Feature]


def check_unit(unit: str) -> None:
    if unit not in UNITS:
        raise ValueError(f"unknown unit {unit!r}; choose from {', '.join(UNITS)}")


def unit_names(model: Transformer, unit: str) -> list[Optional[str]]:
    """Per layer: the hook of the units' activations, or None where the layer has none (a
    layer without an attached transcoder); a clear error if no layer has any."""
    check_unit(unit)
    layers = Feature.attached_layers(model) if unit == "feature" else range(model.cfg.n_layers)
    names = [hook_names.act_name(UNITS[unit][1], l) if l in layers else None for l in range(model.cfg.n_layers)]
    if not any(names):
        raise ValueError(f"the model has no {unit} hooks: attach transcoders first "
                         "(`with probes.sae.attached(model, transcoders):`)")
    return names


def unit_site(unit: str, layer: int, index: int, pos: Optional[int] = None) -> Site:
    check_unit(unit)
    return UNITS[unit][0](layer, index, pos)


def site_from_label(label: str) -> Site:
    """A Neuron or Feature from its label: "L2N411@2" -> Neuron(2, 411, pos=2), "L0F258" -> Feature(0, 258)."""
    for kind, _ in UNITS.values():
        try:
            return kind.from_label(label)
        except ValueError:
            pass
    raise ValueError(f"not a neuron or feature label: {label!r} (expected e.g. 'L2N411@2' or 'L0F258')")


def unit_width(model: Transformer, site: Site) -> int:
    """How many units the site's layer has (d_mlp, or the attached transcoder's features)."""
    if isinstance(site, Feature):
        unit_names(model, "feature")
        return int(model.get_submodule(f"blocks.{site.layer}.transcoder").W_dec.shape[0])
    return model.cfg.d_mlp


__all__ = ["UNITS", "unit_names", "unit_site", "site_from_label", "unit_width", "check_unit"]
