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
  - `FromRun(name)`: the same element of another run, named in `sources` (token ids of
    the same shape as the base run, or a dict hook name -> activation [B or 1, ...] such
    as a mean over reference prompts);
  - a tensor or number: the new value of act[index] (broadcast over the B prompts, or
    one per prompt: [B, *slice]); with op="add" it is added instead;
  - a function: applied elementwise to the activation, kept on act[index] only (e.g.
    `torch.zeros_like`, masking scores with -inf).
A patch that copies a source's activation at positions where the source's and the base
run's tokens agree (and everything before them) changes nothing under causal attention;
such patches are dropped before anything runs.

How rows are run (decoder-only `models.Transformer`; other hooked models run every row
from its inputs, the encoder-decoder resumes decoder patches at their layer):
  - *fused*: one forward from the embeddings with the base prompts, the source prompts
    and every row in one batch; a patch copies from the source rows of the same forward.
    Best for small models, where each forward's fixed cost dominates.
  - *resumed*: one forward over the base and source prompts caches the residual stream
    and the keys and values; each chunk of rows resumes at its earliest patched layer and
    recomputes only the positions from its earliest patched position on (causal
    attention leaves earlier positions alone; they are read from the cached keys and
    values). Metrics that read one position (`interp.metrics`) unembed only that position.
A cost model (multiply-adds per row, position and layer, plus a fixed cost per forward
pass) picks between them and groups rows into chunks; `max_rows` bounds the rows of one
forward (memory).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Optional, Sequence, Union

import torch
from tqdm.auto import tqdm

from interp import names as hook_names
from interp.metrics import is_positional, scalar
from interp.patches import (
    FromRun, Patch, common_prefix, first_pos, hook_plans, last_pos, normalize_index,
)
from models import KVCache, Transformer

Metric = Callable[[torch.Tensor], torch.Tensor]
Inputs = Union[torch.Tensor, tuple]

# The cost model, in multiply-add equivalents (measured on a 2-core CPU: ~70 G multiply-adds/s,
# ~8 GB/s of weight reads, ~0.3 ms of Python and dispatch per forward pass and per block).
OVERHEAD_PER_FORWARD = 2e7
OVERHEAD_PER_LAYER = 2e7
COST_PER_WEIGHT_READ = 35  # each forward pass reads the weights of the blocks it runs, and W_U
MEMORY_BUDGET = 512 * 2**20  # bytes of activations per forward pass when max_rows is not given


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


def _layer(name: str, n_layers: int) -> int:
    """The first block a patch at `name` can change: its block, or the next one for resid_post
    (the input of block L + 1 is block L's resid_post: a row patching it resumes at L + 1, and
    n_layers means after the last block)."""
    _, layer, rest = hook_names.split(name)
    if layer is not None and rest == "hook_resid_post":
        return layer + 1
    return hook_names.sort_key(name, n_layers)


@dataclass
class _Row:
    patches: list[Patch]
    layer: int  # earliest patched layer (-1: the embeddings, n_layers: the final norm)
    pos: int  # earliest patched position


@dataclass
class _Chunk:
    rows: list[int]
    layer: int
    pos: int


