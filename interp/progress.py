"""Progress bars: the one way long work shows progress (hook base: tqdm only).

`progress_bar(iterable, progress=True, ...)` is tqdm's bar, off when `progress` is False
and off whenever the environment says `TQDM_DISABLE=1` (tqdm honours that variable only
when nobody passes `disable` explicitly, so every bar in the toolkit goes through here).
"""

from __future__ import annotations

import os
from typing import Any, Iterable, Optional

from tqdm.auto import tqdm


def progress_disabled(progress: bool = True) -> bool:
    """True when no bar should be drawn: asked to be quiet, or TQDM_DISABLE set in the environment."""
    env = os.environ.get("TQDM_DISABLE", "").strip().lower()
    return (not progress) or env not in ("", "0", "false", "no")


def progress_bar(iterable: Optional[Iterable] = None, progress: bool = True, **kwargs: Any) -> tqdm:
    """tqdm(iterable, **kwargs), disabled when `progress` is False or TQDM_DISABLE is set."""
    if "disable" in kwargs:
        raise TypeError("progress_bar takes progress=..., not disable=...")
    return tqdm(iterable, disable=progress_disabled(progress), **kwargs)


__all__ = ["progress_bar", "progress_disabled"]
