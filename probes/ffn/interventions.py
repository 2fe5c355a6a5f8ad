"""Ablating and amplifying MLP neurons, with the answer's probability and rank, random baselines
from the same layers, and the other facts' accuracy (specificity).

The facts to check specificity on are given by the caller as groups of (prompt, answer):
this module knows no knowledge base (`analyses.factworld_facts` builds the fact world's).
"""

from __future__ import annotations

import random
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass
from typing import Optional, Sequence

import torch

from interp import names as hook_names
from interp.sites import Neuron, zero_hooks
from interp.tokens import answer_token, cached_batches
from models.transformer import Transformer, last_token_logits
from probes.ffn.facts import FactBatch, FactPrompt, accuracy, as_fact
from probes.ffn.layout import prompt_layout
from probes.ffn.units import Site, unit_width
from probes.ffn.keys import check_neurons

MODES = ("zero", "mean", "scale")


def intervention_hooks(neurons: Sequence[Neuron], mode: str, means: Optional[dict[Neuron, float]] = None,
                       factor: float = 2.0) -> list:
    """Hooks that set the neurons' activations (hook_post) at their position, or at every position
    for a neuron without one: "zero", "mean" (needs `means`), or "scale" (x factor)."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if mode == "mean" and means is None:
        raise ValueError("mode='mean' needs means={Neuron: mean activation}")
    if mode == "zero":
        return zero_hooks([list(neurons)], every_row=True)
    by_layer: dict[int, list[Neuron]] = defaultdict(list)
    for n in neurons:
        by_layer[n.layer].append(n)
    hooks = []
    for layer, group in by_layer.items():
        def hook(x: torch.Tensor, hook, group=group) -> torch.Tensor:
            x = x.clone()
            for n in group:
                idx = (Ellipsis, n.index) if n.pos is None else (slice(None), n.pos, n.index)
                if mode == "mean":
                    x[idx] = means[Neuron(n.layer, n.index)]
                else:
                    x[idx] = x[idx] * factor
            return x

        hooks.append((hook_names.act_name("post", layer), hook))
    return hooks


def mean_activations(model: Transformer, neurons: Sequence[Neuron], prompts: Sequence[str]) -> dict[Neuron, float]:
    """Each neuron's mean activation over all real tokens of `prompts`, keyed by Neuron(layer, index)."""
    means = layer_means(model, prompts)
    return {Neuron(n.layer, n.index): float(means[n.layer, n.index]) for n in check_neurons(model, neurons)}


def layer_means(model: Transformer, prompts: Sequence[str], batch_size: int = 512) -> torch.Tensor:
    """[n_layers, d_mlp]: every neuron's mean activation (hook_post) over all real tokens of `prompts`."""
    if not prompts:
        raise ValueError("layer_means needs at least one prompt")
    names = [hook_names.act_name("post", l) for l in range(model.cfg.n_layers)]
    total = torch.zeros(model.cfg.n_layers, model.cfg.d_mlp, dtype=torch.float64, device=model.device)
    count = 0.0
    for batch, cache in cached_batches(model, prompts, names, batch_size):
        weight = batch.real.double().to(cache[names[0]].device)
        total += torch.stack([torch.einsum("bp,bpn->n", weight, cache[n].double()) for n in names])
        count += float(weight.sum())
    return total / count


def answer_stats(model: Transformer, facts: Sequence[FactPrompt], hooks: Sequence = (),
                 batch_size: int = 512) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """For each (prompt, answer): probability of the answer, its rank (0 = top-1) and whether it is top-1."""
    if not facts:
        empty = torch.zeros(0, dtype=model.W_U.dtype, device=model.device)
        return empty, empty.long(), empty.bool()
    facts = [as_fact(f) for f in facts]
    ids = torch.tensor([answer_token(model, f.answer) for f in facts], device=model.device)
    with torch.no_grad(), model.hooks(fwd_hooks=list(hooks)):
        logits = last_token_logits(model, [f.prompt for f in facts], batch_size)
    probs = logits.softmax(-1)
    rows = torch.arange(len(facts), device=logits.device)
    p = probs[rows, ids.to(logits.device)]
    rank = (logits > logits[rows, ids.to(logits.device)][:, None]).sum(-1)
    return p, rank, rank == 0


@dataclass
class Intervention:
    mode: str  # "zero", "mean" or "x2"
    p_before: float
    p_after: float
    rank_before: int
    rank_after: int
    random_p_after: list[float]  # the same number of random neurons from the same layers, per draw
    random_rank_after: list[int]


@dataclass
class Validation:
    prompt: str
    target: str
    neurons: list[Neuron]
    interventions: list[Intervention]
    specificity: dict[str, dict[str, float]]  # group -> {"n", "before", "after"} top-1 accuracy, zero ablation
    localised: bool  # zero ablation moves the answer off top-1 and the others keep >= 95% of their accuracy

    def to_dict(self) -> dict:
        return {"prompt": self.prompt, "target": self.target, "neurons": [n.label for n in self.neurons],
                "interventions": [asdict(i) for i in self.interventions], "specificity": self.specificity,
                "localised": self.localised}


