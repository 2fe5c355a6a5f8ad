"""Did an edit work, and what else did it change? CounterFact-style scores and top-1 accuracies.

    case = EditCase(request, old="basketball", paraphrases=[...], neighbours=[(prompt, answer), ...],
                    attributes=[(prompt, answer), ...])
    scores = evaluate_edit(model, case, edit)                     # one case, its own edit
    report = evaluate_edits(model, cases, edits, fluency_texts)   # one edit per case, or one for all

Per case, with the edit applied (the model is restored afterwards):
  efficacy       the request's prompt: P(new target) > P(old) ("score"), and the new target is top-1;
  paraphrase     other prompts for the same fact (e.g. held-out templates): the same two;
  neighbourhood  other subjects' prompts that must keep their answers: P(their answer) > P(new target),
                 and their top-1 unchanged (only prompts the model got right before count);
  attribute      the subject's other facts: top-1 unchanged (those right before);
and over all cases the fluency cost: the relative increase of the mean next-token loss on
`fluency_texts`. Aggregates are means over cases in percent; `score` is the harmonic mean of
efficacy, paraphrase and neighbourhood scores (as ROME reports).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from statistics import harmonic_mean
from typing import Optional, Sequence

import torch

from interp.progress import progress_bar
from interp.tokens import padded_batches
from interp.words import answer_token
from models.transformer import Transformer, last_token_logits
from probes.edit.edit import Edit
from probes.edit.requests import EditRequest

METRICS = ("efficacy", "paraphrase", "neighbourhood")


@dataclass
class EditCase:
    request: EditRequest
    old: str  # the answer before the edit
    paraphrases: list[str] = field(default_factory=list)
    neighbours: list[tuple[str, str]] = field(default_factory=list)  # (prompt, its answer) to keep
    attributes: list[tuple[str, str]] = field(default_factory=list)  # the subject's other facts to keep


@dataclass
class CaseScores:
    efficacy: float  # score: P(new target) > P(old), 0 or 1
    efficacy_top1: float
    paraphrase: float  # share of paraphrases
    paraphrase_top1: float
    neighbourhood: float  # share of neighbours with P(answer) > P(new target)
    neighbourhood_top1: float  # share of neighbours (right before) still right
    attribute_top1: float  # share of the subject's other facts (right before) still right
    p_new_target: float  # P(new target) on the request's prompt after the edit


def _logits(model: Transformer, prompts: Sequence[str]) -> torch.Tensor:
    if not prompts:
        return torch.zeros(0, model.cfg.d_vocab)
    with torch.no_grad():
        return last_token_logits(model, list(prompts)).double()


def _share(x: torch.Tensor) -> float:
    return float(x.double().mean()) if x.numel() else float("nan")


def _measure(model: Transformer, case: EditCase) -> dict[str, torch.Tensor]:
    """Logits of every prompt of the case (one pass)."""
    prompts = [case.request.prompt] + case.paraphrases + [p for p, _ in case.neighbours] + [p for p, _ in case.attributes]
    logits = _logits(model, prompts)
    a, b = 1, 1 + len(case.paraphrases)
    c = b + len(case.neighbours)
    return {"request": logits[:1], "paraphrases": logits[a:b], "neighbours": logits[b:c], "attributes": logits[c:]}


def _scores(model: Transformer, case: EditCase, before: dict, after: dict) -> CaseScores:
    new, old = answer_token(model, case.request.new_target), answer_token(model, case.old)
    req, para = after["request"], after["paraphrases"]
    n_ids = torch.tensor([answer_token(model, a) for _, a in case.neighbours], dtype=torch.long)
    a_ids = torch.tensor([answer_token(model, a) for _, a in case.attributes], dtype=torch.long)
    rows_n = torch.arange(len(n_ids))
    right_n = before["neighbours"].argmax(-1) == n_ids if len(n_ids) else torch.zeros(0, dtype=torch.bool)
    right_a = before["attributes"].argmax(-1) == a_ids if len(a_ids) else torch.zeros(0, dtype=torch.bool)
    nb = after["neighbours"]
    return CaseScores(
        efficacy=float(req[0, new] > req[0, old]),
        efficacy_top1=float(req[0].argmax() == new),
        paraphrase=_share(para[:, new] > para[:, old]),
        paraphrase_top1=_share(para.argmax(-1) == new),
        neighbourhood=_share(nb[rows_n, n_ids] > nb[:, new]) if len(n_ids) else float("nan"),
        neighbourhood_top1=_share((nb.argmax(-1) == n_ids)[right_n]) if len(n_ids) else float("nan"),
        attribute_top1=_share((after["attributes"].argmax(-1) == a_ids)[right_a]) if len(a_ids) else float("nan"),
        p_new_target=float(req[0].softmax(-1)[new]),
    )


def evaluate_edit(model: Transformer, case: EditCase, edit: Optional[Edit] = None) -> CaseScores:
    """The case's scores with `edit` applied (None: the model as it is)."""
    before = _measure(model, case)
    if edit is None:
        return _scores(model, case, before, before)
    with edit.applied(model):
        after = _measure(model, case)
    return _scores(model, case, before, after)


