"""Causal tracing averaged over many facts, positions grouped into ROME's categories (its figures 2 and 3).

    average_trace(model, [(prompt, subject, answer), ...], kind="mlp", window=1)   # AverageTrace [layer, category]
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

import torch

from interp.progress import progress_bar
from interp.results import LabelledResult
from interp.tokens import token_text
from models.transformer import Transformer
from probes.causal_trace import DEFAULT_BATCH_SIZE, Answer, Kind, TraceResult, check_kind, prepare, trace_prepared
from probes.subjects import CATEGORIES, Prompt, Subject, position_categories


@dataclass
class AverageTrace(LabelledResult):
    """Causal tracing averaged over facts, positions grouped into ROME's categories.

    indirect_effect: [n_layers, n_categories] (the model's dtype) mean over facts of (score - corrupted prob),
    positions within a category averaged first; NaN where no fact has that category
    (e.g. "middle subject tokens" with two-token subjects). `values` is indirect_effect;
    axes ("layer", "category").
    counts: facts contributing to each category. total_effect, clean_prob, corrupted_prob:
    means over the facts used. n_skipped: facts left out because the clean model's top-1
    was not the answer (only_correct=True); skipped lists them as (prompt, answer, top-1).
    """

    indirect_effect: torch.Tensor
    categories: list[str]
    counts: list[int]
    total_effect: float
    clean_prob: float
    corrupted_prob: float
    n_facts: int
    n_skipped: int
    kind: str
    window: int
    skipped: list[tuple[str, str, str]] = field(default_factory=list)
    traces: list[TraceResult] = field(default_factory=list, repr=False)
    method: str = "average causal tracing"
    axes: tuple[str, ...] = ("layer", "category")
    metric_name: str = "average indirect effect"

    @property
    def values(self) -> torch.Tensor:
        return self.indirect_effect

    @property
    def labels(self) -> dict[str, list[str]]:
        return {"layer": [f"L{l}" for l in range(self.indirect_effect.shape[0])], "category": list(self.categories)}

    @property
    def title(self) -> str:
        win = "" if self.kind == "resid" else f", window {self.window}"
        return f"average causal trace ({self.kind}{win}) over {self.n_facts} facts"

    def _extra_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind, "window": self.window, "counts": self.counts, "total_effect": self.total_effect,
            "clean_prob": self.clean_prob, "corrupted_prob": self.corrupted_prob, "n_facts": self.n_facts,
            "n_skipped": self.n_skipped, "skipped": [list(s) for s in self.skipped],
        }


def average_trace(
    model: Transformer,
    facts: Sequence[tuple[Prompt, Subject, Answer]],
    *,
    kind: Kind = "resid",
    noise: float = 3.0,
    n_samples: int = 10,
    window: int = 10,
    seed: int = 0,
    only_correct: bool = True,
    batch_size: int = DEFAULT_BATCH_SIZE,
    progress: bool = True,
) -> AverageTrace:
    """Average indirect effect of restoring states over many facts (ROME's figure 2 / 3).

    facts: (prompt, subject, answer) triples.
    Each fact is traced with Gaussian noise (seed + its index) as in `trace`; its
    indirect effect [n_layers, n_pos] is summarised per `position_categories` (mean over
    the positions of a category), then averaged over facts -> [n_layers, 6].
    only_correct: skip facts whose clean top-1 prediction is not the answer.
    """
    triples = _check(facts, kind)
    records, traces = [], []
    for i, fact in enumerate(progress_bar(triples, progress, desc=f"average trace ({kind})")):
        record, trace = fact_record(model, i, fact, kind=kind, noise=noise, n_samples=n_samples, window=window,
                                    seed=seed, only_correct=only_correct, batch_size=batch_size)
        records.append(record)
        traces += [trace] if trace is not None else []
    return combine_records(records, n_layers=model.cfg.n_layers, kind=kind, window=window,
                           dtype=model.embed.W_E.dtype, traces=traces)


def _check(facts: Sequence, kind: Kind) -> list[tuple[Prompt, Subject, Answer]]:
    check_kind(kind)
    triples = []
    for f in facts:
        if not (isinstance(f, (tuple, list)) and len(f) == 3):
            raise TypeError(f"facts must be (prompt, subject, answer) triples, got {f!r}")
        triples.append(tuple(f))
    return triples


def fact_record(model: Transformer, index: int, fact: tuple[Prompt, Subject, Answer], *, kind: Kind = "resid",
                noise: float = 3.0, n_samples: int = 10, window: int = 10, seed: int = 0, only_correct: bool = True,
                batch_size: int = DEFAULT_BATCH_SIZE) -> tuple[dict, Optional[TraceResult]]:
    """One fact's part of `average_trace` (the fact at `index` of the list, traced with seed + index):
    (a JSON-ready record for `combine_records`, the trace or None when skipped). The record holds
    "categories" (per category, the indirect effect [n_layers] averaged over its positions, float64,
    or None where the prompt has no such position), the three probabilities, and "skipped"
    ((prompt, answer, top-1) or None)."""
    prompt, subject, answer = fact
    prep = prepare(model, prompt, subject, answer)
    if only_correct and prep.top_id != prep.answer_id:
        skipped = [prompt if isinstance(prompt, str) else str(prep.str_tokens), prep.answer, token_text(model, prep.top_id)]
        return {"skipped": skipped}, None
    result = trace_prepared(model, prep, kind=kind, noise=noise, n_samples=n_samples, window=window,
                            corruption="noise", seed=seed + index, batch_size=batch_size)
    ie = result.indirect_effect.double()
    categories = [ie[:, positions].mean(-1).tolist() if positions else None
                  for positions in position_categories(len(result.tokens), result.subject_span).values()]
    return {"skipped": None, "categories": categories, "total_effect": result.total_effect,
            "clean_prob": result.clean_prob, "corrupted_prob": result.corrupted_prob}, result


def combine_records(records: Sequence[dict], *, n_layers: int, kind: Kind, window: int, dtype: torch.dtype,
                    traces: Sequence[TraceResult] = ()) -> AverageTrace:
    """The `AverageTrace` of the facts' `fact_record`s, summed in their order (float64)."""
    sums = torch.zeros(n_layers, len(CATEGORIES), dtype=torch.float64, device="cpu")  # from JSON-ready records
    counts = [0] * len(CATEGORIES)
    kept = [r for r in records if r["skipped"] is None]
    for r in kept:
        for c, values in enumerate(r["categories"]):
            if values is not None:
                sums[:, c] += torch.tensor(values, dtype=torch.float64, device="cpu")
                counts[c] += 1
    denom = torch.tensor([n if n else float("nan") for n in counts], dtype=torch.float64, device="cpu")
    mean = lambda xs: float(sum(xs) / len(xs)) if xs else float("nan")  # noqa: E731
    skipped = [tuple(r["skipped"]) for r in records if r["skipped"] is not None]
    return AverageTrace(
        indirect_effect=(sums / denom).to(dtype), categories=list(CATEGORIES), counts=counts,
        total_effect=mean([r["total_effect"] for r in kept]), clean_prob=mean([r["clean_prob"] for r in kept]),
        corrupted_prob=mean([r["corrupted_prob"] for r in kept]), n_facts=len(kept), n_skipped=len(skipped),
        kind=kind, window=1 if kind == "resid" else window, skipped=skipped, traces=list(traces),
    )


__all__ = ["AverageTrace", "average_trace", "fact_record", "combine_records"]
