"""Attention knockout (Geva et al. 2023, "Dissecting Recall"): cut attention edges into the
last position and watch the answer's probability.

    attention_knockout(model, prompt, "Michael Jordan", sources="subject", window=1)   # KnockoutResult [layer]
    attention_knockout_all(model, prompt, "Michael Jordan")                            # [sources, layer]

A knockout is a set of patches on the attention scores (`hook_attn_scores` set to -inf
for the cut edges, in every head of a window of layers), one row of
`interp.engine.run_patched` per (source set, layer).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional, Sequence, Union

import torch

from interp import names as hook_names
from interp.checks import resolve_pos, resolve_positions
from interp.engine import Patch, run_patched
from interp.metrics import Probability
from interp.results import LabelledResult
from models.transformer import Transformer
from probes.causal_trace import DEFAULT_BATCH_SIZE, Answer, Prepared, prepare, window_layers
from probes.subjects import Prompt, Subject

SourceSpec = Union[str, Sequence[int]]
SOURCE_SETS = ("subject", "relation", "last")
KNOCKOUT_WINDOW = 9  # Geva et al. 2023 (GPT-2 XL); clipped to the model's depth


@dataclass
class KnockoutResult(LabelledResult):
    """Attention knockout: the answer's probability when the attention edges from source
    positions to the target position are cut in a window of layers.

    probs: [n_layers] (one source set) or [n_sources, n_layers]: P(answer) with the
    knockout in blocked_layers[L] for column L. `values` is the relative change
    (probs - clean_prob) / clean_prob x 100 %; axes ("layer",) or ("sources", "layer").
    """

    probs: torch.Tensor
    clean_prob: float
    tokens: list[str]
    subject_span: tuple[int, int]
    answer: str
    target_pos: int
    window: int
    sources: list[str]
    source_positions: list[list[int]]
    blocked_layers: list[list[int]]
    answer_id: int = -1
    method: str = "attention knockout"

    @property
    def relative_change(self) -> torch.Tensor:
        """(p_knockout - p_clean) / p_clean x 100 (percent), same shape as probs."""
        return (self.probs - self.clean_prob) / self.clean_prob * 100.0

    @property
    def values(self) -> torch.Tensor:
        return self.relative_change

    @property
    def axes(self) -> tuple[str, ...]:
        return ("layer",) if self.probs.dim() == 1 else ("sources", "layer")

    @property
    def labels(self) -> dict[str, list[str]]:
        out = {"layer": [f"L{l}" for l in range(self.probs.shape[-1])]}
        if self.probs.dim() == 2:
            out["sources"] = list(self.sources)
        return out

    @property
    def metric_name(self) -> str:
        return f"% change of P({self.answer})"

    @property
    def title(self) -> str:
        return f"attention knockout into {self.tokens[self.target_pos]!r} ({self.target_pos}), window {self.window}"

    def _extra_dict(self) -> dict[str, Any]:
        return {
            "answer": self.answer, "answer_id": self.answer_id, "tokens": self.tokens,
            "subject_span": list(self.subject_span), "target_pos": self.target_pos, "window": self.window,
            "sources": self.sources, "source_positions": self.source_positions,
            "blocked_layers": self.blocked_layers, "clean_prob": self.clean_prob, "probs": self.probs.tolist(),
        }


def _source_positions(prep: Prepared, sources: SourceSpec, target: int) -> tuple[str, list[int]]:
    """(name, key positions) of a source set; only positions <= target matter (causal mask)."""
    start, end = prep.span
    n_pos = len(prep.tokens)
    if isinstance(sources, str):
        if sources == "subject":
            return sources, [p for p in range(start, end) if p <= target]
        if sources == "relation":
            first = 1 if prep.has_bos else 0
            return sources, [p for p in range(first, target) if not start <= p < end]
        if sources == "last":
            return sources, [target]
        raise ValueError(f"sources must be one of {SOURCE_SETS} or a list of positions, got {sources!r}")
    positions = sorted(set(resolve_positions(list(sources), n_pos, "source position")))
    return f"positions {positions}", positions


def _attends_to_nothing(pattern: torch.Tensor) -> torch.Tensor:
    """A query whose keys are all cut has softmax(-inf, ...) = NaN: it attends to nothing (weights 0)."""
    return torch.nan_to_num(pattern, nan=0.0)


def knockout_patches(model: Transformer, layers: Sequence[int], positions: Sequence[int], target: int) -> list[Patch]:
    """Cut the attention edges key -> target for the keys at `positions`, in every head of `layers`.
    Layers get a patch even when nothing is cut, so every row runs the same (explicit) attention."""
    patches = []
    for l in layers:
        patches.append(Patch(hook_names.act_name("attn_scores", l), (slice(None), target, list(positions)),
                             float("-inf")))
        if set(range(target + 1)) <= set(positions):  # the target may attend to nothing
            patches.append(Patch(hook_names.act_name("pattern", l), (slice(None), target), _attends_to_nothing))
    return patches


@torch.no_grad()
def _knockout(model: Transformer, prep: Prepared, source_sets: Sequence[SourceSpec], window: Optional[int], target_pos: int,
              batch_size: int, progress: bool) -> KnockoutResult:
    n_layers, n_pos = model.cfg.n_layers, len(prep.tokens)
    target = resolve_pos(target_pos, n_pos, "target_pos")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    window = min(KNOCKOUT_WINDOW, n_layers) if window is None else window
    blocked_layers = [window_layers(L, window, n_layers) for L in range(n_layers)]
    named = [_source_positions(prep, s, target) for s in source_sets]
    rows = [knockout_patches(model, layers, positions, target) for _, positions in named for layers in blocked_layers]
    out = run_patched(model, prep.tokens[None], rows, Probability(-1, torch.tensor([prep.answer_id], device=model.device)),
                      batch_size=batch_size, progress=progress, desc="attention knockout")
    return KnockoutResult(
        probs=out.values.reshape(len(named), n_layers).to(prep.clean_probs.dtype), clean_prob=prep.clean_prob,
        tokens=prep.str_tokens, subject_span=prep.span, answer=prep.answer, target_pos=target, window=window,
        sources=[n for n, _ in named], source_positions=[p for _, p in named], blocked_layers=blocked_layers,
        answer_id=prep.answer_id,
    )


def attention_knockout(
    model: Transformer,
    prompt: Prompt,
    subject: Subject,
    answer: Answer = None,
    *,
    sources: SourceSpec = "subject",
    window: Optional[int] = None,
    target_pos: int = -1,
    batch_size: int = DEFAULT_BATCH_SIZE,
    progress: bool = True,
) -> KnockoutResult:
    """Attention knockout (Geva et al. 2023): for each layer L, cut the attention edges
    from `sources` to `target_pos` in all heads of window_layers(L, window, n_layers),
    by setting those attention scores (blocks.{l}.attn.hook_attn_scores) to -inf before
    the softmax (the target's other weights are re-normalised; a target left with no key
    attends to nothing). Rows = layers, batched.

    sources: "subject" (the subject's positions), "relation" (every other position
        before the target except BOS at 0 when the model prepended it), "last" (the
        target itself), or a list of positions (may be empty: nothing is cut).
    window: default min(9, n_layers) (the paper's 9 on GPT-2 XL, clipped to the depth);
        on a shallow model, window=1 cuts one layer at a time.
    target_pos: the query position whose incoming edges are cut (default the last,
        where the answer is predicted).
    Returns a KnockoutResult with probs [n_layers] and relative change in %.
    """
    prep = prepare(model, prompt, subject, answer)
    result = _knockout(model, prep, [sources], window, target_pos, batch_size, progress)
    result.probs = result.probs[0]
    return result


def attention_knockout_all(
    model: Transformer,
    prompt: Prompt,
    subject: Subject,
    answer: Answer = None,
    *,
    sources: Sequence[SourceSpec] = SOURCE_SETS,
    window: Optional[int] = None,
    target_pos: int = -1,
    batch_size: int = DEFAULT_BATCH_SIZE,
    progress: bool = True,
) -> KnockoutResult:
    """`attention_knockout` for several source sets at once (default subject, relation,
    last), batched: probs [n_sources, n_layers], axes ("sources", "layer")."""
    if isinstance(sources, str):
        raise TypeError("attention_knockout_all takes a sequence of source sets; use attention_knockout for one")
    prep = prepare(model, prompt, subject, answer)
    return _knockout(model, prep, list(sources), window, target_pos, batch_size, progress)


__all__ = ["KnockoutResult", "attention_knockout", "attention_knockout_all", "knockout_patches", "SOURCE_SETS"]
