"""Methods for facts and features (the fourth layer): FFN key-value neurons and localisation,
causal tracing, knockout, knowledge neurons, the recall chain, the logit lens, linear probes,
editing (ROME, MEMIT, FT-L) and sparse dictionaries (SAEs, transcoders).

The main entry points are importable from here (`from probes import localise, fact_neurons,
trace, rome, memit, ...`; `_EXPORTS` lists them with their modules). They are imported on first
use, so `import probes` (and the command line) loads nothing until a name is asked for.
Two functions share their module's name and are imported from it, since a package attribute
cannot be both: `from probes.knowledge_neurons import knowledge_neurons`, `from
probes.logit_lens import logit_lens`.
"""

from __future__ import annotations

from interp.exports import lazy_exports

_EXPORTS = {
    # FFN key-value neurons and localisation
    "fact_neurons": "probes.ffn",
    "neuron_dashboard": "probes.ffn",
    "neuron_contributions": "probes.ffn",
    "value_projection": "probes.ffn",
    "key_decomposition": "probes.ffn",
    "and_detection": "probes.ffn",
    "validate": "probes.ffn",
    "localise": "probes.ffn",
    "Localisation": "probes.ffn",
    # causal tracing, knockout, knowledge neurons
    "trace": "probes.causal_trace",
    "trace_with_patch": "probes.causal_trace",
    "TraceResult": "probes.causal_trace",
    "average_trace": "probes.trace_average",
    "attention_knockout": "probes.knockout",
    "attention_knockout_all": "probes.knockout",
    # the recall chain, the logit lens, linear probes
    "subject_enrichment": "probes.recall",
    "attribute_extraction": "probes.recall",
    "moved_contributions": "probes.recall",
    "probe_curve": "probes.linear",
    "train_probe": "probes.linear",
    # editing
    "rome": "probes.edit",
    "memit": "probes.edit",
    "fine_tune": "probes.edit",
    "Edit": "probes.edit",
    "EditRequest": "probes.edit",
    "evaluate_edits": "probes.edit",
    "key_second_moment": "probes.edit",
    # sparse dictionaries
    "SparseDictionary": "probes.sae",
    "train_dictionary": "probes.sae",
    "activation_pairs": "probes.sae",
    "evaluate_dictionary": "probes.sae",
    "attached": "probes.sae",
    "load_transcoders": "probes.sae",
    "save_saelens": "probes.sae",
    "load_saelens": "probes.sae",
    "attribution_graph": "probes.graph",
    "feature_intervention": "probes.graph",
    "save_dictionary": "probes.sae",
    "load_dictionary": "probes.sae",
    "feature_dashboard": "probes.sae",
}

__all__ = list(_EXPORTS)


__getattr__, __dir__ = lazy_exports("probes", _EXPORTS)
