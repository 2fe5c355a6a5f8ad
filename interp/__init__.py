"""Model-agnostic interpretability machinery.

Layers (each imports only from the ones before it; `make test` checks this):
  1. the hook base: interp.names, interp.hooks (HookPoint, HookedModule), interp.cache (ActivationCache)
  2. models (our Transformer; imports the hook base only)
  3. the rest of interp: sites, tokens, results, engine, patching, metrics, attribution, plot, crosscheck

The main entry points are importable from here (`from interp import sweep, attribution_patch,
logit_diff, run_patched, Patch, FromRun, ...`; `_EXPORTS` lists them with their modules). They
are imported on first use, so that `import interp.hooks` (what the models do) and the command
line stay light: nothing here loads the model code.
"""

from __future__ import annotations

from interp.exports import lazy_exports

_EXPORTS = {
    # the hook base
    "ActivationCache": "interp.cache",
    "HookedModule": "interp.hooks",
    "HookPoint": "interp.hooks",
    "HookShapeError": "interp.hooks",
    "UnknownHookError": "interp.hooks",
    "act_name": "interp.names",
    "IndexRangeError": "interp.checks",
    "answer_token": "interp.words",
    "answer_tokens": "interp.words",
    "progress_bar": "interp.progress",
    # sites
    "Head": "interp.sites",
    "Neuron": "interp.sites",
    "Feature": "interp.sites",
    "EncDecHead": "interp.sites",
    "EncDecNeuron": "interp.sites",
    # the patching engine and sweeps
    "Patch": "interp.engine",
    "FromRun": "interp.engine",
    "run_patched": "interp.engine",
    "sweep": "interp.patching",
    "PatchResult": "interp.patching",
    "SITES": "interp.patching",
    # metrics
    "logit_diff": "interp.metrics",
    "probability": "interp.metrics",
    "log_prob": "interp.metrics",
    "logit": "interp.metrics",
    "normalized": "interp.metrics",
    # attribution
    "attribution_patch": "interp.attribution",
    "agreement": "interp.attribution",
    "Agreement": "interp.attribution",
    "direct_logit_attribution": "interp.attribution",
    "DirectLogitAttribution": "interp.attribution",
    "feature_logit_attribution": "interp.attribution",
    "FeatureLogitAttribution": "interp.attribution",
    # circuits
    "Graph": "interp.circuits",
    "attribute_edges": "interp.circuits",
    "EdgeScores": "interp.circuits",
    "top_edges": "interp.circuits",
    "faithfulness": "interp.circuits",
    "faithfulness_curve": "interp.circuits",
    "greedy_circuit": "interp.circuits",
    "circuit_view": "interp.circuits",
    "Circuit": "interp.circuits",
    # a first look at a prompt, and the cross-check
    "test_prompt": "interp.explore",
    "crosscheck_model": "interp.crosscheck",
}

__all__ = list(_EXPORTS)


__getattr__, __dir__ = lazy_exports("interp", _EXPORTS)
