"""The MLP as a key-value memory (Geva et al. 2021): find the neurons that store a fact.

Neuron n of layer l has a key, W_in[:, n] with its bias b_in[n], that reads the
(normalised) residual stream, and a value, W_out[n, :], that the neuron adds to
the residual stream scaled by its activation post = act(key . x + bias). With a
ReLU the bias is a threshold: a negative bias lets the key fire only when
several features are present at once ("Michael" AND "Jordan"), not for either
part alone. Neurons are addressed as `interp.Neuron(layer, index, pos=None)`
everywhere (pos None: every position).

    ranked = fact_neurons(model, "Michael Jordan plays the sport of", "basketball", k=10)
    ranked[0].site, ranked[0].contribution, ranked[0].top_tokens
    and_detection(model, "Michael Jordan plays the sport of",
                  first_only="Michael Phelps plays the sport of", last_only="Alexis Jordan plays the sport of",
                  neurons=ranked.sites)
    validate(model, prompt, "basketball", ranked.sites, other_facts={...})   # ablate / amplify

Modules: `values` (what a neuron writes, and the ranking of a fact's writers),
`keys` (what a neuron reads: its key, bias and activations), `key_sources` (the key split
by residual component or source token), `and_detection`, `triggers` (the prompts that fire
a neuron), `layout` (position roles across prompts), `facts` (fact batches and their margins
with sites ablated), `interventions` (ablation and amplification with specificity),
`rankings` and `localise` (the fewest neurons that carry a fact), `dashboard` (a neuron's dashboard:
`neuron_dashboard`, imported on first use since it builds on probes.sae, which builds on this
package). Generic: prompts, answers and the other facts to check come from the caller (the
fact-world's live in `analyses`).
"""

from interp.exports import lazy_exports

from probes.ffn.facts import FactBatch, FactPrompt
from probes.ffn.layout import ROLES, Layout, prompt_layout
from probes.ffn.interventions import (
    Intervention, Validation, answer_stats, intervention_hooks, layer_means, mean_activations, validate,
)
from probes.ffn.and_detection import AndRow, and_detection, related_subjects
from probes.ffn.key_sources import key_by_source, key_decomposition
from probes.ffn.keys import check_neurons, neuron_activations, neuron_bias
from probes.ffn.triggers import Trigger, trigger_examples
from probes.ffn.localise import DEFAULT_METHOD, SUBJECT_ROLES, Localisation, LocalisationCheck, localise
from probes.ffn.rankings import METHODS, SiteRanking, rank_sites, site_scores
from probes.ffn.values import (
    NeuronContribution, RankedNeurons, ValueProjection, fact_neurons, neuron_contributions, value_logits,
    value_projection,
)

__all__ = [
    "NeuronContribution", "RankedNeurons", "fact_neurons", "neuron_contributions", "value_projection",
    "value_logits", "ValueProjection", "key_decomposition", "key_by_source", "neuron_activations", "neuron_bias", "check_neurons",
    "and_detection", "AndRow", "trigger_examples", "Trigger", "related_subjects", "intervention_hooks",
    "mean_activations", "answer_stats", "validate", "Validation", "Intervention", "FactPrompt", "localise",
    "Localisation", "LocalisationCheck", "DEFAULT_METHOD", "SUBJECT_ROLES", "ROLES", "FactBatch", "Layout", "prompt_layout",
    "layer_means", "METHODS", "SiteRanking", "rank_sites", "site_scores", "neuron_dashboard",
]

# imported on first use (`from probes.ffn import neuron_dashboard` works as for the others)
_LAZY = {"neuron_dashboard": "probes.ffn.dashboard"}
__getattr__, __dir__ = lazy_exports("probes.ffn", _LAZY)
