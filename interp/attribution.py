"""Attribution patching and direct logit attribution.

Attribution patching (Nanda 2023; Syed et al. 2023) estimates every activation
patch of a sweep at once, to first order: for a site with base activation a,
source activation a' and the metric's gradient g at the base run,

    metric(patched) ~ metric(base) + sum over the site's elements of (a' - a) * g

One forward and one backward pass for every head, position and neuron. The
results are `PatchResult`s on the same scale as `interp.patching.sweep` (the
estimated metric after the patch), so `agreement(estimate, actual)` can say
how far the approximation can be trusted on a given model and prompt.

Direct logit attribution splits the logit difference at one position into what
every head, neuron and bias writes to the residual stream, read through the
final norm with its scale frozen from the run. Nothing needs folding: the parts
plus the bias terms add up to the true logit difference.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional, Sequence

import torch

from interp import names as hook_names
from interp.cache import frozen_norm
from interp.metrics import Tokens, metric_name, scalar, token_ids
from interp.patching import (
    DIRECTIONS, Metric, PatchResult, Prompts, _check_site, axis_labels, parse_site, positions_of, site_layers,
)
from interp.results import LabelledResult
from interp.sites import Feature
from interp.tokens import paired_tokens, prompt_tokens, str_tokens, token_text
from models import Transformer


# ============================================================ attribution patching
def attribution_patch(
    model: Transformer,
    clean: Prompts,
    corrupted: Prompts,
    metric: Metric,
    site: str = "head_z_by_pos",
    *,
    direction: str = "denoise",
    layers: Optional[Sequence[int]] = None,
    positions: Optional[Sequence[int]] = None,
) -> PatchResult:
    """First-order estimate of `interp.patching.sweep(model, clean, corrupted, metric, site, ...)`.

    Same sites, axes and labels as the sweep; `values` holds the estimated metric
    after each patch and `method` says "attribution patching".
    """
    stack, attn, kind = parse_site(site)
    if stack or attn != "attn":
        raise ValueError(f"attribution patching runs on decoder-only Transformers; site {site!r} names another stack")
    _check_site(model, stack, kind)
    if direction not in DIRECTIONS:
        raise ValueError(f"direction must be one of {DIRECTIONS}, got {direction!r}")
    clean_tokens, corrupted_tokens = paired_tokens(model, clean, corrupted)
    base, source = (corrupted_tokens, clean_tokens) if direction == "denoise" else (clean_tokens, corrupted_tokens)
    layer_ids = site_layers(model, kind, model.cfg.n_layers, layers)
    pos_ids = positions_of(positions, base.shape[1])
    names = [kind.hook_name(l) for l in layer_ids]

    with torch.enable_grad():
        base_logits, base_cache = model.run_with_cache(base, names_filter=names, incl_bwd=True, metric=metric)
    with torch.no_grad():
        source_logits, source_cache = model.run_with_cache(source, names_filter=names)
        base_value, source_value = scalar(metric(base_logits)), scalar(metric(source_logits))

        per_layer = []
        for name in names:
            contrib = (source_cache[name] - base_cache[name]) * base_cache[name + "_grad"]
            keep = ([kind.pos_dim] if kind.by_pos else []) + ([kind.unit_dim] if kind.unit_dim is not None else [])
            summed = contrib.sum(dim=[d for d in range(contrib.dim()) if d not in keep])
            if len(keep) == 2 and keep[0] > keep[1]:  # put position before head (the pattern is [head, q_pos])
                summed = summed.T
            if kind.by_pos:
                summed = summed[pos_ids]
            per_layer.append(summed)
        values = (base_value + torch.stack(per_layer)).to(torch.float64)

    clean_value, corrupted_value = (source_value, base_value) if direction == "denoise" else (base_value, source_value)
    n_units = values.shape[-1] if kind.unit_dim is not None else 0
    tokens = str_tokens(model, clean_tokens)
    return PatchResult(
        values, kind.axes, axis_labels(kind.axes, layer_ids, pos_ids, n_units, tokens), site, direction,
        metric_name(metric), clean_value, corrupted_value, tokens, method="attribution patching",
    )


@dataclass
class Agreement:
    """How well an estimate of patching effects matches the real thing."""

    pearson: float
    spearman: float
    top_k_overlap: float  # fraction of the true top-k sites (by |effect|) that the estimate also ranks in its top k
    k: int
    n: int

    def __str__(self) -> str:
        return (f"Pearson {self.pearson:.3f}, Spearman {self.spearman:.3f}, "
                f"top-{self.k} overlap {self.top_k_overlap:.0%} over {self.n} sites")


def _pearson(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a - a.mean(), b - b.mean()
    denom = a.norm() * b.norm()
    return float((a * b).sum() / denom) if denom > 0 else float("nan")


def _ranks(x: torch.Tensor) -> torch.Tensor:
    """Ranks 0..n-1, ties given their average rank."""
    order = x.argsort()
    ranks = torch.empty_like(x)
    ranks[order] = torch.arange(len(x), dtype=x.dtype)
    for v in x.unique()[x.unique(return_counts=True)[1] > 1]:  # average over ties
        ranks[x == v] = ranks[x == v].mean()
    return ranks


def agreement(estimate: PatchResult, actual: PatchResult, k: int = 10) -> Agreement:
    """Pearson and Spearman correlation of the two results' effects, and top-k overlap."""
    if estimate.values.shape != actual.values.shape:
        raise ValueError(f"results have different shapes: {tuple(estimate.values.shape)} vs {tuple(actual.values.shape)}")
    a = estimate.effect.flatten().double()
    b = actual.effect.flatten().double()
    k = min(k, len(a))
    top_a = set(a.abs().argsort(descending=True)[:k].tolist())
    top_b = set(b.abs().argsort(descending=True)[:k].tolist())
    return Agreement(_pearson(a, b), _pearson(_ranks(a), _ranks(b)), len(top_a & top_b) / k if k else float("nan"), k, len(a))


