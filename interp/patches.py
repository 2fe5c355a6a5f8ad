"""Patches: what the engine applies inside a forward pass, and how.

A patch is (hook name, index, value): `index` addresses the activation without its batch
axis, e.g. (pos, head) for hook_z [batch, pos, head, d_head], (head, q_pos) for
hook_pattern. Its value is `FromRun(name)` (the same element of another run), a tensor or
number for the addressed slice (set, or added with op="add"), or an elementwise function.
Inside a forward pass the patches of one hook are applied as masked selections
(`torch.where`), one operation per group of patches, built on the hook's first call.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Any, Callable, Optional, Sequence

import torch

from interp import names as hook_names
from interp.checks import resolve_pos, resolve_positions


@dataclass(frozen=True)
class FromRun:
    """A patch value: the same element of another run (a key of `sources`)."""

    run: str


@dataclass(frozen=True)
class Patch:
    """Replace act[index] of hook `name` (index without the batch axis) by `value`; see the module docstring."""

    name: str
    index: tuple
    value: Any
    op: str = "set"  # "set" or "add"

    def __post_init__(self) -> None:
        if self.op not in ("set", "add"):
            raise ValueError(f"patch op must be 'set' or 'add', got {self.op!r}")
        if not isinstance(self.index, tuple):
            object.__setattr__(self, "index", (self.index,))


# ============================================================ helpers
def first_pos(index: tuple, name: str) -> int:
    """The earliest (query) position a patch touches (0 if it covers all positions)."""
    d = hook_names.pos_dim(name) - 1
    if d >= len(index):
        return 0
    i = index[d]
    if isinstance(i, int):
        return i
    if isinstance(i, slice):
        return 0 if i.start is None else i.start
    return int(min(i)) if len(i) else 0


def last_pos(index: tuple, name: str, n_pos: int) -> int:
    """The latest (query) position a patch touches (n_pos - 1 if it covers all positions)."""
    d = hook_names.pos_dim(name) - 1
    if d >= len(index):
        return n_pos - 1
    i = index[d]
    if isinstance(i, int):
        return i
    if isinstance(i, slice):
        return n_pos - 1 if i.stop is None else i.stop - 1
    return int(max(i)) if len(i) else -1


def normalize_index(index: tuple, name: str, n_pos: int) -> tuple:
    """Negative positions -> counted from the start, so that shifting by a start position works."""
    d = hook_names.pos_dim(name) - 1
    if d >= len(index):
        return index
    i = index[d]
    if isinstance(i, int):
        i = resolve_pos(i, n_pos, f"patch at {name}: position")
    elif isinstance(i, slice):
        i = slice(*i.indices(n_pos)) if i != slice(None) else i
    else:
        i = resolve_positions([int(p) for p in i], n_pos, f"patch at {name}: position")
    return index[:d] + (i,) + index[d + 1:]


def common_prefix(a: torch.Tensor, b: torch.Tensor) -> int:
    """How many leading positions token ids a [B, pos] and b [B or 1, pos] share in every row."""
    differ = (a != b).any(0).nonzero()
    return int(differ[0]) if len(differ) else a.shape[1]


# ============================================================ applying patches inside a forward pass
def _narrow(t: torch.Tensor, name: str, start: int, offset: int) -> torch.Tensor:
    """Drop positions before `start` along the position axis (offset: axes before the batch axis)."""
    if not start:
        return t
    d = offset + hook_names.pos_dim(name)
    return t.narrow(d, start, t.shape[d] - start)


def _as_tensor(value: Any, dtype: torch.dtype, device) -> torch.Tensor:
    v = value if isinstance(value, torch.Tensor) else torch.tensor(value, dtype=dtype, device=device)
    return v.to(device=device, dtype=dtype)


def _hashable(index: tuple) -> tuple:
    """An index as a dict key (slices and lists are not hashable)."""
    return tuple(("slice", i.start, i.stop, i.step) if isinstance(i, slice) else
                 ("list", tuple(i)) if isinstance(i, list) else i for i in index)


def _unhashable(key: tuple) -> tuple:
    return tuple(slice(*i[1:]) if isinstance(i, tuple) and i[0] == "slice" else
                 list(i[1]) if isinstance(i, tuple) and i[0] == "list" else i for i in key)


def _spread_values(group: list, n_copies: int, B: int, shape: tuple, dtype: torch.dtype, device) -> torch.Tensor:
    """Numbers or tensors for the patched slices, written into zeros shaped like the activation:
    [1, B, *act] when every patch of the group carries the same value (written at each patch's
    index: each copy's mask selects its own), else [n_copies, B, *act]."""
    value = group[0][1].value
    if all(p.value is value for _, p in group):
        spread = torch.zeros(1, B, *shape, dtype=dtype, device=device)
        v = _as_tensor(value, dtype, device)
        for index in dict.fromkeys(_hashable(p.index) for _, p in group):
            spread[0][(slice(None),) + _unhashable(index)] = v
        return spread
    spread = torch.zeros(n_copies, B, *shape, dtype=dtype, device=device)
    index = group[0][1].index
    simple = all(isinstance(i, (int, slice)) for i in index)  # a list would broadcast against the copies
    if simple and all(p.index == index for _, p in group):  # one write for all copies (one autograd node)
        copies = torch.tensor([c for c, _ in group], device=device)
        target = (copies, slice(None)) + index
        values = torch.stack([_as_tensor(p.value, dtype, device) for _, p in group])
        slot = spread[target]  # [n_items, B, *slice]
        if values.dim() == slot.dim() - 1:  # one value per copy, broadcast over the B prompts
            values = values.unsqueeze(1)
        spread[target] = values.expand_as(slot)
        return spread
    for c, p in group:
        spread[c][(slice(None),) + p.index] = _as_tensor(p.value, dtype, device)
    return spread


def _value_kind(p: Patch) -> tuple:
    """Patches of one group share how their value is applied (one op per group)."""
    v = p.value
    if isinstance(v, FromRun):
        return ("run", v.run)
    if callable(v) and not isinstance(v, torch.Tensor):
        return ("fn", id(v))
    return ("value", p.op)


class _HookPlan:
    """The patches of one forward pass at one hook, applied as masked selections (one op per group).

    The activation's rows are [rows before `lo`..., copy 0 (B rows), ..., copy n-1, rows after];
    it covers positions start.. of the prompt. Masks and values are built on the first call,
    when the activation's shape is known.
    """

    def __init__(self, runner: Any, name: str, lo: int, n_copies: int, start: int,
                 groups: list[list[tuple[int, Patch]]], fused: Optional[dict[str, tuple[int, int]]] = None) -> None:
        self.runner, self.name, self.lo, self.n_copies, self.start = runner, name, lo, n_copies, start
        self.groups, self.fused = groups, fused
        self.steps: Optional[list[Callable]] = None

    def __call__(self, x: torch.Tensor, hook: Any) -> torch.Tensor:
        if self.steps is None:
            shape = list(x.shape[1:])
            shape[hook_names.pos_dim(self.name) - 1] += self.start
            self.steps = [self._step(group, tuple(shape), x.dtype) for group in self.groups]
        B = self.runner.B
        hi = self.lo + self.n_copies * B
        body = x[self.lo:hi].reshape(self.n_copies, B, *x.shape[1:])
        for step in self.steps:
            body = step(x, body)
        body = body.reshape(self.n_copies * B, *x.shape[1:])
        if self.lo == 0 and hi == x.shape[0]:
            return body
        return torch.cat([x[: self.lo], body, x[hi:]])

    def _spread(self, group: list[tuple[int, Patch]], shape: tuple, dtype: torch.dtype) -> torch.Tensor:
        return _spread_values(group, self.n_copies, self.runner.B, shape, dtype, self.runner.device)

    def _step(self, group: list[tuple[int, Patch]], shape: tuple, dtype: torch.dtype) -> Callable:
        """(x, body [n_copies, B, *act]) -> body, for one group of patches."""
        runner, name, start, device = self.runner, self.name, self.start, self.runner.device
        mask = torch.zeros(self.n_copies, 1, *shape, dtype=torch.bool, device=device)
        for c, p in group:
            mask[c][(0,) + p.index] = True
        mask = _narrow(mask, name, start, 1)
        patch = group[0][1]
        value = patch.value
        if isinstance(value, FromRun):
            if self.fused is not None and value.run in self.fused:
                lo, n = self.fused[value.run]
                return lambda x, body: torch.where(mask, x[lo:lo + n][None], body)
            src = _narrow(runner.source_acts[value.run][name], name, start, 0)[None].to(dtype)  # [1, B or 1, *act]
            return lambda x, body: torch.where(mask, src, body)
        if callable(value) and not isinstance(value, torch.Tensor):
            return lambda x, body: torch.where(mask, value(body), body)
        spread = _narrow(self._spread(group, shape, dtype), name, start, 1)
        if patch.op == "add":
            return lambda x, body: torch.where(mask, body + spread, body)
        return lambda x, body: torch.where(mask, spread, body)


def hook_plans(runner: Any, copies: list[list[Patch]], base_patches: Sequence[Patch], lo: int, start: int,
                keep: Callable[[str], bool] = lambda name: True,
                fused: Optional[dict[str, tuple[int, int]]] = None) -> list[tuple[str, _HookPlan]]:
    """One hook per patched name: the base patches on every copy, then each row's patches in order."""
    per_name: dict[str, list[list[tuple[int, Patch]]]] = defaultdict(list)
    for p in base_patches:
        per_name[p.name].append([(c, p) for c in range(len(copies))])
    grouped: dict[tuple, list[tuple[int, Patch]]] = defaultdict(list)
    for c, row in enumerate(copies):
        seen: dict[str, int] = defaultdict(int)
        for p in row:
            grouped[(p.name, seen[p.name], _value_kind(p))].append((c, p))
            seen[p.name] += 1
    for (name, _, _), group in sorted(grouped.items(), key=lambda kv: kv[0][1]):
        per_name[name].append(group)
    return [(name, _HookPlan(runner, name, lo, len(copies), start, groups, fused))
            for name, groups in per_name.items() if keep(name)]


__all__ = ["Patch", "FromRun", "hook_plans", "first_pos", "last_pos", "normalize_index", "common_prefix"]
