"""The one place for the checks every analysis makes on its arguments (hook base: torch-free).

- `IndexRangeError`: a layer, position or unit index outside the model or the prompt. It is
  both an `IndexError` and a `ValueError`, so every caller catches the same mistake the
  same way, whichever of the two it expects.
- `resolve_layer(layer, n_layers)`: a layer in [0, n_layers), negatives counted from the end.
- `resolve_layers(layers, n_layers)`: several (None: all of them).
- `resolve_pos(pos, n_pos)` / `resolve_positions(positions, n_pos)`: the same for positions.
- `resolve_index(index, size, what)`: a unit's index (a neuron, a head, a feature).
- `require_pre_norm(cfg, what)`: analyses that read the residual stream as a sum of
  components need a pre-norm model.
"""

from __future__ import annotations

from typing import Any, Optional, Sequence


class IndexRangeError(IndexError, ValueError):
    """A layer, position or index outside what the model or prompt has."""


def _as_int(value: Any, what: str) -> int:
    if isinstance(value, bool):
        raise TypeError(f"{what} must be an integer, got a bool")
    if isinstance(value, int):
        return value
    try:
        if hasattr(value, "numel") and value.numel() != 1:
            raise TypeError
        as_int = int(value)  # numpy integers, 0-d tensors
    except (TypeError, ValueError):
        raise TypeError(f"{what} must be an integer, got {type(value).__name__}") from None
    if as_int != value:
        raise TypeError(f"{what} must be an integer, got {value!r}")
    return as_int


def resolve_layer(layer: Any, n_layers: int, what: str = "layer", *, allow_end: bool = False) -> int:
    """A layer index in [0, n_layers) (allow_end: also n_layers, "after the last block"),
    negative ones counting from the end; else IndexRangeError."""
    layer = _as_int(layer, what)
    if allow_end and layer == n_layers:
        return layer
    if not -n_layers <= layer < n_layers:
        raise IndexRangeError(f"{what} {layer} does not exist in a model with {n_layers} layers "
                              f"(valid: {-n_layers}..{n_layers - 1})")
    return layer % n_layers


def resolve_layers(layers: Optional[Sequence[Any]], n_layers: int, what: str = "layer") -> list[int]:
    """Layers in [0, n_layers) (None: every layer), negatives counted from the end."""
    if layers is None:
        return list(range(n_layers))
    return [resolve_layer(l, n_layers, what) for l in layers]


def resolve_pos(pos: Any, n_pos: int, what: str = "position") -> int:
    """A position in [0, n_pos), negative ones counting from the end; else IndexRangeError."""
    pos = _as_int(pos, what)
    if not -n_pos <= pos < n_pos:
        raise IndexRangeError(f"{what} {pos} is outside a prompt of {n_pos} tokens (valid: {-n_pos}..{n_pos - 1})")
    return pos % n_pos


def resolve_positions(positions: Optional[Sequence[Any]], n_pos: int, what: str = "position") -> list[int]:
    """Positions in [0, n_pos) (None: every position), negatives counted from the end."""
    if positions is None:
        return list(range(n_pos))
    return [resolve_pos(p, n_pos, what) for p in positions]


def resolve_index(index: Any, size: int, what: str) -> int:
    """A unit's index in [0, size) (no negative counting: units are named by their number)."""
    index = _as_int(index, what)
    if not 0 <= index < size:
        raise IndexRangeError(f"{what} {index} does not exist (valid: 0..{size - 1})")
    return index


def require_pre_norm(cfg: Any, what: str) -> None:
    """A clear error for analyses that read the residual stream as a sum of components."""
    if getattr(cfg, "norm_position", "pre") != "pre":
        raise ValueError(f"{what} needs a pre-norm model (norm_position='pre'): with post-norm the residual "
                         f"stream is renormalised after every block and is not a sum of components; "
                         f"this model is {cfg.norm_position!r}")


__all__ = ["IndexRangeError", "resolve_layer", "resolve_layers", "resolve_pos", "resolve_positions",
           "resolve_index", "require_pre_norm"]