# ============================================================ direct logit attribution
@dataclass
class Attribution(LabelledResult):
    """A labelled tensor of direct attributions (the values are effects: no baseline)."""

    values: torch.Tensor
    axes: tuple[str, ...]
    labels: dict[str, list[str]]
    title: str = ""
    metric_name: str = "direct logit attribution"
    method: str = "direct logit attribution"


class _ToAnswer:
    """Names a direct attribution by its answer (and counterfactual)."""

    answer: str
    counterfactual: Optional[str]

    @property
    def metric_name(self) -> str:
        what = self.answer if self.counterfactual is None else f"{self.answer} - {self.counterfactual}"
        return f"direct logit attribution to {what}"

    @property
    def title(self) -> str:
        return self.metric_name


@dataclass
class DirectLogitAttribution(_ToAnswer, LabelledResult):
    """What each component writes to logit[answer] - logit[counterfactual] at one position,
    through the final norm with its scale frozen from the run (mean over the prompts).

    heads [n_layers, n_heads], neurons [n_layers, d_mlp], attn_bias / mlp_bias
    [n_layers] (b_O, b_out), embed / pos_embed / final_bias (ln_final.b and b_U)
    floats; `total()` of all of them equals `logit_diff`. As a labelled result its
    values are the heads ([layer, head]).
    """

    heads: torch.Tensor
    neurons: torch.Tensor
    attn_bias: torch.Tensor
    mlp_bias: torch.Tensor
    embed: float
    pos_embed: float
    final_bias: float
    logit_diff: float
    tokens: list[str]
    answer: str
    counterfactual: Optional[str]
    method: str = "direct logit attribution"
    axes: tuple[str, ...] = ("layer", "head")

    @property
    def values(self) -> torch.Tensor:
        return self.heads

    @property
    def labels(self) -> dict[str, list[str]]:
        n_layers, n_heads = self.heads.shape
        return axis_labels(("layer", "head"), range(n_layers), [], n_heads, self.tokens)


    @property
    def attn(self) -> torch.Tensor:
        """Per layer: all heads plus b_O, [n_layers]."""
        return self.heads.sum(-1) + self.attn_bias

    @property
    def mlp(self) -> torch.Tensor:
        """Per layer: all neurons plus b_out, [n_layers]."""
        return self.neurons.sum(-1) + self.mlp_bias

    def total(self) -> float:
        return float(self.attn.sum() + self.mlp.sum()) + self.embed + self.pos_embed + self.final_bias

    def head_result(self) -> Attribution:
        """The heads as a labelled [layer, head] result (plots like a patching result; `top`
        ranks the largest attributions, as they are effects already)."""
        return Attribution(self.heads, self.axes, self.labels, self.title, self.metric_name)

    def neuron_result(self) -> Attribution:
        """The neurons as a labelled [layer, neuron] result."""
        n_layers, d_mlp = self.neurons.shape
        labels = axis_labels(("layer", "neuron"), range(n_layers), [], d_mlp, self.tokens)
        return Attribution(self.neurons, ("layer", "neuron"), labels, self.title, self.metric_name)

    def _extra_dict(self) -> dict[str, Any]:
        return {
            "answer": self.answer, "counterfactual": self.counterfactual, "logit_diff": self.logit_diff,
            "sum_of_parts": self.total(), "tokens": self.tokens, "heads": self.heads.tolist(),
            "attn_bias": self.attn_bias.tolist(), "mlp": self.mlp.tolist(), "attn": self.attn.tolist(),
            "mlp_bias": self.mlp_bias.tolist(), "embed": self.embed, "pos_embed": self.pos_embed,
            "final_bias": self.final_bias,
            "top_neurons": [
                {"layer": l, "neuron": n, "attribution": float(self.neurons[l, n])}
                for l, n in _top_indices(self.neurons, 20)
            ],
        }


