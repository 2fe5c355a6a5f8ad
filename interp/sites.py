"""One attention head or one MLP neuron as an addressable site.

`Head(layer, head, pos=None)` and `Neuron(layer, index, pos=None)` resolve to a
hook name plus a selector (an index tuple) into that hook's activation, for reading from a cache
and for writing during a run, without touching any other head or neuron:

    cache = model.run_with_cache(tokens)[1]
    z = Head(3, 5).read(cache)                      # [batch, pos, d_head]
    model.run_with_hooks(tokens, fwd_hooks=[Head(3, 5).zero()])
    model.run_with_hooks(tokens, fwd_hooks=[Neuron(1, 42, pos=-1).patch(2.5, act="post")])

Writes copy the activation and replace only the addressed slice, so every
other head or neuron keeps its bit-identical value.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, ClassVar, Optional, Union

import torch

from interp.hooks import HookFn, HookPoint

Value = Union[torch.Tensor, float]


@dataclass(frozen=True)
class _Site:
    layer: int

    ACTS: ClassVar[tuple[str, ...]] = ()

    def hook_name(self, act: Optional[str] = None) -> str:
        raise NotImplementedError

    def selector(self, act: Optional[str] = None) -> tuple:
        raise NotImplementedError

    def _check_act(self, act: str) -> str:
        if act not in self.ACTS:
            raise ValueError(f"{type(self).__name__} has no activation {act!r}; choose from {', '.join(self.ACTS)}")
        return act

    def read(self, cache, act: Optional[str] = None) -> torch.Tensor:
        """This site's slice of the cached activation (cache: ActivationCache or dict)."""
        return cache[self.hook_name(act)][self.selector(act)]

    def edit(self, fn: Callable[[torch.Tensor], Value], act: Optional[str] = None) -> tuple[str, HookFn]:
        """A (hook name, hook) pair that replaces this site's slice with fn(slice)."""
        name, idx = self.hook_name(act), self.selector(act)
        site = self

        def hook(x: torch.Tensor, hook: HookPoint) -> torch.Tensor:
            site._check_bounds(x, act)
            out = x.clone()
            new = fn(x[idx])
            out[idx] = new if isinstance(new, torch.Tensor) else torch.as_tensor(new, dtype=x.dtype, device=x.device)
            return out

        hook.__name__ = f"edit_{self.label}"
        return name, hook

    def patch(self, value: Value, act: Optional[str] = None) -> tuple[str, HookFn]:
        """Set this site's slice to `value` (broadcast to the slice's shape)."""
        return self.edit(lambda _: value, act)

    def zero(self, act: Optional[str] = None) -> tuple[str, HookFn]:
        return self.edit(torch.zeros_like, act)

    def scale(self, factor: float, act: Optional[str] = None) -> tuple[str, HookFn]:
        return self.edit(lambda x: x * factor, act)

    def _check_bounds(self, x: torch.Tensor, act: Optional[str]) -> None:
        raise NotImplementedError

    @property
    def label(self) -> str:
        raise NotImplementedError


@dataclass(frozen=True)
class Head(_Site):
    """Attention head `head` of block `layer`, optionally at one (query) position.

    Activations: q, k, v, z, result, rot_q, rot_k ([batch, pos, head, ...]) and
    pattern, attn_scores ([batch, head, q_pos, k_pos]; pos selects the query).
    With grouped-query attention, k and v are indexed by key/value head.
    """

    head: int = 0
    pos: Optional[int] = None
    ACTS: ClassVar[tuple[str, ...]] = ("q", "k", "v", "z", "result", "rot_q", "rot_k", "pattern", "attn_scores")

    def hook_name(self, act: Optional[str] = "z") -> str:
        return f"blocks.{self.layer}.attn.hook_{self._check_act(act or 'z')}"

    def selector(self, act: Optional[str] = "z") -> tuple:
        """Index into the activation: (batch, pos, head) or (batch, head, q_pos)."""
        pos = slice(None) if self.pos is None else self.pos
        if (act or "z") in ("pattern", "attn_scores"):
            return (slice(None), self.head, pos)
        return (slice(None), pos, self.head)

    def _check_bounds(self, x: torch.Tensor, act: Optional[str]) -> None:
        axis = 1 if (act or "z") in ("pattern", "attn_scores") else 2
        pos_axis = 2 if axis == 1 else 1
        if not -x.shape[axis] <= self.head < x.shape[axis]:
            raise IndexError(f"{self.label}: head {self.head} out of range, {self.hook_name(act)} has {x.shape[axis]} heads")
        if self.pos is not None and not -x.shape[pos_axis] <= self.pos < x.shape[pos_axis]:
            raise IndexError(f"{self.label}: position {self.pos} out of range for {x.shape[pos_axis]} positions")

    @property
    def label(self) -> str:
        return f"L{self.layer}H{self.head}" + ("" if self.pos is None else f"@{self.pos}")


@dataclass(frozen=True)
class Neuron(_Site):
    """MLP neuron `index` of block `layer`, optionally at one position.

    Activations: pre (default for reading the key's input), post, and
    pre_linear for gated MLPs; all [batch, pos, d_mlp].
    """

    index: int = 0
    pos: Optional[int] = None
    ACTS: ClassVar[tuple[str, ...]] = ("pre", "post", "pre_linear")

    def hook_name(self, act: Optional[str] = "post") -> str:
        return f"blocks.{self.layer}.mlp.hook_{self._check_act(act or 'post')}"

    def selector(self, act: Optional[str] = "post") -> tuple:
        """Index into the activation: (batch, pos, neuron)."""
        return (slice(None), slice(None) if self.pos is None else self.pos, self.index)

    def _check_bounds(self, x: torch.Tensor, act: Optional[str]) -> None:
        if not -x.shape[2] <= self.index < x.shape[2]:
            raise IndexError(f"{self.label}: neuron {self.index} out of range, {self.hook_name(act)} has {x.shape[2]} neurons")
        if self.pos is not None and not -x.shape[1] <= self.pos < x.shape[1]:
            raise IndexError(f"{self.label}: position {self.pos} out of range for {x.shape[1]} positions")

    @property
    def label(self) -> str:
        return f"L{self.layer}N{self.index}" + ("" if self.pos is None else f"@{self.pos}")

