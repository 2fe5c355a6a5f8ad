"""A task whose circuit is known in advance: induction on sequences of random tokens with a repeat.

A 2-layer attention-only Transformer (one head per layer, rotary positions) trained on random
tokens in which a segment reappears learns to predict the repeat by induction, the textbook
circuit: the layer-0 head is a previous-token head (position j attends to j - 1, ~0.9 of its
attention, and writes "the token before me was t_{j-1}"); the layer-1 head is an induction head
that reads it through its key (K-composition), so the query at a second-copy position i (token
t_i) attends to the first-copy position j whose previous token is t_i (~0.9 of its attention),
and copies t_j (its value reads the token embedding) to the logits. With rotary positions the
residual stream carries no position embedding: position enters only through the query-key
rotation, so a previous-token head is easy to learn and nothing but K-composition can find j.
Edge attribution on `induction_pair` recovers (embed -> L0H0.v), (L0H0 -> L1H0.k),
(embed -> L1H0.v), (L1H0 -> logits), and these 4 edges alone carry ~0.95 of the clean-vs-corrupted
difference of `InductionMetric`.

    model, record = train_induction_model(seed=0)           # ~6 s on one CPU thread
    clean, corrupted = induction_pair(model.cfg.d_vocab, half=8, length=model.cfg.n_ctx, seed=1)
    metric = InductionMetric(clean, half=8)                  # mean logit of the repeated tokens
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Union

import torch
import torch.nn.functional as F

from interp.progress import progress_bar
from models import Transformer, TransformerConfig

BOS = 0


def repeated_tokens(batch: int, half: int, d_vocab: int, generator: torch.Generator,
                    length: Optional[int] = None) -> torch.Tensor:
    """[batch, length]: bos, `half` random tokens (1 .. d_vocab - 1), the same tokens again, then
    random tokens up to `length` (default 1 + 2 half)."""
    length = length or 1 + 2 * half
    if length < 1 + 2 * half:
        raise ValueError(f"length {length} cannot hold bos and two copies of {half} tokens")
    first = torch.randint(1, d_vocab, (batch, half), generator=generator)
    tail = torch.randint(1, d_vocab, (batch, length - 1 - 2 * half), generator=generator)
    return torch.cat([torch.full((batch, 1), BOS), first, first, tail], dim=1)


def training_batch(batch: int, max_half: int, d_vocab: int, generator: torch.Generator,
                   length: Optional[int] = None, *, min_half: int = 2, with_predictable: bool = False
                   ) -> Union[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
    """[batch, length] (default length 1 + 3 max_half): bos, then random tokens (1 .. d_vocab - 1)
    in which a segment of min_half .. max_half tokens, at a random place, is copied once further
    on: in half of the rows right after itself ([.., A, A, ..]), in the others after a random gap
    of random tokens. Segment length and places vary from row to row, so no fixed position or
    offset predicts the copy: only induction does.

    with_predictable: also return predictable [batch, length - 1] bool, aligned with
    `model.loss(tokens, per_token=True)` (entry t: the target token t + 1): True for the copy's
    tokens after its first, which induction can predict (the rest is unpredictable noise)."""
    length = length or 1 + 3 * max_half
    if not 2 <= min_half <= max_half:
        raise ValueError(f"need 2 <= min_half <= max_half, got {min_half} and {max_half}")
    if length < 1 + 2 * max_half:
        raise ValueError(f"length {length} cannot hold bos and two copies of {max_half} tokens")
    tokens = torch.randint(1, d_vocab, (batch, length), generator=generator)
    tokens[:, 0] = BOS
    half = torch.randint(min_half, max_half + 1, (batch,), generator=generator)
    first = 1 + (torch.rand(batch, generator=generator) * (length - 2 * half)).long()  # 1 .. length - 2 half
    gap = (torch.rand(batch, generator=generator) * (length - 2 * half - first + 1)).long()  # 0 .. length - 2 half - first
    adjacent = torch.rand(batch, generator=generator) < 0.5
    second = first + half + torch.where(adjacent, 0, gap)  # the copy's start; second + half <= length
    offset = torch.arange(length)[None] - second[:, None]  # [batch, length]
    in_copy = (offset >= 0) & (offset < half[:, None])
    source = (first[:, None] + offset).clamp(0, length - 1)
    tokens = torch.where(in_copy, tokens.gather(1, source), tokens)
    if not with_predictable:
        return tokens
    return tokens, ((offset >= 1) & in_copy)[:, 1:]


def induction_pair(d_vocab: int, batch: int = 8, half: int = 8, length: Optional[int] = None,
                   seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(clean, corrupted) [batch, length]: clean repeats its first `half` tokens; corrupted has the
    same second copy (and tail) after a different random first copy, so nothing in it can be copied."""
    g = torch.Generator().manual_seed(seed)
    clean = repeated_tokens(batch, half, d_vocab, g, length)
    corrupted = clean.clone()
    fresh = torch.randint(1, d_vocab, (batch, half), generator=g)
    same = fresh == clean[:, 1: half + 1]
    corrupted[:, 1: half + 1] = torch.where(same, fresh % (d_vocab - 1) + 1, fresh)  # differs everywhere
    return clean, corrupted


