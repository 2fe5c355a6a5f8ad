"""Choosing the next token from logits: greedy, or sampled with temperature and top-k."""

from __future__ import annotations

from typing import Optional

import torch


def check_sampling(temperature: float, top_k: Optional[int]) -> None:
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0, got {temperature}")
    if top_k is not None and top_k < 1:
        raise ValueError(f"top_k must be >= 1, got {top_k}")


def next_token(logits: torch.Tensor, temperature: float = 0.0, top_k: Optional[int] = None,
               generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """logits [batch, d_vocab] -> next token ids [batch]: the argmax when temperature is 0,
    else a sample from softmax(logits / temperature), restricted to the top_k tokens if given."""
    if temperature == 0:
        return logits.argmax(dim=-1)
    logits = logits / temperature
    if top_k is not None:
        kth = logits.topk(min(top_k, logits.shape[-1]), dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    return torch.multinomial(logits.softmax(dim=-1), 1, generator=generator)[:, 0]
