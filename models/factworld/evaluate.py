"""Top-1 accuracy and answer probability of a model on the fact-world, per relation,
on training templates and on held-out templates (never seen in training)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Optional, Sequence

import torch
from tqdm.auto import tqdm

from models.factworld import facts, relations, templates
from models.transformer import Transformer, last_token_logits


def next_word_logits(model: Transformer, prompts: Sequence[str], batch_size: int = 512) -> torch.Tensor:
    """Logits of the word after each prompt: [n_prompts, d_vocab] (prompts may differ in length)."""
    return last_token_logits(model, prompts, batch_size)


@dataclass
class Score:
    n: int
    top1: float  # fraction of prompts whose most likely next word is the object
    p_correct: float  # mean probability of the object


def score(model: Transformer, relation: str, heldout: bool, subjects: Optional[set[str]] = None) -> Score:
    fs = [f for f in facts(relation) if subjects is None or f.subject in subjects]
    prompts, answers = [], []
    for template in templates(relation, heldout=heldout):
        for f in fs:
            prompts.append(template.format(subject=f.subject))
            answers.append(model.to_single_token(f.object))
    logits = next_word_logits(model, prompts)
    answers_t = torch.tensor(answers, device=logits.device)
    top1 = (logits.argmax(-1) == answers_t).float().mean().item()
    p = logits.softmax(-1).gather(1, answers_t[:, None]).mean().item()
    return Score(len(prompts), top1, p)


def evaluate(model: Transformer, progress: bool = True) -> dict:
    """{relation: {"train": Score, "heldout": Score}} as plain dicts."""
    report = {}
    for relation in tqdm(relations(), desc="evaluating", disable=not progress):
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