def _top_indices(x: torch.Tensor, k: int) -> list[tuple[int, int]]:
    flat = x.flatten().abs().argsort(descending=True)[:k]
    return [tuple(int(i) for i in torch.unravel_index(j, x.shape)) for j in flat]


class _Readout:
    """What a residual-stream component written at position `pos` adds to logit[answer] -
    logit[counterfactual], through the final norm with its scale frozen from one run of the
    prompts (answer / counterfactual: a word or id, or one per prompt)."""

    def __init__(self, model: Transformer, prompts: Prompts, answer: Tokens, counterfactual: Optional[Tokens],
                 pos: int, names_filter=None) -> None:
        if model.cfg.norm_position != "pre":
            raise ValueError("direct logit attribution needs a pre-norm model: with post-norm the residual is "
                             "renormalised after every block and is not a sum of components")
        self.tokens = tokens = prompt_tokens(model, prompts)
        batch = tokens.shape[0]

        def per_prompt(ids: torch.Tensor, what: str) -> torch.Tensor:
            if ids.numel() not in (1, batch):
                raise ValueError(f"{ids.numel()} {what} tokens for {batch} prompts: give one, or one per prompt")
            return ids.expand(batch)

        self.a_ids = per_prompt(token_ids(answer, model), "answer")
        self.c_ids = per_prompt(token_ids(counterfactual, model), "counterfactual") if counterfactual is not None else None
        W_U = model.W_U.detach()
        self.direction = W_U[:, self.a_ids.to(model.device)].T  # [batch, d_model]
        if self.c_ids is not None:
            self.direction = self.direction - W_U[:, self.c_ids.to(model.device)].T
        cfg = model.cfg
        with torch.no_grad():
            self.logits, self.cache = model.run_with_cache(tokens, names_filter=names_filter)
        self.scale = (self.cache["ln_final.hook_scale"][:, pos] if cfg.final_norm  # [batch, 1]
                      else torch.ones(batch, 1, dtype=self.logits.dtype, device=self.logits.device))
        self.w = model.ln_final.w.detach() if cfg.final_norm else None
        self.centre = cfg.final_norm and cfg.norm == "layernorm"
        self.pos, self.batch = pos, batch

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """x [..., batch, d_model] written at position pos -> its direct attribution [..., batch]."""
        return (frozen_norm(x, self.scale, self.w, self.centre) * self.direction).sum(-1)

    def per_unit(self, acts: torch.Tensor, W: torch.Tensor) -> torch.Tensor:
        """Units that write acts[b, u] * W[u] (neurons: hook_post and W_out; features: their
        activations and W_dec): acts [batch, units], W [units, d_model] -> [batch, units]."""
        return torch.stack([  # one prompt at a time, to bound memory
            acts[b] * (frozen_norm(W, self.scale[b], self.w, self.centre) @ self.direction[b]) for b in range(self.batch)])

    def logit_diff(self) -> float:
        picked = self.logits[torch.arange(self.batch), self.pos, self.a_ids]
        if self.c_ids is not None:
            picked = picked - self.logits[torch.arange(self.batch), self.pos, self.c_ids]
        return float(picked.double().mean())


def direct_logit_attribution(
    model: Transformer,
    prompts: Prompts,
    answer: Tokens,
    counterfactual: Optional[Tokens] = None,
    pos: int = -1,
) -> DirectLogitAttribution:
    """Direct logit attribution of every head, neuron and bias to logit[answer] (minus
    logit[counterfactual]) at position `pos`, mean over the prompts.

    answer / counterfactual: a word or id, or one per prompt. Needs a pre-norm model
    (in a post-norm model the residual is renormalised after every block).
    """
    readout = _Readout(model, prompts, answer, counterfactual, pos)
    cache, batch, cfg = readout.cache, readout.batch, model.cfg
    with torch.no_grad():
        heads, neurons, attn_bias, mlp_bias = [], [], [], []
        for l in range(cfg.n_layers):
            heads.append(readout(cache.head_results(l)[:, pos].transpose(0, 1)).mean(-1))  # [head, batch] -> [head]
            attn_bias.append(readout(model.get_parameter(hook_names.param_name("attn.b_O", l)).detach().expand(batch, -1)).mean(-1))
            W_out = model.get_parameter(hook_names.param_name("mlp.W_out", l)).detach()
            neurons.append(readout.per_unit(cache[hook_names.act_name("post", l)][:, pos], W_out).mean(0))
            mlp_bias.append(readout(model.get_parameter(hook_names.param_name("mlp.b_out", l)).detach().expand(batch, -1)).mean(-1))
        embed = float(readout(cache["hook_embed"][:, pos]).mean())
        pos_embed = float(readout(cache["hook_pos_embed"][:, pos]).mean()) if "hook_pos_embed" in cache else 0.0
        final_bias = float(cache.logit_bias(readout.a_ids, readout.c_ids).double().mean())
    a_ids, c_ids = readout.a_ids, readout.c_ids
    return DirectLogitAttribution(
        torch.stack(heads).double(), torch.stack(neurons).double(), torch.stack(attn_bias).double(),
        torch.stack(mlp_bias).double(), embed, pos_embed, final_bias, readout.logit_diff(),
        str_tokens(model, readout.tokens), token_text(model, a_ids[0]),
        token_text(model, c_ids[0]) if c_ids is not None else None,
    )


