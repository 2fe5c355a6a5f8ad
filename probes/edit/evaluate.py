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

`compare_edit(model, edit, request, old, groups, keep=...)` is the prompt-by-prompt view of one
edit: each prompt's top token and probability, P(new target) and P(old answer) before and after,
with the scores on top; an `EditComparison` (`to_view()`, `show()`, `save_html`: kind "edit").
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from statistics import harmonic_mean
from typing import Collection, Mapping, Optional, Sequence

import torch

from interp.progress import progress_bar
from interp.views import View, Viewable
from interp.tokens import padded_batches
from interp.words import answer_token, token_text
from models.transformer import Transformer, last_token_logits
from probes.edit.contexts import mean_key
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
        return torch.zeros(0, model.cfg.d_vocab, dtype=torch.float64, device=model.device)
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
    on = req.device
    n_ids = torch.tensor([answer_token(model, a) for _, a in case.neighbours], dtype=torch.long, device=on)
    a_ids = torch.tensor([answer_token(model, a) for _, a in case.attributes], dtype=torch.long, device=on)
    rows_n = torch.arange(len(n_ids), device=on)
    right_n = before["neighbours"].argmax(-1) == n_ids if len(n_ids) else torch.zeros(0, dtype=torch.bool, device=on)
    right_a = before["attributes"].argmax(-1) == a_ids if len(a_ids) else torch.zeros(0, dtype=torch.bool, device=on)
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


def measure_cases(model: Transformer, cases: Sequence[EditCase]) -> list[dict[str, torch.Tensor]]:
    """The logits of every case's prompts on the model as it is now (e.g. before a run of edits)."""
    return [_measure(model, c) for c in cases]


def scores_after(model: Transformer, cases: Sequence[EditCase], before: Sequence[dict]) -> list[CaseScores]:
    """Each case's scores on the model as it is now (edits applied), against `before`
    (`measure_cases` on the unedited model)."""
    return [_scores(model, c, b, _measure(model, c)) for c, b in zip(cases, before)]


def mean_scores(per_case: Sequence[CaseScores]) -> dict[str, float]:
    """metric -> the mean over cases in percent (cases where it is NaN, e.g. no neighbours, skipped)."""
    means = {}
    for name in (f for f in CaseScores.__dataclass_fields__ if f != "p_new_target"):
        values = [getattr(s, name) for s in per_case if getattr(s, name) == getattr(s, name)]  # skip NaN
        means[name] = 100 * sum(values) / len(values) if values else float("nan")
    return means


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
    seconds = sum(float(e.info.get("seconds", 0.0)) for e in edits) / max(1, len(cases))
    return edit_report(method or edits[0].method, cases, per_case, loss_before, losses, seconds)


def edit_report(method: str, cases: Sequence[EditCase], per_case: Sequence[CaseScores], loss_before: float,
                losses: Sequence[float], seconds_per_edit: float) -> EditReport:
    """The EditReport of per-case scores (means over cases, the harmonic score), the fluency loss
    before and with the edits (`losses`: one per edit applied, averaged), and the time per edit."""
    means = mean_scores(per_case)
    score = harmonic_mean([max(means[m], 1e-9) for m in METRICS])
    return EditReport(method, len(cases), means, score, loss_before,
                      sum(losses) / len(losses) if losses else float("nan"), seconds_per_edit,
                      [asdict(s) | {"request": c.request.to_dict()} for c, s in zip(cases, per_case)])


def heldout_key_cosines(model: Transformer, case: EditCase, edit: Edit) -> list[float]:
    """Per held-out paraphrase of `case`: the cosine between the key a one-layer, one-request edit
    was fitted at (`edit.keys`) and the subject's key in that paraphrase alone. Low values say the
    paraphrase reaches the layer with another key than the one the edit rewrote."""
    if len(edit.keys) != 1 or len(next(iter(edit.keys.values()))) != 1:
        raise ValueError(f"heldout_key_cosines needs an edit of one request at one layer with its fitted key "
                         f"({edit.method} edit with keys at layers {sorted(edit.keys)})")
    (layer, keys), = edit.keys.items()
    fitted = keys[0]
    return [float(torch.nn.functional.cosine_similarity(fitted, mean_key(model, layer, [p], case.request.subject),
                                                        dim=0)) for p in case.paraphrases]


