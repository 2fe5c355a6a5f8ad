"""Progress bars: the one way long work shows progress (hook base: tqdm only).

`progress_bar(iterable, progress=True, ...)` is tqdm's bar, off when `progress` is False
and off whenever the environment says `TQDM_DISABLE=1` (tqdm honours that variable only
when nobody passes `disable` explicitly, so every bar in the toolkit goes through here).

Because every bar goes through here, long work can also be watched and cancelled from
outside (the explorer app does): inside `with watching(callback):` each bar made in that
thread calls `callback(done, total, desc)` at its start and after every step, drawn or not;
the callback may raise `Cancelled` to stop the work there.
"""

from __future__ import annotations

import os
import threading
from contextlib import contextmanager
from typing import Any, Callable, Iterable, Iterator, Optional

import importlib.util

from tqdm.auto import tqdm as _auto_tqdm
from tqdm.std import tqdm

# In Jupyter, tqdm.auto draws a widget bar, which needs ipywidgets (without it tqdm warns on
# every bar). Text bars are used instead where ipywidgets is missing, and always for a bar that
# draws nothing.
_WIDGETS = importlib.util.find_spec("ipywidgets") is not None


def progress_disabled(progress: bool = True) -> bool:
    """True when no bar should be drawn: asked to be quiet, or TQDM_DISABLE set in the environment."""
    env = os.environ.get("TQDM_DISABLE", "").strip().lower()
    return (not progress) or env not in ("", "0", "false", "no")


Watcher = Callable[[int, Optional[int], str], None]
_local = threading.local()


class Cancelled(RuntimeError):
    """Raised by a watcher (see `watching`) to stop long work at its next step."""


@contextmanager
def watching(callback: Watcher) -> Iterator[None]:
    """Within the block, every progress bar made in this thread reports to
    `callback(done, total, desc)`: once when it starts (done=0), then after each step.
    Nested blocks stack; the previous watcher is back on exit."""
    previous = getattr(_local, "watcher", None)
    _local.watcher = callback
    try:
        yield
    finally:
        _local.watcher = previous


class _WatchedBar(tqdm):
    """A tqdm bar that also reports every step to a watcher (even when it draws nothing)."""

    def __init__(self, iterable: Optional[Iterable] = None, *args: Any, watcher: Watcher, **kwargs: Any) -> None:
        # a disabled tqdm keeps neither total nor desc: remember them here
        total = kwargs.get("total")
        if total is None and iterable is not None and hasattr(iterable, "__len__"):
            total = len(iterable)
        self._watcher, self._done, self._total, self._desc = watcher, 0, total, kwargs.get("desc") or ""
        super().__init__(iterable, *args, **kwargs)
        self._report()

    def _report(self) -> None:
        self._watcher(self._done, self._total, self._desc)

    def __iter__(self):
        for item in super().__iter__():
            yield item
            self._done += 1
            self._report()

    def update(self, n: float = 1) -> Optional[bool]:
        out = super().update(n)
        self._done += int(n)
        self._report()
        return out


def progress_bar(iterable: Optional[Iterable] = None, progress: bool = True, **kwargs: Any) -> tqdm:
    """tqdm(iterable, **kwargs), disabled when `progress` is False or TQDM_DISABLE is set; inside
    `watching(...)` it also reports each step to the watcher."""
    if "disable" in kwargs:
        raise TypeError("progress_bar takes progress=..., not disable=...")
    disabled = progress_disabled(progress)
    watcher = getattr(_local, "watcher", None)
    if watcher is not None:
        return _WatchedBar(iterable, disable=disabled, watcher=watcher, **kwargs)
    bar = tqdm if (disabled or not _WIDGETS) else _auto_tqdm
    return bar(iterable, disable=disabled, **kwargs)


__all__ = ["Cancelled", "progress_bar", "progress_disabled", "watching"]
