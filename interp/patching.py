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

A sweep is a loop that builds one row of one patch per site and hands the rows to
`interp.engine.run_patched`, which batches them, resumes each from the cached
residual stream at its layer, recomputes only the positions from the patched one on,
and unembeds only the position the metric reads: the same numbers as one forward
pass per patch (tested for every site on every architecture).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Sequence, Union

import torch

from interp import names as hook_names
from interp.checks import resolve_layers, resolve_positions
from interp.engine import FromRun, Patch, run_patched
from interp.metrics import metric_name
from interp.results import LabelledResult
from interp.sites import Feature
from interp.tokens import PromptLengthError, paired_tokens, pos_labels, prompt_tokens, str_tokens
from models import EncoderDecoder, Transformer

Prompts = Union[str, Sequence[str], torch.Tensor, tuple]
Metric = Callable[[torch.Tensor], torch.Tensor]
Model = Union[Transformer, EncoderDecoder]

DIRECTIONS = ("denoise", "noise")
ABLATIONS = ("zero", "mean", "resample")


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

    @property
    def unit_axis(self) -> Optional[str]:
        """"head", "neuron" or "feature" for sites that address one, else None."""
        return next((a for a in self.axes if a in ("head", "neuron", "feature")), None)

    def hook_name(self, layer: int, stack: str = "", attn: str = "attn") -> str:
        return hook_names.act_name(self.act, layer, stack=stack, attn=attn)

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
    # The pattern is [batch, head, q_pos, k_pos]: by position means the query row. The result's
    # axes are TransformerLens' for this patch: [layer, head, dest_pos].
    table["head_pattern_by_pos"] = SiteKind("pattern", ("layer", "head", "pos"), 2, 1)
    table["head_pattern"] = SiteKind("pattern", ("layer", "head"), 2, 1, by_pos=False)
    table["neuron_post_by_pos"] = SiteKind("post", ("layer", "pos", "neuron"), 1, 2)
    table["neuron_post"] = SiteKind("post", ("layer", "neuron"), 1, 2, by_pos=False)
    # Features of the transcoders attached with probes.sae.attached (only their layers, by default).
    table["feature_acts_by_pos"] = SiteKind("feature_acts", ("layer", "pos", "feature"), 1, 2)
    table["feature_acts"] = SiteKind("feature_acts", ("layer", "feature"), 1, 2, by_pos=False)
    return table


SITES: dict[str, SiteKind] = _site_table()


def parse_site(site: str) -> tuple[str, str, SiteKind]:
    """"decoder.cross_attn.head_z_by_pos" -> ("decoder", "cross_attn", SITES["head_z_by_pos"]).

    An optional stack ("encoder" / "decoder") and attention module ("attn", "cross_attn")
    prefix any site of SITES; "decoder.cross_attn.attn_out" is the cross-attention output."""
    *rest, base = site.split(".")
    if base not in SITES:
        raise ValueError(f"unknown site {base!r}; choose from {', '.join(SITES)}")
    stack = rest.pop(0) if rest and rest[0] in ("encoder", "decoder") else ""
    attn = rest.pop(0) if rest else "attn"
    if rest or attn not in ("attn", "cross_attn"):
        raise ValueError(f"cannot read site {site!r}: expected [encoder|decoder.][attn|cross_attn.]SITE")
    return stack, attn, SITES[base]


# ============================================================ results
@dataclass
class PatchResult(LabelledResult):
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
    def base_value(self) -> Optional[float]:
        """The metric of the run that was patched (no patch applied)."""
        if self.direction == "denoise":
            return self.corrupted_value
        return self.clean_value

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

    def _extra_dict(self) -> dict[str, Any]:
        return {"site": self.site, "direction": self.direction, "clean_value": self.clean_value,
                "corrupted_value": self.corrupted_value, "tokens": self.tokens}


