"""The fact world's relation-wide localisation in shards, on Ray workers (`interp.workers`), and
the command-line options every sharded analysis takes.

    view = relation_view_sharded("factworld", "sport", workers=2, out="results/sport.shards.jsonl")
    interp probe-relation sport --workers 2                 # a local Ray cluster of 2 workers
    interp probe-relation sport --address auto --resume     # a running cluster; keep finished shards

The view is the one `relation_view` gives, number for number (each fact is localised on its
own, from the same prepared batch), whatever the worker count; only `seconds` differs.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import time
from pathlib import Path
from typing import Any, Optional, Sequence, Union

from interp.workers import ModelTask, run_shards
from models import factworld


def add_workers_arguments(p: argparse.ArgumentParser, shard_size: int, what: str = "items") -> None:
    """--workers N, --address ADDR, --resume, --shard-size N (of `what`)."""
    g = p.add_argument_group("beyond one process (Ray)")
    g.add_argument("--workers", type=int, default=None,
                   help="start a local Ray cluster with N worker processes (default: run here, in one process)")
    g.add_argument("--address", default=None,
                   help="join a running Ray cluster (`ray start --head` prints its address; 'auto' finds a local one)")
    g.add_argument("--resume", action="store_true",
                   help="keep the shards the results file under --out already holds and run only the others")
    g.add_argument("--shard-size", type=int, default=shard_size, help=f"{what} per shard (default {shard_size})")


class RelationTask(ModelTask):
    """Localise facts of one relation (items: subjects) with `RelationLocaliser`; each worker
    prepares the relation once (and attaches the transcoders for unit="feature")."""

    def __init__(self, model: Any, relation: str, *, dtype: Optional[str] = None, loaded: Any = None,
                 method: str, max_sites: int, template: int = 0, n_random: int = 5,
                 roles: Optional[Sequence[str]] = None, unit: str = "neuron",
                 transcoders: Union[str, Path] = "factworld") -> None:
        super().__init__(model, dtype, loaded=loaded)
        self.relation, self.method, self.max_sites, self.template = relation, method, max_sites, template
        self.n_random, self.roles, self.unit = n_random, list(roles) if roles is not None else None, unit
        self.transcoders = str(transcoders)

    def describe(self) -> dict:
        return super().describe() | {
            "analysis": "probe-relation", "relation": self.relation, "method": self.method,
            "max_sites": self.max_sites, "template": self.template, "n_random": self.n_random, "roles": self.roles,
            "unit": self.unit, "transcoders": self.transcoders if self.unit == "feature" else None}

    def setup(self) -> None:
        from analyses.factworld_facts import RelationLocaliser

        super().setup()
        model = self.model
        self._hooks = contextlib.ExitStack()
        if self.unit == "feature":  # on a copy: the caller's model keeps no hook
            from probes.sae import attached, load_transcoders

            model = copy.deepcopy(model)
            self._hooks.enter_context(attached(model, load_transcoders(self.transcoders, device=model.device)))
        self._localiser = RelationLocaliser(model, self.relation, method=self.method, max_sites=self.max_sites,
                                            template=self.template, n_random=self.n_random, roles=self.roles,
                                            unit=self.unit)
        self._facts = {f.subject: f for f in factworld.facts(self.relation)}

    def __call__(self, shard: list) -> list:
        unknown = [s for s in shard if s not in self._facts]
        if unknown:
            raise ValueError(f"not subjects of the relation {self.relation!r}: {', '.join(map(repr, unknown))}")
        return [self._localiser.fact(self._facts[s]) for s in shard]


def relation_view_sharded(model: Any, relation: str, *, method: Optional[str] = None, max_sites: int = 20,
                          template: int = 0, include_none: bool = False, limit: Optional[int] = None,
                          n_random: int = 5, roles: Optional[Sequence[str]] = None, unit: str = "neuron",
                          transcoders: Union[str, Path] = "factworld", dtype: Optional[str] = None,
                          loaded: Any = None, shard_size: int = 8, workers: Optional[int] = None,
                          address: Optional[str] = None, out: Optional[Union[str, Path]] = None,
                          resume: bool = False, progress: bool = True):
    """`relation_view` in shards of `shard_size` facts (see `interp.workers.run_shards` for
    workers, address, out and resume). model: a name each worker loads (`loaded`: the same model
    already loaded here) or a model object."""
    from analyses.factworld_facts import empty_view, relation_facts
    from probes.ffn import DEFAULT_METHOD

    method = method or DEFAULT_METHOD
    facts = relation_facts(relation, include_none, limit)
    task = RelationTask(model, relation, dtype=dtype, loaded=loaded, method=method, max_sites=max_sites,
                        template=template, n_random=n_random, roles=roles, unit=unit, transcoders=transcoders)
    start = time.perf_counter()
    records = run_shards(task, [f.subject for f in facts], shard_size=shard_size, workers=workers, address=address,
                         out=out, resume=resume, progress=progress, desc=f"localising {relation} facts ({method})")
    view = empty_view(relation, method=method, max_sites=max_sites, n_random=n_random, roles=roles, unit=unit)
    for fact, record in zip(facts, records):
        view.add(fact.subject, record)
    view.seconds = time.perf_counter() - start
    return view


__all__ = ["add_workers_arguments", "RelationTask", "relation_view_sharded"]
