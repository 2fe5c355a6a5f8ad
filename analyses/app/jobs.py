"""Background jobs: long work (a patching sweep, a causal trace, a localisation, an edit) runs in
its own thread, reports progress through `interp.progress.watching`, and can be cancelled.

    job = jobs.submit("sweep", session_id, work)     # work(model) -> JSON-ready result
    jobs.get(job.id).snapshot()                       # {"id", "kind", "status", "done", "total", ...}
    jobs.cancel(job.id)                               # stops at the work's next progress step

A job waits for the model lock, runs `work` on the model with its session's edits applied
(`AppState.computing`), and ends "done" (with `result`), "error" (with the library's message)
or "cancelled". Cancelling raises `interp.progress.Cancelled` inside the work's next progress
step, so hooks come off and edits are reverted by the same `finally` blocks as any error.
"""

from __future__ import annotations

import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

from interp.progress import Cancelled, watching

from analyses.app.state import AppState

STATUSES = ("queued", "running", "done", "error", "cancelled")
FINISHED = ("done", "error", "cancelled")
MAX_KEPT = 200  # finished jobs kept for polling; the oldest go first


@dataclass
class Job:
    id: str
    kind: str
    session: str
    status: str = "queued"
    done: int = 0
    total: Optional[int] = None
    desc: str = ""
    result: Any = None
    error: Optional[str] = None
    started: float = field(default_factory=time.time)
    finished: Optional[float] = None
    cancel_requested: threading.Event = field(default_factory=threading.Event, repr=False)
    finished_event: threading.Event = field(default_factory=threading.Event, repr=False)
    first_step: threading.Event = field(default_factory=threading.Event, repr=False)  # progress began, or it ended
    progressed: bool = False  # a progress step was reported (so the input passed the library's checks)

    def snapshot(self) -> dict:
        """JSON-ready state (the result only once done)."""
        out = {"id": self.id, "kind": self.kind, "status": self.status, "done": self.done, "total": self.total,
               "desc": self.desc, "error": self.error}
        if self.status == "done":
            out["result"] = self.result
        return out

    def watcher(self, done: int, total: Optional[int], desc: str) -> None:
        """The progress callback: records progress, raises Cancelled when asked to stop."""
        self.done, self.total, self.desc = done, total, desc
        self.progressed = True
        self.first_step.set()
        if self.cancel_requested.is_set():
            raise Cancelled(f"job {self.id} cancelled")


class Jobs:
    """The app's jobs, one thread each (they take turns on the model lock)."""

    def __init__(self, state: AppState) -> None:
        self.state = state
        self._jobs: dict[str, Job] = {}
        self._lock = threading.Lock()

    def submit(self, kind: str, session: str, work: Callable[[Any], Any],
               on_done: Optional[Callable[[Any], Any]] = None) -> Job:
        """Start `work(model)` in a thread; `on_done(result)` (after the computation, still under
        the model lock, e.g. to store an edit in the session) turns the work's result into the
        job's JSON result."""
        job = Job(uuid.uuid4().hex[:16], kind, session)
        with self._lock:
            self._jobs[job.id] = job
            self._forget_old()
        threading.Thread(target=self._run, args=(job, work, on_done), name=f"interp-job-{job.id}",
                         daemon=True).start()
        return job

    def _run(self, job: Job, work: Callable[[Any], Any], on_done: Optional[Callable[[Any], Any]]) -> None:
        try:
            if job.cancel_requested.is_set():
                raise Cancelled(f"job {job.id} cancelled")
            # on_done runs under the same lock (an RLock), so an edit computed on the session's
            # edits is stored before anything else can change them.
            with self.state.lock:
                with self.state.computing(job.session) as model:
                    if job.cancel_requested.is_set():
                        raise Cancelled(f"job {job.id} cancelled")
                    job.status = "running"
                    with watching(job.watcher):
                        value = work(model)
                job.result = on_done(value) if on_done is not None else value
            job.status = "done"
        except Cancelled:
            job.status = "cancelled"
        except Exception as err:  # the job reports the library's message; the server keeps running
            job.error = error_message(err)
            job.status = "error"
        finally:
            job.finished = time.time()
            job.first_step.set()
            job.finished_event.set()

    def get(self, job_id: str) -> Job:
        with self._lock:
            if job_id not in self._jobs:
                raise KeyError(f"no job {job_id!r} (finished jobs are kept for the last {MAX_KEPT})")
            return self._jobs[job_id]

    def cancel(self, job_id: str) -> Job:
        """Ask the job to stop at its next progress step (a finished job stays as it is)."""
        job = self.get(job_id)
        job.cancel_requested.set()
        return job

    def forget(self, job_id: str) -> None:
        with self._lock:
            self._jobs.pop(job_id, None)

    def _forget_old(self) -> None:
        done = [j for j in self._jobs.values() if j.status in FINISHED]
        for j in sorted(done, key=lambda j: j.started)[: max(0, len(done) - MAX_KEPT)]:
            del self._jobs[j.id]


def error_message(err: BaseException) -> str:
    """The message an exception was raised with (a KeyError's without the quotes str() adds)."""
    if isinstance(err, KeyError) and len(err.args) == 1 and isinstance(err.args[0], str):
        return err.args[0]
    return str(err)


__all__ = ["Job", "Jobs", "STATUSES", "FINISHED", "error_message"]
