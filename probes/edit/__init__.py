"""Editing facts stored in MLPs: ROME (one fact, one layer, rank one), MEMIT (many facts, several
layers), and constrained fine-tuning of one layer (FT-L) as the baseline; `Edit` applies and
reverts exactly; `evaluate_edits` scores efficacy, paraphrase, neighbourhood, attribute
specificity and fluency.

    C = key_second_moment(model, 0, corpus_texts)
    edit = rome(model, EditRequest("Michael Jordan plays the sport of", "Michael Jordan", "soccer"), layer=0, stats=C)
    with edit.applied(model):
        model("Michael Jordan plays the sport of")      # -> soccer
"""

from probes.edit.edit import Edit
from probes.edit.requests import EditRequest, check_request
from probes.edit.finetune import fine_tune
from probes.edit.memit import memit
from probes.edit.evaluate import CaseScores, EditCase, EditReport, evaluate_edit, evaluate_edits, mean_loss
from probes.edit.rome import choose_layer, rome
from probes.edit.stats import cache_dir, key_second_moment

__all__ = ["Edit", "EditRequest", "check_request", "rome", "memit", "fine_tune", "choose_layer", "EditCase",
           "CaseScores", "EditReport", "evaluate_edit", "evaluate_edits", "mean_loss", "key_second_moment", "cache_dir"]
