"""Activation patching: sweep a patch over every layer, position, head or neuron.

    result = sweep(model, "Michael Jordan plays the sport of", "Michael Phelps plays the sport of",
                   logit_diff(model, "basketball", "swimming"), site="head_z_by_pos")
    result.values          # [layer, pos, head]: the metric after each single patch
    result.normalized()    # (patched - corrupted) / (clean - corrupted)

Directions: "denoise" (default) runs the corrupted prompt and patches in one
clean activation at a time, like TransformerLens' `get_act_patch_*`; "noise"
runs the clean prompt and patches in the corrupted activation. Ablations run
the clean prompt and patch in zeros ("zero"), the mean activation over
`reference` prompts at each position ("mean"), or the activation of a
reference prompt ("resample").

Why it is fast, with the same numbers as one forward pass per patch:
- many patches share one batched forward pass (`batch_size` rows at a time,
  which bounds memory);
- a patch at layer L resumes from the base run's cached residual stream
  entering block L, instead of recomputing layers 0..L-1;
- a patch at position p leaves positions before p untouched (causal
  attention), so only positions p.. are recomputed, attending to the base
  run's cached keys and values for the earlier ones;
- metrics from `interp.metrics` say which position's logits they read, and
  only that position is unembedded.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Sequence, Union

import re

import torch
from tqdm.auto import tqdm

from interp.metrics import is_positional, metric_name, scalar
from interp.report import pos_labels, str_tokens, write_json
from models import KVCache, Transformer

Prompts = Union[str, Sequence[str], torch.Tensor]
Metric = Callable[[torch.Tensor], torch.Tensor]

DIRECTIONS = ("denoise", "noise")
ABLATIONS = ("zero", "mean", "resample")


class PromptLengthError(ValueError):
    """Prompts that must line up token by token do not have the same number of tokens."""


# ============================================================ sites
@dataclass(frozen=True)
class SiteKind:
    """How one kind of site sits in its hook's activation (batch is dim 0).

    act: short activation name (hook `blocks.{l}.attn.hook_z` etc.);
    pos_dim: the dim of the (query) position; unit_dim: the dim of the head or
    neuron, if the site addresses one; by_pos: one site per position, else the
    patch covers all positions.
    """

    act: str
    axes: tuple[str, ...]
    pos_dim: int
    unit_dim: Optional[int] = None
    by_pos: bool = True

    def hook_name(self, layer: int) -> str:
        if self.act in ("z", "q", "k", "v", "pattern"):
            return f"blocks.{layer}.attn.hook_{self.act}"
        if self.act == "post":
            return f"blocks.{layer}.mlp.hook_post"
        return f"blocks.{layer}.hook_{self.act}"

    def index(self, ndim: int, pos: Optional[int], unit: Optional[int]) -> tuple:
        """Index (without the batch dim) of one site in an activation with `ndim` dims."""
        idx: list = [slice(None)] * (ndim - 1)
        if self.by_pos:
            idx[self.pos_dim - 1] = pos
        if self.unit_dim is not None:
            idx[self.unit_dim - 1] = unit
        return tuple(idx)


def _site_table() -> dict[str, SiteKind]:
    table = {act: SiteKind(act, ("layer", "pos"), 1) for act in ("resid_pre", "resid_mid", "resid_post", "attn_out", "mlp_out")}
    for act in ("z", "q", "k", "v"):
        table[f"head_{act}_by_pos"] = SiteKind(act, ("layer", "pos", "head"), 1, 2)
        table[f"head_{act}"] = SiteKind(act, ("layer", "head"), 1, 2, by_pos=False)
    # The pattern is [batch, head, q_pos, k_pos]: by position means the query row.
    table["head_pattern_by_pos"] = SiteKind("pattern", ("layer", "pos", "head"), 2, 1)
    table["head_pattern"] = SiteKind("pattern", ("layer", "head"), 2, 1, by_pos=False)
    table["neuron_post_by_pos"] = SiteKind("post", ("layer", "pos", "neuron"), 1, 2)
    table["neuron_post"] = SiteKind("post", ("layer", "neuron"), 1, 2, by_pos=False)
    return table


SITES: dict[str, SiteKind] = _site_table()


def site_kind(model: Transformer, site: str) -> SiteKind:
    if site not in SITES:
        raise ValueError(f"unknown site {site!r}; choose from {', '.join(SITES)}")
    kind = SITES[site]
    if kind.act == "resid_mid" and "blocks.0.hook_resid_mid" not in model.hook_dict:
        raise ValueError("site 'resid_mid' does not exist in a model with parallel attention and MLP")
    return kind


# ============================================================ results
@dataclass
class PatchResult:
    """The metric after each patch, with named and labelled axes.

    values: [*axes] e.g. [layer, pos, head]; labels: axis -> one label per entry
    ("L3", "H5", "N42", "Jordan (2)"); clean_value / corrupted_value: the metric
    on the unpatched clean and corrupted runs (corrupted_value is None for
    ablations, which have no corrupted run).
    """

    values: torch.Tensor
    axes: tuple[str, ...]
    labels: dict[str, list[str]]
    site: str
    direction: str
    metric_name: str
    clean_value: float
    corrupted_value: Optional[float]
    tokens: list[str] = field(default_factory=list)
    method: str = "activation patching"

    @property
    def base_value(self) -> float:
        """The metric of the run that was patched (no patch applied)."""
        if self.direction == "denoise":
            return self.corrupted_value
        return self.clean_value

    @property
    def effect(self) -> torch.Tensor:
        """values - the metric of the unpatched run."""
        return self.values - self.base_value

    @property
    def title(self) -> str:
        return f"{self.method}: {self.site} ({self.direction}), {self.metric_name}"

    def normalized(self) -> "PatchResult":
        """(values - corrupted) / (clean - corrupted): 1 = clean behaviour, 0 = corrupted."""
        if self.corrupted_value is None:
            raise ValueError("an ablation has no corrupted run to normalise against")
        span = self.clean_value - self.corrupted_value
        if abs(span) < 1e-12:
            raise ValueError(f"clean and corrupted metric are equal ({self.clean_value:.6g}): cannot normalise")
        return PatchResult(
            (self.values - self.corrupted_value) / span, self.axes, self.labels, self.site, self.direction,
            f"normalised {self.metric_name}", 1.0, 0.0, self.tokens, self.method,
        )

    def label_of(self, flat_index: int) -> str:
        idx = torch.unravel_index(torch.tensor(flat_index), self.values.shape)
        parts = {a: self.labels[a][int(i)] for a, i in zip(self.axes, idx)}
        pos = parts.pop("pos", None)
        return "".join(parts.values()) + (f" @ {pos}" if pos is not None else "")

    def top(self, k: int = 10, by_abs: bool = True) -> list[tuple[str, float]]:
        """The k sites with the largest effect (|values - base| by default)."""
        eff = self.effect.flatten()
        order = (eff.abs() if by_abs else eff).argsort(descending=True)[:k]
        return [(self.label_of(int(i)), float(self.values.flatten()[i])) for i in order]

    def to_dict(self) -> dict:
        return {
            "method": self.method, "site": self.site, "direction": self.direction, "metric": self.metric_name,
            "clean_value": self.clean_value, "corrupted_value": self.corrupted_value, "axes": list(self.axes),
            "labels": self.labels, "tokens": self.tokens, "values": self.values.tolist(),
        }

    def save_json(self, path: Union[str, Path]) -> Path:
        return write_json(path, self.to_dict())


def axis_labels(axes: Sequence[str], layers: Sequence[int], positions: Sequence[int], n_units: int,
                tokens: Sequence[str]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {"layer": [f"L{l}" for l in layers]}
    if "pos" in axes:
        out["pos"] = pos_labels(tokens, positions)
    if "head" in axes:
        out["head"] = [f"H{h}" for h in range(n_units)]
    if "neuron" in axes:
        out["neuron"] = [f"N{n}" for n in range(n_units)]
    return out


# ============================================================ prompts
def _describe(model: Transformer, prompts: Prompts, i: int) -> str:
    if isinstance(prompts, str):
        return repr(prompts)
    if isinstance(prompts, torch.Tensor):
        return f"token row {i}"
    return repr(list(prompts)[i])


def prompt_tokens(model: Transformer, prompts: Prompts, what: str = "prompts") -> torch.Tensor:
    """Token ids [batch, pos] for prompts that must all have the same length (else PromptLengthError)."""
    if isinstance(prompts, torch.Tensor):
        tokens = prompts[None] if prompts.dim() == 1 else prompts
        return tokens.to(model.device)
    texts = [prompts] if isinstance(prompts, str) else list(prompts)
    rows = [model.to_tokens(t)[0] for t in texts]
    lengths = [len(r) for r in rows]
    if len(set(lengths)) > 1:
        listing = ", ".join(f"{t!r}: {n} tokens" for t, n in zip(texts, lengths))
        raise PromptLengthError(f"the {what} must all have the same number of tokens to line up position by position; got {listing}")
    return torch.stack(rows)


def paired_tokens(model: Transformer, clean: Prompts, corrupted: Prompts) -> tuple[torch.Tensor, torch.Tensor]:
    """Clean and corrupted token ids [batch, pos], checked to line up position by position."""
    c, k = prompt_tokens(model, clean, "clean prompts"), prompt_tokens(model, corrupted, "corrupted prompts")
    if c.shape[0] != k.shape[0]:
        raise PromptLengthError(f"{c.shape[0]} clean prompts but {k.shape[0]} corrupted prompts: give one of each per pair")
    if c.shape[1] != k.shape[1]:
        detail = ""
        if model.tokenizer is not None:
            detail = f": {model.to_str_tokens(c[0])} vs {model.to_str_tokens(k[0])}"
        raise PromptLengthError(
            f"clean prompt {_describe(model, clean, 0)} has {c.shape[1]} tokens but corrupted prompt "
            f"{_describe(model, corrupted, 0)} has {k.shape[1]}{detail}. Patching lines positions up one to one: "
            "choose a corrupted prompt with the same number of tokens (e.g. a subject of the same token length)"
        )
    return c, k


# ============================================================ the sweep
def _positions(positions: Optional[Sequence[int]], n_pos: int) -> list[int]:
    if positions is None:
        return list(range(n_pos))
    out = []
    for p in positions:
        if not -n_pos <= p < n_pos:
            raise ValueError(f"position {p} is outside a prompt of {n_pos} tokens")
        out.append(p % n_pos)
    return out


def _layers(model: Transformer, layers: Optional[Sequence[int]]) -> list[int]:
    n = model.cfg.n_layers
    if layers is None:
        return list(range(n))
    for l in layers:
        if not -n <= l < n:
            raise ValueError(f"layer {l} does not exist in a model with {n} layers")
    return [l % n for l in layers]


def _kv_names(model: Transformer) -> list[str]:
    k = "rot_k" if model.cfg.positional == "rotary" else "k"
    return [f"blocks.{l}.attn.hook_{a}" for l in range(model.cfg.n_layers) for a in (k, "v")]


@dataclass
class _Chunk:
    """Patches run together in one forward pass: same layer, recomputed from position `start` on."""

    layer: int
    start: int
    cells: list[tuple[tuple, Optional[int], Optional[int]]]  # (index into the result, position, unit)


def _plan(kind: SiteKind, layers: list[int], positions: list[int], n_units: int, per_chunk: int) -> list[_Chunk]:
    """Group the patches of each layer into chunks of at most `per_chunk`, latest positions
    first, so that each chunk recomputes as few positions as possible."""
    units = list(range(n_units)) if kind.unit_dim is not None else [None]
    chunks = []
    for li, layer in enumerate(layers):
        if kind.by_pos:
            order = sorted(range(len(positions)), key=lambda i: -positions[i])
            cells = [((li, pi) + ((u,) if u is not None else ()), positions[pi], u) for pi in order for u in units]
        else:
            cells = [((li, u), None, u) for u in units]
        for i in range(0, len(cells), per_chunk):
            part = cells[i : i + per_chunk]
            start = min(c[1] for c in part) if kind.by_pos else 0
            chunks.append(_Chunk(layer, start, part))
    return chunks


def _source_activations(
    model: Transformer, kind: SiteKind, names: list[str], base_tokens: torch.Tensor,
    source_tokens: Optional[torch.Tensor], ablation: Optional[str], reference: Optional[torch.Tensor], seed: int,
) -> dict[str, torch.Tensor]:
    """The value patched in at each hook: [batch, ...] like the base run's activation."""
    if ablation is None:
        return model.run_with_cache(source_tokens, names_filter=names, return_type=None)[1].cache_dict
    if ablation == "zero":
        acts = model.run_with_cache(base_tokens[:1], names_filter=names, return_type=None)[1]
        return {n: torch.zeros_like(acts[n]).expand(base_tokens.shape[0], *acts[n].shape[1:]) for n in names}
    acts = model.run_with_cache(reference, names_filter=names, return_type=None)[1]
    if ablation == "mean":
        return {n: acts[n].mean(0, keepdim=True).expand(base_tokens.shape[0], *acts[n].shape[1:]) for n in names}
    gen = torch.Generator().manual_seed(seed)
    rows = torch.randint(0, reference.shape[0], (base_tokens.shape[0],), generator=gen)
    return {n: acts[n][rows.to(acts[n].device)] for n in names}


