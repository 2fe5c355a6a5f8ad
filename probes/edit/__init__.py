"""Editing facts stored in MLPs: ROME (one fact, one layer, rank one), MEMIT (many facts, several
layers), AlphaEdit (MEMIT's update kept in the null space of the preserved keys), and
constrained fine-tuning of one layer (FT-L) as the baseline; `Edit` applies and reverts exactly;
`sequential_edit` applies edits one after another and reverts them all; `evaluate_edits` scores
efficacy, paraphrase, neighbourhood, attribute specificity and fluency.

    edit = rome(model, "Michael Jordan plays the sport of", "Michael Jordan", "soccer")
    with edit.applied(model):
        model("Michael Jordan plays the sport of")      # -> soccer
    edit = memit(model, [(prompt, subject, new_target), ...])

The defaults need no assembly on the shipped fact-world model: the layer a causal trace picks
(`choose_layer`), key statistics over the model's own corpus (`key_second_moment`, cached on
disk), and the contexts and kept prompts of the model's own `edit_prompts` (the fact world's
openers, training templates and the subject's other relations). For any other model give
`corpus=` (texts) or `stats=`, and `prefixes=`, `rewrites=`, `keep=` where you have them. An `EditRequest(prompt,
subject, new_target)` is the structured form of a request.

Modules, one job each: `requests` (what to edit, and its checks), `contexts` (the prompt in its
contexts, states at the subject's last token), `optimise` (the vector an edit writes), `stats`
(key statistics and their cache), `layers` (the traced layer), `rome`, `memit`, `finetune`,
`alphaedit`, `sequential`, `edit` (the `Edit` and its exact revert), `evaluate`.
"""

from probes.edit.alphaedit import alphaedit, null_space_projector
from probes.edit.contexts import DEFAULT_PREFIXES, contexts, edit_prompts, mean_key, mean_state
from probes.edit.edit import Edit
from probes.edit.evaluate import (
    CaseScores, EditCase, EditComparison, EditReport, PromptChange, compare_edit, evaluate_edit, evaluate_edits, mean_loss,
)
from probes.edit.finetune import fine_tune
from probes.edit.layers import choose_layer, traced_layers
from probes.edit.memit import memit
from probes.edit.optimise import RELAX, TargetVector, optimise_delta, relaxed_delta
from probes.edit.requests import EditRequest, as_request, as_requests, check_layer, check_request
from probes.edit.rome import rome
from probes.edit.sequential import SequentialEdits, sequential_edit
from probes.edit.stats import cache_dir, default_corpus, hooks_attached, key_second_moment

__all__ = ["Edit", "EditRequest", "as_request", "as_requests", "check_request", "check_layer", "rome", "memit",
           "alphaedit", "null_space_projector", "SequentialEdits", "sequential_edit", "edit_prompts", "RELAX",
           "relaxed_delta",
           "fine_tune", "choose_layer", "traced_layers", "EditCase", "CaseScores", "EditReport", "evaluate_edit",
           "evaluate_edits", "mean_loss", "EditComparison", "PromptChange", "compare_edit", "key_second_moment", "cache_dir", "default_corpus", "hooks_attached",
           "DEFAULT_PREFIXES", "contexts", "mean_key", "mean_state", "TargetVector", "optimise_delta"]
