"""`feature_table`'s corpus scan in shards, on Ray workers (`interp.workers`), resumable.

    table = feature_table_sharded("factworld", transcoder, texts, workers=2, out="L1.shards.jsonl")

A shard scans `batches_per_shard` consecutive batches of `batch_size` texts (the batches
`feature_table` reads), and the shards' scans merge in corpus order (`TableScan.merge`): counts
add, and the largest activation keeps the first place on ties, so the table is
`feature_table`'s, number for number, whatever the worker count.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional, Sequence, Union

from interp.fingerprint import weights_hash
from interp.workers import ModelTask, run_shards
from probes.sae.dashboard import FeatureTable, TableScan, activation_batches, check_texts, table_of_scan
from probes.sae.dictionary import SparseDictionary


class FeatureScanTask(ModelTask):
    """Items: [first, end) ranges of text indices; result: the `TableScan` of those texts (JSON)."""

    def __init__(self, model: Any, dictionary: SparseDictionary, texts: list[str], *, batch_size: int,
                 dtype: Optional[str] = None, loaded: Any = None) -> None:
        super().__init__(model, dtype, loaded=loaded)
        self.dictionary, self.texts, self.batch_size = dictionary, texts, batch_size
        self.dictionary_hash = weights_hash(dictionary)

    def describe(self) -> dict:
        return super().describe() | {"method": "feature_table", "dictionary_hash": self.dictionary_hash,
                                     "in_hook": self.dictionary.in_hook, "batch_size": self.batch_size}

    def __call__(self, shard: list) -> list:
        out = []
        for first, end in shard:
            scan = TableScan.empty(self.dictionary.cfg.n_features, self.dictionary.W_enc.dtype)
            for batch in activation_batches(self.model, self.dictionary, self.texts[first:end],
                                            batch_size=self.batch_size, progress=False):
                scan.add(batch, offset=first)
            out.append(scan.to_json())
        return out


def feature_table_sharded(model: Any, dictionary: SparseDictionary, texts: Union[str, Sequence[str]], *,
                          batch_size: int = 512, batches_per_shard: int = 4, dtype: Optional[str] = None,
                          loaded: Any = None, workers: Optional[int] = None, address: Optional[str] = None,
                          out: Optional[Union[str, Path]] = None, resume: bool = False,
                          progress: bool = True) -> FeatureTable:
    """`feature_table(model, dictionary, texts, batch_size=...)` scanned in shards of
    `batches_per_shard` batches; model: a name each worker loads (`loaded`: the same model already
    loaded here) or a model object; the dictionary is sent to the workers. workers, address, out,
    resume: see `interp.workers.run_shards`."""
    texts = check_texts(texts)
    if isinstance(batches_per_shard, bool) or not isinstance(batches_per_shard, int) or batches_per_shard < 1:
        raise ValueError(f"batches_per_shard must be a positive integer, got {batches_per_shard!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    task = FeatureScanTask(model, dictionary, texts, batch_size=batch_size, dtype=dtype, loaded=loaded)
    step = batch_size * batches_per_shard
    ranges = [[i, min(i + step, len(texts))] for i in range(0, len(texts), step)]
    scans = run_shards(task, ranges, shard_size=1, workers=workers, address=address, out=out, resume=resume,
                       progress=progress, desc="features")
    total = TableScan.empty(dictionary.cfg.n_features, dictionary.W_enc.dtype)
    for scan in scans:  # in corpus order
        total.merge(TableScan.from_json(scan))
    return table_of_scan(task.model, dictionary, texts, total)


__all__ = ["FeatureScanTask", "feature_table_sharded"]