def sweep(
    model: Transformer,
    clean: Prompts,
    corrupted: Optional[Prompts],
    metric: Metric,
    site: str = "resid_pre",
    *,
    direction: str = "denoise",
    ablation: Optional[str] = None,
    reference: Optional[Prompts] = None,
    layers: Optional[Sequence[int]] = None,
    positions: Optional[Sequence[int]] = None,
    batch_size: int = 64,
    seed: int = 0,
    progress: bool = True,
) -> PatchResult:
    """Patch one site at a time and record `metric` of the patched logits.

    clean, corrupted: prompts (text, list of texts, or token ids [batch, pos]);
        clean and corrupted must have the same number of tokens (PromptLengthError
        names them otherwise).
    metric: logits [batch, pos, d_vocab] -> scalar. Metrics from interp.metrics
        are fastest (only the position they read is unembedded).
    site: one of SITES (see the module doc and README for axes).
    direction: "denoise" (clean into corrupted) or "noise" (corrupted into clean).
    ablation: "zero", "mean" or "resample": run the clean prompt and patch in
        zeros / the mean over `reference` prompts / a `reference` prompt chosen
        at random per clean prompt (seeded). `reference` defaults to `corrupted`.
    layers, positions: restrict the sweep (default all).
    batch_size: rows per forward pass (patches x prompts); bounds memory.
    """
    if not isinstance(model, Transformer) or "." in site:  # e.g. an EncoderDecoder, "decoder.cross_attn.head_z"
        if ablation is not None or corrupted is None:
            raise ValueError("on models other than the decoder-only Transformer, sweep supports denoising and "
                             "noising with corrupted inputs (no ablations)")
        as_inputs = lambda x: tuple(x) if isinstance(x, (tuple, list)) else (x,)  # noqa: E731
        return sweep_hooked(model, as_inputs(clean), as_inputs(corrupted), metric, site, direction=direction,
                            layers=layers, positions=positions, batch_size=batch_size, progress=progress)
    kind = site_kind(model, site)
    if direction not in DIRECTIONS:
        raise ValueError(f"direction must be one of {DIRECTIONS}, got {direction!r}")
    if ablation is not None and ablation not in ABLATIONS:
        raise ValueError(f"ablation must be one of {ABLATIONS} or None, got {ablation!r}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")

    with torch.no_grad():
        clean_tokens = prompt_tokens(model, clean, "clean prompts")
        corrupted_tokens = ref_tokens = None
        if corrupted is not None:
            clean_tokens, corrupted_tokens = paired_tokens(model, clean, corrupted)
        if ablation is None:
            if corrupted_tokens is None:
                raise ValueError("patching needs corrupted prompts (or choose an ablation: 'zero', 'mean', 'resample')")
            base_tokens, source_tokens = (corrupted_tokens, clean_tokens) if direction == "denoise" else (clean_tokens, corrupted_tokens)
        else:
            if direction != "denoise":
                raise ValueError("an ablation always runs the clean prompt; leave direction at its default")
            base_tokens, source_tokens = clean_tokens, None
            if ablation in ("mean", "resample"):
                ref = reference if reference is not None else corrupted
                if ref is None:
                    raise ValueError(f"ablation={ablation!r} needs reference prompts (reference=...)")
                ref_tokens = prompt_tokens(model, ref, "reference prompts")
                if ref_tokens.shape[1] != clean_tokens.shape[1]:
                    raise PromptLengthError(
                        f"reference prompts have {ref_tokens.shape[1]} tokens but the clean prompts have "
                        f"{clean_tokens.shape[1]}: they must line up position by position")

        layer_ids, n_pos = _layers(model, layers), base_tokens.shape[1]
        pos_ids = _positions(positions, n_pos)
        names = [kind.hook_name(l) for l in layer_ids]
        base_names = sorted({f"blocks.{l}.hook_resid_pre" for l in layer_ids} | set(_kv_names(model)))
        base_logits, base_cache = model.run_with_cache(base_tokens, names_filter=base_names)
        sources = _source_activations(model, kind, names, base_tokens, source_tokens, ablation, ref_tokens, seed)

        clean_value = scalar(metric(base_logits if base_tokens is clean_tokens else model(clean_tokens)))
        corrupted_value = None
        if corrupted_tokens is not None and ablation is None:
            corrupted_value = scalar(metric(base_logits if base_tokens is corrupted_tokens else model(corrupted_tokens)))

        first = sources[names[0]]
        n_units = first.shape[kind.unit_dim] if kind.unit_dim is not None else 0
        shape = [len(layer_ids)] + ([len(pos_ids)] if kind.by_pos else []) + ([n_units] if n_units else [])
        values = torch.empty(shape, dtype=torch.float64)
        per_chunk = max(1, batch_size // base_tokens.shape[0])
        chunks = _plan(kind, layer_ids, pos_ids, n_units, per_chunk)
        for chunk in tqdm(chunks, desc=f"patching {site}", disable=not progress, leave=False):
            out = _run_patches(model, kind, chunk, base_cache, base_logits, sources, metric)
            for (res_idx, _, _), v in zip(chunk.cells, out):
                values[res_idx] = v

    tokens = str_tokens(model, clean_tokens)
    return PatchResult(
        values, kind.axes, axis_labels(kind.axes, layer_ids, pos_ids, n_units, tokens), site,
        ablation or direction, metric_name(metric), clean_value, corrupted_value, tokens,
    )


def _row_patcher(indices: list[tuple], source: torch.Tensor, n: int, batch: int):
    """A hook for an activation whose rows are (patch, prompt): patch i copies source[idx_i]
    into its `batch` rows at indices[i]; source is [batch, ...] like one copy of the run."""

    def patch(x: torch.Tensor, hook) -> torch.Tensor:
        x = x.clone(memory_format=torch.contiguous_format)  # rows split into (patch, prompt) below
        per_patch = x.view(n, batch, *x.shape[1:])
        for i, idx in enumerate(indices):
            per_patch[i][idx] = source[idx]
        return x

    return patch


# ============================================================ any hooked model
def parse_site(site: str) -> tuple[str, str, SiteKind]:
    """"decoder.cross_attn.head_z_by_pos" -> ("decoder.", "cross_attn", SITES["head_z_by_pos"]).

    An optional stack ("encoder" / "decoder") and attention module ("attn", "cross_attn")
    prefix any site of SITES; "decoder.cross_attn.attn_out" is the cross-attention output."""
    *rest, base = site.split(".")
    if base not in SITES:
        raise ValueError(f"unknown site {base!r}; choose from {', '.join(SITES)}")
    prefix = f"{rest.pop(0)}." if rest and rest[0] in ("encoder", "decoder") else ""
    attn = rest.pop(0) if rest else "attn"
    if rest:
        raise ValueError(f"cannot read site {site!r}: expected [encoder|decoder.][attn|cross_attn.]SITE")
    return prefix, attn, SITES[base]


def _hook_name(prefix: str, attn: str, kind: SiteKind, layer: int) -> str:
    if kind.act in ("z", "q", "k", "v", "pattern"):
        return f"{prefix}blocks.{layer}.{attn}.hook_{kind.act}"
    if kind.act == "post":
        return f"{prefix}blocks.{layer}.mlp.hook_post"
    if kind.act == "attn_out" and attn != "attn":
        return f"{prefix}blocks.{layer}.hook_{attn}_out"
    return f"{prefix}blocks.{layer}.hook_{kind.act}"


def sweep_hooked(
    model, clean: Sequence[torch.Tensor], corrupted: Sequence[torch.Tensor], metric: Metric, site: str, *,
    direction: str = "denoise", layers: Optional[Sequence[int]] = None, positions: Optional[Sequence[int]] = None,
    batch_size: int = 64, progress: bool = True,
) -> PatchResult:
    """Activation patching on any hooked model whose forward takes several tensors, e.g.
    `EncoderDecoder(src_tokens, tgt_tokens)`: clean / corrupted are tuples of the model's
    inputs (each [batch, ...], same shapes). Same results as one forward per patch; many
    patches share a batched forward (every input repeated), without `sweep`'s resuming."""
    prefix, attn, kind = parse_site(site)
    if direction not in DIRECTIONS:
        raise ValueError(f"direction must be one of {DIRECTIONS}, got {direction!r}")
    clean, corrupted = tuple(clean), tuple(corrupted)
    for i, (c, k) in enumerate(zip(clean, corrupted)):
        if c.shape != k.shape:
            raise PromptLengthError(f"input {i}: clean shape {tuple(c.shape)} differs from corrupted {tuple(k.shape)}")
    in_stack = re.compile(rf"^{re.escape(prefix)}blocks\.(\d+)\.")
    found = [int(m.group(1)) for n in model.hook_dict if (m := in_stack.match(n))]
    if not found:
        raise ValueError(f"the model has no hooks under {prefix or 'the top level'}blocks.*")
    n_layers = 1 + max(found)
    layer_ids = list(range(n_layers)) if layers is None else [l % n_layers for l in layers]
    names = [_hook_name(prefix, attn, kind, l) for l in layer_ids]
    base, source = (corrupted, clean) if direction == "denoise" else (clean, corrupted)
    with torch.no_grad():
        base_logits = model(*base)
        source_logits, cache = model.run_with_cache(*source, names_filter=names)
        clean_logits, corrupted_logits = (source_logits, base_logits) if direction == "denoise" else (base_logits, source_logits)
        first = cache[names[0]]
        n_pos = first.shape[kind.pos_dim]
        pos_ids = _positions(positions, n_pos)
        n_units = first.shape[kind.unit_dim] if kind.unit_dim is not None else 0
        shape = [len(layer_ids)] + ([len(pos_ids)] if kind.by_pos else []) + ([n_units] if n_units else [])
        values = torch.empty(shape, dtype=torch.float64)
        batch = base[0].shape[0]
        chunks = _plan(kind, layer_ids, pos_ids, n_units, max(1, batch_size // batch))
        for chunk in tqdm(chunks, desc=f"patching {site}", disable=not progress, leave=False):
            n, name = len(chunk.cells), _hook_name(prefix, attn, kind, chunk.layer)
            src = cache[name]
            indices = [(slice(None),) + kind.index(src.dim(), p, u) for _, p, u in chunk.cells]

            inputs = [t.repeat(n, *[1] * (t.dim() - 1)) for t in base]
            logits = model.run_with_hooks(*inputs, fwd_hooks=[(name, _row_patcher(indices, src, n, batch))])
            out = [scalar(metric(part)) for part in logits.view(n, batch, *logits.shape[1:])]
            for (res_idx, _, _), v in zip(chunk.cells, out):
                values[res_idx] = v
    labels = axis_labels(kind.axes, layer_ids, pos_ids, n_units, [str(p) for p in range(n_pos)])
    return PatchResult(values, kind.axes, labels, site, direction, metric_name(metric),
                       scalar(metric(clean_logits)), scalar(metric(corrupted_logits)))


def _run_patches(
    model: Transformer, kind: SiteKind, chunk: _Chunk, base_cache, base_logits: torch.Tensor,
    sources: dict[str, torch.Tensor], metric: Metric,
) -> list[float]:
    """One forward pass over the chunk's patched copies of the base run: rows are (patch, prompt)."""
    n, (batch, n_pos) = len(chunk.cells), base_logits.shape[:2]
    layer, start = chunk.layer, chunk.start
    resid = base_cache[f"blocks.{layer}.hook_resid_pre"][:, start:].repeat(n, 1, 1)
    kv_cache = None
    if start > 0:  # the positions before `start` are as in the base run
        kv_cache = KVCache.empty(model.cfg.n_layers)
        k = "rot_k" if model.cfg.positional == "rotary" else "k"
        for l in range(layer, model.cfg.n_layers):
            kv_cache.keys[l] = base_cache[f"blocks.{l}.attn.hook_{k}"][:, :start].repeat(n, 1, 1, 1)
            kv_cache.values[l] = base_cache[f"blocks.{l}.attn.hook_v"][:, :start].repeat(n, 1, 1, 1)
    name = kind.hook_name(layer)
    source = sources[name].narrow(kind.pos_dim, start, n_pos - start)
    ndim = source.dim()
    # Index of each patch in the recomputed activation (positions counted from `start`).
    indices = [(slice(None),) + kind.index(ndim, None if p is None else p - start, u) for _, p, u in chunk.cells]

    with model.hooks(fwd=[(name, _row_patcher(indices, source, n, batch))]):
        if is_positional(metric):
            target = metric.pos % n_pos
            if target < start:  # the patch cannot reach an earlier position
                return [scalar(metric(base_logits))] * n
            final = model(resid, start_at_layer=layer, stop_at_layer=model.cfg.n_layers, kv_cache=kv_cache)
            x = final[:, target - start]
            logits_at = model.unembed(model.ln_final(x) if model.cfg.final_norm else x)  # [rows, d_vocab]
            return metric.at(logits_at.view(n, batch, -1)).tolist()
        logits = model(resid, start_at_layer=layer, kv_cache=kv_cache)
    if start > 0:
        logits = torch.cat([base_logits[:, :start].repeat(n, 1, 1), logits], dim=1)
    return [scalar(metric(chunk)) for chunk in logits.view(n, batch, n_pos, -1)]


__all__ = ["sweep", "sweep_hooked", "parse_site", "PatchResult", "PromptLengthError", "SITES", "SiteKind", "prompt_tokens", "paired_tokens"]