class _Costs:
    """The cost of a forward pass over part of a decoder-only model, in multiply-add equivalents:
    a fixed part (Python and dispatch per pass and per block, reading the weights of the blocks
    run and the unembedding) plus the multiply-adds of the rows, positions and blocks computed."""

    def __init__(self, model: Transformer, n_pos: int, positional: bool) -> None:
        cfg = model.cfg
        d, m, h, kv, dh = cfg.d_model, cfg.d_mlp, cfg.n_heads, cfg.n_kv_heads, cfg.d_head
        self.layer_params = d * (h + 2 * kv) * dh + h * dh * d + d * m * (3 if cfg.gated_mlp else 2)
        self.layer = self.layer_params + 2 * n_pos * h * dh  # per token: projections, MLP, attention
        self.unembed = d * cfg.d_vocab
        self.n_layers, self.n_pos, self.positional = cfg.n_layers, n_pos, positional

    def chunk(self, rows: int, layer: int, pos: int) -> float:
        n = self.n_pos - pos
        layers = self.n_layers - max(layer, 0)
        out_tokens = 1 if self.positional else n
        fixed = OVERHEAD_PER_FORWARD + OVERHEAD_PER_LAYER * layers + \
            COST_PER_WEIGHT_READ * (layers * self.layer_params + self.unembed)
        return fixed + rows * (n * layers * self.layer + out_tokens * self.unembed)

    def row_bytes(self, model: Transformer, n_pos: int) -> int:
        cfg = model.cfg
        floats = n_pos * (12 * cfg.d_model + 3 * cfg.d_mlp + 2 * cfg.n_heads * n_pos)
        if not self.positional:
            floats += n_pos * cfg.d_vocab
        return floats * torch.tensor([], dtype=cfg.torch_dtype).element_size()