def axis_labels(axes: Sequence[str], layers: Sequence[int], positions: Sequence[int], n_units: int,
                tokens: Sequence[str]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {"layer": [f"L{l}" for l in layers]}
    if "pos" in axes:
        out["pos"] = pos_labels(tokens, positions)
    if "head" in axes:
        out["head"] = [f"H{h}" for h in range(n_units)]
    if "neuron" in axes:
        out["neuron"] = [f"N{n}" for n in range(n_units)]
    if "feature" in axes:
        out["feature"] = [f"F{n}" for n in range(n_units)]
    return out


# ============================================================ the sweep
def site_layers(model: Model, kind: SiteKind, n_layers: int, layers: Optional[Sequence[int]], stack: str = "",
                attn: str = "attn") -> list[int]:
    """The layers a sweep over `kind` covers: `layers` (checked), else every layer; for feature
    sites every layer with an attached transcoder (a clear error if there is none)."""
    if layers is None and kind.act in hook_names.TRANSCODER_ACTS:
        layers = Feature.attached_layers(model)
        if not layers:
            raise ValueError(f"no transcoder is attached, so there are no {kind.act} hooks: run inside "
                             "`with probes.sae.attached(model, transcoders):`")
    return resolve_layers(layers, n_layers)


def _check_site(model: Model, stack: str, kind: SiteKind) -> None:
    if kind.act == "resid_mid" and hook_names.act_name("resid_mid", 0, stack=stack) not in model.hook_dict:
        raise ValueError("site 'resid_mid' does not exist in a model with parallel attention and MLP")


def _as_inputs(x: Prompts) -> tuple:
    return tuple(x) if isinstance(x, (tuple, list)) and x and isinstance(x[0], torch.Tensor) else (x,)


def _check_options(model: Model, stack: str, kind: SiteKind, direction: str, ablation: Optional[str],
                   batch_size: Optional[int], corrupted: Optional[Prompts]) -> bool:
    """Clear errors for bad options; returns whether the model is decoder-only (one token input)."""
    _check_site(model, stack, kind)
    if direction not in DIRECTIONS:
        raise ValueError(f"direction must be one of {DIRECTIONS}, got {direction!r}")
    if ablation is not None and ablation not in ABLATIONS:
        raise ValueError(f"ablation must be one of {ABLATIONS} or None, got {ablation!r}")
    if ablation is not None and direction != "denoise":
        raise ValueError("an ablation always runs the clean prompt; leave direction at its default")
    if batch_size is not None and batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    decoder_only = not stack and hasattr(model, "to_tokens")
    if not decoder_only and (ablation is not None or corrupted is None):
        raise ValueError("on models with several inputs, sweep supports denoising and noising with corrupted "
                         "inputs (no ablations)")
    if ablation is None and corrupted is None:
        raise ValueError("patching needs corrupted prompts (or choose an ablation: 'zero', 'mean', 'resample')")
    return decoder_only


def _as_model_inputs(model: Model, clean: Prompts, corrupted: Optional[Prompts], decoder_only: bool) -> tuple:
    """(clean, corrupted) as token ids (decoder-only) or tuples of input tensors, checked to line up."""
    if decoder_only:
        clean_in = prompt_tokens(model, clean, "clean prompts")
        return clean_in, (paired_tokens(model, clean, corrupted)[1] if corrupted is not None else None)
    clean_in, corrupted_in = _as_inputs(clean), _as_inputs(corrupted)
    for i, (c, k) in enumerate(zip(clean_in, corrupted_in)):
        if c.shape != k.shape:
            raise PromptLengthError(f"input {i}: clean shape {tuple(c.shape)} differs from corrupted {tuple(k.shape)}")
    return clean_in, corrupted_in


def _patched_run(model: Model, clean_in: Any, corrupted_in: Any, direction: str, ablation: Optional[str],
                 reference: Optional[Prompts], seed: int) -> tuple[Any, Any, dict]:
    """(base run, patch value, sources) for a direction or an ablation."""
    if ablation is None:
        base, source = (corrupted_in, clean_in) if direction == "denoise" else (clean_in, corrupted_in)
        return base, FromRun("source"), {"source": source}
    if ablation == "zero":
        return clean_in, 0.0, {}
    return clean_in, FromRun("source"), {"source": lambda names: _reference_activations(
        model, names, clean_in, reference, ablation, seed)}


def sweep(
    model: Model,
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
    batch_size: Optional[int] = None,
    seed: int = 0,
    progress: bool = True,
    plan: Optional[str] = None,
) -> PatchResult:
    """Patch one site at a time and record `metric` of the patched logits.

    clean, corrupted: prompts (text, list of texts, or token ids [batch, pos]);
        clean and corrupted must have the same number of tokens (PromptLengthError
        names them otherwise). For models with several inputs (the encoder-decoder),
        tuples of input tensors, and sites prefixed by their stack
        ("decoder.cross_attn.head_z_by_pos", "encoder.resid_pre").
    metric: logits [batch, pos, d_vocab] -> scalar. Metrics from interp.metrics read one
        position; for a plain function the positions it reads are found on the base run;
        either way only those positions are unembedded.
    site: one of SITES (see the module doc and README for axes).
    direction: "denoise" (clean into corrupted) or "noise" (corrupted into clean).
    ablation: "zero", "mean" or "resample": run the clean prompt and patch in
        zeros / the mean over `reference` prompts / a `reference` prompt chosen
        at random per clean prompt (seeded). `reference` defaults to `corrupted`.
    layers, positions: restrict the sweep (default all; negative values count from the end).
    batch_size: sequences per forward pass (patches x prompts); default: as many as fit in
        512 MiB, grouped by the engine's cost model.
    plan: force the engine's strategy ("fused" or "resumed"); default: the cheaper.
    """
    stack, attn, kind = parse_site(site)
    decoder_only = _check_options(model, stack, kind, direction, ablation, batch_size, corrupted)
    with torch.no_grad():
        clean_in, corrupted_in = _as_model_inputs(model, clean, corrupted, decoder_only)
        base, value, sources = _patched_run(model, clean_in, corrupted_in, direction, ablation,
                                            corrupted if reference is None else reference, seed)
        cells = sweep_cells(model, base, kind, metric, value, sources, stack=stack, attn=attn, layers=layers,
                            positions=positions, batch_size=batch_size, plan=plan, progress=progress,
                            desc=f"patching {site}")
    out = cells.out
    if ablation is not None:
        clean_value, corrupted_value = out.base_value, None
    elif direction == "denoise":
        clean_value, corrupted_value = out.source_values["source"], out.base_value
    else:
        clean_value, corrupted_value = out.base_value, out.source_values["source"]
    tokens = str_tokens(model, clean_in) if decoder_only else [str(p) for p in range(cells.n_pos)]
    return PatchResult(
        cells.values, kind.axes, axis_labels(kind.axes, cells.layer_ids, cells.pos_ids, cells.n_units, tokens), site,
        ablation or direction, metric_name(metric), clean_value, corrupted_value, tokens,
    )


@dataclass
class Cells:
    """What `sweep_cells` ran: values [*kind.axes], the engine's output, the layers and
    positions swept, the number of units (heads, neurons; 0 for none) and of positions."""

    values: torch.Tensor
    out: Any
    layer_ids: list[int]
    pos_ids: list[int]
    n_units: int
    n_pos: int


def sweep_cells(model: Model, base: Any, kind: SiteKind, metric: Metric, value: Any, sources: dict, *, stack: str = "",
                attn: str = "attn", layers: Optional[Sequence[int]] = None, positions: Optional[Sequence[int]] = None,
                batch_size: Optional[int] = None, plan: Optional[str] = None, progress: bool = False,
                desc: str = "patching") -> Cells:
    """Patch `value` into one site of `kind` at a time (every layer, position and unit) in the
    base run and read the metric: the loop that `sweep` and the TransformerLens-named
    functions share.

    value: a number, or `FromRun("source")`; sources["source"]: token ids, {hook: activation},
    or a function hook names -> {hook: activation}, called once the names are known.
    """
    decoder_only = not stack and hasattr(model, "to_tokens")
    n_layers = model.n_blocks.get(f"{stack}." if stack else "")
    if n_layers is None:
        raise ValueError(f"the model has no hooks under {stack or 'the top level'} blocks.*")
    layer_ids = site_layers(model, kind, n_layers, layers, stack, attn)
    names = [kind.hook_name(l, stack, attn) for l in layer_ids]
    first = _activation_shape(model, base, names[0], kind) if decoder_only else \
        _activation_shapes(model, base, names)[names[0]]
    n_pos = first[kind.pos_dim - 1]
    pos_ids = resolve_positions(positions, n_pos)
    n_units = first[kind.unit_dim - 1] if kind.unit_dim is not None else 0
    sources = {k: (v(names) if callable(v) else v) for k, v in sources.items()}

    cells, rows = [], []
    for li, (l, name) in enumerate(zip(layer_ids, names)):
        for pi, p in enumerate(pos_ids) if kind.by_pos else [(None, None)]:
            for u in range(n_units) if n_units else [None]:
                cells.append((li,) + ((pi,) if p is not None else ()) + ((u,) if u is not None else ()))
                rows.append([Patch(name, kind.index(len(first) + 1, p, u), value)])
    out = run_patched(model, base, rows, metric, sources=sources, batch_size=batch_size, plan=plan,
                      progress=progress, desc=desc)
    # Filled in the loop's order (layer, pos, unit), then put in the site's axis order.
    loop_axes = [a for a in ("layer", "pos", kind.unit_axis) if a in kind.axes]
    values = torch.empty([len(layer_ids)] + ([len(pos_ids)] if kind.by_pos else []) + ([n_units] if n_units else []),
                         dtype=torch.float64, device="cpu")  # filled from Python numbers: a CPU table
    for cell, v in zip(cells, out.values.tolist()):
        values[cell] = v
    values = values.permute(*[loop_axes.index(a) for a in kind.axes]).contiguous()
    return Cells(values, out, layer_ids, pos_ids, n_units, n_pos)


def sweep_hooked(model: Model, clean: Sequence[torch.Tensor], corrupted: Sequence[torch.Tensor], metric: Metric, site: str,
                 *, direction: str = "denoise", layers: Optional[Sequence[int]] = None,
                 positions: Optional[Sequence[int]] = None, batch_size: Optional[int] = None,
                 progress: bool = True) -> PatchResult:
    """`sweep` with every row run from the model's inputs (tuples of input tensors), for any
    hooked model; on a decoder-only model the same as `sweep(..., plan="fused")`."""
    if hasattr(model, "to_tokens") and len(tuple(clean)) == 1:
        return sweep(model, tuple(clean)[0], tuple(corrupted)[0], metric, site, direction=direction, layers=layers,
                     positions=positions, batch_size=batch_size, progress=progress, plan="fused")
    return sweep(model, tuple(clean), tuple(corrupted), metric, site, direction=direction, layers=layers,
                 positions=positions, batch_size=batch_size, progress=progress)


def _activation_shape(model: Transformer, tokens: torch.Tensor, name: str, kind: SiteKind) -> tuple:
    """The shape (without batch) of a decoder-only model's activation at a site's hook, from its config."""
    cfg, n_pos = model.cfg, tokens.shape[1]
    if kind.act in ("z", "q"):
        return (n_pos, cfg.n_heads, cfg.d_head)
    if kind.act in ("k", "v"):
        return (n_pos, cfg.n_kv_heads, cfg.d_head)
    if kind.act == "pattern":
        return (cfg.n_heads, n_pos, n_pos)
    if kind.act == "post":
        return (n_pos, cfg.d_mlp)
    if kind.act in hook_names.TRANSCODER_ACTS:  # the attached dictionary's width: ask the model
        return _activation_shapes(model, tokens, [name])[name]
    return (n_pos, cfg.d_model)


def _activation_shapes(model: Model, base: Any, names: list[str]) -> dict[str, tuple]:
    """Shapes (without batch) of the activations at `names`, from one run of the first prompt."""
    shapes: dict[str, tuple] = {}

    def record(x: torch.Tensor, hook) -> None:
        shapes[hook.name] = tuple(x.shape[1:])

    inputs = (base[:1],) if isinstance(base, torch.Tensor) else tuple(t[:1] for t in base)
    with model.hooks(fwd_hooks=[(n, record) for n in names]):
        model(*inputs)
    return {n: shapes[model.normalize_name(n)] for n in names}


def _reference_activations(model: Transformer, names: list[str], base: torch.Tensor, reference: Optional[Prompts],
                           ablation: str, seed: int) -> dict[str, torch.Tensor]:
    """Mean ([1, ...]) or resampled ([B, ...]) activations of reference prompts at `names`."""
    if reference is None:
        raise ValueError(f"ablation={ablation!r} needs reference prompts (reference=...)")
    ref = prompt_tokens(model, reference, "reference prompts")
    if ref.shape[1] != base.shape[1]:
        raise PromptLengthError(f"reference prompts have {ref.shape[1]} tokens but the clean prompts have "
                                f"{base.shape[1]}: they must line up position by position")
    acts = model.run_with_cache(ref, names_filter=names, return_type=None)[1]
    if ablation == "mean":
        return {n: acts[n].mean(0, keepdim=True) for n in names}
    gen = torch.Generator().manual_seed(seed)
    rows = torch.randint(0, ref.shape[0], (base.shape[0],), generator=gen)
    return {n: acts[n][rows.to(acts[n].device)] for n in names}


__all__ = ["sweep", "sweep_hooked", "parse_site", "PatchResult", "PromptLengthError", "SITES", "SiteKind",
           "prompt_tokens", "paired_tokens", "axis_labels", "site_layers"]
