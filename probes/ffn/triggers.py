"""The prompts (and positions) of a corpus on which one MLP neuron's key fires most."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from interp import names as hook_names
from interp.sites import Neuron
from interp.tokens import cached_batches, token_text
from models.transformer import Transformer
from probes.ffn.keys import check_neurons


@dataclass
class Trigger:
    prompt: str
    pos: int
    token: str
    activation: float


def trigger_examples(model: Transformer, neuron: Neuron, prompts: Sequence[str], k: int = 10,
                     batch_size: int = 512) -> list[Trigger]:
    """The k (prompt, position) pairs of `prompts` on which the neuron's key fires most."""
    (neuron,) = check_neurons(model, [neuron])
    name = hook_names.act_name("post", neuron.layer)
    prompts = list(prompts)
    if not prompts:
        raise ValueError("trigger_examples needs prompts to search")
    best: list[Trigger] = []
    for batch, cache in cached_batches(model, prompts, [name], batch_size):
        act = cache[name][..., neuron.index].masked_fill(~batch.real, float("-inf"))  # [batch, pos]
        top = act.flatten().topk(min(k, act.numel()))
        for v, flat in zip(top.values.tolist(), top.indices.tolist()):
            b, p = divmod(flat, act.shape[1])
            best.append(Trigger(batch.texts[b], p, token_text(model, batch.tokens[b, p]), v))
        best = sorted(best, key=lambda t: -t.activation)[:k]
    return best


__all__ = ["Trigger", "trigger_examples"]
