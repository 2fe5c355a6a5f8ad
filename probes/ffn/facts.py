"""Facts as token batches: each fact's answer margin and top-1, unablated or with neuron (or
feature) sites zero-ablated at each fact's positions corresponding to the sites' (see
`probes.ffn.layout`): the specificity check of validation and localisation.

    facts = FactBatch.of(model, [FactPrompt("Michael Phelps plays the sport of", "swimming", "Michael Phelps"), ...])
    facts.top1(model)                                   # [n] bool, no ablation
    facts.top1(model, sites, prompt_layout(model, prompt, subject))   # with the sites ablated

The unablated margins are kept for as long as the model is in the same state: the same model,
its parameters unchanged (not edited in place, not converted), no hook attached (a hook, a
permanent one or attached transcoders, is run every time).
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple, Optional, Sequence, Union

import torch
from torch.nn.modules import module as torch_module

from interp.metrics import RUNNER_UP, answer_margin
from interp.sites import Neuron, zero_hooks
from interp.tokens import answer_token, padded_batches
from models.transformer import Transformer
from probes.ffn.layout import Layout, _bos, layout


class FactPrompt(NamedTuple):
    """A prompt, its answer word and (optionally) the subject in it."""

    prompt: str
    answer: str
    subject: Optional[str] = None


def as_fact(f: Union[FactPrompt, Sequence[str]]) -> FactPrompt:
    """A FactPrompt from a FactPrompt or a (prompt, answer[, subject]) tuple or list."""
    if isinstance(f, FactPrompt):
        return f
    if isinstance(f, (tuple, list)) and len(f) in (2, 3) and all(isinstance(x, str) or x is None for x in f):
        return FactPrompt(*f)
    raise TypeError(f"a fact is (prompt, answer) or (prompt, answer, subject) strings, got {f!r}")


def model_state(model: Transformer) -> Optional[tuple]:
    """What a model's outputs depend on besides its input, as a key to cache them by: the model
    object, train / eval mode and every parameter's storage, version (bumped by in-place edits),
    dtype and device. None while any hook is attached, to a hook point or as a torch module hook
    (its effect cannot be keyed)."""
    if any(hp.has_hooks for hp in model.hook_dict.values()):
        return None
    if torch_module._global_forward_hooks or torch_module._global_forward_pre_hooks or any(
            m._forward_hooks or m._forward_pre_hooks for m in model.modules()):
        return None
    params = tuple((p.data_ptr(), p._version, p.dtype, p.device) for p in model.parameters())
    return (id(model), model.training, params)


class FactBatch:
    """Facts tokenised once: tokens [n, pos] (right-padded), last positions, answer ids and
    each prompt's Layout; `top1` runs them with neuron sites ablated at corresponding positions."""

    def __init__(self, model: Transformer, facts: Sequence[FactPrompt]) -> None:
        self.facts = [as_fact(f) for f in facts]
        if not self.facts:
            self.tokens = torch.zeros(0, 1, dtype=torch.long, device=model.device)
            self.mask, self.last, self.answers, self.layouts = (
                None, torch.zeros(0, dtype=torch.long, device=model.device), self.tokens[:, 0], [])
            self._base, self._base_state = None, None
            return
        batch = next(padded_batches(model, [f.prompt for f in self.facts], len(self.facts)))
        self.tokens, self.mask, self.last, lengths = batch.tokens, batch.mask, batch.last, batch.lengths
        self.answers = torch.tensor([answer_token(model, f.answer) for f in self.facts], device=model.device)
        self.layouts = [layout(model, t[: int(n)], f.subject, _bos(model))
                        for t, n, f in zip(self.tokens, lengths, self.facts)]
        self._base: Optional[torch.Tensor] = None
        self._base_state: Optional[tuple] = None

    @classmethod
    def of(cls, model: Transformer, facts: Union["FactBatch", Sequence]) -> "FactBatch":
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
        out._base_state = self._base_state
        return out

    def margins(self, model: Transformer, sites: Sequence[Neuron] = (), source: Optional[Layout] = None,
                batch_size: int = 1024) -> torch.Tensor:
        """[n]: logit(answer) - the largest other logit at each fact's last token, with `sites`
        (Neurons or Features with positions of the prompt whose Layout is `source`) zero-ablated at
        each fact's corresponding positions. Without sites: kept while `model_state` is unchanged."""
        state = None if sites else model_state(model)
        if not sites and state is not None and self._base is not None and self._base_state == state:
            return self._base
        if sites and source is None:
            raise ValueError("sites with positions need the Layout of the prompt they were found in (source=...)")
        out = []
        for lo in range(0, len(self), batch_size):
            rows = range(lo, min(lo + batch_size, len(self)))
            per_row = [[dataclasses.replace(n, pos=p) for n in sites for p in source.corresponding(self.layouts[i], n.pos)]
                       for i in rows] if sites else []
            mask = None if self.mask is None else self.mask[lo: rows.stop]
            with torch.no_grad(), model.hooks(fwd_hooks=zero_hooks(per_row)):
                logits = model(self.tokens[lo: rows.stop], attention_mask=mask)
            out.append(answer_margins(logits[torch.arange(len(rows), device=logits.device), self.last[lo: rows.stop]],
                                      self.answers[lo: rows.stop]))
        result = torch.cat(out) if out else torch.zeros(0, dtype=torch.float64, device=model.device)
        if state is not None:
            self._base, self._base_state = result, state
        return result

    def top1(self, model: Transformer, sites: Sequence[Neuron] = (), source: Optional[Layout] = None) -> torch.Tensor:
        """[n] bool: the answer is the top-1 next token (margin > 0), with the sites ablated as in `margins`."""
        return self.margins(model, sites, source) > 0


def answer_margins(logits: torch.Tensor, answers: torch.Tensor) -> torch.Tensor:
    """logits [n, d_vocab], answer ids [n] -> [n] float64: logit(answer) - the largest other logit
    (> 0 exactly when the answer is the unique top-1)."""
    return answer_margin(logits.double(), answers.reshape(-1).to(logits.device), RUNNER_UP)


def accuracy(model: Transformer, groups: dict[str, FactBatch], sites: Sequence[Neuron] = (),
             source: Optional[Layout] = None) -> dict[str, float]:
    """Top-1 accuracy of each group, with the sites ablated at corresponding positions."""
    return {g: float(b.top1(model, sites, source).double().mean()) for g, b in groups.items() if len(b)}


__all__ = ["FactPrompt", "FactBatch", "as_fact", "accuracy", "answer_margins", "model_state"]
