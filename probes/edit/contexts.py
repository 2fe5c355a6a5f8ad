"""Where an edit reads the model: the prompt in its contexts (after each prefix, and the
rewrites), and activations at the subject's last token, averaged over those contexts (the
key k* of ROME and MEMIT is `mean_key`).

    texts = contexts(request, ("", "in fact ,"))
    key = mean_key(model, layer, texts, request.subject)        # [d_mlp], float64
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch

from interp import names as hook_names
from interp.tokens import padded_batches
from models.transformer import Transformer
from probes.edit.requests import EditRequest
from probes.subjects import last_subject_pos

DEFAULT_PREFIXES = ("",)  # the prompt as it is


def contexts(request: EditRequest, prefixes: Sequence[str], rewrites: Sequence[str] = ()) -> list[str]:
    """The prompt after each context prefix ("" keeps it as it is), then the `rewrites` (other
    prompts about the subject that should give the new target too)."""
    return [f"{p} {request.prompt}" if p else request.prompt for p in prefixes] + list(rewrites)


def edit_prompts(model: Transformer, request: EditRequest, prefixes: Optional[Sequence[str]] = None,
                 rewrites: Optional[Sequence[str]] = None,
                 keep: Optional[Sequence[str]] = None) -> tuple[list[str], list[str], list[str], str]:
    """(prefixes, rewrites, keep, where from) for editing `request`: those given, the others from
    the model's own (`model.edit_prompts(prompt, subject)` -> {"prefixes", "rewrites", "keep"}, which
    the shipped fact-world model has for its facts), else the generic defaults (the prompt as it
    is, no rewrites, no kept prompts)."""
    own = getattr(model, "edit_prompts", None)
    found = own(request.prompt, request.subject) if callable(own) else None
    defaults = found or {"prefixes": list(DEFAULT_PREFIXES), "rewrites": [], "keep": []}
    given = {"prefixes": prefixes, "rewrites": rewrites, "keep": keep}
    out = {k: list(v) if v is not None else list(defaults.get(k, [])) for k, v in given.items()}
    if not out["prefixes"]:
        raise ValueError("prefixes must hold at least one context prefix (\"\" is the prompt as it is)")
    source = "given" if all(v is not None for v in given.values()) else ("the model's edit_prompts" if found else
                                                                         "generic defaults")
    return out["prefixes"], out["rewrites"], out["keep"], source


def batch(model: Transformer, texts: Sequence[str]) -> tuple[torch.Tensor, Optional[torch.Tensor], torch.Tensor]:
    """(tokens [n, pos] right-padded, mask or None, last positions [n]) of texts."""
    b = next(padded_batches(model, texts, len(texts)))
    return b.tokens, b.mask, b.last


def subject_ends(model: Transformer, texts: Sequence[str], subject: str) -> torch.Tensor:
    """[n]: the position of the subject's last token in each text."""
    return torch.tensor([last_subject_pos(model, t, subject) for t in texts], device=model.device)


def states(model: Transformer, name: str, texts: Sequence[str], subject: str) -> torch.Tensor:
    """[n_texts, d]: activation `name` at the subject's last token of each text (float64)."""
    tokens, mask, _ = batch(model, texts)
    with torch.no_grad():
        _, cache = model.run_with_cache(tokens, attention_mask=mask, names_filter=[name], return_type=None)
    rows = torch.arange(len(texts), device=cache[name].device)
    return cache[name][rows, subject_ends(model, texts, subject)].double()


def mean_state(model: Transformer, name: str, texts: Sequence[str], subject: str) -> torch.Tensor:
    """Activation `name` at the subject's last token, averaged over `texts` (float64)."""
    return states(model, name, texts, subject).mean(0)


def mean_key(model: Transformer, layer: int, texts: Sequence[str], subject: str) -> torch.Tensor:
    """[d_mlp]: the layer's key (hook_post) at the subject's last token, averaged over `texts`."""
    return mean_state(model, hook_names.act_name("post", layer), texts, subject)


__all__ = ["DEFAULT_PREFIXES", "contexts", "edit_prompts", "batch", "subject_ends", "states", "mean_state", "mean_key"]
