"""Facts as token batches, the role of each position, and the other facts' top-1 accuracy with
neuron sites zero-ablated at their corresponding positions (the specificity check).

A neuron site at a position of one prompt corresponds, in another prompt, to:
  - the same position, for a prompt of the same template (the same tokens before and after
    the subject; positions after the subject are counted from the end, subject tokens by
    their place in the subject);
  - every position of the same role, for any other prompt: "bos", "before subject",
    ROME's categories ("first subject token", "middle subject tokens", "last subject token",
    "first subsequent token", "further tokens") and "last token".
A prompt given without its subject has only "bos" and positions counted from the end
(its last token is the "last token").

    facts = FactBatch.of(model, [FactPrompt("Michael Phelps plays the sport of", "swimming", "Michael Phelps"), ...])
    facts.top1(model)                                   # [n] bool, no ablation
    facts.top1(model, sites, facts.roles_of(model, prompt, subject))   # with the sites ablated
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple, Optional, Sequence, Union

import torch

from interp.sites import Neuron
from interp.tokens import answer_token
from models.transformer import last_positions
from probes.subjects import find_subject, position_categories

ROLES = ("bos", "before subject", "first subject token", "middle subject tokens", "last subject token",
         "first subsequent token", "further tokens", "last token")


class FactPrompt(NamedTuple):
    """A prompt, its answer word and (optionally) the subject in it."""

    prompt: str
    answer: str
    subject: Optional[str] = None


def as_fact(f: Union[FactPrompt, Sequence[str]]) -> FactPrompt:
    if isinstance(f, FactPrompt):
        return f
    if isinstance(f, (tuple, list)) and len(f) in (2, 3) and all(isinstance(x, str) or x is None for x in f):
        return FactPrompt(*f)
    raise TypeError(f"a fact is (prompt, answer) or (prompt, answer, subject) strings, got {f!r}")


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
        if not -self.n_pos <= pos < self.n_pos:
            raise ValueError(f"position {pos} is outside the prompt's {self.n_pos} tokens")
        pos %= self.n_pos
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


def layout(model, tokens: torch.Tensor, subject: Optional[str], bos: bool) -> Layout:
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


def _bos(model) -> bool:
    return bool(model.default_prepend_bos)


def prompt_layout(model, prompt: str, subject: Optional[str]) -> Layout:
    tokens, _ = model._tokenize([prompt])
    return layout(model, tokens[0], subject, _bos(model))


class FactBatch:
    """Facts tokenised once: tokens [n, pos] (right-padded), last positions, answer ids and
    each prompt's Layout; `top1` runs them with neuron sites ablated at corresponding positions."""

    def __init__(self, model, facts: Sequence[FactPrompt]) -> None:
        self.facts = [as_fact(f) for f in facts]
        if not self.facts:
            self.tokens = torch.zeros(0, 1, dtype=torch.long)
            self.mask, self.last, self.answers, self.layouts = None, torch.zeros(0, dtype=torch.long), self.tokens[:, 0], []
            return
        self.tokens, self.mask = model._tokenize([f.prompt for f in self.facts])
        self.last = last_positions(self.tokens, self.mask)
        lengths = self.last + 1
        self.answers = torch.tensor([answer_token(model, f.answer) for f in self.facts])
        self.layouts = [layout(model, t[: int(n)], f.subject, _bos(model))
                        for t, n, f in zip(self.tokens, lengths, self.facts)]
        self._base: Optional[torch.Tensor] = None

    @classmethod
    def of(cls, model, facts: Union["FactBatch", Sequence]) -> "FactBatch":
        return facts if isinstance(facts, FactBatch) else cls(model, facts)

    def __len__(self) -> int:
        return len(self.facts)

    def __iter__(self):
        return iter(self.facts)

    def subset(self, keep: Sequence[int]) -> "FactBatch":
        """The facts at indices `keep` (no new tokenisation)."""
        out = object.__new__(FactBatch)
        idx = torch.as_tensor(list(keep), dtype=torch.long)
        out.facts = [self.facts[i] for i in idx.tolist()]
        out.tokens, out.last, out.answers = self.tokens[idx], self.last[idx], self.answers[idx]
        out.mask = None if self.mask is None else self.mask[idx]
        out.layouts = [self.layouts[i] for i in idx.tolist()]
        out._base = None if self._base is None else self._base[idx]
        return out

    def margins(self, model, sites: Sequence[Neuron] = (), source: Optional[Layout] = None,
                batch_size: int = 1024) -> torch.Tensor:
        """[n]: logit(answer) - the largest other logit at each fact's last token, with `sites`
        (Neurons with positions of the prompt whose Layout is `source`) zero-ablated at each
        fact's corresponding positions. Without sites, computed once and kept."""
        if not sites and self._base is not None:
            return self._base
        if sites and source is None:
            raise ValueError("sites with positions need the Layout of the prompt they were found in (source=...)")
        out = []
        for lo in range(0, len(self), batch_size):
            rows = range(lo, min(lo + batch_size, len(self)))
            hooks = zero_hooks([[(n.hook_name(), p, n.index) for n in sites for p in source.corresponding(self.layouts[i], n.pos)]
                                for i in rows])
            mask = None if self.mask is None else self.mask[lo: rows.stop]
            with torch.no_grad(), model.hooks(fwd_hooks=hooks):
                logits = model(self.tokens[lo: rows.stop], attention_mask=mask)
            out.append(answer_margins(logits[torch.arange(len(rows)), self.last[lo: rows.stop]],
                                      self.answers[lo: rows.stop]))
        result = torch.cat(out) if out else torch.zeros(0, dtype=torch.float64)
        if not sites:
            self._base = result
        return result

    def top1(self, model, sites: Sequence[Neuron] = (), source: Optional[Layout] = None) -> torch.Tensor:
        """[n] bool: the answer is the top-1 next token (margin > 0), with the sites ablated as in `margins`."""
        return self.margins(model, sites, source) > 0


