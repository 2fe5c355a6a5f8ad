"""Rank every MLP neuron site (layer, position, neuron) of a prompt by how much ablating it
would hurt the answer; or, with `unit="feature"`, every feature site of the transcoders
attached to the model (`probes.sae.attached`).

Methods (`METHODS`), each a score per site, largest = most important:
  "direct"       direct contribution to logit(target) at the last position (the classic
                 "which neurons write the answer"); other positions are not ranked (score -inf);
  "attribution"  attribution patching of zero ablation: g . a, the first-order estimate of
                 log P(target) lost when the site's activation a is set to 0 (g the gradient
                 of log P(target) with respect to a); one forward and one backward pass;
  "mean"         attribution patching of mean ablation: g . (a - mean), means per neuron over
                 reference prompts (`means`);
  "ig"           integrated gradients of log P(target), one layer at a time (all positions of the
                 layer scaled together from 0 to a; `steps` Riemann points);
  "exact"        the top `candidates` of "attribution" re-ranked by the exact drop of the
                 answer's margin (logit(target) - the largest other logit) when each is zeroed alone;
  "greedy"       from those candidates, repeatedly the one that, zeroed together with those
                 already chosen, leaves the smallest margin (exact forward passes, batched).

    ranking = rank_sites(model, "Michael Jordan plays the sport of", "basketball", "greedy", max_sites=20)
    ranking.sites[:3], ranking.scores[:3]
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence, Union

import torch

from interp.attribution import feature_logit_attribution, gradient_times_delta, integrated_gradients
from interp.tokens import answer_token, one_prompt
from interp.checks import resolve_positions
from interp.sites import zero_hooks
from probes.ffn.facts import answer_margins
from models.transformer import Transformer
from probes.ffn.units import Site, check_unit, unit_names, unit_site
from probes.ffn.values import neuron_contributions

METHODS = ("direct", "attribution", "mean", "ig", "exact", "greedy")
Prompt = Union[str, torch.Tensor]


@dataclass
class SiteRanking:
    method: str
    sites: list[Site]  # Neurons (or Features) with positions, most important first
    scores: list[float]  # the method's score of each (greedy: the margin left after adding it)

    def to_dict(self) -> dict:
        return {"method": self.method, "sites": [s.label for s in self.sites], "scores": self.scores}


class Margin:
    """Metric: logit(target) - the largest other logit at the last position, per row [B]."""

    def __init__(self, target: int) -> None:
        self.target = target

    def __call__(self, logits: torch.Tensor) -> torch.Tensor:
        return answer_margins(logits[:, -1], torch.full((logits.shape[0],), self.target, device=logits.device))


def margins(model: Transformer, tokens: torch.Tensor, target: int, rows: list[list[Site]]) -> torch.Tensor:
    """[len(rows)]: the answer's margin with each row's sites zero-ablated (sites need positions),
    one batched forward pass (rows of one prompt)."""
    if not rows:
        return torch.zeros(0, dtype=torch.float64, device=model.device)
    with torch.no_grad(), model.hooks(fwd_hooks=zero_hooks(rows)):
        logits = model(tokens.reshape(1, -1).expand(len(rows), -1))
    return Margin(target)(logits)


def _stack(per_layer: list[Optional[torch.Tensor]]) -> torch.Tensor:
    """Per-layer scores [pos, units] (None for a layer without units) -> [layer, pos, max units],
    -inf where there is no unit."""
    first = next(x for x in per_layer if x is not None)
    width = max(x.shape[1] for x in per_layer if x is not None)
    out = torch.full((len(per_layer), first.shape[0], width), -torch.inf, dtype=torch.float64, device=first.device)
    for l, x in enumerate(per_layer):
        if x is not None:
            out[l, :, :x.shape[1]] = x
    return out


def _gradients(model: Transformer, tokens: torch.Tensor, target: int, unit: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(activations, gradients of log P(target) at the last position), both [layer, pos, units]."""
    acts: dict[str, torch.Tensor] = {}

    def keep(x: torch.Tensor, hook) -> None:
        acts[hook.name] = x

    names = unit_names(model, unit)
    present = [n for n in names if n]
    with torch.enable_grad(), model.hooks(fwd_hooks=[(n, keep) for n in present]):
        logits = model(tokens[None])
        logp = logits[0, -1].log_softmax(-1)[target]
        grads = dict(zip(present, torch.autograd.grad(logp, [acts[n] for n in present])))
    return (_stack([acts[n][0].detach().double() if n else None for n in names]),
            _stack([grads[n][0].double() if n else None for n in names]))


def _integrated_gradients(model: Transformer, tokens: torch.Tensor, target: int, steps: int, unit: str) -> torch.Tensor:
    """[layer, pos, units]: a . mean_k dlogP/dx at x = (k / steps) a, one layer's activations at a time."""
    names = unit_names(model, unit)
    with torch.no_grad():
        _, cache = model.run_with_cache(tokens[None], names_filter=[n for n in names if n], return_type=None)

    def logp(logits: torch.Tensor) -> torch.Tensor:
        return logits[:, -1].log_softmax(-1)[:, target].sum()

    out: list[Optional[torch.Tensor]] = []
    for name in names:
        if name is None:
            out.append(None)
            continue
        (ig,), _ = integrated_gradients(model, tokens[None], [(name, (), cache[name][0])], logp, steps)
        out.append(ig)
    return _stack(out)


