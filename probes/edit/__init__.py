"""Editing facts stored in MLPs: ROME (one fact, one layer, rank one), MEMIT (many facts, several
layers), and constrained fine-tuning of one layer (FT-L) as the baseline; `Edit` applies and
reverts exactly; `evaluate_edits` scores efficacy, paraphrase, neighbourhood, attribute
specificity and fluency.

    edit = rome(model, "Michael Jordan plays the sport of", "Michael Jordan", "soccer")
    with edit.applied(model):
        model("Michael Jordan plays the sport of")      # -> soccer
    edit = memit(model, [(prompt, subject, new_target), ...])

The defaults need no assembly on the shipped fact-world model: the layer a causal trace picks
(`choose_layer`), and key statistics over the model's own corpus (`key_second_moment`, cached on
disk). For any other model give `corpus=` (texts) or `stats=`; `layer=`, `prefixes=`,
`rewrites=`, `keep=` and the optimisation's settings stay available. An `EditRequest(prompt,
subject, new_target)` is the structured form of a request.

Modules, one job each: `requests` (what to edit, and its checks), `contexts` (the prompt in its
contexts, states at the subject's last token), `optimise` (the vector an edit writes), `stats`
(key statistics and their cache), `layers` (the traced layer), `rome`, `memit`, `finetune`,
`edit` (the `Edit` and its exact revert), `evaluate`.
"""

from probes.edit.contexts import DEFAULT_PREFIXES, contexts, mean_key, mean_state
from probes.edit.edit import Edit
from probes.edit.evaluate import (
    CaseScores, EditCase, EditComparison, EditReport, PromptChange, compare_edit, evaluate_edit, evaluate_edits, mean_loss,
)
from probes.edit.finetune import fine_tune
from probes.edit.layers import choose_layer, traced_layers
from probes.edit.memit import memit
from probes.edit.optimise import TargetVector, optimise_delta
from probes.edit.requests import EditRequest, as_request, as_requests, check_layer, check_request
from probes.edit.rome import rome
from probes.edit.stats import cache_dir, default_corpus, hooks_attached, key_second_moment

__all__ = ["Edit", "EditRequest", "as_request", "as_requests", "check_request", "check_layer", "rome", "memit",
           "fine_tune", "choose_layer", "traced_layers", "EditCase", "CaseScores", "EditReport", "evaluate_edit",
           "evaluate_edits", "mean_loss", "EditComparison", "PromptChange", "compare_edit", "key_second_moment", "cache_dir", "default_corpus", "hooks_attached",
           "DEFAULT_PREFIXES", "contexts", "mean_key", "mean_state", "TargetVector", "optimise_delta"]
