"""One attention head or one MLP neuron as an addressable site.

`Head(layer, head, pos=None)` and `Neuron(layer, index, pos=None)` resolve to a
hook name plus a selector (an index tuple) into that hook's activation, for
reading from a cache and for writing during a run, without touching any other
head or neuron:

    cache = model.run_with_cache(tokens)[1]
    z = Head(3, 5).read(cache)                      # [batch, pos, d_head]
    model.run_with_hooks(tokens, fwd_hooks=[Head(3, 5).zero()])
    model.run_with_hooks(tokens, fwd_hooks=[Neuron(1, 42, pos=-1).patch(2.5, act="pre")])

Both indices are required (``Head(3)`` is an error, not head 0). Negative
layers count from the end (``Head(-1, 0)`` is a head of the last block),
resolved by the model or cache the site is used with. The encoder-decoder's
heads and neurons take a stack: ``Head(1, 3, stack="decoder", attn="cross_attn")``
(or `EncDecHead` / `EncDecNeuron`).

Writes copy the activation and replace only the addressed slice, so every
other head or neuron keeps its bit-identical value. With grouped-query
attention a query head reads the key/value head ``head // (n_heads //
n_kv_heads)``: `read(cache, "k")` returns that one; writing k or v of one
query head would change every head of its group, and is refused.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Callable, ClassVar, Optional, Sequence, Union

import torch

from interp import names as hook_names
from interp.checks import IndexRangeError
from interp.hooks import HookFn, HookPoint
from models.transformer import Transformer
from models.transformer import Transformer

Value = Union[torch.Tensor, float]
KV_ACTS = ("k", "v", "rot_k")
STACK_TAGS = {"": "", "encoder": "enc.", "decoder": "dec."}
_UNIT_LABEL = re.compile(r"L(-?\d+)([NF])(\d+)(?:@(-?\d+))?")


@dataclass(frozen=True)
class _Site:
    """Shared by Head and Neuron: a hook name (`hook_name`) and an index into it (`selector`)."""

    ACTS: ClassVar[tuple[str, ...]] = ()
    DEFAULT_ACT: ClassVar[str] = ""

    def _act(self, act: Optional[str]) -> str:
        act = act or self.DEFAULT_ACT
        if act not in self.ACTS:
            raise ValueError(f"{type(self).__name__} has no activation {act!r}; choose from {', '.join(self.ACTS)}")
        return act

    def hook_name(self, act: Optional[str] = None) -> str:
        raise NotImplementedError

    def selector(self, act: Optional[str] = None) -> tuple:
        raise NotImplementedError

    def read(self, cache, act: Optional[str] = None) -> torch.Tensor:
        """This site's slice of the cached activation (cache: ActivationCache or dict)."""
        return cache[self.hook_name(act)][self.selector(act)]

    def edit(self, fn: Callable[[torch.Tensor], Value], act: Optional[str] = None) -> tuple[str, HookFn]:
        """A (hook name, hook) pair that replaces this site's slice with fn(slice)."""
        name, idx = self.hook_name(act), self.selector(act)
        site = self

        def hook(x: torch.Tensor, hook: HookPoint) -> torch.Tensor:
            site._check_write(x, act, hook)
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

    def _check_write(self, x: torch.Tensor, act: Optional[str], hook: HookPoint) -> None:
        raise NotImplementedError

    @property
    def label(self) -> str:
        raise NotImplementedError


def _check_index(label: str, what: str, index: int, size: int, name: str) -> None:
    if not -size <= index < size:
        raise IndexRangeError(f"{label}: {what} {index} out of range, {name} has {size} {what}s")


