"""The logit lens: read the residual stream at one position, entering each layer and after
the last, through the final norm and the unembedding (nostalgebraist 2020).

    labels, logits = logit_lens(model, "Michael Jordan plays the sport of", pos=2)   # [n_layers + 1, d_vocab]

Each state is normalised by ln_final as it would be at the end (its own scale;
`interp.unembedding.model_logits`), so the last row equals the model's logits at that position.
"""

from __future__ import annotations

from typing import Union

import torch

from interp import names as hook_names
from interp.checks import resolve_pos
from interp.unembedding import model_logits
from interp.tokens import one_prompt
from models import Transformer

Prompt = Union[str, torch.Tensor]


def logit_lens(model: Transformer, prompt: Prompt, pos: int = -1) -> tuple[list[str], torch.Tensor]:
    """(labels, logits [n_points, d_vocab]): ln_final and the unembedding applied to the residual
    stream at `pos` entering each layer and after the last ("embed", "L0", ..., "L{n-1}")."""
    tokens = one_prompt(model, prompt)
    pos = resolve_pos(pos, tokens.shape[0])
    n = model.cfg.n_layers
    names = [hook_names.act_name("resid_pre", l) for l in range(n)] + [hook_names.act_name("resid_post", n - 1)]
    with torch.no_grad():
        _, cache = model.run_with_cache(tokens[None], names_filter=names, return_type=None)
        logits = model_logits(model, torch.stack([cache[name][0, pos] for name in names])[None])[0]
    return ["embed"] + [f"L{l}" for l in range(n)], logits


__all__ = ["logit_lens"]
