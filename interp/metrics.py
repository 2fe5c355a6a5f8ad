"""Metrics on logits for patching and attribution.

A metric maps logits [batch, pos, d_vocab] to a scalar (the mean over the
batch), as in TransformerLens, so any plain function works with the sweeps.
The metrics built here also declare the one position they read (`pos`) and can
score many patched runs at once (`at`): the sweeps then compute the logits of
that position only, which is where most of their speed comes from.

    ld = logit_diff(model, "basketball", "swimming")      # answer - counterfactual
    answer_margin(logits[:, -1], target_ids, other_ids)   # the same margin on any logits (RUNNER_UP: vs the best other)
    ld(logits)                                            # scalar
    p = probability(model, "basketball")
    r = normalized(ld, clean_value, corrupted_value)      # (x - corrupted) / (clean - corrupted)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence, Union

import torch

from interp.tokens import answer_tokens
from models import Transformer

Tokens = Union[int, str, Sequence[Union[int, str]], torch.Tensor]


def token_ids(tokens: Tokens, model: Optional[Transformer] = None) -> torch.Tensor:
    """Token ids [n] from ids, words (needs `model`; the answer-token policy of
    `interp.tokens.answer_token`: " " + word when that is one token, else the word), or a mix."""
    if isinstance(tokens, torch.Tensor):
        return tokens.reshape(-1).long()
    items = [tokens] if isinstance(tokens, (int, str)) else list(tokens)
    if model is None:
        words = [t for t in items if isinstance(t, str)]
        if words:
            raise ValueError(f"the word {words[0]!r} needs a model to turn it into a token id (pass model=...)")
        return torch.tensor([int(t) for t in items], dtype=torch.long)
    return answer_tokens(model, items)


RUNNER_UP = "runner-up"


def _ids_like(ids: Union[int, torch.Tensor], logits: torch.Tensor) -> torch.Tensor:
    """Token ids broadcast to logits[..., 0], with a trailing axis for `gather`."""
    ids = torch.as_tensor(ids, device=logits.device).long()
    return ids.expand(logits.shape[:-1])[..., None]


def answer_margin(logits: torch.Tensor, target: Union[int, torch.Tensor],
                  other: Union[None, int, str, torch.Tensor] = None) -> torch.Tensor:
    """The margin of an answer over a counterfactual, logit(target) - logit(other), at every row of
    logits [..., d_vocab] -> [...]: the one implementation (metrics, attribution, FFN probes).

    target, other: token ids (an int, or ids broadcastable to logits[..., 0], e.g. one per prompt);
    other=None: no counterfactual (the target's logit itself); other=RUNNER_UP ("runner-up"): the
    largest logit of any other token (> 0 exactly when the target is the unique top-1)."""
    t = _ids_like(target, logits)
    picked = logits.gather(-1, t)[..., 0]
    if other is None:
        return picked
    if isinstance(other, str):
        if other != RUNNER_UP:
            raise ValueError(f"other must be token ids, None or {RUNNER_UP!r}, got {other!r}")
        return picked - logits.scatter(-1, t, -torch.inf).max(-1).values
    return picked - logits.gather(-1, _ids_like(other, logits))[..., 0]


def _batch_ids(ids: torch.Tensor, logits_at: torch.Tensor) -> torch.Tensor:
    """ids [batch] or [1] for logits_at [..., batch, d_vocab] (a clear error for any other count)."""
    batch = logits_at.shape[-2]
    if ids.numel() not in (1, batch):
        raise ValueError(f"{ids.numel()} token ids for a batch of {batch} prompts: give one id, or one per prompt")
    return ids.reshape(-1).to(logits_at.device).expand(batch)


def _select(logits_at: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """logits_at [..., batch, d_vocab], ids [batch] or [1] -> [..., batch]."""
    return answer_margin(logits_at, _batch_ids(ids, logits_at))


@dataclass
class _PositionMetric:
    """Shared by the metrics that read the logits of one position."""

    pos: int

    def __call__(self, logits: torch.Tensor) -> torch.Tensor:
        """logits [..., batch, pos, d_vocab] -> [...] (mean over the batch)."""
        return self.at(logits[..., self.pos, :])

    def at(self, logits_at: torch.Tensor) -> torch.Tensor:  # [..., batch, d_vocab] -> [...]
        raise NotImplementedError


@dataclass
class LogitDiff(_PositionMetric):
    answer: torch.Tensor  # [batch] or [1]
    counterfactual: torch.Tensor
    name: str = "logit difference"

    def at(self, logits_at: torch.Tensor) -> torch.Tensor:
        diff = answer_margin(logits_at, _batch_ids(self.answer, logits_at), _batch_ids(self.counterfactual, logits_at))
        return diff.mean(-1)


@dataclass
class Probability(_PositionMetric):
    answer: torch.Tensor
    name: str = "answer probability"

    def at(self, logits_at: torch.Tensor) -> torch.Tensor:
        probs = logits_at.float().softmax(-1) if logits_at.dtype == torch.float16 else logits_at.softmax(-1)
        return _select(probs, self.answer).mean(-1)


@dataclass
class LogProb(_PositionMetric):
    answer: torch.Tensor
    name: str = "answer log-probability"

    def at(self, logits_at: torch.Tensor) -> torch.Tensor:
        return _select(logits_at.log_softmax(-1), self.answer).mean(-1)


@dataclass
class Normalized:
    """(metric - corrupted) / (clean - corrupted): 0 = as corrupted, 1 = as clean."""

    metric: object
    clean: float
    corrupted: float

    def __post_init__(self) -> None:
        if abs(self.clean - self.corrupted) < 1e-12:
            raise ValueError(
                f"clean and corrupted runs give the same metric value ({self.clean:.6g}): nothing to restore"
            )
        self.name = f"normalised {getattr(self.metric, 'name', 'metric')}"
        if hasattr(self.metric, "pos"):
            self.pos = self.metric.pos

    def _norm(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.corrupted) / (self.clean - self.corrupted)

    def __call__(self, logits: torch.Tensor) -> torch.Tensor:
        return self._norm(self.metric(logits))

    def at(self, logits_at: torch.Tensor) -> torch.Tensor:
        return self._norm(self.metric.at(logits_at))


def logit_diff(model: Transformer, answer: Tokens, counterfactual: Tokens, pos: int = -1) -> LogitDiff:
    """logit[answer] - logit[counterfactual] at `pos`, mean over the batch (one token per prompt, or one for all)."""
    return LogitDiff(pos, token_ids(answer, model), token_ids(counterfactual, model))


def probability(model: Transformer, answer: Tokens, pos: int = -1) -> Probability:
    """Softmax probability of the answer at `pos`, mean over the batch."""
    return Probability(pos, token_ids(answer, model))


def log_prob(model: Transformer, answer: Tokens, pos: int = -1) -> LogProb:
    """Log-softmax of the answer at `pos`, mean over the batch."""
    return LogProb(pos, token_ids(answer, model))


@dataclass
class Logit(_PositionMetric):
    answer: torch.Tensor
    name: str = "answer logit"

    def at(self, logits_at: torch.Tensor) -> torch.Tensor:
        return _select(logits_at, self.answer).mean(-1)


def logit(model: Transformer, answer: Tokens, pos: int = -1) -> Logit:
    """The answer's logit at `pos`, mean over the batch."""
    return Logit(pos, token_ids(answer, model))


def normalized(metric, clean_value: float, corrupted_value: float) -> Normalized:
    """Normalised restoration (patched - corrupted) / (clean - corrupted)."""
    return Normalized(metric, float(clean_value), float(corrupted_value))


def metric_name(metric, default: str = "metric") -> str:
    return getattr(metric, "name", getattr(metric, "__name__", default))


def is_positional(metric) -> bool:
    """Whether the metric reads one position's logits and can score many runs at once."""
    return isinstance(getattr(metric, "pos", None), int) and callable(getattr(metric, "at", None))


def scalar(value) -> float:
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            raise ValueError(f"a metric must return a scalar, got a tensor of shape {tuple(value.shape)}")
        return float(value.detach())
    return float(value)


__all__ = [
    "LogitDiff", "Probability", "LogProb", "Logit", "Normalized", "logit_diff", "probability", "log_prob", "logit",
    "normalized", "token_ids", "metric_name", "is_positional", "answer_margin", "RUNNER_UP",
]
