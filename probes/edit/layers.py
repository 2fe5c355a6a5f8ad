"""Which MLP layer to edit by default: the one a causal trace says carries the fact (ROME's
choice), stated with the numbers behind it.

    layer, why = choose_layer(model, "Michael Jordan plays the sport of", "Michael Jordan")
    layers, why = traced_layers(model, requests)       # MEMIT: the layer traced most often
"""

from __future__ import annotations

from collections import Counter
from typing import Optional, Sequence, Union

import torch

from interp.words import token_text
from models.transformer import Transformer
from probes.edit.requests import EditRequest


def choose_layer(model: Transformer, prompt: str, subject: str, answer: Union[str, int, None] = None, *,
                 seed: int = 0) -> tuple[int, str]:
    """(layer, why): the MLP layer whose output at the subject's last token restores the most of
    the answer's probability (None: the model's current answer) in a causal trace (ROME's
    choice; window 1, 10 noise samples, seeded with its own generator)."""
    from probes.causal_trace import trace
    from probes.subjects import last_subject_pos

    result = trace(model, prompt, subject, answer, kind="mlp", window=1, seed=seed, progress=False)
    at = last_subject_pos(model, prompt, subject)
    column = result.scores[:, at]
    layer = int(column.argmax())
    if isinstance(answer, str):
        shown = answer
    else:
        with torch.no_grad():
            shown = token_text(model, int(model(prompt)[0, -1].argmax()) if answer is None else answer)
    return layer, (f"causal trace: restoring MLP {layer}'s output at the last subject token gives P({shown}) "
                   f"{float(column[layer]):.3f} (corrupted {result.corrupted_prob:.3f}, clean {result.clean_prob:.3f})")


def traced_layers(model: Transformer, requests: Sequence[EditRequest], *, seed: int = 0,
                  answers: Optional[Sequence[Union[str, int, None]]] = None) -> tuple[list[int], str]:
    """([layer], why): the layer `choose_layer` picks most often over the requests' prompts
    (ties: the lowest), for editing them together."""
    answers = answers if answers is not None else [None] * len(requests)
    picks = [choose_layer(model, r.prompt, r.subject, a, seed=seed)[0] for r, a in zip(requests, answers)]
    counts = Counter(picks)
    layer = min(counts, key=lambda l: (-counts[l], l))
    return [layer], (f"causal traces: MLP {layer} for {counts[layer]} of {len(requests)} requests "
                     f"({dict(sorted(counts.items()))})")


__all__ = ["choose_layer", "traced_layers"]
