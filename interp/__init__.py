"""Model-agnostic interpretability machinery: hooks, caches, sites, metrics, patching, attribution, plots.

Submodules: interp.metrics, interp.patching, interp.attribution, interp.plot, interp.crosscheck.
"""

from interp.cache import ActivationCache
from interp.hooks import HookedModule, HookPoint, HookShapeError, UnknownHookError
from interp.names import act_name
from interp.sites import Head, Neuron

__all__ = [
    "ActivationCache", "HookedModule", "HookPoint", "HookShapeError", "UnknownHookError",
    "Head", "Neuron", "act_name",
]
