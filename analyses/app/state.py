"""The explorer's shared state: one model, one lock, and per-tab edit sessions.

Every computation runs inside `AppState.computing(session_id)`: the model lock is taken, the
session's edits are applied (in order), the work runs, and the edits are reverted (in reverse
order, bit-identically: `probes.edit.Edit.revert` copies the original tensors back), also when
the work raises or is cancelled. So an edit applied in one browser tab changes nothing that
another tab sees, and between computations the model holds its original weights.
"""

from __future__ import annotations

import threading
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Iterator, Optional

from models import Transformer

DEFAULT_SESSION = "default"  # requests without a session header share this one
SESSION_HEADER = "x-interp-session"
MAX_SESSION_ID = 64


@dataclass
class Session:
    """One browser tab: its id and the edits applied around its computations (oldest first)."""

    id: str
    edits: list[Any] = field(default_factory=list)  # probes.edit.Edit, each applied in order

    def describe(self) -> list[dict]:
        """JSON-ready: each edit's method, layer and request."""
        return [{"index": i, "method": e.method, "layer": e.info.get("layer"), "request": e.info.get("request"),
                 "norm": e.norm()} for i, e in enumerate(self.edits)]


def check_session_id(sid: Optional[str]) -> str:
    """The session id of a request (the default one when absent); a clear error for a bad one."""
    if sid is None or sid == "":
        return DEFAULT_SESSION
    if len(sid) > MAX_SESSION_ID or not all(c.isalnum() or c in "-_" for c in sid):
        raise ValueError(f"session id must be 1-{MAX_SESSION_ID} letters, digits, '-' or '_', got {sid!r}")
    return sid


class AppState:
    """The model the app serves, its lock and the sessions; `texts` are the prompts dashboards
    read (the fact world's for the shipped model), `transcoders` the per-layer dictionaries for
    feature dashboards (None: no feature dashboards)."""

    def __init__(self, model: Transformer, *, name: str = "model", texts: Optional[list[str]] = None,
                 transcoders: Optional[list] = None) -> None:
        self.model = model
        self.name = name
        self.texts = list(texts or [])
        self.transcoders = transcoders
        self.lock = threading.RLock()
        self._sessions: dict[str, Session] = {}
        self._sessions_lock = threading.Lock()

    def session(self, sid: Optional[str]) -> Session:
        sid = check_session_id(sid)
        with self._sessions_lock:
            if sid not in self._sessions:
                self._sessions[sid] = Session(sid)
            return self._sessions[sid]

    @contextmanager
    def computing(self, sid: Optional[str]) -> Iterator[Transformer]:
        """The model with session `sid`'s edits applied, under the lock; restored on exit."""
        session = self.session(sid)
        with self.lock:
            applied = []
            try:
                for edit in list(session.edits):
                    edit.apply(self.model)
                    applied.append(edit)
                yield self.model
            finally:
                for edit in reversed(applied):
                    edit.revert(self.model)

    def add_edit(self, sid: Optional[str], edit: Any) -> int:
        """Store `edit` in the session (applied around its later computations); its index."""
        session = self.session(sid)
        with self.lock:
            session.edits.append(edit)
            return len(session.edits) - 1

    def revert_edits(self, sid: Optional[str], index: Optional[int] = None) -> int:
        """Drop the session's edit `index` and every later one (None: all of them); how many went."""
        session = self.session(sid)
        with self.lock:
            n = len(session.edits)
            if index is None:
                session.edits.clear()
                return n
            if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < n:
                raise ValueError(f"edit index {index!r} is out of range: this session has {n} edit(s)")
            del session.edits[index:]
            return n - index


__all__ = ["AppState", "Session", "DEFAULT_SESSION", "SESSION_HEADER", "check_session_id"]