@dataclass(frozen=True)
class Head(_Site):
    """Attention head `head` of block `layer`, optionally at one (query) position.

    Activations: q, k, v, z (default), result, rot_q, rot_k ([batch, pos, head, ...])
    and pattern, attn_scores ([batch, head, q_pos, k_pos]; pos selects the query).
    stack ("encoder" / "decoder") and attn ("attn" / "cross_attn") address the
    encoder-decoder's attention modules.
    """

    layer: int
    head: int
    pos: Optional[int] = None
    stack: str = ""
    attn: str = "attn"

    ACTS: ClassVar[tuple[str, ...]] = ("q", "k", "v", "z", "result", "rot_q", "rot_k", "pattern", "attn_scores")
    DEFAULT_ACT: ClassVar[str] = "z"

    def hook_name(self, act: Optional[str] = None) -> str:
        return hook_names.act_name(self._act(act), self.layer, stack=self.stack, attn=self.attn)

    def _by_head_first(self, act: Optional[str]) -> bool:
        return self._act(act) in ("pattern", "attn_scores")

    def selector(self, act: Optional[str] = None, heads_per_kv: int = 1) -> tuple:
        """Index into the activation: (batch, pos, head) or (batch, head, q_pos). For k / v
        with grouped-query attention, the key/value head this query head reads."""
        pos = slice(None) if self.pos is None else self.pos
        head = self.head // heads_per_kv if self._act(act) in KV_ACTS else self.head
        if self._by_head_first(act):
            return (slice(None), head, pos)
        return (slice(None), pos, head)

    def read(self, cache, act: Optional[str] = None) -> torch.Tensor:
        return cache[self.hook_name(act)][self.selector(act, _heads_per_kv(cache, self, act))]

    def _check_write(self, x: torch.Tensor, act: Optional[str], hook: HookPoint) -> None:
        group = getattr(hook, "heads_per_kv", 1)
        if self._act(act) in KV_ACTS and group > 1:
            kv = self.head // group
            raise ValueError(
                f"{self.label}: with grouped-query attention {self.hook_name(act)} holds key/value head {kv}, shared "
                f"by query heads {list(range(kv * group, (kv + 1) * group))}; writing it would change all of them. "
                f"Patch hook_q / hook_z / hook_pattern of this head instead, or write the key/value head directly"
            )
        head_axis = 1 if self._by_head_first(act) else 2
        pos_axis = 2 if head_axis == 1 else 1
        _check_index(self.label, "head", self.head, x.shape[head_axis], self.hook_name(act))
        if self.pos is not None:
            _check_index(self.label, "position", self.pos, x.shape[pos_axis], self.hook_name(act))

    @property
    def label(self) -> str:
        tag = "cross." if self.attn == "cross_attn" else STACK_TAGS.get(self.stack, self.stack + ".")
        return f"{tag}L{self.layer}H{self.head}" + ("" if self.pos is None else f"@{self.pos}")


def _heads_per_kv(cache: Any, head: Head, act: Optional[str]) -> int:
    """n_heads // n_kv_heads for the model behind a cache (1 without grouped-query attention)."""
    if head._act(act) not in KV_ACTS:
        return 1
    cfg = getattr(getattr(cache, "model", None), "cfg", None)
    if cfg is not None and getattr(cfg, "n_kv_heads", None):
        return cfg.n_heads // cfg.n_kv_heads
    q_name, k_name = head.hook_name("q"), head.hook_name(act)
    if q_name in cache and k_name in cache:  # a plain dict: compare the head counts
        return cache[q_name].shape[2] // cache[k_name].shape[2]
    return 1


class _Unit(_Site):
    """Shared by Neuron and Feature: one unit (`index`) of an activation [batch, pos, units]."""

    UNIT: ClassVar[str] = ""

    def selector(self, act: Optional[str] = None) -> tuple:
        """Index into the activation: (batch, pos, unit)."""
        return (slice(None), slice(None) if self.pos is None else self.pos, self.index)

    @classmethod
    def from_label(cls, label: str):
        """The inverse of `label` for a decoder-only model's unit: Neuron.from_label("L2N411@2") ->
        Neuron(2, 411, pos=2); Feature.from_label("L1F134") -> Feature(1, 134)."""
        letter = cls.UNIT[0].upper()
        match = _UNIT_LABEL.fullmatch(label.strip())
        if match is None or match.group(2) != letter:
            raise ValueError(f"not a {cls.UNIT} label: {label!r} (expected e.g. 'L2{letter}411' or 'L2{letter}411@2')")
        layer, _, index, pos = match.groups()
        return cls(int(layer), int(index), None if pos is None else int(pos))

    def _check_write(self, x: torch.Tensor, act: Optional[str], hook: HookPoint) -> None:
        _check_index(self.label, self.UNIT, self.index, x.shape[2], self.hook_name(act))
        if self.pos is not None:
            _check_index(self.label, "position", self.pos, x.shape[1], self.hook_name(act))

    def zero(self, act: Optional[str] = None) -> tuple[str, HookFn]:
        """Zero ablation of this unit in every row (`zero_hooks`)."""
        ((name, hook),) = zero_hooks([[self]], act, every_row=True)
        return name, hook


@dataclass(frozen=True)
class Neuron(_Unit):
    """MLP neuron `index` of block `layer`, optionally at one position.

    Activations: post (the default: what multiplies the value W_out[index]), pre
    (the key's pre-activation; the gate for gated MLPs) and pre_linear (the
    linear key of a gated MLP); all [batch, pos, d_mlp].
    """

    layer: int
    index: int
    pos: Optional[int] = None
    stack: str = ""

    ACTS: ClassVar[tuple[str, ...]] = ("pre", "post", "pre_linear")
    DEFAULT_ACT: ClassVar[str] = "post"
    UNIT: ClassVar[str] = "neuron"

    def hook_name(self, act: Optional[str] = None) -> str:
        return hook_names.act_name(self._act(act), self.layer, stack=self.stack)

    @property
    def label(self) -> str:
        tag = STACK_TAGS.get(self.stack, self.stack + ".")
        return f"{tag}L{self.layer}N{self.index}" + ("" if self.pos is None else f"@{self.pos}")


