"""Hook points and the hooked-module machinery.

A `HookPoint` is an identity module placed at every interesting activation. Hook
functions have TransformerLens' signature ``fn(tensor, hook) -> tensor | None``:
``hook.name`` is the hook point's name, and returning a tensor replaces the
activation (it must keep the shape). Backward hooks get the gradient of the
activation and may replace it the same way.

`HookedModule` gives any module made of hook points `add_hook`, the `hooks`
context manager, `run_with_hooks`, `run_with_cache`, `reset_hooks` and
`hook_names`. Hooks added by a context manager or a `run_with_*` call are
always removed when it ends, also when the body raises. Every name a hooked
module is given may use a negative layer ("blocks.-1.hook_resid_post"); it is
resolved against the model's own number of blocks (per stack).

This is the base layer: it imports torch and the other base modules
(`interp.names`, `interp.cache`) only.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator, Optional, Sequence, Union

import torch
from torch import nn

from interp import names as hook_names
from interp.cache import ActivationCache

HookFn = Callable[[torch.Tensor, "HookPoint"], Union[torch.Tensor, None]]
NameOrFilter = Union[str, Callable[[str], bool]]
NamesFilter = Union[None, str, Sequence[str], Callable[[str], bool]]

DIRECTIONS = ("fwd", "bwd")


class HookShapeError(ValueError):
    """A hook returned a tensor whose shape differs from the activation's."""


class UnknownHookError(KeyError):
    """A hook name that the model does not have."""

    def __str__(self) -> str:  # KeyError would print the message with quotes
        return str(self.args[0])


@dataclass
class HookHandle:
    """Returned by `add_hook`; `remove()` detaches exactly this hook."""

    hook_point: "HookPoint"
    fn: HookFn
    dir: str

    def remove(self) -> None:
        hooks = self.hook_point._hooks[self.dir]
        for i, f in enumerate(hooks):
            if f is self.fn:
                del hooks[i]
                break
        if not any(f is self.fn for f in hooks):
            self.hook_point._permanent[self.dir].discard(id(self.fn))


def _no_levels(level: Optional[int]) -> None:
    if level is not None:
        raise NotImplementedError("hook levels (TransformerLens' hook contexts) are not supported: use "
                                  "model.hooks(...) or run_with_hooks, which remove exactly the hooks they added")


