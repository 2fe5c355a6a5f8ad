"""The fact world's prompts for editing a fact: the contexts an edit is optimised in and the
prompts whose answers it must keep. `models.load("factworld")` hands `edit_prompts` to the
model, so `rome(model, prompt, subject, new_target)` finds them without being told.

    edit_prompts("Michael Jordan plays the sport of", "Michael Jordan")
    # {"prefixes": the openers, "rewrites": training templates 1-10 of sport,
    #  "keep": 12 training templates each of country and occupation}
"""

from __future__ import annotations

from typing import Optional

from models import factworld

KEEP_TEMPLATES = 12  # training templates per other relation whose predictions the edit keeps (KL)
REWRITE_TEMPLATES = 10  # training templates of the edited relation the new answer is optimised on


def parse_prompt(prompt: str) -> Optional[tuple[str, str, int]]:
    """(subject, relation, template index) if `prompt` is a fact-world prompt, else None."""
    subjects = set(factworld.subjects())
    for relation in factworld.relations():
        for index, template in enumerate(factworld.templates(relation)):
            head, _, tail = template.partition("{subject}")
            if prompt.startswith(head) and prompt.endswith(tail) and len(prompt) >= len(head) + len(tail):
                subject = prompt[len(head): len(prompt) - len(tail)]
                if subject in subjects:
                    return subject, relation, index
    return None


def keep_prompts(subject: str, relation: str, templates: int = KEEP_TEMPLATES) -> list[str]:
    """The subject's other relations in the first training templates: their predictions must
    survive the edit (the evaluation's attribute prompts are template 0 and the held-out ones)."""
    return [t.format(subject=subject) for r in factworld.relations() if r != relation
            for t in factworld.templates(r, heldout=False)[:templates]]


def rewrite_prompts(subject: str, relation: str, templates: int = REWRITE_TEMPLATES) -> list[str]:
    """The edited fact in training templates 1 .. `templates` (never the held-out ones the
    paraphrase score uses): more prompts that should give the new answer."""
    return [t.format(subject=subject) for t in factworld.templates(relation, heldout=False)[1: templates + 1]]


def edit_prompts(prompt: str, subject: str) -> Optional[dict[str, list[str]]]:
    """{"prefixes", "rewrites", "keep"} for editing the fact of a fact-world `prompt` about
    `subject`; None for a prompt that is not one (the editing methods' generic defaults apply)."""
    found = parse_prompt(prompt)
    if found is None or found[0] != subject:
        return None
    relation = found[1]
    return {"prefixes": factworld.openers(), "rewrites": [p for p in rewrite_prompts(subject, relation) if p != prompt],
            "keep": keep_prompts(subject, relation)}


__all__ = ["KEEP_TEMPLATES", "REWRITE_TEMPLATES", "parse_prompt", "keep_prompts", "rewrite_prompts", "edit_prompts"]
