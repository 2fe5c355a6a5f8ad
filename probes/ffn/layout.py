"""The role of each position of a fact's prompt, and which positions of another prompt
correspond to it (so that a neuron site found at a position of one prompt is ablated at the
same place of other facts' prompts).

A neuron site at a position of one prompt corresponds, in another prompt, to:
  - the same position, for a prompt of the same template (the same tokens before and after
    the subject; positions after the subject are counted from the end, subject tokens by
    their place in the subject);
  - every position of the same role, for any other prompt: "bos", "before subject",
    ROME's categories ("first subject token", "middle subject tokens", "last subject token",
    "first subsequent token", "further tokens") and "last token".
A prompt given without its subject has only "bos" and positions counted from the end
(its last token is the "last token").

    source = prompt_layout(model, "Michael Jordan plays the sport of", "Michael Jordan")
    source.roles[2], source.corresponding(other_layout, 2)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

from interp.checks import resolve_pos
from models.transformer import Transformer
from probes.subjects import find_subject, position_categories

ROLES = ("bos", "before subject", "first subject token", "middle subject tokens", "last subject token",
         "first subsequent token", "further tokens", "last token")


@dataclass(frozen=True)
class Layout:
    """Where things are in one tokenised prompt: per position a role (ROLES, or ("from end", k)
    without a subject) and a key that is equal for the same place of the same template."""

    template: tuple  # the tokens outside the subject (prefix, suffix) or, without a subject, all tokens
    roles: tuple  # per position
    keys: tuple  # per position: ("index", p) before the subject, ("subject", k from its end), ("from end", k)

    @property
    def n_pos(self) -> int:
        return len(self.roles)

    def corresponding(self, other: "Layout", pos: Optional[int]) -> list[int]:
        """Positions of `other` that correspond to position `pos` of this prompt (None: every position)."""
        if pos is None:
            return list(range(other.n_pos))
        pos = resolve_pos(pos, self.n_pos)
        if "all" in (self.template[0], other.template[0]):  # a prompt without its subject: count from the end
            if self.roles[pos] == "bos":
                return [p for p, r in enumerate(other.roles) if r == "bos"]
            p = other.n_pos - self.n_pos + pos
            return [p] if 0 <= p < other.n_pos and other.roles[p] != "bos" else []
        if other.template == self.template:
            return [p for p, k in enumerate(other.keys) if k == self.keys[pos]]
        return [p for p, r in enumerate(other.roles) if r == self.roles[pos]]

    def role(self, pos: int) -> str:
        r = self.roles[pos]
        return r if isinstance(r, str) else "last token" if r == ("from end", 0) else f"{r[1]} from the end"


def layout(model: Transformer, tokens: torch.Tensor, subject: Optional[str], bos: bool) -> Layout:
    """The Layout of token ids [pos] with `subject` (text) in them, or None."""
    ids = [int(t) for t in tokens]
    n = len(ids)
    if subject is None:
        roles = tuple("bos" if (bos and p == 0) else ("from end", n - 1 - p) for p in range(n))
        return Layout(("all", tuple(ids)), roles, tuple(("from end", n - 1 - p) for p in range(n)))
    start, end, _ = find_subject(model, tokens, subject)
    roles = ["bos" if bos and p == 0 else "before subject" for p in range(start)] + [None] * (n - start)
    for category, positions in position_categories(n, (start, end)).items():
        for p in positions:
            roles[p] = category
    keys = [("index", p) if p < start else ("subject", end - 1 - p) if p < end else ("from end", n - 1 - p)
            for p in range(n)]
    return Layout((tuple(ids[:start]), tuple(ids[end:])), tuple(roles), tuple(keys))


def _bos(model: Transformer) -> bool:
    return bool(model.default_prepend_bos)


def prompt_layout(model: Transformer, prompt: str, subject: Optional[str]) -> Layout:
    """The Layout of one prompt (tokenised with the model's BOS default) with `subject` in it, or None."""
    tokens, _ = model._tokenize([prompt])
    return layout(model, tokens[0], subject, _bos(model))


__all__ = ["ROLES", "Layout", "layout", "prompt_layout"]
