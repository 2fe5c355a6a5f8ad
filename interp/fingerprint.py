"""A model's fingerprint: one hash of its configuration, class and weights, for files derived
from a model (cached key statistics, activation stores) that must never be reused for another.

    key = weights_hash(model)                                   # every parameter
    key = weights_hash(model, keep=lambda name: "unembed" not in name, salt=b"my format v1")

Each kept parameter contributes its name, its dtype, shape and raw bytes (bfloat16 included),
and, with `with_device`, its device type. Renaming, retraining, converting (`model.half()`) or
editing a single weight changes the hash.
"""

from __future__ import annotations

import hashlib
import json
from typing import Callable, Optional

import torch


def tensor_bytes(t: torch.Tensor) -> bytes:
    """The raw bytes of a tensor of any dtype (bfloat16 included), after its dtype and shape."""
    flat = t.detach().cpu().contiguous().reshape(-1)
    head = f"{t.dtype}|{tuple(t.shape)}|".encode()
    return head + (flat.view(torch.uint8).numpy().tobytes() if flat.numel() else b"")


def weights_hash(model: torch.nn.Module, *, keep: Optional[Callable[[str], bool]] = None, salt: bytes = b"",
                 with_device: bool = False, length: int = 24) -> str:
    """Hex digest (`length` characters) of `salt`, the model's config (`model.cfg.to_dict()` where it
    has one), its class, and every parameter whose name `keep(name)` accepts (all by default)."""
    h = hashlib.sha256(salt)
    cfg = getattr(model, "cfg", None)
    if cfg is not None and hasattr(cfg, "to_dict"):
        h.update(json.dumps(cfg.to_dict(), sort_keys=True, default=str).encode())
    h.update(f"{type(model).__module__}.{type(model).__qualname__}|".encode())
    for name, p in model.named_parameters():
        if keep is not None and not keep(name):
            continue
        h.update(name.encode())
        if with_device:
            h.update(p.device.type.encode())
        h.update(tensor_bytes(p))
    return h.hexdigest()[:length]


__all__ = ["tensor_bytes", "weights_hash"]
