"""One engine under every intervention: many patched copies of a base run, in as few forward passes as possible.

A *patch* replaces part of one hook's activation; a *row* is a list of patches applied
together to a copy of the base run (to each of its B prompts). `run_patched` returns a
metric of every row, the same numbers as one forward pass per row:

    rows = [[Patch("blocks.1.attn.hook_z", (6, 3), FromRun("clean"))],     # head 3 at position 6
            [Patch("blocks.0.hook_mlp_out", (2,), 0.0)]]                    # MLP 0 zeroed at position 2
    out = run_patched(model, corrupted_tokens, rows, metric, sources={"clean": clean_tokens})
    out.values                    # [n_rows]: metric of each patched run
    out.base_value, out.source_values["clean"]

Activation patching sweeps are rows of one patch each; causal tracing is a noise patch
on every row (`base_patches`) plus restored clean states; attention knockout is patches
on the attention scores; integrated gradients are rows with scaled activations (with
`grad=True`). Sweeps are short loops that build rows; this module runs them.

A patch (`interp.patches`) is (hook name, index, value): `index` addresses the activation
without its batch axis, e.g. (pos, head) for hook_z [batch, pos, head, d_head], (head, q_pos)
for hook_pattern; the value is
  - `FromRun(name)`: the same element of another run, named in `sources` (inputs of the
    same shape as the base run's, batch B or 1, or a dict hook name -> activation [B or 1, ...]
    such as a mean over reference prompts);
  - a tensor or number: the new value of act[index] (broadcast over the B prompts, or
    one per prompt: [B, *slice]); with op="add" it is added instead;
  - a function: applied elementwise to the activation, kept on act[index] only (e.g.
    `torch.zeros_like`, masking scores with -inf).
A patch that copies a source's activation at positions where the source's and the base
run's inputs agree (and everything before them) changes nothing under causal attention;
such patches are dropped before anything runs.

The engine knows no model class: a model takes part through `model.engine_adapter()`
(`interp.resumable.Resumable`). With it, rows run by one of two plans:
  - *fused*: one forward from the inputs with the base prompts, the source prompts and
    every row in one batch; a patch copies from the source rows of the same forward.
    Best for small models, where each forward's fixed cost dominates.
  - *resumed*: one forward over the base and source prompts keeps the residual stream and
    the keys and values; each chunk of rows resumes at its earliest patched block and
    recomputes only the positions from its earliest patched position on (earlier positions
    are read from the kept keys and values).
Either way only the positions the metric reads are unembedded (`interp.metric_positions`:
one for the metrics of `interp.metrics`, those found on the base run for a plain function of
the logits). A cost model (`interp.engine_plan`) picks the plan and groups rows into chunks;
`batch_size` bounds the sequences (rows x B) of one forward pass (memory). A model without
`engine_adapter` runs every row from its inputs (the fused plan, all logits).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Optional, Sequence, Union

import torch

from interp.engine_plan import Chunk, Costs, Row, plan_chunks
from interp.hooks import HookedModule
from interp.metric_positions import Reader
from interp.patches import FromRun, Patch, first_pos, hook_plans, last_pos, normalize_index
from interp.progress import progress_bar
from interp.resumable import Resumable, adapter

Metric = Callable[[torch.Tensor], torch.Tensor]
Inputs = Union[torch.Tensor, tuple]


@dataclass
class EngineOutput:
    """values [n_rows]: the metric of each row; base_value / source_values: of the unpatched runs;
    base_logits: the base run's logits where the metric reads them ([B, d_vocab] at its position,
    or [B, pos, d_vocab]); plan: "fused" or "resumed"; n_forwards: forward passes run."""

    values: torch.Tensor
    base_value: Any
    source_values: dict[str, Any] = field(default_factory=dict)
    n_forwards: int = 0
    plan: str = ""
    base_logits: Optional[torch.Tensor] = None


def _check_arguments(model: HookedModule, rows: list[list[Patch]], base_patches: Sequence[Patch],
                     sources: Mapping[str, Any], plan: Optional[str], batch_size: Optional[int]) -> None:
    """Clear errors before anything runs: the plan, the batch size, the patches, their hooks and runs."""
    if plan not in (None, "fused", "resumed"):
        raise ValueError(f"plan must be 'fused', 'resumed' or None, got {plan!r}")
    if batch_size is not None and batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    names, runs = set(), set()
    for i, row in enumerate(rows + [list(base_patches)]):
        for p in row:
            if not isinstance(p, Patch):
                raise TypeError(f"row {i}: expected Patch objects, got {type(p).__name__}")
            names.add(p.name)
            if isinstance(p.value, FromRun):
                runs.add(p.value.run)
    for name in names:
        model.hook_point(name)  # a clear error for an unknown hook, before anything runs
    for run in runs - set(sources):
        raise KeyError(f"a patch reads run {run!r}, which is not in sources {list(sources)}")


def run_patched(
    model: HookedModule,
    base: Inputs,
    rows: Sequence[Sequence[Patch]],
    metric: Metric,
    *,
    sources: Optional[Mapping[str, Any]] = None,
    base_patches: Sequence[Patch] = (),
    batch_size: Optional[int] = None,
    grad: bool = False,
    plan: Optional[str] = None,
    progress: bool = False,
    desc: str = "patching",
) -> EngineOutput:
    """The metric of the base run with each row's patches applied; see the module docstring.

    base: token ids [B, pos] (for a model with several inputs: a tuple of its input tensors).
    rows: one list of `Patch` per row; every row is applied to each of the B prompts and
        the metric (logits [B, pos, d_vocab] -> scalar, as in TransformerLens) reads them together.
    sources: runs that `FromRun` values name: inputs like `base` ([B or 1, ...]), or
        {hook name: activation [B or 1, ...]}.
    base_patches: patches applied to the base run and to every row (e.g. noise on the
        subject's embeddings); not to the sources.
    batch_size: sequences (rows x B) per forward pass; default: what fits in 512 MiB.
    grad: keep the autograd graph of the values (for patch values that require grad).
    plan: "fused" or "resumed" to force a strategy (default: the cheaper by the cost model).
    """
    rows = [list(r) for r in rows]
    sources = dict(sources or {})
    _check_arguments(model, rows, base_patches, sources, plan, batch_size)
    resumable = adapter(model)
    args = (base, rows, metric, sources, list(base_patches), batch_size, plan, progress, desc)
    with torch.enable_grad() if grad else torch.no_grad():
        if resumable is None:
            return _FromInputs(model, *args).run()
        return _Resuming(model, resumable, *args).run()


def _as_inputs(x: Any) -> tuple:
    return tuple(x) if isinstance(x, (tuple, list)) else (x,)


def _cat(inputs: Sequence[tuple]) -> tuple:
    """Inputs (tuples of tensors [batch, ...]) concatenated along the batch."""
    return tuple(torch.cat(parts) for parts in zip(*inputs))


def _repeat(inputs: tuple, n: int) -> tuple:
    return tuple(x.repeat(n, *[1] * (x.dim() - 1)) for x in inputs)


def _shapes(inputs: tuple) -> Any:
    return tuple(inputs[0].shape) if len(inputs) == 1 else [tuple(x.shape) for x in inputs]


def _stack(values: list) -> torch.Tensor:
    if not values:
        return torch.zeros(0, dtype=torch.float64, device="cpu")
    if any(isinstance(v, torch.Tensor) and v.requires_grad for v in values):
        return torch.stack([torch.as_tensor(v) for v in values])
    return torch.tensor([float(v) for v in values], dtype=torch.float64, device="cpu")  # read back: a CPU table


class _Runner:
    """What both runners share: the rows, the sources, and what the hook plans read."""

    B: int
    device: torch.device
    source_acts: dict[str, dict[str, torch.Tensor]]

    def _split_sources(self, sources: dict, inputs: tuple) -> dict[str, tuple]:
        """Token sources (inputs shaped like the base run's, batch B or 1); activation sources go to source_acts."""
        runs = {}
        for k, v in sources.items():
            if not isinstance(v, torch.Tensor) and not (isinstance(v, (tuple, list)) and v
                                                        and all(isinstance(x, torch.Tensor) for x in v)):
                self.source_acts[k] = {self.model.normalize_name(n): a for n, a in v.items()}
                continue
            v = tuple(x.to(self.device) for x in _as_inputs(v))
            if len(v) != len(inputs) or any(a.dim() != b.dim() or a.shape[1:] != b.shape[1:]
                                             or a.shape[0] != v[0].shape[0] or a.shape[0] not in (1, self.B)
                                             for a, b in zip(v, inputs)):
                raise ValueError(f"source run {k!r} has token shape {_shapes(v)}; the base run is {_shapes(inputs)} "
                                 "(give [B or 1, pos])")
            runs[k] = v
        return runs

    def _offsets(self) -> dict[str, tuple[int, int]]:
        """Where each token source sits in a batch [base (B), sources...]: name -> (first row, rows)."""
        out, lo = {}, self.B
        for k, v in self.token_sources.items():
            out[k] = (lo, v[0].shape[0])
            lo += v[0].shape[0]
        return out


# ============================================================ models with an engine adapter
class _Resuming(_Runner):
    def __init__(self, model: HookedModule, m: Resumable, base: Inputs, rows: list[list[Patch]], metric: Metric,
                 sources: dict, base_patches: list[Patch], batch_size: Optional[int], plan: Optional[str],
                 progress: bool, desc: str) -> None:
        self.model, self.m, self.plan, self.progress, self.desc = model, m, plan, progress, desc
        self.inputs = m.inputs(base)
        self.B, self.n_pos = self.inputs[0].shape[0], m.n_pos(self.inputs)
        self.n_layers, self.device = m.n_layers, m.device
        self.aligned = m.resumes_positions
        self.reader = Reader(metric, self.n_pos, self.B)
        self.batch_size = batch_size
        self.source_acts = {}
        self._planned: Optional[tuple] = None
        self.base_patches = [self._norm_patch(p) for p in base_patches]
        self.token_sources = self._split_sources(sources, self.inputs)
        self.n_sources = sum(v[0].shape[0] for v in self.token_sources.values())
        # Positions up to which each token source equals the base run (identical prefixes give identical
        # activations under causal attention: copying them changes nothing, and such patches are not run).
        first_base_patch = min((first_pos(p.index, p.name) for p in self.base_patches), default=self.n_pos)
        self.same_upto = {k: min(m.shared_prefix(self.inputs, v), first_base_patch)
                          for k, v in self.token_sources.items()} if self.aligned else {}
        self.rows = [self._norm_row(r) for r in rows]
        # With patches on the final norm's hooks it runs over every position (its hooks see [batch, pos, ...]);
        # else only over the positions the metric reads.
        at_end = any(m.patch_layer(p.name) >= self.n_layers for r in self.rows for p in r.patches + self.base_patches)
        self._pre = m.final_norm if at_end else (lambda x: x)
        self._final = m.unembed if at_end else (lambda x: m.unembed(m.final_norm(x)))

    def _norm_patch(self, p: Patch) -> Patch:
        name = self.model.normalize_name(p.name)
        return Patch(name, normalize_index(p.index, name, self.n_pos) if self.aligned else p.index, p.value, p.op)

    def _no_op(self, p: Patch) -> bool:
        """A patch copying a source's activation where the source and the base run agree."""
        return isinstance(p.value, FromRun) and p.value.run in self.same_upto and \
            last_pos(p.index, p.name, self.n_pos) < self.same_upto[p.value.run]

    def _norm_row(self, row: list[Patch]) -> Row:
        patches = [q for q in (self._norm_patch(p) for p in row) if not self._no_op(q)]
        layer = min((self.m.patch_layer(p.name) for p in patches), default=self.n_layers)
        pos = min((first_pos(p.index, p.name) for p in patches), default=self.n_pos) if self.aligned else 0
        return Row(patches, layer, pos)

    # ------------------------------------------------------------ the plan
    def _costs(self) -> Costs:
        out, kept = self.reader.sizes()
        return Costs(self.m, self.n_pos, out, kept)

    def _chunks(self, live: list[int], costs: Costs) -> list[Chunk]:
        batch_size = self.batch_size or costs.batch_size()
        chunks = plan_chunks([self.rows[i] for i in live], costs, batch_size, self.B)
        return [Chunk([live[j] for j in c.rows], c.layer, c.pos) for c in chunks]

    def _fused_chunks(self, live: list[int]) -> list[Chunk]:
        batch_size = self.batch_size or self._costs().batch_size()
        per_chunk = max(1, (batch_size - self.B - self.n_sources) // self.B)
        return [Chunk(live[i:i + per_chunk], -1, 0) for i in range(0, len(live), per_chunk)] or [Chunk([], -1, 0)]

    def _choose(self, live: list[int]) -> str:
        fusable = all(not isinstance(p.value, FromRun) or p.value.run in self.token_sources
                      for r in self.rows for p in r.patches)
        if self.plan == "fused" and not fusable:
            raise ValueError("plan='fused' needs every FromRun source given as inputs")
        if self.plan is not None:
            return self.plan
        costs = self._costs()
        prep = costs.chunk(self.B + self.n_sources, 0, 0)
        self._planned = (self.reader.sizes(), self._chunks(live, costs))  # reused unless probing changes the sizes
        resumed = prep + sum(costs.chunk(len(c.rows) * self.B, c.layer, c.pos) for c in self._planned[1])
        fused = sum(costs.chunk(len(c.rows) * self.B + self.B + self.n_sources, 0, 0) for c in self._fused_chunks(live))
        return "fused" if fusable and fused <= resumed else "resumed"

    def _live(self) -> list[int]:
        """Rows that can change the metric: with patches, and not all after the last position it reads."""
        return [i for i, r in enumerate(self.rows) if r.patches and r.pos <= self.reader.last_read]

    def run(self) -> EngineOutput:
        live = self._live()
        choice = self._choose(live)
        out = self._run_fused(live) if choice == "fused" else self._run_resumed()
        values = [out.get(i, self.base_value) for i in range(len(self.rows))]
        return EngineOutput(_stack(values), self.base_value, self.source_values, self.n_forwards, choice,
                            self.base_logits)

    # ------------------------------------------------------------ both plans
    def _unpatched_logits(self, normed: torch.Tensor) -> torch.Tensor:
        """What the metric reads of unpatched runs: logits at a positional metric's position, else all."""
        return self._final(normed[:, self.reader.pos] if self.reader.positional else normed)

    def _score_unpatched(self, logits: torch.Tensor, offsets: dict[str, tuple[int, int]]) -> None:
        """The base and source runs' metrics from the logits of a batch [base, sources, ...]
        (`_unpatched_logits`); a plain-function metric's positions are found here."""
        reader = self.reader
        self.base_logits = logits[:self.B]
        reader.probe(self.base_logits)
        self.base_value = reader.run_score(self.base_logits)
        self.source_values = {k: reader.run_score(logits[a:a + n]) for k, (a, n) in offsets.items()}

    # ------------------------------------------------------------ fused: sources and rows in one batch
    def _run_fused(self, live: list[int]) -> dict[int, Any]:
        """Batches [base (B), sources..., copies...]; patches read their sources from the same pass."""
        m, B, reader = self.m, self.B, self.reader
        offsets = self._offsets()
        n_extra = B + self.n_sources
        extra = _cat([self.inputs] + list(self.token_sources.values()))
        chunks = self._fused_chunks(live)
        values: dict[int, Any] = {}
        for i, chunk in enumerate(progress_bar(chunks, self.progress, desc=self.desc, leave=False)):
            copies = [self.rows[j].patches for j in chunk.rows]
            hooks = hook_plans(self, [[]], self.base_patches, 0, 0) + \
                hook_plans(self, copies, self.base_patches, n_extra, 0, fused=offsets)
            with self.model.hooks(fwd_hooks=hooks):
                normed = self._pre(m.run(_cat([extra, _repeat(self.inputs, len(copies))]))[0])
                if reader.positional:  # one unembedding for the whole batch
                    out = self._unpatched_logits(normed)
                    if i == 0:
                        self._score_unpatched(out[:n_extra], offsets)
                    out = out[n_extra:]
                else:
                    if i == 0:
                        self._score_unpatched(self._unpatched_logits(normed[:n_extra]), offsets)
                    out = reader.logits(self._final, normed[n_extra:], 0, len(copies), self.base_logits)
            if copies:
                values.update(zip(chunk.rows, reader.score(out, len(copies))))
        self.n_forwards = len(chunks)
        return values

    # ------------------------------------------------------------ resumed: from the kept base run
    def _keep_base_run(self) -> Callable:
        """One forward over the base prompts and the source prompts: the unpatched metrics, the sources'
        activations that patches copy, and a `Resumption` of the base run."""
        live = self._live()
        layers = {self.rows[i].layer for i in live if self.rows[i].layer >= 0}
        source_names = sorted({p.name for r in self.rows for p in r.patches if isinstance(p.value, FromRun)
                               and p.value.run in self.token_sources})
        stored: dict[str, torch.Tensor] = {}

        def record(x: torch.Tensor, hook: Any) -> None:
            stored[hook.name] = x

        inputs = _cat([self.inputs] + list(self.token_sources.values()))
        hooks = hook_plans(self, [[]], self.base_patches, 0, 0) + [(n, record) for n in source_names]
        with self.model.hooks(fwd_hooks=hooks), torch.no_grad():
            resid, resume = self.m.run(inputs, self.B, layers)
            normed = self._pre(resid)  # with final-norm patches, its hooks fire over every position
            offsets = self._offsets()
            self._score_unpatched(self._unpatched_logits(normed), offsets)
        for k, (a, n) in offsets.items():
            self.source_acts[k] = {name: stored[name][a:a + n] for name in source_names}
        self.n_forwards = 1
        return resume

    def _run_resumed(self) -> dict[int, Any]:
        m, reader = self.m, self.reader
        resume = self._keep_base_run()
        if self._planned is not None and self._planned[0] == reader.sizes():
            chunks = self._planned[1]
        else:  # the metric's positions are known now
            chunks = self._chunks(self._live(), self._costs())
        values: dict[int, Any] = {}
        for chunk in progress_bar(chunks, self.progress, desc=self.desc, leave=False):
            copies = [self.rows[i].patches for i in chunk.rows]
            n, layer, start = len(copies), chunk.layer, chunk.pos
            entry_name = m.entry_hook(layer) if layer > 0 else None
            plans = hook_plans(self, copies, self.base_patches, 0, start,
                               lambda name: m.patch_layer(name) >= layer and name != entry_name)
            # Patches on the resumed input (the previous block's resid_post) apply to it directly; the base
            # patches there are in it already.
            entry = dict(hook_plans(self, copies, [], 0, start, lambda name: name == entry_name)).get(entry_name)
            with self.model.hooks(fwd_hooks=plans):
                resid = resume(layer, start, n, None if entry is None else (lambda x: entry(x, None)))
                out = reader.logits(self._final, self._pre(resid), start, n, self.base_logits)
            self.n_forwards += 1
            values.update(zip(chunk.rows, reader.score(out, n)))
        return values


# ============================================================ any other hooked model
class _FromInputs(_Runner):
    """Models without an engine adapter, whose forward takes one or several input tensors: every
    row runs from the inputs (each repeated), the sources in the same batch; all logits are computed."""

    def __init__(self, model: HookedModule, base: Inputs, rows: list[list[Patch]], metric: Metric, sources: dict,
                 base_patches: list[Patch], batch_size: Optional[int], plan: Optional[str], progress: bool,
                 desc: str) -> None:
        if plan == "resumed":
            raise ValueError(f"plan='resumed' needs a model with engine_adapter(); a {type(model).__name__} "
                             "runs every row from its inputs")
        self.model, self.metric, self.progress, self.desc = model, metric, progress, desc
        self.inputs = _as_inputs(base)
        self.B = self.inputs[0].shape[0]
        self.device = next(model.parameters()).device
        self.source_acts = {}
        self.base_patches = [Patch(model.normalize_name(p.name), p.index, p.value, p.op) for p in base_patches]
        self.rows = [[Patch(model.normalize_name(p.name), p.index, p.value, p.op) for p in r] for r in rows]
        self.token_sources = self._split_sources(sources, self.inputs)
        self.batch_size = batch_size or 64

    def run(self) -> EngineOutput:
        offsets = self._offsets()
        n_extra = self.B + sum(v[0].shape[0] for v in self.token_sources.values())
        extra = _cat([self.inputs] + list(self.token_sources.values()))
        per_chunk = max(1, (self.batch_size - n_extra) // self.B)
        values: list = []
        reader, n_forwards = None, 0
        for first in progress_bar(range(0, max(len(self.rows), 1), per_chunk), self.progress, desc=self.desc,
                                  leave=False):
            copies = self.rows[first:first + per_chunk]
            hooks = hook_plans(self, [[]], self.base_patches, 0, 0) + \
                hook_plans(self, copies, self.base_patches, n_extra, 0, fused=offsets)
            with self.model.hooks(fwd_hooks=hooks):
                logits = self.model(*_cat([extra, _repeat(self.inputs, len(copies))]))
            n_forwards += 1
            if reader is None:
                reader = Reader(self.metric, logits.shape[1], self.B)
                at = (lambda x: x[:, reader.pos]) if reader.positional else (lambda x: x)
                base_logits = at(logits[:self.B])
                base_value = reader.run_score(base_logits)
                source_values = {k: reader.run_score(at(logits[a:a + n])) for k, (a, n) in offsets.items()}
            if copies:
                values += list(reader.score(at(logits[n_extra:]), len(copies)))
        return EngineOutput(_stack(values), base_value, source_values, n_forwards, "fused", base_logits)


__all__ = ["Patch", "FromRun", "run_patched", "EngineOutput"]
