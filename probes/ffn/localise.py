"""The fewest neurons that carry a fact: zero-ablating them moves the answer off top-1 while
the other facts keep their accuracy."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

from interp.sites import Neuron
from probes.ffn.interventions import FactPrompt, Validation, answer_stats, intervention_hooks
from probes.ffn.values import fact_neurons


@dataclass
class Localisation:
    prompt: str
    target: str
    k: Optional[int]  # fewest top neurons whose zero ablation localises the fact (None: none of ks did)
    sites: list[Neuron]  # the top-k neurons used (the largest k tried if not localised)
    validation: Optional[Validation] = None

    def to_dict(self) -> dict:
        return {"prompt": self.prompt, "target": self.target, "k": self.k, "sites": [n.label for n in self.sites]}


def localise(model, prompt: str, target: str, ks: Sequence[int] = (1, 2, 3, 5, 10, 20, 50), *,
             other_facts: dict[str, list[FactPrompt]], counterfactual: Optional[str] = None,
             keep: float = 0.95) -> Localisation:
    """The smallest k in ks for which zero-ablating the top-k `fact_neurons` (at every position)
    moves the answer off top-1 while every group of `other_facts` keeps >= `keep` of its top-1
    accuracy."""
    ranked = fact_neurons(model, prompt, target, max(ks), counterfactual=counterfactual).sites
    fact = [(prompt, target)]
    base = {g: float(answer_stats(model, f)[2].double().mean()) for g, f in other_facts.items() if f}
    for k in sorted(ks):
        hooks = intervention_hooks(ranked[:k], "zero")
        if int(answer_stats(model, fact, hooks)[1][0]) == 0:
            continue
        after = {g: float(answer_stats(model, f, hooks)[2].double().mean()) for g, f in other_facts.items() if f}
        if all(after[g] >= keep * base[g] for g in base):
            return Localisation(prompt, target, k, ranked[:k])
    return Localisation(prompt, target, None, ranked)


__all__ = ["Localisation", "localise"]
