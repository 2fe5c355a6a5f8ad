"""Small helpers shared by every result type: token labels and JSON files."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Optional, Sequence, Union

import torch


def str_tokens(model, tokens: torch.Tensor) -> list[str]:
    """The tokens of one prompt ([pos], or the first row of [batch, pos]) as text, or as ids without a tokenizer."""
    row = tokens[0] if tokens.dim() == 2 else tokens
    if model.tokenizer is None:
        return [str(int(t)) for t in row]
    return model.to_str_tokens(row)


def one_prompt(model, prompt) -> torch.Tensor:
    """One prompt -> token ids [pos]: text (tokenised with the model's BOS default) or ids [pos] / [1, pos]."""
    if isinstance(prompt, str):
        return model.to_tokens(prompt)[0]
    if isinstance(prompt, torch.Tensor):
        tokens = prompt[0] if prompt.dim() == 2 and prompt.shape[0] == 1 else prompt
        if tokens.dim() != 1:
            raise ValueError(f"give one prompt: token ids [pos] or [1, pos], got shape {tuple(prompt.shape)}")
        if tokens.numel() == 0:
            raise ValueError("the prompt has no tokens")
        return tokens.to(model.device).long()
    raise TypeError(f"prompt must be a string or a tensor of token ids, got {type(prompt).__name__}")


def pos_labels(tokens: Sequence[str], positions: Optional[Sequence[int]] = None) -> list[str]:
    """Position labels "tok (i)", so that repeated tokens stay distinguishable."""
    positions = range(len(tokens)) if positions is None else positions
    return [f"{tokens[p]} ({p})" for p in positions]


def _json_safe(x: Any) -> Any:
    """NaN -> None (JSON has no NaN), recursively through lists and dicts."""
    if isinstance(x, float) and math.isnan(x):
        return None
    if isinstance(x, (list, tuple)):
        return [_json_safe(v) for v in x]
    if isinstance(x, dict):
        return {k: _json_safe(v) for k, v in x.items()}
    return x


def write_json(path: Union[str, Path], data: Any) -> Path:
    """Write `data` as indented JSON (NaN as null), creating parent directories."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(_json_safe(data), indent=1))
    return path