Pools = Optional[dict[tuple[int, Optional[int]], Sequence[int]]]


def _pool(model: Transformer, kind, layer: int, pos: Optional[int], pools: Pools) -> Sequence[int]:
    return pools[(layer, pos)] if pools is not None else range(unit_width(model, kind(layer, 0)))


def random_like(model: Transformer, sites: Sequence[Site], rng: random.Random, pools: Pools = None) -> list[Site]:
    """As many random units (neurons, or features) per (layer, position) as `sites` has there, none
    of them; drawn from pools[(layer, pos)] if given (e.g. the features active there), else from all."""
    counts = Counter((type(n), n.layer, n.pos) for n in sites)
    out = []
    for (kind, layer, pos), count in counts.items():
        taken = {n.index for n in sites if type(n) is kind and n.layer == layer and (n.pos == pos or n.pos is None or pos is None)}
        pool = [i for i in _pool(model, kind, layer, pos, pools) if i not in taken]
        if len(pool) < count:
            raise ValueError(f"cannot draw {count} random {kind.UNIT}s of layer {layer} at position {pos}: only "
                             f"{len(pool)} others exist")
        out += [kind(layer, i, pos) for i in rng.sample(pool, count)]
    return out


def can_draw_like(model: Transformer, sites: Sequence[Site], pools: Pools = None) -> bool:
    """Whether `random_like` can draw a set like `sites` (at least as many other units everywhere
    as it has there; with no pools, at least twice as many units as it has)."""
    counts = Counter((type(n), n.layer, n.pos) for n in sites)
    if pools is None:
        return all(2 * c <= unit_width(model, kind(layer, 0)) for (kind, layer, _), c in counts.items())
    chosen = {(n.layer, n.pos, n.index) for n in sites}
    return all(len([i for i in pools[(layer, pos)] if (layer, pos, i) not in chosen]) >= c
               for (_, layer, pos), c in counts.items())


def specificity(model: Transformer, other_facts: dict[str, Sequence], neurons: Sequence[Neuron], prompt: str,
                subject: Optional[str] = None) -> dict[str, dict[str, float]]:
    """Top-1 accuracy of each group of other facts before and after zero-ablating the neurons
    (Neurons at a position of `prompt`: at the corresponding positions, see `probes.ffn.layout`)."""
    groups = {g: FactBatch.of(model, f) for g, f in other_facts.items()}
    source = prompt_layout(model, prompt, subject)
    before, after = accuracy(model, groups), accuracy(model, groups, neurons, source)
    return {g: {"n": len(groups[g]), "before": before[g], "after": after[g]} for g in before}


def validate(model: Transformer, prompt: str, target: str, neurons: Sequence[Neuron], *,
             other_facts: dict[str, Sequence], subject: Optional[str] = None, n_random: int = 5, seed: int = 0,
             factor: float = 2.0, keep: float = 0.95) -> Validation:
    """Ablate (zero, mean) and amplify (x factor) the neurons (at their positions, or every
    position); report the target's probability and rank against random neurons from the same
    layers and positions, and the top-1 accuracy of the other facts before and after zero ablation.

    other_facts: {group: [(prompt, answer[, subject])]}; may be empty (no specificity check).
    Neurons with a position are ablated at the corresponding positions of the other facts
    (`subject` gives this prompt's positions their roles; see `probes.ffn.layout`). Means for
    "mean" ablation are taken over all tokens of the other facts' prompts (or of this prompt
    if there are none).
    """
    neurons = check_neurons(model, neurons)
    if not neurons:
        raise ValueError("no neurons to validate")
    rng = random.Random(seed)
    randoms = [random_like(model, neurons, rng) for _ in range(n_random)]
    reference = [as_fact(f).prompt for group in other_facts.values() for f in group] or [prompt]
    means = mean_activations(model, neurons + [n for r in randoms for n in r], reference)
    fact = [(prompt, target)]
    p0, r0, _ = answer_stats(model, fact)
    interventions = []
    for mode, label in (("zero", "zero"), ("mean", "mean"), ("scale", f"x{factor:g}")):
        p1, r1, _ = answer_stats(model, fact, intervention_hooks(neurons, mode, means, factor))
        rand = [answer_stats(model, fact, intervention_hooks(r, mode, means, factor)) for r in randoms]
        interventions.append(Intervention(label, float(p0), float(p1), int(r0), int(r1),
                                          [float(p) for p, _, _ in rand], [int(r) for _, r, _ in rand]))
    spec = specificity(model, other_facts, neurons, prompt, subject)
    kept = all(s["after"] >= keep * s["before"] for s in spec.values() if s["n"])
    zero = interventions[0]
    return Validation(prompt, target, neurons, interventions, spec, zero.rank_after > 0 and kept)


__all__ = ["FactPrompt", "intervention_hooks", "mean_activations", "layer_means", "answer_stats", "Intervention", "Validation",
           "random_like", "can_draw_like", "specificity", "validate"]
