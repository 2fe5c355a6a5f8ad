"""Top-1 accuracy and answer probability of a model on the fact-world, per relation,
on training templates and on held-out templates (never seen in training)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Optional

import torch

from interp.progress import progress_bar
from interp.words import answer_token
from models.factworld import facts, relations, templates
from models.transformer import Transformer, last_token_logits


@dataclass
class Score:
    n: int
    top1: float  # fraction of prompts whose most likely next word is the object
    p_correct: float  # mean probability of the object


def score(model: Transformer, relation: str, heldout: bool, subjects: Optional[set[str]] = None) -> Score:
    """Top-1 accuracy and mean answer probability over every (template, fact) prompt of a
    relation (its training or held-out templates; optionally only some subjects)."""
    fs = [f for f in facts(relation) if subjects is None or f.subject in subjects]
    ids = {f.object: answer_token(model, f.object) for f in fs}  # the toolkit's answer-word policy
    prompts, answers = [], []
    for template in templates(relation, heldout=heldout):
        for f in fs:
            prompts.append(template.format(subject=f.subject))
            answers.append(ids[f.object])
    logits = last_token_logits(model, prompts)
    answers_t = torch.tensor(answers, device=logits.device)
    top1 = (logits.argmax(-1) == answers_t).float().mean().item()
    p = logits.softmax(-1).gather(1, answers_t[:, None]).mean().item()
    return Score(len(prompts), top1, p)


def evaluate(model: Transformer, progress: bool = True) -> dict:
    """{relation: {"train": Score, "heldout": Score}} as plain dicts."""
    report = {}
    for relation in progress_bar(relations(), progress, desc="evaluating"):
        report[relation] = {
            "train": asdict(score(model, relation, heldout=False)),
            "heldout": asdict(score(model, relation, heldout=True)),
        }
    return report


def format_report(report: dict) -> str:
    lines = [f"{'relation':12s} {'templates':10s} {'prompts':>8s} {'top-1':>8s} {'P(answer)':>10s}"]
    for relation, parts in report.items():
        for split, s in parts.items():
            lines.append(f"{relation:12s} {split:10s} {s['n']:8d} {100 * s['top1']:7.2f}% {s['p_correct']:10.3f}")
    return "\n".join(lines)
