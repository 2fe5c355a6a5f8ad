"""What to edit: an `EditRequest` (the prompt, the subject inside it, and the answer the edit
should make the model give, `new_target`), the ways a caller may write one, and the checks
every editing method makes before touching anything.

    request = EditRequest("Michael Jordan plays the sport of", "Michael Jordan", "soccer")
    as_request("Michael Jordan plays the sport of", "Michael Jordan", "soccer")   # the same
    as_requests([("Michael Jordan plays the sport of", "Michael Jordan", "soccer"), ...])
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Optional, Sequence, Union

import torch

from interp.checks import IndexRangeError, resolve_layer
from interp.words import answer_token
from models.transformer import Transformer
from probes.subjects import subject_span


@dataclass(frozen=True)
class EditRequest:
    prompt: str  # ends right before the answer
    subject: str  # text inside the prompt
    new_target: str  # the answer the edit makes the model give (one token)

    def to_dict(self) -> dict:
        return {"prompt": self.prompt, "subject": self.subject, "new_target": self.new_target}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "EditRequest":
        """The request `to_dict` wrote; files written before the rename, where the new answer was
        saved as "target", read the same."""
        if "new_target" in data:
            new_target = data["new_target"]
        elif "target" in data:
            new_target = data["target"]
        else:
            raise KeyError(f"an edit request needs 'prompt', 'subject' and 'new_target'; got keys {sorted(data)}")
        return cls(data["prompt"], data["subject"], new_target)


RequestLike = Union[EditRequest, Sequence[str]]


def as_request(request: Union[RequestLike, str], subject: Optional[str] = None,
               new_target: Optional[str] = None) -> EditRequest:
    """An EditRequest from one, from (prompt, subject, new_target), or from the three strings."""
    if isinstance(request, EditRequest):
        if subject is not None or new_target is not None:
            raise TypeError("give an EditRequest, or prompt, subject and new_target, not both")
        return request
    if isinstance(request, str):
        if subject is None or new_target is None:
            raise TypeError("an edit needs the prompt, the subject inside it and the new target: "
                            "rome(model, prompt, subject, new_target)")
        return EditRequest(request, subject, new_target)
    if subject is not None or new_target is not None:
        raise TypeError("give an EditRequest or a (prompt, subject, new_target) tuple, not both")
    items = tuple(request) if isinstance(request, (tuple, list)) else ()
    if len(items) != 3 or not all(isinstance(x, str) for x in items):
        raise TypeError(f"expected an EditRequest or (prompt, subject, new_target), got {request!r}")
    return EditRequest(*items)


def as_requests(requests: Sequence[RequestLike]) -> list[EditRequest]:
    """EditRequests from a sequence of them or of (prompt, subject, new_target) tuples."""
    if isinstance(requests, (EditRequest, str)):
        raise TypeError("give a list of requests: memit(model, [(prompt, subject, new_target), ...])")
    return [as_request(r) for r in requests]


def check_request(model: Transformer, request: EditRequest) -> tuple[int, int]:
    """(new target id, current answer id); clear errors for a subject not in the prompt, a new
    target that is not one known token, or a new target the model already gives."""
    if not isinstance(request, EditRequest):
        raise TypeError(f"expected an EditRequest(prompt, subject, new_target), got {request!r}")
    subject_span(model, request.prompt, request.subject)  # raises, naming the prompt's tokens
    try:
        new_target = answer_token(model, request.new_target)
    except (ValueError, KeyError) as e:
        raise ValueError(f"the edit's new target {request.new_target!r} is not a single known token: {e}") from e
    with torch.no_grad():
        current = int(model(request.prompt)[0, -1].argmax())
    if current == new_target:
        raise ValueError(f"the model already answers {request.new_target!r} to {request.prompt!r}: nothing to edit")
    return new_target, current


def check_layer(model: Transformer, layer: int) -> int:
    """The MLP layer to edit in [0, n_layers) (negatives from the end): IndexRangeError (a
    ValueError) outside the model, ValueError for a model without MLPs."""
    try:
        layer = resolve_layer(layer, model.cfg.n_layers, "edit layer")
    except IndexRangeError as e:
        raise IndexRangeError(f"out of range: {e}") from None
    if model.cfg.attn_only:
        raise ValueError("the model has no MLPs (attn_only): there is no key-value memory to edit")
    return layer


__all__ = ["EditRequest", "RequestLike", "as_request", "as_requests", "check_request", "check_layer"]
