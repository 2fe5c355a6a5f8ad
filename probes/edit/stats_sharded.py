"""Key statistics (`key_second_moment`) summed over shards of the corpus, on Ray workers.

    C = key_second_moment_sharded("factworld", layer=1, workers=2, out="results/keys_L1.shards.jsonl")

The corpus is cut into the token batches `key_second_moment` reads (the same padding, the same
token budget); each shard sums k k^T in float64 over `batches_per_shard` consecutive batches, and
the shards' sums are added in shard order, then divided by the token count. The moment is the
same, number for number, whatever the worker count; with batches_per_shard=1 it is also exactly
`key_second_moment`'s (the same sums in the same order), with more batches per shard it differs
from it only by float64 rounding. The shard sums travel as the raw bytes of float64 matrices
(base64 in the results file: exact, d_mlp^2 * 8 bytes a shard).
"""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any, Optional, Union

import torch

from interp import names as hook_names
from interp.checks import resolve_layer
from interp.workers import ModelTask, run_shards
from probes.edit.stats import Corpus, _batches, _batches_hash, default_corpus


def encode(t: torch.Tensor) -> dict:
    """A float64 tensor as JSON, exactly: its shape and the base64 of its bytes."""
    flat = t.detach().to("cpu", torch.float64).contiguous()
    return {"shape": list(flat.shape), "float64": base64.b64encode(flat.numpy().tobytes()).decode()}


def decode(d: dict) -> torch.Tensor:
    """The tensor `encode` wrote."""
    raw = bytearray(base64.b64decode(d["float64"]))
    return torch.frombuffer(raw, dtype=torch.float64).reshape(d["shape"])


class KeyStatsTask(ModelTask):
    """Items: [first, end) ranges of batch indices; result: {"count", "sum": encoded sum of k k^T}."""

    def __init__(self, model: Any, layer: int, batches: list, takes: list[int], *, dtype: Optional[str] = None,
                 loaded: Any = None) -> None:
        super().__init__(model, dtype, loaded=loaded)
        self.layer, self.batches, self.takes = layer, batches, takes
        self.batches_hash = _batches_hash(batches)

    def describe(self) -> dict:
        return super().describe() | {"method": "key_second_moment", "layer": self.layer,
                                     "batches": self.batches_hash, "takes": self.takes}

    def __call__(self, shard: list) -> list:
        return [self._sum(first, end) for first, end in shard]

    def _sum(self, first: int, end: int) -> dict:
        model, name, d_mlp = self.model, hook_names.act_name("post", self.layer), self.model.cfg.d_mlp
        device = model.device if model.device.type != "mps" else torch.device("cpu")
        total = torch.zeros(d_mlp, d_mlp, dtype=torch.float64, device=device)
        count = 0
        for b in range(first, end):
            tokens, mask = self.batches[b]
            with torch.no_grad():
                _, c = model.run_with_cache(tokens, attention_mask=mask, names_filter=[name],
                                            stop_at_layer=self.layer + 1)
            keys = c[name].reshape(-1, d_mlp)
            if mask is not None:
                keys = keys[mask.to(keys.device).reshape(-1).bool()]
            keys = keys[: self.takes[b]].to(device=device, dtype=torch.float64)
            total += keys.T @ keys
            count += keys.shape[0]
        return {"count": count, "sum": encode(total)}


def key_second_moment_sharded(model: Any, layer: int, corpus: Optional[Corpus] = None, *, max_tokens: int = 200_000,
                              batch_size: int = 256, batches_per_shard: int = 8, dtype: Optional[str] = None,
                              loaded: Any = None, workers: Optional[int] = None, address: Optional[str] = None,
                              out: Optional[Union[str, Path]] = None, resume: bool = False,
                              progress: bool = True) -> torch.Tensor:
    """[d_mlp, d_mlp] float64 (on the CPU): the mean of k k^T over the real tokens of `corpus`
    (None: the model's default corpus), at most `max_tokens`, as `key_second_moment` computes it,
    summed in shards of `batches_per_shard` batches. model: a name each worker loads (`loaded`: the
    same model already loaded here) or a model object. workers, address, out, resume: see
    `interp.workers.run_shards`. Nothing is read from or written to the key statistics cache."""
    task_model = loaded if loaded is not None else model
    if isinstance(task_model, (str, Path)):
        from models import load

        task_model = loaded = load(str(model), dtype=dtype).eval()
        if getattr(model, "device", None) is not None:  # a name that carries a device (`analyses.common.ModelName`)
            task_model = loaded = task_model.to(model.device)
    layer = resolve_layer(layer, task_model.cfg.n_layers)
    if isinstance(batches_per_shard, bool) or not isinstance(batches_per_shard, int) or batches_per_shard < 1:
        raise ValueError(f"batches_per_shard must be a positive integer, got {batches_per_shard!r}")
    if max_tokens < 1:
        raise ValueError(f"max_tokens must be at least 1, got {max_tokens}")
    items = default_corpus(task_model) if corpus is None else list(corpus)
    if not items:
        raise ValueError("the corpus is empty: give texts or token batches to estimate the key statistics from")
    batches = [(t.cpu(), m.cpu() if m is not None else None)
               for t, m in _batches(task_model, items, batch_size, max_tokens)]
    takes, count = [], 0
    for tokens, mask in batches:  # how many keys each batch adds before the budget is spent
        n = int(mask.sum()) if mask is not None else tokens.numel()
        takes.append(min(n, max_tokens - count))
        count += takes[-1]
    task = KeyStatsTask(model, layer, batches, takes, dtype=dtype, loaded=loaded)
    ranges = [[i, min(i + batches_per_shard, len(batches))] for i in range(0, len(batches), batches_per_shard)]
    results = run_shards(task, ranges, shard_size=1, workers=workers, address=address, out=out, resume=resume,
                         progress=progress, desc=f"key statistics, layer {layer}")
    total = torch.zeros(task_model.cfg.d_mlp, task_model.cfg.d_mlp, dtype=torch.float64, device="cpu")
    for r in results:  # in shard order
        total += decode(r["sum"])
    return (total / sum(r["count"] for r in results)).to(task_model.device)  # where key_second_moment returns it


__all__ = ["KeyStatsTask", "key_second_moment_sharded", "encode", "decode"]
