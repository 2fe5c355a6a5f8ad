"""Model-agnostic interpretability machinery.

Layers (each imports only from the ones before it; `make test` checks this):
  1. the hook base: interp.names, interp.hooks (HookPoint, HookedModule), interp.cache (ActivationCache)
  2. models (our Transformer; imports the hook base only)
  3. the rest of interp: sites, tokens, results, engine, patching, metrics, attribution, plot, crosscheck

The names below are imported on first use, so that `import interp.hooks` (what the
models do) and the command line stay light: nothing here loads the model code.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

_EXPORTS = {
    "ActivationCache": "interp.cache",
    "HookedModule": "interp.hooks",
    "HookPoint": "interp.hooks",
    "HookShapeError": "interp.hooks",
    "UnknownHookError": "interp.hooks",
    "act_name": "interp.names",
    "Head": "interp.sites",
    "Neuron": "interp.sites",
    "Feature": "interp.sites",
    "EncDecHead": "interp.sites",
    "EncDecNeuron": "interp.sites",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'interp' has no attribute {name!r}")
