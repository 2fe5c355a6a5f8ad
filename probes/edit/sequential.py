"""Edits applied one after another, each computed on the model as the earlier ones left it, and
reverted together bit-identically.

    run = SequentialEdits(model)
    for request in requests:
        run.add(rome(model, request))          # applied at once; the next edit sees it
    ...                                        # the model now holds every edit
    run.revert()                               # the weights the model had before the first edit

    run = sequential_edit(model, requests, "alphaedit", batch_size=10, on_step=measure)

AlphaEdit's later edits keep the keys of the earlier ones (`preserved`, the sum of K^T K over
the edits so far, per layer); ROME and MEMIT know nothing of earlier edits, which is why they
drift as edits pile up.
"""

from __future__ import annotations

from typing import Any, Callable, Optional, Sequence

import torch

from interp.progress import progress_bar
from models.transformer import Transformer
from probes.edit.edit import Edit
from probes.edit.requests import RequestLike, as_requests

SEQUENTIAL_METHODS = ("rome", "memit", "alphaedit")


class SequentialEdits:
    """The edits applied to `model` so far, in order; `revert` puts back the exact weights the
    model had before the first (a copy of each parameter taken when an edit first touches it)."""

    def __init__(self, model: Transformer):
        self.model = model
        self.edits: list[Edit] = []
        self._originals: dict[str, torch.Tensor] = {}
        self.preserved: dict[int, torch.Tensor] = {}  # layer -> sum of K^T K of every edit's keys [d_mlp, d_mlp]
        self.skipped: list = []  # requests the model already answered with their new target when their turn came

    def add(self, edit: Edit) -> None:
        """Apply `edit` on top of the ones before (it must not be applied already)."""
        if edit.is_applied(self.model):
            raise RuntimeError("this edit is already applied to the model")
        params = edit._check(self.model)
        for name in edit.deltas:
            self._originals.setdefault(name, params[name].detach().clone())
        with torch.no_grad():
            for name, delta in edit.deltas.items():
                params[name].add_(delta.to(params[name].dtype).to(params[name].device))
        for layer, keys in edit.keys.items():
            kk = keys.double().T @ keys.double()
            self.preserved[layer] = self.preserved[layer] + kk if layer in self.preserved else kk
        self.edits.append(edit)

    def revert(self) -> None:
        """Restore every parameter any edit touched to its value before the first edit."""
        params = dict(self.model.named_parameters())
        with torch.no_grad():
            for name, original in self._originals.items():
                params[name].copy_(original)
        self._originals.clear()
        self.edits.clear()
        self.preserved.clear()
        self.skipped.clear()

    def combined(self) -> Edit:
        """One Edit holding what all the edits so far changed (each touched parameter now minus its
        value before the first edit), for applying the whole run to another copy of the model."""
        params = dict(self.model.named_parameters())
        deltas = {name: (params[name].detach().double() - original.double()) for name, original in self._originals.items()}
        method = "+".join(dict.fromkeys(e.method for e in self.edits)) or "none"
        return Edit(method, deltas, {"edits": len(self.edits), "seconds": sum(e.info.get("seconds", 0.0)
                                                                               for e in self.edits)})

    def __len__(self) -> int:
        return len(self.edits)


def _answers(model: Transformer, request) -> bool:
    """Whether the model's top answer to the request's prompt is already its new target."""
    from interp.words import answer_token

    with torch.no_grad():
        return int(model(request.prompt)[0, -1].argmax()) == answer_token(model, request.new_target)


def sequential_edit(model: Transformer, requests: Sequence[RequestLike], method: str = "rome", *,
                    batch_size: int = 1, on_step: Optional[Callable[[int, SequentialEdits], Any]] = None,
                    run: Optional[SequentialEdits] = None, progress: bool = True, **settings) -> SequentialEdits:
    """Edit `requests` in order, `batch_size` at a time (ROME: one at a time), each batch computed
    on the model as edited so far and applied at once; `on_step(n_done, run)` after each batch
    (e.g. to score the edits so far). A request the model already answers with its new target when
    its turn comes (an earlier edit spilled over) is not edited again; it is listed in
    `run.skipped`. `settings` go to the method (for ROME, MEMIT and AlphaEdit
    alike; a callable value is called with the batch's requests, e.g. `keep=lambda rs: [...]`).
    `run`: go on from a run already holding edits (AlphaEdit keeps its keys too). Returns the run
    with every edit applied: call `run.revert()` to undo them all; on an error the model is
    reverted (the whole run) before it propagates."""
    from probes.edit.alphaedit import alphaedit
    from probes.edit.memit import memit
    from probes.edit.rome import rome

    if method not in SEQUENTIAL_METHODS:
        raise ValueError(f"method must be one of {SEQUENTIAL_METHODS}, got {method!r}")
    if batch_size < 1 or (method == "rome" and batch_size != 1):
        raise ValueError(f"batch_size must be at least 1 (ROME edits one fact at a time), got {batch_size}")
    requests = as_requests(requests)
    if not requests:
        raise ValueError("no edit requests given")
    if run is None:
        run = SequentialEdits(model)
    elif run.model is not model:
        raise ValueError("run holds edits of another model")
    batches = [requests[i: i + batch_size] for i in range(0, len(requests), batch_size)]
    done = 0
    try:
        for batch in progress_bar(batches, progress=progress, desc=f"sequential {method}"):
            done += len(batch)
            todo = [r for r in batch if not _answers(model, r)]  # earlier edits may have made one already
            run.skipped += [r for r in batch if r not in todo]
            if todo:
                given = {k: (v(todo) if callable(v) else v) for k, v in settings.items()}
                if method == "rome":
                    edit = rome(model, todo[0], progress=False, **given)
                elif method == "memit":
                    edit = memit(model, todo, progress=False, **given)
                else:
                    edit = alphaedit(model, todo, preserved=dict(run.preserved) or None, progress=False, **given)
                run.add(edit)
            if on_step is not None:
                on_step(done, run)
    except BaseException:
        run.revert()
        raise
    return run


__all__ = ["SequentialEdits", "sequential_edit", "SEQUENTIAL_METHODS"]