def _order(scores: torch.Tensor, k: int, unit: str = "neuron") -> tuple[list[Site], list[float]]:
    """The k best sites of scores [layer, pos, units]."""
    n_pos, width = scores.shape[1], scores.shape[2]
    top = scores.flatten().topk(min(k, int(torch.isfinite(scores).sum())))
    sites = []
    for flat in top.indices.tolist():
        layer, rest = divmod(flat, n_pos * width)
        sites.append(unit_site(unit, layer, rest % width, rest // width))
    return sites, [float(v) for v in top.values]


def site_scores(model: Transformer, prompt: Prompt, target: Union[str, int], method: str = "attribution", *,
                means: Optional[torch.Tensor] = None, steps: int = 16, unit: str = "neuron") -> torch.Tensor:
    """[layer, pos, units]: each site's score by a one-pass method ("direct", "attribution", "mean", "ig");
    units are neurons, or the attached transcoders' features (unit="feature"; -inf in layers without one)."""
    check_unit(unit)
    tokens = one_prompt(model, prompt)
    target_id = answer_token(model, target)
    if method == "direct":
        if unit == "feature":
            dla = feature_logit_attribution(model, tokens[None], target_id)
            direct: list[Optional[torch.Tensor]] = [None] * model.cfg.n_layers
            for i, l in enumerate(dla.layers):
                direct[l] = torch.full((tokens.shape[0], dla.features.shape[1]), -torch.inf, dtype=torch.float64,
                                       device=dla.features.device)
                direct[l][-1] = dla.features[i]
            return _stack(direct)
        scores = torch.full((model.cfg.n_layers, tokens.shape[0], model.cfg.d_mlp), -torch.inf, dtype=torch.float64,
                            device=model.device)
        scores[:, -1] = neuron_contributions(model, tokens[None], target_id).double()
        return scores
    if method in ("attribution", "mean"):
        acts, grads = _gradients(model, tokens, target_id, unit)
        if method == "attribution":
            return gradient_times_delta(grads, acts).masked_fill(~torch.isfinite(acts), -torch.inf)  # -inf: no unit
        if unit != "neuron":
            raise ValueError("method 'mean' ranks neurons only (its means are per neuron); use 'attribution' for features")
        if means is None or tuple(means.shape) != (model.cfg.n_layers, model.cfg.d_mlp):
            raise ValueError(f"method 'mean' needs means [n_layers, d_mlp] = {[model.cfg.n_layers, model.cfg.d_mlp]} "
                             f"(mean activations over reference prompts), got {None if means is None else list(means.shape)}")
        return gradient_times_delta(grads, acts - means.double()[:, None, :])
    if method == "ig":
        return _integrated_gradients(model, tokens, target_id, steps, unit)
    raise ValueError(f"site_scores takes 'direct', 'attribution', 'mean' or 'ig'; got {method!r} (see METHODS)")


def _only(scores: torch.Tensor, positions: Optional[Sequence[int]], exclude: Sequence[Site] = ()) -> torch.Tensor:
    """scores with every position outside `positions` and every excluded site set to -inf (not ranked)."""
    scores = scores.clone()
    for n in exclude:
        scores[n.layer, n.pos, n.index] = -torch.inf
    if positions is None:
        return scores
    keep = torch.zeros(scores.shape[1], dtype=torch.bool, device=scores.device)
    keep[resolve_positions(list(positions), scores.shape[1])] = True
    return scores.masked_fill(~keep[None, :, None], -torch.inf)


def rank_sites(model: Transformer, prompt: Prompt, target: Union[str, int], method: str = "greedy", *, max_sites: int = 20,
               candidates: int = 64, means: Optional[torch.Tensor] = None, steps: int = 16,
               positions: Optional[Sequence[int]] = None, exclude: Sequence[Site] = (),
               unit: str = "neuron") -> SiteRanking:
    """The `max_sites` most important sites by `method` (see the module docstring), most important
    first; only at `positions` if given, never the `exclude`d sites; neurons, or the attached
    transcoders' features (unit="feature")."""
    if method not in METHODS:
        raise ValueError(f"unknown ranking method {method!r}; choose from {', '.join(METHODS)}")
    if max_sites < 1 or candidates < 1:
        raise ValueError(f"max_sites and candidates must be >= 1, got {max_sites} and {candidates}")
    if method not in ("exact", "greedy"):
        scores = site_scores(model, prompt, target, method, means=means, steps=steps, unit=unit)
        return SiteRanking(method, *_order(_only(scores, positions, exclude), max_sites, unit))
    tokens = one_prompt(model, prompt)
    target_id = answer_token(model, target)
    pool, _ = _order(_only(site_scores(model, tokens, target_id, "attribution", unit=unit), positions, exclude),
                     max(candidates, max_sites), unit)
    if method == "exact":
        base = margins(model, tokens, target_id, [[]])[0]
        drops = base - margins(model, tokens, target_id, [[s] for s in pool])
        order = drops.argsort(descending=True)[:max_sites].tolist()
        return SiteRanking(method, [pool[i] for i in order], [float(drops[i]) for i in order])
    chosen: list[Site] = []
    left_after: list[float] = []
    while len(chosen) < max_sites and pool:
        m = margins(model, tokens, target_id, [chosen + [s] for s in pool])
        best = int(m.argmin())
        chosen.append(pool.pop(best))
        left_after.append(float(m[best]))
    return SiteRanking(method, chosen, left_after)


__all__ = ["METHODS", "SiteRanking", "Margin", "margins", "site_scores", "rank_sites"]
