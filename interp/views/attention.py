"""Attention patterns as an interactive view (kind "attention"), offline, in the spirit of
CircuitsVis' `attention_heads`.

    view = attention_heads(pattern, tokens)                        # pattern [n_heads, dst, src]
    view = attention_patterns(model, "Michael Jordan plays the sport of")   # every layer, heads "L{l}H{h}"
    view.show(); view.save_html("attention.html")

The page shows a grid of small per-head thumbnails; a click on one shows that head large.
Hovering a token of the token strip shades every token by how much the hovered token attends
to it (the hovered token as destination, a row of the pattern) or, with the "as source" toggle,
by how much each token attends to the hovered one (a column). Hovering a cell of the large
pattern shows "dst token -> src token: weight". DOM hooks for tests: the large canvas
`.iv-attn-large` carries `data-head` (the selected head's name) and, while hovered,
`data-dst`, `data-src`, `data-weight`; token spans `.iv-attn-token` carry `data-pos` and,
while a token is hovered, `data-weight`.
"""

from __future__ import annotations

from typing import Any, Optional, Sequence, Union

import numpy as np
import torch

from interp import names as hook_names
from interp.checks import resolve_layers
from interp.tokens import one_prompt, str_tokens
from interp.views.page import View
from models import Transformer

Prompt = Union[str, torch.Tensor]


def _as_tensor(attention: Any) -> torch.Tensor:
    if isinstance(attention, np.ndarray):
        attention = torch.from_numpy(attention)
    if not isinstance(attention, torch.Tensor):
        raise TypeError(f"attention must be a tensor [n_heads, dst, src], got {type(attention).__name__}")
    if not attention.is_floating_point():
        raise TypeError(f"attention must hold floating-point weights, got dtype {attention.dtype}")
    return attention.detach().to("cpu", torch.float32)


def _check_tokens(tokens: Any) -> list[str]:
    if isinstance(tokens, str) or not isinstance(tokens, Sequence):
        raise TypeError("tokens must be a list of strings, one per position (e.g. model.to_str_tokens(prompt)), "
                        f"got {type(tokens).__name__}")
    bad = [i for i, t in enumerate(tokens) if not isinstance(t, str)]
    if bad:
        raise TypeError(f"tokens must be strings; token {bad[0]} is {type(tokens[bad[0]]).__name__}")
    if not tokens:
        raise ValueError("tokens is empty: give one string per position")
    return list(tokens)


def _check_pattern(attention: torch.Tensor, tokens: list[str]) -> None:
    """attention [n_heads, dst, src] against the token strip."""
    if attention.dim() == 4 and attention.shape[0] == 1:
        raise ValueError(f"attention has shape {tuple(attention.shape)} (a batch axis?): give one prompt's "
                         "pattern [n_heads, dst, src], e.g. cache['pattern', layer][0]")
    if attention.dim() != 3:
        raise ValueError(f"attention must be [n_heads, dst, src] (3 axes), got shape {tuple(attention.shape)}")
    n_heads, dst, src = attention.shape
    if n_heads == 0:
        raise ValueError("attention has no heads (shape[0] == 0)")
    if dst != len(tokens) or src != len(tokens):
        raise ValueError(f"attention has {dst} destination and {src} source positions but {len(tokens)} tokens "
                         f"were given: shape {tuple(attention.shape)} needs [n_heads, {len(tokens)}, {len(tokens)}]")


def _check_head_names(head_names: Optional[Sequence[str]], n_heads: int) -> list[str]:
    if head_names is None:
        return [f"H{h}" for h in range(n_heads)]
    if isinstance(head_names, str):
        raise TypeError("head_names must be a list of strings, one per head")
    names = list(head_names)
    if len(names) != n_heads:
        raise ValueError(f"{len(names)} head_names for {n_heads} heads: give one name per head")
    if not all(isinstance(n, str) for n in names):
        raise TypeError("head_names must be strings")
    if len(set(names)) != len(names):
        raise ValueError(f"head_names must be distinct, got {names}")
    return names


def _view(patterns: torch.Tensor, tokens: list[str], head_names: list[list[str]], groups: list[str],
          title: str) -> View:
    """patterns [n_groups, n_heads, dst, src]; one list of head names and one label per group."""
    data = {"tokens": tokens, "patterns": patterns, "heads": head_names, "groups": groups}
    return View("attention", data, title=title)


def attention_heads(attention: Any, tokens: Sequence[str], head_names: Optional[Sequence[str]] = None,
                    title: str = "") -> View:
    """The view of one prompt's attention `[n_heads, dst, src]` (rows: the attending, destination
    position; columns: the attended-to, source position) over `tokens` (one string per position).
    `head_names` default "H0", "H1", ..."""
    pattern = _as_tensor(attention)
    tokens = _check_tokens(tokens)
    _check_pattern(pattern, tokens)
    names = _check_head_names(head_names, pattern.shape[0])
    return _view(pattern[None], tokens, [names], [""], title)


def _layers(layers: Any, n_layers: int) -> list[int]:
    if layers is not None and not isinstance(layers, (list, tuple, range)):
        layers = [layers]
    return list(dict.fromkeys(resolve_layers(layers, n_layers)))  # order kept, repeats dropped


def attention_patterns(model: Transformer, prompt: Prompt, layers: Any = None, title: Optional[str] = None) -> View:
    """Every head's pattern for `prompt` in `layers` (None: all; an int or a list; negatives count
    from the end), read from `blocks.{l}.attn.hook_pattern` in one run without gradients; heads
    named "L{l}H{h}", a layer selector in the view. No hook stays attached."""
    chosen = _layers(layers, model.cfg.n_layers)
    tokens = one_prompt(model, prompt)
    names = [hook_names.act_name("pattern", l) for l in chosen]
    with torch.no_grad():
        _, cache = model.run_with_cache(tokens[None], names_filter=names, return_type=None)
    patterns = torch.stack([cache[name][0] for name in names])  # [layer, head, dst, src]
    n_heads = patterns.shape[1]
    heads = [[f"L{l}H{h}" for h in range(n_heads)] for l in chosen]
    text = str_tokens(model, tokens)
    if title is None:
        title = "attention patterns" + (f": {prompt}" if isinstance(prompt, str) else "")
    return _view(patterns.detach().to("cpu", torch.float32), text, heads, [f"layer {l}" for l in chosen], title)


__all__ = ["attention_heads", "attention_patterns"]