# ============================================================ one edit, prompt by prompt
@dataclass
class PromptChange:
    """One prompt before and after an edit. `role`: "new" (it should now give the new target) or
    "keep" (it should keep `expected`, its answer). Probabilities are of the next token."""

    group: str
    role: str
    prompt: str
    expected: str  # the answer that counts as right after the edit
    top_before: str
    p_top_before: float
    top_after: str
    p_top_after: float
    p_new_before: float  # P(the request's new target)
    p_new_after: float
    p_old_before: float  # P(the old answer of the edited fact)
    p_old_after: float
    p_expected_before: float
    p_expected_after: float
    right_before: bool  # the top token is the expected answer
    right_after: bool

    @property
    def status(self) -> str:
        """"intended" (a "new" prompt now gives the new target), "missed" (it does not), "changed"
        (a "keep" prompt's top token changed) or "kept"."""
        if self.role == "new":
            return "intended" if self.right_after else "missed"
        return "changed" if self.top_after != self.top_before else "kept"

    def to_dict(self) -> dict:
        return asdict(self) | {"status": self.status}


@dataclass
class EditComparison(Viewable):
    """Every prompt of an edit before and after (`rows`, grouped), with the scores (`scores`, in
    percent): efficacy on the request's prompt, paraphrase on the `paraphrase_groups`, specificity on
    the "keep" prompts, and the fluency loss when it was measured."""

    request: EditRequest
    old: str
    method: str
    rows: list[PromptChange]
    paraphrase_groups: list[str] = field(default_factory=list)
    layer: Optional[int] = None
    loss_before: float = float("nan")
    loss_after: float = float("nan")

    @property
    def groups(self) -> list[str]:
        return list(dict.fromkeys(r.group for r in self.rows))

    @property
    def scores(self) -> dict[str, float]:
        """efficacy / efficacy_top1 (the request's prompt: P(new) > P(old); the new target top-1),
        paraphrase / paraphrase_top1 (the same over the paraphrase groups), neighbourhood (keep
        prompts with P(their answer) > P(new)), specificity (keep prompts right before and still right
        after), loss_increase (fluency, relative, when measured); all in percent, NaN without prompts."""
        def share(flags: list[bool]) -> float:
            return 100 * sum(flags) / len(flags) if flags else float("nan")

        req = [r for r in self.rows if r.role == "new" and r.prompt == self.request.prompt][:1]
        para = [r for r in self.rows if r.role == "new" and r.group in self.paraphrase_groups
                and r.prompt != self.request.prompt]
        keep = [r for r in self.rows if r.role == "keep"]
        out = {"efficacy": share([r.p_new_after > r.p_old_after for r in req]),
               "efficacy_top1": share([r.right_after for r in req]),
               "paraphrase": share([r.p_new_after > r.p_old_after for r in para]),
               "paraphrase_top1": share([r.right_after for r in para]),
               "neighbourhood": share([r.p_expected_after > r.p_new_after for r in keep]),
               "specificity": share([r.right_after for r in keep if r.right_before])}
        if self.loss_before == self.loss_before:  # measured
            out["loss_increase"] = 100 * (self.loss_after / self.loss_before - 1)
        return out

    def group_shares(self) -> dict[str, dict[str, float]]:
        """group -> {"before", "after"}: the share of its prompts whose top token is the right answer."""
        out = {}
        for g in self.groups:
            rows = [r for r in self.rows if r.group == g]
            out[g] = {"before": sum(r.right_before for r in rows) / len(rows),
                      "after": sum(r.right_after for r in rows) / len(rows)}
        return out

    def to_dict(self) -> dict:
        return {"request": self.request.to_dict(), "old": self.old, "method": self.method, "layer": self.layer,
                "paraphrase_groups": list(self.paraphrase_groups), "loss_before": self.loss_before,
                "loss_after": self.loss_after, "scores": self.scores, "rows": [r.to_dict() for r in self.rows]}

    def to_view(self) -> View:
        """Kind "edit": the scores on top, then a sortable table of every prompt (filter by group);
        green where a prompt now gives the new target, red where a prompt that should keep its answer
        changed its top token."""
        where = f", MLP {self.layer}" if self.layer is not None else ""
        title = (f"{self.method.upper()} edit: {self.request.prompt!r} {self.old} -> {self.request.new_target}"
                 f"{where}")
        data = {"request": self.request.to_dict(), "old": self.old, "method": self.method, "layer": self.layer,
                "scores": self.scores, "groups": self.groups, "paraphrase_groups": list(self.paraphrase_groups),
                "shares": self.group_shares(), "rows": [r.to_dict() for r in self.rows]}
        notes = [f"P(new) is P({self.request.new_target!r}), P(old) is P({self.old!r}); green: the new target is now "
                 "top-1 where it should be; red: a prompt that should keep its answer changed its top token."]
        return View("edit", data, title=title, notes=notes)