def answer_margins(logits: torch.Tensor, answers: torch.Tensor) -> torch.Tensor:
    """logits [n, d_vocab], answer ids [n] -> [n] float64: logit(answer) - the largest other logit
    (> 0 exactly when the answer is the unique top-1)."""
    logits = logits.double()
    answers = answers.reshape(-1, 1).to(logits.device)
    return logits.gather(1, answers)[:, 0] - logits.scatter(1, answers, -torch.inf).max(-1).values


def zero_hooks(per_row: Sequence[Sequence[tuple[str, int, int]]]) -> list:
    """Hooks that zero activation[row, pos, unit] for each row's (hook name, pos, unit) triples
    (a Neuron's or Feature's `hook_name()`, its position and index)."""
    by_hook: dict[str, list[tuple[int, int, int]]] = {}
    for row, triples in enumerate(per_row):
        for name, pos, index in triples:
            by_hook.setdefault(name, []).append((row, pos, index))
    hooks = []
    for name, entries in by_hook.items():
        idx = torch.tensor(entries, dtype=torch.long).T

        def hook(x: torch.Tensor, hook, idx=idx) -> torch.Tensor:
            x = x.clone()
            x[idx[0].to(x.device), idx[1].to(x.device), idx[2].to(x.device)] = 0.0
            return x

        hooks.append((name, hook))
    return hooks


def accuracy(model, groups: dict[str, FactBatch], sites: Sequence[Neuron] = (),
             source: Optional[Layout] = None) -> dict[str, float]:
    """Top-1 accuracy of each group, with the sites ablated at corresponding positions."""
    return {g: float(b.top1(model, sites, source).double().mean()) for g, b in groups.items() if len(b)}


__all__ = ["FactPrompt", "FactBatch", "Layout", "layout", "prompt_layout", "as_fact", "accuracy", "ROLES", "zero_hooks", "answer_margins"]
