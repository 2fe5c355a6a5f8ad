"""The fact world's relation-wide localisation and edit evaluation in shards, on Ray workers
(`interp.workers`), and the command-line options every sharded analysis takes.

    view = relation_view_sharded("factworld", "sport", workers=2, out="results/sport.shards.jsonl")
    report, layers = evaluate_edits_sharded("factworld", [("Tom Brady", "sport", "golf"), ...], workers=2)
    interp probe-relation sport --workers 2                 # a local Ray cluster of 2 workers
    interp probe-relation sport --address auto --resume     # a running cluster; keep finished shards
    interp evaluate-edits -n 100 --workers 2

The view is the one `relation_view` gives, number for number (each fact is localised on its
own, from the same prepared batch), whatever the worker count; only `seconds` differs. The same
holds for the edits' scores (each fact is edited and scored on its own).
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


class EditTask(ModelTask):
    """Edit and score fact-world facts one at a time (items: [subject, relation, new_target] or
    [subject, relation, new_target, layer]), each at its item's layer, else at `layer`, else at its
    traced layer, with `analyses.factworld_edits.make_edit` (any method, each
    edit alone: MEMIT and AlphaEdit with one request). Per item: the `evaluate_edit` scores, the
    fluency loss with the edit applied, the edit's seconds, the trace's seconds (0 for a given
    layer), the layer, the optimisation's `relax_attempts` and `delta_norm` where the method has
    them, and with `keys=True` the cosine between the key the edit was fitted at and the subject's
    key in each held-out paraphrase (`heldout_key_cosines`)."""

    def __init__(self, model: Any, method: str, *, layer: Optional[int] = None, fluency: int = 200,
                 keys: bool = False, dtype: Optional[str] = None, loaded: Any = None) -> None:
        super().__init__(model, dtype, loaded=loaded)
        self.method, self.layer, self.fluency, self.keys = method, layer, fluency, keys

    def describe(self) -> dict:
        return super().describe() | {"analysis": "evaluate-edits", "method": self.method, "layer": self.layer,
                                     "fluency": self.fluency, "keys": self.keys}

    def setup(self) -> None:
        from analyses import factworld_edits as fe

        super().setup()
        self._texts = fe.fluency_texts(self.fluency) if self.fluency else []

    def __call__(self, shard: list) -> list:
        from dataclasses import asdict

        from analyses import factworld_edits as fe
        from probes.edit import choose_layer, evaluate_edit, mean_loss
        from probes.edit.evaluate import heldout_key_cosines

        out = []
        for subject, relation, new_target, *given in shard:
            case = fe.edit_case(subject, relation, new_target)
            start = time.perf_counter()
            layer = given[0] if given else self.layer
            traced = layer is None
            layer, why = choose_layer(self.model, case.request.prompt, subject, case.old) if traced else (layer, "given")
            trace_s = time.perf_counter() - start if traced else 0.0
            edit = fe.make_edit(self.model, self.method, case.request, layer, relation, why)
            scores = evaluate_edit(self.model, case, edit)
            loss = float("nan")
            if self._texts:
                with edit.applied(self.model):
                    loss = mean_loss(self.model, self._texts)
            record = {"scores": asdict(scores), "loss_after": loss, "seconds": edit.info["seconds"],
                      "trace_seconds": trace_s, "layer": layer,
                      **{k: edit.info[k] for k in ("relax_attempts", "delta_norm") if k in edit.info}}
            if self.keys:
                record["heldout_key_cosine"] = heldout_key_cosines(self.model, case, edit)
            out.append(record)
        return out


def evaluate_edits_sharded(model: Any, facts: Sequence[Sequence[str]], method: str = "rome", *,
                           layer: Optional[int] = None, fluency: int = 200, each_alone: bool = False,
                           keys: bool = False, dtype: Optional[str] = None, loaded: Any = None, shard_size: int = 4,
                           workers: Optional[int] = None, address: Optional[str] = None,
                           out: Optional[Union[str, Path]] = None, resume: bool = False, progress: bool = True):
    """(EditReport, records): `evaluate_edits` of one edit per fact ([subject, relation,
    new_target], optionally its layer) in shards on `run_shards` (workers, address, out, resume as there; workers=None
    runs here), the same numbers as the one-process run; `records`: `EditTask`'s, one per fact, in
    order. MEMIT and AlphaEdit edit all facts at once in `interp evaluate-edits`, which cannot be
    sharded: they run here only with `each_alone=True` (one edit of one request per fact)."""
    from analyses import factworld_edits as fe
    from probes.edit import CaseScores, mean_loss
    from probes.edit.evaluate import edit_report

    if method not in ("rome", "ft") and not each_alone:
        raise ValueError(f"evaluate-edits runs in shards for one edit per fact (rome, ft); {method} edits all facts "
                         "at once: leave --workers / --address out")
    task = EditTask(model, method, layer=layer, fluency=fluency, keys=keys, dtype=dtype, loaded=loaded)
    items = [list(f) for f in facts]
    records = run_shards(task, items, shard_size=shard_size, workers=workers, address=address, out=out,
                         resume=resume, progress=progress, desc=f"{method} edits")
    cases = [fe.edit_case(*f[:3]) for f in items]
    loss_before = mean_loss(task.model, fe.fluency_texts(fluency)) if fluency else float("nan")
    per_case = [CaseScores(**r["scores"]) for r in records]
    losses = [r["loss_after"] for r in records] if fluency else []
    report = edit_report(method, cases, per_case, loss_before, losses,
                         sum(r["seconds"] for r in records) / max(1, len(records)))
    return report, records


__all__ = ["add_workers_arguments", "RelationTask", "relation_view_sharded", "EditTask", "evaluate_edits_sharded"]