def _probabilities(model: Transformer, prompts: Sequence[str]) -> torch.Tensor:
    """[n_prompts, d_vocab] next-token probabilities (float64)."""
    return last_token_logits(model, list(prompts)).double().softmax(-1)


def _answer_id(model: Transformer, word: str) -> int:
    """The answer's token id, or -1 for an answer that is not one token (its probability is NaN)."""
    try:
        return answer_token(model, word)
    except ValueError:
        return -1


def compare_edit(model: Transformer, edit: Edit, request: EditRequest, old: str,
                 groups: Mapping[str, Sequence[tuple[str, str]]], *, keep: Collection[str] = (),
                 paraphrases: Optional[Collection[str]] = None, fluency_texts: Sequence[str] = (),
                 method: Optional[str] = None, layer: Optional[int] = None) -> EditComparison:
    """Every prompt of `groups` ({group: [(prompt, the answer that counts as right after the edit),
    ...]}) before and with `edit` applied (the model is restored): its top token and probability,
    P(request.new_target), P(`old`) and P(its answer). Groups named in `keep` should keep their
    answers; the others should now give the new target. `paraphrases`: the groups the paraphrase
    score is over (default: every group that should change, without the request's own prompt).
    `fluency_texts`: measure the mean next-token loss on them before and after."""
    if not groups or not all(len(pairs) for pairs in groups.values()):
        raise ValueError("compare_edit needs at least one group, each with at least one (prompt, answer)")
    unknown = [g for g in list(keep) + list(paraphrases or ()) if g not in groups]
    if unknown:
        raise ValueError(f"groups {unknown} are not among the given groups {list(groups)}")
    if paraphrases is not None and set(paraphrases) & set(keep):
        both = sorted(set(paraphrases) & set(keep))
        raise ValueError(f"a group cannot both keep its answers and be a paraphrase: {both}")
    pairs = [(g, p, a) for g, items in groups.items() for p, a in items]
    prompts = [p for _, p, _ in pairs]
    new_id, old_id = _answer_id(model, request.new_target), _answer_id(model, old)
    expected = torch.tensor([_answer_id(model, a) for _, _, a in pairs], device=model.device)
    before = _probabilities(model, prompts)
    loss_before = mean_loss(model, fluency_texts) if fluency_texts else float("nan")
    with edit.applied(model):
        after = _probabilities(model, prompts)
        loss_after = mean_loss(model, fluency_texts) if fluency_texts else float("nan")

    def at(probs: torch.Tensor, ids: torch.Tensor) -> list[float]:
        got = probs.gather(-1, ids.clamp(min=0)[:, None])[:, 0]
        return torch.where(ids >= 0, got, torch.full_like(got, float("nan"))).tolist()

    n = len(pairs)
    top_b, top_a = before.max(-1), after.max(-1)
    def fill(i: int) -> torch.Tensor:
        return torch.full((n,), i, device=before.device)

    col = {"new_b": at(before, fill(new_id)), "new_a": at(after, fill(new_id)),
           "old_b": at(before, fill(old_id)), "old_a": at(after, fill(old_id)),
           "exp_b": at(before, expected), "exp_a": at(after, expected)}
    rows = [PromptChange(g, "keep" if g in keep else "new", p, a, token_text(model, int(top_b.indices[i])),
                         float(top_b.values[i]), token_text(model, int(top_a.indices[i])), float(top_a.values[i]),
                         col["new_b"][i], col["new_a"][i], col["old_b"][i], col["old_a"][i], col["exp_b"][i],
                         col["exp_a"][i], bool(top_b.indices[i] == expected[i]), bool(top_a.indices[i] == expected[i]))
            for i, (g, p, a) in enumerate(pairs)]
    if paraphrases is None:
        paraphrases = [g for g in groups if g not in keep and any(p != request.prompt for p, _ in groups[g])]
    return EditComparison(request, old, method or edit.method, rows, list(paraphrases), layer, loss_before, loss_after)


__all__ = ["EditCase", "CaseScores", "evaluate_edit", "evaluate_edits", "edit_report", "heldout_key_cosines", "measure_cases", "scores_after", "mean_scores", "EditReport", "mean_loss", "METRICS",
           "PromptChange", "EditComparison", "compare_edit"]