class HookPoint(nn.Module):
    """Identity module that runs the hook functions attached to it.

    Forward hooks run in the order they were added, each seeing the previous
    one's output. Backward hooks are attached to the activation tensor when it
    is produced and look up the current hook list when the gradient arrives,
    so a hook removed before `backward()` does not run.
    """

    def __init__(self) -> None:
        super().__init__()
        self.name: str = ""
        self._hooks: dict[str, list[HookFn]] = {"fwd": [], "bwd": []}
        self._permanent: dict[str, set[int]] = {"fwd": set(), "bwd": set()}  # ids of hooks reset_hooks keeps

    @property
    def has_hooks(self) -> bool:
        return bool(self._hooks["fwd"] or self._hooks["bwd"])

    def add_hook(self, fn: HookFn, dir: str = "fwd", prepend: bool = False, is_permanent: bool = False) -> HookHandle:
        """Attach fn; a permanent hook survives `remove_hooks()` / `reset_hooks()` unless they are
        asked to remove permanent hooks too (TransformerLens' meaning); its handle removes it."""
        if dir not in DIRECTIONS:
            raise ValueError(f"dir must be 'fwd' or 'bwd', got {dir!r}")
        if not callable(fn):
            raise TypeError(f"hook for {self.name!r} must be callable, got {type(fn).__name__}")
        if prepend:
            self._hooks[dir].insert(0, fn)
        else:
            self._hooks[dir].append(fn)
        if is_permanent:
            self._permanent[dir].add(id(fn))
        return HookHandle(self, fn, dir)

    def remove_hooks(self, dir: str = "both", including_permanent: bool = False) -> None:
        if dir not in DIRECTIONS + ("both",):
            raise ValueError(f"dir must be 'fwd', 'bwd' or 'both', got {dir!r}")
        for d in DIRECTIONS if dir == "both" else (dir,):
            if including_permanent:
                self._hooks[d].clear()
                self._permanent[d].clear()
            else:
                self._hooks[d][:] = [f for f in self._hooks[d] if id(f) in self._permanent[d]]

    def _run_hooks(self, fns: list[HookFn], x: torch.Tensor) -> torch.Tensor:
        for fn in list(fns):
            out = fn(x, self)
            if out is not None:
                if not isinstance(out, torch.Tensor):
                    raise TypeError(
                        f"hook {getattr(fn, '__name__', fn)!r} on {self.name!r} returned "
                        f"{type(out).__name__}; return a tensor or None"
                    )
                if out.shape != x.shape:
                    raise HookShapeError(
                        f"hook {getattr(fn, '__name__', fn)!r} on {self.name!r} returned shape "
                        f"{tuple(out.shape)}, but the activation has shape {tuple(x.shape)}"
                    )
                x = out
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._hooks["fwd"]:
            x = self._run_hooks(self._hooks["fwd"], x)
        if self._hooks["bwd"]:
            if not x.requires_grad:
                raise RuntimeError(
                    f"backward hook on {self.name!r}: the activation does not require grad "
                    "(running under torch.no_grad(), or all parameters frozen?)"
                )
            # Run whatever backward hooks are attached when the gradient arrives.
            x.register_hook(lambda g: self._run_hooks(self._hooks["bwd"], g) if self._hooks["bwd"] else None)
        return x

    def layer(self) -> int:
        """The block index in this hook point's name (TransformerLens' `HookPoint.layer()`);
        an error for hooks outside the blocks (embeddings, final norm)."""
        layer = hook_names.layer_of(self.name)
        if layer is None:
            raise ValueError(f"hook {self.name!r} is not inside a block: it has no layer")
        return layer

    def extra_repr(self) -> str:
        return f"name={self.name!r}"


