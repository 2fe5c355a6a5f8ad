"""`average_trace` in shards of facts, on Ray workers (`interp.workers`), resumable.

    avg = average_trace_sharded("factworld", facts, kind="mlp", window=1, workers=2, out="mlp.shards.jsonl")

Each fact is traced with seed + its index in `facts`, as `average_trace` does, and the facts'
records are summed in their order in float64 (`combine_records`): the result is
`average_trace`'s, number for number, whatever the worker count (without the per-fact `traces`,
which stay in the workers).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional, Sequence, Union

from interp.workers import ModelTask, run_shards
from probes.causal_trace import DEFAULT_BATCH_SIZE, Answer, Kind
from probes.subjects import Prompt, Subject
from probes.trace_average import AverageTrace, _check, combine_records, fact_record


class TraceTask(ModelTask):
    """Trace facts (items: [index, prompt, subject, answer]) into `fact_record`s."""

    def __init__(self, model: Any, *, dtype: Optional[str] = None, loaded: Any = None, kind: Kind = "resid",
                 noise: float = 3.0, n_samples: int = 10, window: int = 10, seed: int = 0,
                 only_correct: bool = True, batch_size: int = DEFAULT_BATCH_SIZE) -> None:
        super().__init__(model, dtype, loaded=loaded)
        self.options = dict(kind=kind, noise=noise, n_samples=n_samples, window=window, seed=seed,
                            only_correct=only_correct, batch_size=batch_size)

    def describe(self) -> dict:
        return super().describe() | {"method": "average_trace", **self.options}

    def __call__(self, shard: list) -> list:
        return [fact_record(self.model, index, (prompt, subject, answer), **self.options)[0]
                for index, prompt, subject, answer in shard]


def average_trace_sharded(model: Any, facts: Sequence[tuple[Prompt, Subject, Answer]], *, kind: Kind = "resid",
                          noise: float = 3.0, n_samples: int = 10, window: int = 10, seed: int = 0,
                          only_correct: bool = True, batch_size: int = DEFAULT_BATCH_SIZE,
                          dtype: Optional[str] = None, loaded: Any = None, shard_size: int = 8,
                          workers: Optional[int] = None, address: Optional[str] = None,
                          out: Optional[Union[str, Path]] = None, resume: bool = False,
                          progress: bool = True) -> AverageTrace:
    """`average_trace` over `facts` ((prompt, subject, answer) triples of strings) in shards of
    `shard_size` facts; model: a name each worker loads (`loaded`: the same model already loaded
    here) or a model object. workers, address, out, resume: see `interp.workers.run_shards`."""
    triples = _check(facts, kind)
    for f in triples:
        if not all(isinstance(x, str) for x in f):
            raise TypeError(f"sharded facts must be (prompt, subject, answer) strings, got {f!r}")
    task = TraceTask(model, dtype=dtype, loaded=loaded, kind=kind, noise=noise, n_samples=n_samples, window=window,
                     seed=seed, only_correct=only_correct, batch_size=batch_size)
    records = run_shards(task, [[i, *f] for i, f in enumerate(triples)], shard_size=shard_size, workers=workers,
                         address=address, out=out, resume=resume, progress=progress, desc=f"average trace ({kind})")
    here = task.model  # loaded here for its weights' hash
    return combine_records(records, n_layers=here.cfg.n_layers, kind=kind, window=window, dtype=here.embed.W_E.dtype)


__all__ = ["TraceTask", "average_trace_sharded"]
