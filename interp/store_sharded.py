"""An activation store harvested in shards of texts, on Ray workers (`interp.workers`).

    store = harvest_sharded("factworld", texts, hooks, "acts", texts_per_shard=4096, workers=2)

Each engine shard is one store shard: texts [start, start + texts_per_shard) run `batch_size` at
a time (right-padded, as `harvest` does) in a worker, which writes `shard-NNNNN.safetensors`
itself (a temporary name, then renamed) and returns its row count. The driver writes the manifest
last, listing the shards in text order, once all are there: a shard a dead worker left half
written is never listed (its replacement writes it again). With `texts_per_shard` a multiple of
`batch_size` the batches are the ones `harvest` runs, so the shards concatenated hold exactly
the rows of the one-process store, whatever the worker count. The engine's results file
(`harvest.shards.jsonl` in the folder) makes an interrupted harvest resume where it stopped.
The folder must be one every worker can write (a local cluster; a shared file system otherwise).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional, Sequence, Union

import torch

from interp.store import FORMAT, MANIFEST, SHARDED_RESULTS, VERSION, ActivationStore, _dtype, _start, _write_atomic, \
    _write_manifest, checked_hooks, corpus_hash, model_fingerprint, shard_tensors
from interp.workers import ModelTask, run_shards
from models.config import dtype_name

RESULTS = SHARDED_RESULTS


class HarvestTask(ModelTask):
    """Items: [start, stop) text ranges; result per item: {"file", "tokens", "texts", "d"} of the
    shard it wrote into the store folder."""

    def __init__(self, model: Any, texts: Sequence[str], hooks: Sequence[str], directory: Union[str, Path], *,
                 texts_per_shard: int, batch_size: int, store_dtype: str, dtype: Optional[str] = None,
                 loaded: Any = None) -> None:
        super().__init__(model, dtype, loaded=loaded)
        self.texts, self.hooks, self.directory = list(texts), list(hooks), str(directory)
        self.texts_per_shard, self.batch_size, self.store_dtype = texts_per_shard, batch_size, store_dtype
        self.corpus = corpus_hash(self.texts)

    def describe(self) -> dict:
        return super().describe() | {"method": "harvest", "hooks": self.hooks, "corpus": self.corpus,
                                     "texts_per_shard": self.texts_per_shard, "batch_size": self.batch_size,
                                     "dtype": self.store_dtype}

    def __call__(self, shard: list) -> list:
        return [self._harvest(start, stop) for start, stop in shard]

    def _harvest(self, start: int, stop: int) -> dict:
        from safetensors.torch import save_file

        from interp.tokens import cached_batches

        rows: dict[str, list[torch.Tensor]] = {h: [] for h in self.hooks}
        for batch, cache in cached_batches(self.model, self.texts[start:stop], self.hooks, self.batch_size):
            for h in self.hooks:
                act = cache[h]
                rows[h].append(act[batch.real.to(act.device)].to(device="cpu", dtype=_dtype(self.store_dtype)))
        acts = {h: torch.cat(r) for h, r in rows.items()}
        name = f"shard-{start // self.texts_per_shard:05d}.safetensors"
        tensors = shard_tensors(acts)
        _write_atomic(Path(self.directory) / name, lambda tmp: save_file(tensors, str(tmp), metadata={"format": FORMAT}))
        return {"file": name, "tokens": int(acts[self.hooks[0]].shape[0]), "texts": [start, stop],
                "d": {h: int(a.shape[1]) for h, a in acts.items()}}


def harvest_sharded(model: Any, texts: Sequence[str], hooks: Sequence[str], directory: Union[str, Path], *,
                    texts_per_shard: int = 4096, batch_size: int = 256, dtype: Optional[str] = None,
                    store_dtype: Optional[Union[str, torch.dtype]] = None, loaded: Any = None,
                    workers: Optional[int] = None, address: Optional[str] = None, overwrite: bool = False,
                    progress: bool = True) -> ActivationStore:
    """The store of `hooks` over `texts` in `directory`, harvested in shards of `texts_per_shard`
    texts (see the module docstring). model: a name each worker loads (`dtype`; `loaded`: the same
    model already loaded here) or a model object; store_dtype: the stored activations' dtype
    (default: the model's). workers, address: `interp.workers.run_shards`. A complete store made
    with the same settings is reused, an interrupted one resumed; one made otherwise is refused
    unless `overwrite`."""
    from models import load

    here = loaded if loaded is not None else model
    if isinstance(here, (str, Path)):
        here = loaded = load(str(model), dtype=dtype).eval()
        if getattr(model, "device", None) is not None:  # a name that carries a device (analyses.common.ModelName)
            here = loaded = here.to(model.device)
    hooks, texts = checked_hooks(here, hooks, texts)
    if batch_size < 1 or texts_per_shard < 1 or texts_per_shard % batch_size:
        raise ValueError(f"texts_per_shard ({texts_per_shard}) must be a positive multiple of batch_size "
                         f"({batch_size}), so that shards hold whole batches")
    kept = _dtype(store_dtype) if store_dtype is not None else next(here.parameters()).dtype
    directory = Path(directory)
    want = {"format": FORMAT, "version": VERSION, "model": model_fingerprint(here), "hooks": hooks,
            "dtype": dtype_name(kept), "corpus": corpus_hash(texts), "n_texts": len(texts), "batch_size": batch_size,
            "shard_tokens": None, "shard_texts": texts_per_shard, "max_tokens": None}
    manifest = _start(directory, want, overwrite)
    if manifest["complete"]:
        return ActivationStore(directory, manifest)
    task = HarvestTask(model, texts, hooks, directory, texts_per_shard=texts_per_shard, batch_size=batch_size,
                       store_dtype=dtype_name(kept), dtype=dtype, loaded=loaded)
    ranges = [[i, min(i + texts_per_shard, len(texts))] for i in range(0, len(texts), texts_per_shard)]
    results = run_shards(task, ranges, shard_size=1, workers=workers, address=address, out=directory / RESULTS,
                         resume=True, progress=progress, desc=f"harvesting into {directory}")
    for r in results:  # in text order
        manifest["shards"].append({"file": r["file"], "tokens": r["tokens"], "texts": r["texts"]})
        manifest["d"] = r["d"]
        manifest["tokens"] += r["tokens"]
    manifest["complete"] = True
    _write_manifest(directory, manifest)
    return ActivationStore(directory, manifest)


__all__ = ["HarvestTask", "harvest_sharded", "MANIFEST"]