class HookedModule(nn.Module):
    """Base class for models made of named `HookPoint`s.

    Subclasses build their modules, then call `setup_hooks()` once at the end of
    `__init__`; it names every hook point after its module path.
    """

    def setup_hooks(self) -> None:
        self.hook_dict: dict[str, HookPoint] = {}
        for name, module in self.named_modules():
            if isinstance(module, HookPoint):
                module.name = name
                self.hook_dict[name] = module
        # Blocks per stack prefix ("" for a decoder-only model), for negative layers in names.
        self.n_blocks: dict[str, int] = {}
        for name in self.hook_dict:
            prefix, layer, _ = hook_names.split(name)
            if layer is not None:
                self.n_blocks[prefix] = max(self.n_blocks.get(prefix, 0), layer + 1)
        # Hooks that only run when asked for (e.g. per-head results): left out of
        # `run_with_cache()` with no names_filter, like TransformerLens does.
        self.opt_in_hooks: set[str] = {n for n in self.hook_dict if self._is_opt_in(n)}

    def _is_opt_in(self, name: str) -> bool:
        """Per-head results ([batch, pos, head, d_model]) are computed only when asked for."""
        return name.endswith("attn.hook_result")

    def set_use_attn_result(self, use: bool) -> None:
        """Compute per-head results (hook_result [batch, pos, head, d_model]) on every forward,
        in every attention module (each module also has its own `use_attn_result` flag)."""
        for module in self.modules():
            if hasattr(module, "use_attn_result"):
                module.use_attn_result = use

    # ---------------------------------------------------------------- names
    @property
    def hook_names(self) -> list[str]:
        """All hook point names, in the order the forward pass visits them."""
        return list(self.hook_dict)

    def normalize_name(self, name: str) -> str:
        """`name` with a negative layer resolved against this model's blocks."""
        return hook_names.normalize(name, self.n_blocks)

    def hook_point(self, name: str) -> HookPoint:
        """The `HookPoint` called `name` (negative layers allowed); an unknown name lists the closest valid ones."""
        try:
            return self.hook_dict[self.normalize_name(name)]
        except (KeyError, IndexError):
            close = hook_names.closest(name, self.hook_names)
            hint = f" Closest valid names: {', '.join(close)}." if close else ""
            raise UnknownHookError(
                f"{type(self).__name__} has no hook named {name!r}.{hint} "
                f"(model.hook_names lists all {len(self.hook_dict)}.)"
            ) from None

    def _resolve(self, name: NameOrFilter) -> list[HookPoint]:
        if isinstance(name, str):
            return [self.hook_point(name)]
        if callable(name):
            return [hp for n, hp in self.hook_dict.items() if name(n)]
        raise TypeError(f"hook name must be a string or a filter function, got {type(name).__name__}")

    # ---------------------------------------------------------------- adding
    def add_hook(
        self, name: NameOrFilter, fn: HookFn, dir: str = "fwd", is_permanent: bool = False,
        level: Optional[int] = None, prepend: bool = False,
    ) -> list[HookHandle]:
        """Attach `fn` to the hook point `name` (or to every name a filter accepts).

        Stays attached until removed (`handle.remove()`, `reset_hooks()`); prefer
        `hooks(...)` or `run_with_hooks(...)`, which always clean up. A permanent hook
        (`is_permanent=True`, as TransformerLens) survives `reset_hooks()` unless it is called
        with including_permanent=True.
        """
        _no_levels(level)
        points = self._resolve(name)
        if dir not in DIRECTIONS:  # check before attaching anything
            raise ValueError(f"dir must be 'fwd' or 'bwd', got {dir!r}")
        return [hp.add_hook(fn, dir=dir, prepend=prepend, is_permanent=is_permanent) for hp in points]

    def add_perma_hook(self, name: NameOrFilter, fn: HookFn, dir: str = "fwd") -> list[HookHandle]:
        """TransformerLens' `add_perma_hook`: `add_hook(..., is_permanent=True)`."""
        return self.add_hook(name, fn, dir=dir, is_permanent=True)

    def reset_hooks(self, clear_contexts: bool = True, direction: str = "both", including_permanent: bool = False,
                    level: Optional[int] = None) -> None:
        """Remove every hook (of `direction`: "fwd", "bwd" or "both") from every hook point,
        except permanent ones unless including_permanent (TransformerLens' arguments; there are
        no hook contexts here, so clear_contexts changes nothing)."""
        _no_levels(level)
        for hp in self.hook_dict.values():
            hp.remove_hooks(direction, including_permanent=including_permanent)

    @contextmanager
    def hooks(
        self,
        fwd_hooks: Iterable[tuple[NameOrFilter, HookFn]] = (),
        bwd_hooks: Iterable[tuple[NameOrFilter, HookFn]] = (),
        reset_hooks_end: bool = True,
    ) -> Iterator["HookedModule"]:
        """Context manager (TransformerLens' arguments): attach hooks, yield the model, then
        remove exactly those hooks (reset_hooks_end=False leaves them attached).

        All names are checked before any hook is attached, so a bad name leaves
        the model untouched.
        """
        fwd, bwd = list(fwd_hooks), list(bwd_hooks)
        for name, _ in fwd + bwd:
            self._resolve(name)
        handles: list[HookHandle] = []
        try:
            for name, fn in fwd:
                handles += self.add_hook(name, fn, "fwd")
            for name, fn in bwd:
                handles += self.add_hook(name, fn, "bwd")
            yield self
        finally:
            if reset_hooks_end:
                for h in reversed(handles):
                    h.remove()

    def run_with_hooks(
        self,
        *args: Any,
        fwd_hooks: Iterable[tuple[NameOrFilter, HookFn]] = (),
        bwd_hooks: Iterable[tuple[NameOrFilter, HookFn]] = (),
        reset_hooks_end: bool = True,
        **kwargs: Any,
    ) -> Any:
        """Run the forward pass with temporary hooks (reset_hooks_end=False: keep them attached,
        as TransformerLens).

        Backward hooks stay attached only during this call: call `.backward()`
        inside a `hooks(...)` block instead if you need them to fire.
        """
        with self.hooks(fwd_hooks=fwd_hooks, bwd_hooks=bwd_hooks, reset_hooks_end=reset_hooks_end):
            return self(*args, **kwargs)

    # ---------------------------------------------------------------- caching
    def _filter_names(self, names_filter: NamesFilter) -> list[str]:
        if names_filter is None:
            return [n for n in self.hook_dict if n not in self.opt_in_hooks or self._opt_in_enabled(n)]
        if isinstance(names_filter, str):
            return [self.hook_point(names_filter).name]
        if callable(names_filter):
            return [n for n in self.hook_dict if names_filter(n)]
        return [self.hook_point(n).name for n in names_filter]

    def _opt_in_enabled(self, name: str) -> bool:
        """Whether an opt-in hook is switched on: its module's own `use_attn_result` flag
        (each attention module has one, so switching on one block is honoured)."""
        owner = self.get_submodule(name.rsplit(".", 1)[0]) if "." in name else self
        return bool(getattr(owner, "use_attn_result", False))

    def run_with_cache(
        self,
        *args: Any,
        names_filter: NamesFilter = None,
        device: Union[str, torch.device, None] = None,
        incl_bwd: bool = False,
        metric: Callable[[Any], torch.Tensor] | None = None,
        remove_batch_dim: bool = False,
        **kwargs: Any,
    ) -> tuple[Any, "ActivationCache"]:
        """Run the model and return ``(output, cache)``.

        names_filter: None (every hook, except opt-in ones not enabled), one
            name, a list of names, or a function ``name -> bool``.
        device: where to store cached tensors (default: where they are).
        incl_bwd: also cache gradients, under ``name + "_grad"``. The scalar to
            differentiate is ``metric(output)`` if given, else the output itself
            (e.g. ``return_type="loss"``). Only the activations' gradients are
            computed: parameters' ``.grad`` are left untouched.
        remove_batch_dim: for one prompt, cache tensors without their batch axis
            (as TransformerLens; see `ActivationCache.remove_batch_dim`).
        """
        names = self._filter_names(names_filter)
        store: dict[str, torch.Tensor] = {}
        # Activations are kept (not detached) until backward so their grads can be read.
        grad_targets: dict[str, torch.Tensor] = {}

        def save(x: torch.Tensor, hook: HookPoint) -> None:
            store[hook.name] = x.detach().to(device) if device is not None else x.detach()
            if incl_bwd:
                grad_targets[hook.name] = x

        def save_grad(g: torch.Tensor, hook: HookPoint) -> None:
            store[hook.name + "_grad"] = g.detach().to(device) if device is not None else g.detach()

        fwd = [(n, save) for n in names]
        bwd = [(n, save_grad) for n in names] if incl_bwd else []
        if incl_bwd and not torch.is_grad_enabled():
            raise RuntimeError("run_with_cache(incl_bwd=True) needs gradients enabled (not under torch.no_grad())")
        with self.hooks(fwd_hooks=fwd, bwd_hooks=bwd):
            out = self(*args, **kwargs)
            if incl_bwd:
                target = metric(out) if metric is not None else out
                if not isinstance(target, torch.Tensor) or target.numel() != 1:
                    raise ValueError(
                        "incl_bwd=True needs a scalar to differentiate: pass metric=fn(logits) -> scalar, "
                        "or return_type='loss'"
                    )
                inputs = [t for t in grad_targets.values() if t.requires_grad]
                torch.autograd.backward(target, inputs=inputs)
        # Keep forward activations first, then their gradients, in model order.
        ordered = {n: store[n] for n in self.hook_dict if n in store}
        ordered.update({n + "_grad": store[n + "_grad"] for n in self.hook_dict if n + "_grad" in store})
        cache = ActivationCache(ordered, self)
        return out, cache.remove_batch_dim() if remove_batch_dim else cache