@dataclass
class InductionMetric:
    """Mean logit, over the second copy's positions that induction can predict, of the clean
    sequence's next token: logits [..., batch, pos, d_vocab] -> [...]. `half`: the copies' length."""

    clean: torch.Tensor  # [batch, pos]
    half: int
    name: str = "induction logit"
    leading_dims = True  # scores many runs at once (interp.circuits batches rows of patches)

    def __call__(self, logits: torch.Tensor) -> torch.Tensor:
        positions = torch.arange(self.half + 1, 2 * self.half, device=logits.device)  # predicting tokens half + 2 .. 2 half
        targets = self.clean.to(logits.device)[:, positions + 1]  # [batch, n]
        picked = logits[..., positions, :].gather(-1, targets.expand(*logits.shape[:-3], -1, -1)[..., None])
        return picked[..., 0].mean((-1, -2))


@dataclass
class InductionRecord:
    steps: int
    losses: list[float]  # the training loss per step (predictable tokens weighted, see train_induction_model)
    second_half_loss: float  # final loss on the second copy's predictable tokens (held-out `repeated_tokens`, half = max_half)
    first_half_loss: float  # and on the first copy's (unpredictable: about log(d_vocab - 1))


def train_induction_model(*, d_vocab: int = 64, max_half: int = 8, length: Optional[int] = None, d_model: int = 32,
                          n_heads: int = 1, positional: str = "rotary", steps: int = 1000, batch: int = 64,
                          lr: float = 3e-3, predictable_weight: float = 5.0, seed: int = 0,
                          progress: bool = False) -> tuple[Transformer, InductionRecord]:
    """A 2-layer attention-only (pre-norm) Transformer trained on `training_batch` rows of `length`
    (= n_ctx, default 1 + 3 max_half) tokens (deterministic given seed; ~6 s on one CPU thread).

    The loss is next-token cross-entropy with the targets induction can predict weighted
    `predictable_weight` times the others (random tokens, which carry no signal). With the defaults
    layer 0's head becomes a previous-token head and layer 1's an induction head (module docstring)
    for every seed tried; with n_heads > 1 several layer-1 heads share the induction work.
    The seed drives local generators only: torch's global RNG is neither read nor reseeded."""
    length = length or 1 + 3 * max_half
    cfg = TransformerConfig(n_layers=2, d_model=d_model, n_heads=n_heads, d_vocab=d_vocab, n_ctx=length,
                            attn_only=True, norm_position="pre", positional=positional, act_fn="relu",
                            tie_embeddings=False, seed=seed)
    model = Transformer(cfg)
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    losses = []
    for _ in progress_bar(range(steps), progress, desc="training induction model"):
        tokens, predictable = training_batch(batch, max_half, d_vocab, g, length, with_predictable=True)
        logits = model(tokens)
        per_token = F.cross_entropy(logits[:, :-1].flatten(0, 1), tokens[:, 1:].flatten(), reduction="none")
        weights = 1.0 + (predictable_weight - 1.0) * predictable.flatten().float()
        loss = (per_token * weights).sum() / weights.sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    model.eval()
    with torch.no_grad():
        tokens = repeated_tokens(256, max_half, d_vocab, g, length)
        per_token = model.loss(tokens, per_token=True)  # [batch, pos - 1]: position t predicts t + 1
    return model, InductionRecord(steps, losses, float(per_token[:, max_half + 1: 2 * max_half].mean()),
                                  float(per_token[:, 1:max_half].mean()))


__all__ = ["repeated_tokens", "training_batch", "induction_pair", "InductionMetric", "InductionRecord", "train_induction_model"]