def mean_loss(model: Transformer, texts: Sequence[str], batch_size: int = 256) -> float:
    """Mean next-token loss over the real tokens of `texts` (after the first)."""
    total, count = 0.0, 0
    for batch in padded_batches(model, texts, batch_size):
        tokens, mask = batch.tokens, batch.mask
        with torch.no_grad():
            nll = model.loss_fn(model(tokens, attention_mask=mask).double(), tokens, mask, per_token=True)
        total += float(nll.sum())  # padding targets contribute 0
        count += int(mask[:, 1:].sum()) if mask is not None else nll.numel()
    return total / max(1, count)


@dataclass
class EditReport:
    method: str
    n_cases: int
    means: dict[str, float]  # metric -> mean over cases, in percent
    score: float  # harmonic mean of the efficacy, paraphrase and neighbourhood scores
    loss_before: float
    loss_after: float  # with all edits (one at a time: their mean)
    seconds_per_edit: float
    cases: list[dict] = field(default_factory=list)

    @property
    def loss_increase(self) -> float:
        """Relative increase of the fluency loss, in percent."""
        return 100 * (self.loss_after / self.loss_before - 1)

    def to_dict(self) -> dict:
        return asdict(self) | {"loss_increase_percent": self.loss_increase}


def evaluate_edits(model: Transformer, cases: Sequence[EditCase], edits: Sequence[Edit],
                   fluency_texts: Sequence[str] = (), *, method: str = "", progress: bool = True) -> EditReport:
    """Score `cases` with one edit each (`edits` as long as `cases`, each applied alone) or one edit
    for all (`edits` of length 1, e.g. MEMIT); see the module docstring."""
    if len(edits) not in (1, len(cases)):
        raise ValueError(f"give one edit per case ({len(cases)}) or one edit for all, got {len(edits)}")
    shared = len(edits) == 1 and len(cases) > 1
    per_case = []
    losses = []
    loss_before = mean_loss(model, fluency_texts) if fluency_texts else float("nan")
    if shared:
        before = [_measure(model, c) for c in cases]
        with edits[0].applied(model):
            after = [_measure(model, c) for c in cases]
            if fluency_texts:
                losses.append(mean_loss(model, fluency_texts))
        per_case = [_scores(model, c, b, a) for c, b, a in zip(cases, before, after)]
    else:
        for case, edit in progress_bar(list(zip(cases, edits)), progress=progress, desc="evaluating edits"):
            per_case.append(evaluate_edit(model, case, edit))
            if fluency_texts:
                with edit.applied(model):
                    losses.append(mean_loss(model, fluency_texts))
    names = [f for f in CaseScores.__dataclass_fields__ if f != "p_new_target"]
    means = {}
    for name in names:
        values = [getattr(s, name) for s in per_case if getattr(s, name) == getattr(s, name)]  # skip NaN
        means[name] = 100 * sum(values) / len(values) if values else float("nan")
    score = harmonic_mean([max(means[m], 1e-9) for m in METRICS])
    seconds = sum(float(e.info.get("seconds", 0.0)) for e in edits) / max(1, len(cases))
    return EditReport(method or edits[0].method, len(cases), means, score, loss_before,
                      sum(losses) / len(losses) if losses else float("nan"), seconds,
                      [asdict(s) | {"request": c.request.to_dict()} for c, s in zip(cases, per_case)])


__all__ = ["EditCase", "CaseScores", "evaluate_edit", "evaluate_edits", "EditReport", "mean_loss", "METRICS"]