@dataclass
class FeatureLogitAttribution(_ToAnswer, LabelledResult):
    """What each feature of the attached transcoders writes to logit[answer] -
    logit[counterfactual] at one position (mean over the prompts), like the neurons of
    `DirectLogitAttribution`: features [layer, feature] for the attached layers (`layers`),
    and per layer the reconstruction error and the rest of the transcoder's output (decoder
    bias, skip path) [layer]; `mlp` (their sum) is the MLP output's direct attribution.
    """

    features: torch.Tensor
    error: torch.Tensor
    rest: torch.Tensor
    layers: list[int]
    tokens: list[str]
    answer: str
    counterfactual: Optional[str]
    method: str = "direct logit attribution"
    axes: tuple[str, ...] = ("layer", "feature")

    @property
    def values(self) -> torch.Tensor:
        return self.features

    @property
    def labels(self) -> dict[str, list[str]]:
        return axis_labels(self.axes, self.layers, [], self.features.shape[1], self.tokens)

    @property
    def mlp(self) -> torch.Tensor:
        """Per attached layer: features + error + rest, the MLP output's attribution [layer]."""
        return self.features.sum(-1) + self.error + self.rest

    def _extra_dict(self) -> dict[str, Any]:
        return {"answer": self.answer, "counterfactual": self.counterfactual, "tokens": self.tokens,
                "layers": self.layers, "error": self.error.tolist(), "rest": self.rest.tolist(),
                "mlp": self.mlp.tolist(),
                "top_features": [{"layer": self.layers[i], "feature": f, "attribution": float(self.features[i, f])}
                                 for i, f in _top_indices(self.features, 20)]}


def feature_logit_attribution(
    model: Transformer,
    prompts: Prompts,
    answer: Tokens,
    counterfactual: Optional[Tokens] = None,
    pos: int = -1,
) -> FeatureLogitAttribution:
    """Direct logit attribution of every feature of the transcoders attached to `model`
    (`probes.sae.attached`): feature f of layer l writes acts[f] * W_dec[f], read through the
    final norm with its scale frozen from the run. Same arguments as `direct_logit_attribution`."""
    layers = Feature.attached_layers(model)
    if not layers:
        raise ValueError("no transcoder is attached: run inside `with probes.sae.attached(model, transcoders):`")
    names = ["ln_final.hook_scale"] * bool(model.cfg.final_norm) + [hook_names.act_name(a, l) for l in layers
                                       for a in ("feature_acts", "error", "mlp_out")]
    readout = _Readout(model, prompts, answer, counterfactual, pos, names_filter=names)
    cache = readout.cache
    features, error, rest = [], [], []
    with torch.no_grad():
        for l in layers:
            acts = cache[hook_names.act_name("feature_acts", l)][:, pos]  # [batch, n_features]
            W_dec = model.get_submodule(f"blocks.{l}.transcoder").W_dec.detach().to(acts.dtype)
            written = acts @ W_dec
            err = cache[hook_names.act_name("error", l)][:, pos]
            features.append(readout.per_unit(acts, W_dec).mean(0))
            error.append(readout(err).mean(-1))
            rest.append(readout(cache[hook_names.act_name("mlp_out", l)][:, pos] - written - err).mean(-1))
    c_ids = readout.c_ids
    return FeatureLogitAttribution(
        torch.stack(features).double(), torch.stack(error).double(), torch.stack(rest).double(), layers,
        str_tokens(model, readout.tokens), token_text(model, readout.a_ids[0]),
        token_text(model, c_ids[0]) if c_ids is not None else None)


__all__ = ["attribution_patch", "agreement", "Agreement", "direct_logit_attribution", "DirectLogitAttribution",
           "Attribution", "feature_logit_attribution", "FeatureLogitAttribution"]