@dataclass(frozen=True)
class Feature(_Unit):
    """Feature `index` of the transcoder attached to MLP `layer` (`probes.sae.attached`),
    optionally at one position: hook blocks.{layer}.transcoder.hook_feature_acts
    [batch, pos, n_features], addressed like a neuron."""

    layer: int
    index: int
    pos: Optional[int] = None

    ACTS: ClassVar[tuple[str, ...]] = ("feature_acts",)
    DEFAULT_ACT: ClassVar[str] = "feature_acts"
    UNIT: ClassVar[str] = "feature"

    def hook_name(self, act: Optional[str] = None) -> str:
        return hook_names.act_name(self._act(act), self.layer)

    @staticmethod
    def attached_layers(model: Transformer) -> list[int]:
        """The layers of `model` that have a transcoder attached (so Feature sites exist there)."""
        return [l for l in range(model.cfg.n_layers) if hook_names.act_name("feature_acts", l) in model.hook_dict]

    @property
    def label(self) -> str:
        return f"L{self.layer}F{self.index}" + ("" if self.pos is None else f"@{self.pos}")


# ============================================================ zero ablation of units
def zero_hooks(per_row: Sequence[Sequence["_Unit"]], act: Optional[str] = None, *,
               every_row: bool = False) -> list[tuple[str, HookFn]]:
    """The one zero ablation of neurons and features: hooks that set activation[row, pos, index]
    to 0 for each unit (`Neuron` / `Feature`) of each row of `per_row` (a unit without a position:
    at every position), one hook per hook name. every_row: `per_row` holds one list of units,
    zeroed in every row of the batch. Negative positions count from the end; a unit or position
    outside the activation raises IndexRangeError."""
    by_hook: dict[str, list[tuple[int, "_Unit"]]] = {}
    for row, units in enumerate(per_row):
        for u in units:
            if not isinstance(u, _Unit):
                raise TypeError(f"zero_hooks ablates neurons or features, got {u!r}")
            by_hook.setdefault(u.hook_name(act), []).append((-1 if every_row else row, u))
    return [(name, _zeroing(name, entries, act)) for name, entries in by_hook.items()]


def _zeroing(name: str, entries: list[tuple[int, "_Unit"]], act: Optional[str]) -> HookFn:
    """The hook of `zero_hooks` for one hook name: (row, or -1 for every row; unit) pairs."""
    exact = [(row, u.pos, u.index) for row, u in entries if row >= 0 and u.pos is not None]
    at = torch.tensor(exact, dtype=torch.long, device="cpu").reshape(-1, 3).T  # moved to the activation's device
    rest = [(row, u) for row, u in entries if row < 0 or u.pos is None]

    def hook(x: torch.Tensor, hook: HookPoint) -> torch.Tensor:
        n_rows, n_pos, width = x.shape[0], x.shape[1], x.shape[2]
        x = x.clone()
        if at.shape[1]:
            rows, pos, index = at[0], at[1] + n_pos * (at[1] < 0), at[2]
            if bool((rows >= n_rows).any() or (pos < 0).any() or (pos >= n_pos).any() or (index >= width).any()
                    or (index < 0).any()):
                raise IndexRangeError(f"{name}: a zeroed unit lies outside the activation [{n_rows}, {n_pos}, {width}]")
            x[rows.to(x.device), pos.to(x.device), index.to(x.device)] = 0.0
        for row, u in rest:
            u._check_write(x, act, hook)
            x[slice(None) if row < 0 else row, slice(None) if u.pos is None else u.pos, u.index] = 0.0
        return x

    hook.__name__ = f"zero_{name}"
    return hook


# ============================================================ the encoder-decoder's sites
ATTENTION_MODULES = ("encoder.attn", "decoder.attn", "decoder.cross_attn")


def EncDecHead(layer: int, head: int, pos: Optional[int] = None, attn: str = "decoder.cross_attn") -> Head:
    """A head of an EncoderDecoder; attn is "encoder.attn", "decoder.attn" or "decoder.cross_attn":
    ``EncDecHead(1, 3).hook_name("pattern") == "decoder.blocks.1.cross_attn.hook_pattern"``."""
    if attn not in ATTENTION_MODULES:
        raise ValueError(f"attn={attn!r} is not one of {ATTENTION_MODULES}")
    stack, module = attn.split(".")
    return Head(layer, head, pos, stack=stack, attn=module)


def EncDecNeuron(layer: int, index: int, pos: Optional[int] = None, stack: str = "decoder") -> Neuron:
    """An MLP neuron of an EncoderDecoder; stack is "encoder" or "decoder" (default)."""
    if stack not in ("encoder", "decoder"):
        raise ValueError(f"stack={stack!r} is not 'encoder' or 'decoder'")
    return Neuron(layer, index, pos, stack=stack)


__all__ = ["Head", "Neuron", "Feature", "EncDecHead", "EncDecNeuron", "zero_hooks"]
