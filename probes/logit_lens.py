"""The logit lens: read the residual stream at one position, entering each layer and after
the last, through the final norm and the unembedding (nostalgebraist 2020).

    labels, logits = logit_lens(model, "Michael Jordan plays the sport of", pos=2)   # [n_layers + 1, d_vocab]

Each state is normalised by ln_final as it would be at the end (its own scale), so the last
row equals the model's logits at that position.
"""

from __future__ import annotations

from typing import Union

import torch

from interp import names as hook_names
from interp.tokens import one_prompt

Prompt = Union[str, torch.Tensor]


def logit_lens(model, prompt: Prompt, pos: int = -1) -> tuple[list[str], torch.Tensor]:
    """(labels, logits [n_points, d_vocab]): ln_final and the unembedding applied to the residual
    stream at `pos` entering each layer and after the last ("embed", "L0", ..., "L{n-1}")."""
    tokens = one_prompt(model, prompt)
    with torch.no_grad():
        _, cache = model.run_with_cache(tokens[None])
    n = model.cfg.n_layers
    states = [cache[hook_names.act_name("resid_pre", l)][0, pos] for l in range(n)]
    states.append(cache[hook_names.act_name("resid_post", n - 1)][0, pos])
    with torch.no_grad():
        normed = model.ln_final(torch.stack(states)[None])[0] if model.cfg.final_norm else torch.stack(states)
        logits = normed @ model.W_U + model.b_U
    return ["embed"] + [f"L{l}" for l in range(n)], logits


__all__ = ["logit_lens"]