def _plan_chunks(rows: list[_Row], costs: _Costs, max_rows: int, B: int) -> list[_Chunk]:
    """Group rows (each B physical rows) into forward passes of at most `max_rows` physical rows,
    at the least total cost.

    Rows with the same (first layer, first position) form a group; groups are put in order
    (by layer then position, and by position then layer, whichever partitions cheaper) and
    split into consecutive runs by dynamic programming: a pass costs its fixed part plus
    rows x (positions from its earliest) x (blocks from its earliest)."""
    groups: dict[tuple[int, int], list[int]] = defaultdict(list)
    for i, r in enumerate(rows):
        groups[(r.layer, r.pos)].append(i)
    per_chunk = max(1, max_rows // B)
    best: Optional[tuple[float, list[_Chunk]]] = None
    for order in (lambda k: (k[0], k[1]), lambda k: (k[1], k[0])):
        pieces = []  # (layer, pos, members), no piece larger than a pass
        for key in sorted(groups, key=order, reverse=True):
            members = groups[key]
            pieces += [(key[0], key[1], members[i:i + per_chunk]) for i in range(0, len(members), per_chunk)]
        cost, chunks = _partition(pieces, costs, per_chunk, B)
        if best is None or cost < best[0]:
            best = (cost, chunks)
    return best[1] if best else []


def _partition(pieces: list[tuple[int, int, list[int]]], costs: _Costs, per_chunk: int,
               B: int) -> tuple[float, list[_Chunk]]:
    """The cheapest split of the pieces, in their order, into runs of at most per_chunk rows."""
    n = len(pieces)
    total = [0.0] + [float("inf")] * n  # total[i]: the cheapest cover of the first i pieces
    start = [0] * (n + 1)
    for i in range(1, n + 1):
        rows, layer, pos = 0, costs.n_layers + 1, costs.n_pos
        for j in range(i - 1, -1, -1):  # the last run is pieces j..i-1
            rows += len(pieces[j][2])
            if rows > per_chunk:
                break
            layer, pos = min(layer, pieces[j][0]), min(pos, pieces[j][1])
            c = total[j] + costs.chunk(rows * B, layer, pos)
            if c < total[i]:
                total[i], start[i] = c, j
    chunks, i = [], n
    while i > 0:
        j = start[i]
        run = pieces[j:i]
        chunks.append(_Chunk([r for p in run for r in p[2]], min(p[0] for p in run), min(p[1] for p in run)))
        i = j
    return total[n], chunks[::-1]


# ============================================================ the engine
def run_patched(
    model,
    base: Inputs,
    rows: Sequence[Sequence[Patch]],
    metric: Metric,
    *,
    sources: Optional[Mapping[str, Any]] = None,
    base_patches: Sequence[Patch] = (),
    max_rows: Optional[int] = None,
    grad: bool = False,
    plan: Optional[str] = None,
    progress: bool = False,
    desc: str = "patching",
) -> EngineOutput:
    """The metric of the base run with each row's patches applied; see the module docstring.

    base: token ids [B, pos] (for other hooked models: a tuple of their input tensors).
    rows: one list of `Patch` per row; every row is applied to each of the B prompts and
        the metric (logits [B, pos, d_vocab] -> scalar, as in TransformerLens) reads them together.
    sources: runs that `FromRun` values name: token ids like `base` ([B or 1, pos]), or
        {hook name: activation [B or 1, ...]}.
    base_patches: patches applied to the base run and to every row (e.g. noise on the
        subject's embeddings); not to the sources.
    max_rows: physical rows (rows x B) per forward pass; default: what fits in 512 MiB.
    grad: keep the autograd graph of the values (for patch values that require grad).
    plan: "fused" or "resumed" to force a strategy (default: the cheaper by the cost model).
    """
    rows = [list(r) for r in rows]
    sources = dict(sources or {})
    if plan not in (None, "fused", "resumed"):
        raise ValueError(f"plan must be 'fused', 'resumed' or None, got {plan!r}")
    if max_rows is not None and max_rows < 1:
        raise ValueError(f"max_rows must be >= 1, got {max_rows}")
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
    runner_cls = _DecoderOnly if isinstance(model, Transformer) else _Generic
    with torch.enable_grad() if grad else torch.no_grad():
        return runner_cls(model, base, rows, metric, sources, list(base_patches), max_rows, plan, progress, desc).run()


class _Runner:
    """Shared state of both runners."""

    B: int
    device: torch.device
    source_acts: dict[str, dict[str, torch.Tensor]]

    def _group_score(self, logits: torch.Tensor, n: int) -> torch.Tensor:
        """logits of n groups of B rows ([n*B, d_vocab] at the metric's position, or [n*B, pos, d_vocab]) -> [n]."""
        if self.positional:
            return self.metric.at(logits.reshape(n, self.B, -1))
        groups = logits.reshape(n, self.B, *logits.shape[1:])
        return torch.stack([torch.as_tensor(self.metric(g)) for g in groups])

    def _run_score(self, logits: torch.Tensor) -> Any:
        """The metric of one unpatched run (B rows, or 1 row broadcast to B)."""
        if logits.shape[0] != self.B:
            logits = logits.expand(self.B, *logits.shape[1:])
        value = self._group_score(logits, 1)[0]
        return value if value.requires_grad else scalar(value)

    @staticmethod
    def _stack(values: list) -> torch.Tensor:
        if any(isinstance(v, torch.Tensor) and v.requires_grad for v in values):
            return torch.stack([torch.as_tensor(v) for v in values])
        return torch.tensor([float(v) for v in values], dtype=torch.float64)


# ============================================================ decoder-only models
class _DecoderOnly(_Runner):
    def __init__(self, model: Transformer, base: torch.Tensor, rows: list[list[Patch]], metric: Metric,
                 sources: dict, base_patches: list[Patch], max_rows: Optional[int], plan: Optional[str],
                 progress: bool, desc: str) -> None:
        if not isinstance(base, torch.Tensor) or base.dim() != 2:
            raise ValueError(f"base must be token ids [batch, pos], got {getattr(base, 'shape', type(base).__name__)}")
        self.model, self.metric, self.plan, self.progress, self.desc = model, metric, plan, progress, desc
        self.tokens = base.to(model.device)
        self.B, self.n_pos = self.tokens.shape
        self.n_layers = model.cfg.n_layers
        self.device = model.device
        self.positional = is_positional(metric)
        self.read_pos = metric.pos % self.n_pos if self.positional else None
        self.base_patches = [self._norm_patch(p) for p in base_patches]
        self.token_sources = {k: v.to(self.device) for k, v in sources.items() if isinstance(v, torch.Tensor)}
        for k, v in self.token_sources.items():
            if v.dim() != 2 or v.shape[1] != self.n_pos or v.shape[0] not in (1, self.B):
                raise ValueError(f"source run {k!r} has token shape {tuple(v.shape)}; the base run is "
                                 f"{tuple(self.tokens.shape)} (give [B or 1, pos])")
        self.source_acts = {k: {model.normalize_name(n): a for n, a in v.items()}
                            for k, v in sources.items() if not isinstance(v, torch.Tensor)}
        self.n_sources = sum(t.shape[0] for t in self.token_sources.values())
        # Positions up to which each token source equals the base run (identical prefixes give identical
        # activations under causal attention: copying them changes nothing, and such patches are not run).
        first_base_patch = min((first_pos(p.index, p.name) for p in self.base_patches), default=self.n_pos)
        self.same_upto = {k: min(common_prefix(self.tokens, t), first_base_patch) for k, t in self.token_sources.items()}
        self.rows = [self._norm_row(r) for r in rows]
        self.costs = _Costs(model, self.n_pos, self.positional)
        self.max_rows = max_rows or max(1, int(MEMORY_BUDGET // self.costs.row_bytes(model, self.n_pos)))

    def _norm_patch(self, p: Patch) -> Patch:
        name = self.model.normalize_name(p.name)
        return Patch(name, normalize_index(p.index, name, self.n_pos), p.value, p.op)

    def _no_op(self, p: Patch) -> bool:
        """A patch copying a source's activation where the source and the base run agree."""
        return isinstance(p.value, FromRun) and p.value.run in self.same_upto and \
            last_pos(p.index, p.name, self.n_pos) < self.same_upto[p.value.run]

    def _norm_row(self, row: list[Patch]) -> _Row:
        patches = [q for q in (self._norm_patch(p) for p in row) if not self._no_op(q)]
        layer = min((_layer(p.name, self.n_layers) for p in patches), default=self.n_layers)
        pos = min((first_pos(p.index, p.name) for p in patches), default=self.n_pos)
        return _Row(patches, layer, pos)

    def run(self) -> EngineOutput:
        # A row without patches, or whose patches all come after the position the metric reads,
        # has the base run's value.
        live = [i for i, r in enumerate(self.rows)
                if r.patches and (self.read_pos is None or r.pos <= self.read_pos)]
        resumed = _plan_chunks([self.rows[i] for i in live], self.costs, self.max_rows, self.B)
        resumed = [_Chunk([live[j] for j in c.rows], c.layer, c.pos) for c in resumed]
        fused = self._fused_chunks(live)
        fusable = all(not isinstance(p.value, FromRun) or p.value.run in self.token_sources
                      for r in self.rows for p in r.patches)
        choice = self.plan
        if choice is None:
            prep = self.costs.chunk(self.B + self.n_sources, 0, 0)
            resumed_cost = prep + sum(self.costs.chunk(len(c.rows) * self.B, c.layer, c.pos) for c in resumed)
            fused_cost = sum(self.costs.chunk(len(c.rows) * self.B + self.B + self.n_sources, 0, 0) for c in fused)
            choice = "fused" if fusable and fused_cost <= resumed_cost else "resumed"
        if choice == "fused" and not fusable:
            raise ValueError("plan='fused' needs every FromRun source given as token ids")
        out = self._run_fused(fused) if choice == "fused" else self._run_resumed(resumed)
        values = [out.pop(i, None) for i in range(len(self.rows))]
        values = [self.base_value if v is None else v for v in values]
        return EngineOutput(self._stack(values) if values else torch.zeros(0, dtype=torch.float64),
                            self.base_value, self.source_values, self.n_forwards, choice, self.base_logits)

    # ------------------------------------------------------------ pieces of a forward pass
    def _final(self, resid: torch.Tensor) -> torch.Tensor:
        """Residual after the last block [..., d_model] -> logits [..., d_vocab]."""
        return self.model.unembed(self.model.ln_final(resid) if self.model.cfg.final_norm else resid)

    def _read(self, resid: torch.Tensor, start: int = 0) -> torch.Tensor:
        """What the metric reads: logits at its position [rows, d_vocab], or all logits [rows, pos - start, d_vocab]."""
        return self._final(resid[:, self.read_pos - start] if self.positional else resid)

    def _base_hooks(self, lo: int) -> list:
        """The base patches on the B base rows (rows lo..lo+B) of a pass that also runs sources."""
        return hook_plans(self, [[]], self.base_patches, lo, 0)

    def _fused_chunks(self, live: list[int]) -> list[_Chunk]:
        per_chunk = max(1, (self.max_rows - self.B - self.n_sources) // self.B)
        return [_Chunk(live[i:i + per_chunk], -1, 0) for i in range(0, len(live), per_chunk)] or [_Chunk([], -1, 0)]

    # ------------------------------------------------------------ fused: sources and rows in one batch
    def _run_fused(self, chunks: list[_Chunk]) -> dict[int, Any]:
        """Batches [base (B), sources..., copies...]; patches read their sources from the same pass."""
        model, B = self.model, self.B
        fused, lo = {}, B
        for k, t in self.token_sources.items():
            fused[k] = (lo, t.shape[0])
            lo += t.shape[0]
        n_extra = lo
        extra = torch.cat([self.tokens] + list(self.token_sources.values()))
        values: dict[int, Any] = {}
        self.n_forwards = 0
        for chunk in tqdm(chunks, desc=self.desc, disable=not self.progress, leave=False):
            copies = [self.rows[i].patches for i in chunk.rows]
            tokens = torch.cat([extra, self.tokens.repeat(len(copies), 1)])
            hooks = self._base_hooks(0) + hook_plans(self, copies, self.base_patches, n_extra, 0, fused=fused)
            with model.hooks(fwd_hooks=hooks):
                out = self._read(model(tokens, stop_at_layer=self.n_layers))
            self.n_forwards += 1
            if self.n_forwards == 1:
                self.base_logits = out[:B]
                self.base_value = self._run_score(out[:B])
                self.source_values = {k: self._run_score(out[a:a + n]) for k, (a, n) in fused.items()}
            if copies:
                values.update(zip(chunk.rows, self._group_score(out[n_extra:], len(copies))))
        return values

    # ------------------------------------------------------------ resumed: from the cached base run
    def _run_resumed(self, chunks: list[_Chunk]) -> dict[int, Any]:
        model, B, n_layers = self.model, self.B, self.n_layers
        k_act = "rot_k" if model.cfg.positional == "rotary" else "k"
        cache_names = set()
        for c in chunks:
            if 0 <= c.layer < n_layers:
                cache_names.add(hook_names.act_name("resid_pre", c.layer))
            elif c.layer == n_layers:
                cache_names.add(hook_names.act_name("resid_post", n_layers - 1))
            if c.pos > 0:
                cache_names |= {hook_names.act_name(a, l) for l in range(max(c.layer, 0), n_layers) for a in (k_act, "v")}
        source_names = {p.name for r in self.rows for p in r.patches if isinstance(p.value, FromRun)
                        and p.value.run in self.token_sources}
        # One forward over the base prompts and the source prompts caches what the chunks need.
        tokens = torch.cat([self.tokens] + list(self.token_sources.values()))
        with model.hooks(fwd_hooks=self._base_hooks(0)), torch.no_grad():
            resid, cache = model.run_with_cache(tokens, names_filter=sorted(cache_names | source_names),
                                                stop_at_layer=n_layers)
            out = self._read(resid)  # only the position the metric reads is unembedded
        self.n_forwards = 1
        self.base_logits = base_logits = out[:B]
        self.base_value = self._run_score(base_logits)
        self.source_values, lo = {}, B
        for k, t in self.token_sources.items():
            self.source_values[k] = self._run_score(out[lo:lo + t.shape[0]])
            self.source_acts[k] = {name: cache[name][lo:lo + t.shape[0]] for name in source_names}
            lo += t.shape[0]
        base = {n: cache[n][:B] for n in cache_names}

        values: dict[int, Any] = {}
        for chunk in tqdm(chunks, desc=self.desc, disable=not self.progress, leave=False):
            copies = [self.rows[i].patches for i in chunk.rows]
            n, layer, start = len(copies), chunk.layer, chunk.pos
            kv_cache = None
            if start > 0:  # positions before `start` are as in the base run
                kv_cache = KVCache.empty(n_layers)
                for l in range(max(layer, 0), n_layers):
                    kv_cache.keys[l] = base[hook_names.act_name(k_act, l)][:, :start].repeat(n, 1, 1, 1)
                    kv_cache.values[l] = base[hook_names.act_name("v", l)][:, :start].repeat(n, 1, 1, 1)
            keep = lambda name, layer=layer: _layer(name, n_layers) >= layer  # noqa: E731  earlier: in the cache
            plans = dict(hook_plans(self, copies, self.base_patches, 0, start, keep))
            # Patches on the resumed input (the previous block's resid_post) apply to it directly.
            entry = plans.pop(hook_names.act_name("resid_post", layer - 1), None) if layer > 0 else None
            with model.hooks(fwd_hooks=list(plans.items())):
                if layer < 0:
                    resid = model(self.tokens[:, start:].repeat(n, 1), stop_at_layer=n_layers, kv_cache=kv_cache)
                else:
                    name = hook_names.act_name("resid_pre", layer) if layer < n_layers else \
                        hook_names.act_name("resid_post", n_layers - 1)
                    resid = base[name][:, start:].repeat(n, 1, 1)
                    if entry is not None:
                        resid = entry(resid, None)
                    if layer < n_layers:
                        resid = model(resid, start_at_layer=layer, stop_at_layer=n_layers, kv_cache=kv_cache)
                out = self._read(resid, start)
            if not self.positional and start > 0:
                out = torch.cat([base_logits[:, :start].repeat(n, 1, 1), out], dim=1)
            self.n_forwards += 1
            values.update(zip(chunk.rows, self._group_score(out, n)))
        return values


# ============================================================ any other hooked model
class _Generic(_Runner):
    """Models whose forward takes one or several input tensors (e.g. `EncoderDecoder(src, tgt)`):
    every row runs from the inputs (each repeated), the sources in the same batch."""

    def __init__(self, model, base: Inputs, rows: list[list[Patch]], metric: Metric, sources: dict,
                 base_patches: list[Patch], max_rows: Optional[int], plan: Optional[str], progress: bool,
                 desc: str) -> None:
        self.model, self.metric, self.plan, self.progress, self.desc = model, metric, plan, progress, desc
        self.inputs = tuple(base) if isinstance(base, (tuple, list)) else (base,)
        self.B = self.inputs[0].shape[0]
        self.device = next(model.parameters()).device
        self.positional = False
        self.base_patches = [Patch(model.normalize_name(p.name), p.index, p.value, p.op) for p in base_patches]
        self.rows = [[Patch(model.normalize_name(p.name), p.index, p.value, p.op) for p in r] for r in rows]
        self.sources = {}
        for k, v in sources.items():
            v = tuple(v) if isinstance(v, (tuple, list)) else (v,)
            for i, (a, b) in enumerate(zip(v, self.inputs)):
                if a.shape != b.shape:
                    raise ValueError(f"source {k!r} input {i} has shape {tuple(a.shape)}, the base {tuple(b.shape)}")
            self.sources[k] = v
        self.max_rows = max_rows or 64
        self.source_acts = {}

    def run(self) -> EngineOutput:
        if self._decoder_resumable():
            return self._run_decoder_resumed()
        if self.plan == "resumed":
            raise ValueError(f"plan='resumed' on a {type(self.model).__name__} needs patches in the decoder only "
                             "(and no base patches); other rows run from the inputs")
        return self._run_fused()

    def _run_fused(self) -> EngineOutput:
        model, B = self.model, self.B
        fused, lo = {}, B
        for k in self.sources:
            fused[k] = (lo, B)
            lo += B
        n_extra = lo
        per_chunk = max(1, (self.max_rows - n_extra) // B)
        values: list = []
        base_value, source_values, n_forwards = None, {}, 0
        for first in tqdm(range(0, max(len(self.rows), 1), per_chunk), desc=self.desc, disable=not self.progress,
                          leave=False):
            copies = self.rows[first:first + per_chunk]
            inputs = [torch.cat([x] + [s[j] for s in self.sources.values()] + [x.repeat(len(copies), *[1] * (x.dim() - 1))])
                      for j, x in enumerate(self.inputs)]
            hooks = hook_plans(self, [[]], self.base_patches, 0, 0) + \
                hook_plans(self, copies, self.base_patches, n_extra, 0, fused=fused)
            with model.hooks(fwd_hooks=hooks):
                logits = model(*inputs)
            n_forwards += 1
            if base_value is None:
                base_logits = logits[:B]
                base_value = self._run_score(logits[:B])
                source_values = {k: self._run_score(logits[a:a + n]) for k, (a, n) in fused.items()}
            if copies:
                values += list(self._group_score(logits[n_extra:], len(copies)))
        out = self._stack(values) if values else torch.zeros(0, dtype=torch.float64)
        return EngineOutput(out, base_value, source_values, n_forwards, "fused", base_logits)

    # ------------------------------------------------------------ the encoder-decoder: resume in the decoder
    def _decoder_resumable(self) -> bool:
        """Patches only in the decoder's blocks of an encoder-decoder (inputs src, tgt[, src_mask]):
        the encoder's output and the decoder's residual stream at each patched layer come from one
        forward pass, and each row resumes at its layer."""
        model = self.model
        return (self.plan != "fused" and hasattr(model, "decode_from") and not self.base_patches
                and len(self.inputs) in (2, 3) and bool(self.rows)
                and all(p.name.startswith("decoder.blocks.") for r in self.rows for p in r))

    def _run_decoder_resumed(self) -> EngineOutput:
        model, B = self.model, self.B
        starts = [min(hook_names.layer_of(p.name) for p in r) if r else None for r in self.rows]
        resid_names = {hook_names.act_name("resid_pre", l, stack="decoder") for l in starts if l is not None}
        source_names = {p.name for r in self.rows for p in r if isinstance(p.value, FromRun)}
        stored: dict[str, torch.Tensor] = {}

        def record(x: torch.Tensor, hook: Any) -> None:
            stored[hook.name] = x

        src, tgt = (torch.cat([x] + [s[j] for s in self.sources.values()]) for j, x in enumerate(self.inputs[:2]))
        mask = None
        if len(self.inputs) == 3:
            mask = torch.cat([self.inputs[2]] + [s[2] for s in self.sources.values()])
        with model.hooks(fwd_hooks=[(n, record) for n in resid_names | source_names]):
            memory = model.encode(src, mask)
            logits = model.decode(tgt, memory, mask)
        base_value = self._run_score(logits[:B])
        source_values, lo = {}, B
        for k in self.sources:
            source_values[k] = self._run_score(logits[lo:lo + B])
            self.source_acts[k] = {n: stored[n][lo:lo + B] for n in source_names}
            lo += B
        values: list = [base_value] * len(self.rows)
        n_forwards = 1
        for layer in sorted({l for l in starts if l is not None}):
            members = [i for i, l in enumerate(starts) if l == layer]
            per_chunk = max(1, self.max_rows // B)
            for first in range(0, len(members), per_chunk):
                part = members[first:first + per_chunk]
                n = len(part)
                resid = stored[hook_names.act_name("resid_pre", layer, stack="decoder")][:B].repeat(n, 1, 1)
                with model.hooks(fwd_hooks=hook_plans(self, [self.rows[i] for i in part], [], 0, 0)):
                    out = model.decode_from(resid, memory[:B].repeat(n, 1, 1), layer,
                                            None if mask is None else mask[:B].repeat(n, 1))
                n_forwards += 1
                for i, v in zip(part, self._group_score(out, n)):
                    values[i] = v
        return EngineOutput(self._stack(values), base_value, source_values, n_forwards, "resumed", logits[:B])


__all__ = ["Patch", "FromRun", "run_patched", "EngineOutput"]
