"""Where a fact lives: the fewest MLP neuron sites (or transcoder features, `unit="feature"`
with transcoders attached), at their positions, whose zero ablation
moves the answer off top-1 while every other group of facts keeps >= 95% of its top-1
accuracy (with the same sites ablated at the corresponding positions, see `probes.ffn.layout`).

    loc = localise(model, "Michael Jordan plays the sport of", "basketball", subject="Michael Jordan",
                   other_facts={"same relation": [...], "other relations": [...]})
    loc.k, loc.sites              # e.g. 3, [Neuron(0, 263, pos=2), ...]
    loc.validation.random_flips   # how many of 5 random draws (same layers and positions) also flip it

Sites are ranked by `probes.ffn.rankings` (`method`, default `DEFAULT_METHOD`: the one that
localises most fact-world facts, measured in the README); k runs over 1 .. max_sites, the
prefixes of the ranking are zero-ablated (one batched pass) and the smallest k that moves the
answer off top-1 and passes the specificity check is the result.
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass, field
from typing import Optional, Sequence, Union

import torch

from interp.tokens import answer_token, one_prompt
from models.transformer import Transformer
from probes.ffn.facts import FactBatch, accuracy
from probes.ffn.layout import ROLES, prompt_layout
from probes.ffn.interventions import can_draw_like, layer_means, random_like
from probes.ffn.rankings import SiteRanking, margins, rank_sites
from probes.ffn.units import Site, check_unit

DEFAULT_METHOD = "greedy"
TRIES = 3  # after the first k that moves the answer but costs too much, the larger ks tried
SUBJECT_ROLES = ("first subject token", "middle subject tokens", "last subject token")
Others = dict[str, Union[FactBatch, list]]


@dataclass
class LocalisationCheck:
    """The zero ablation of the chosen sites, against random sites and on the other facts."""

    margin_before: float  # logit(answer) - largest other logit
    margin_after: float
    specificity: dict[str, dict[str, float]]  # group -> {"n", "before", "after"} top-1 accuracy
    random_margins: list[float]  # per random draw: the same number of sites, same layers and positions
    roles: list[str] = field(default_factory=list)  # each site's position role

    @property
    def random_flips(self) -> int:
        """Random draws that also move the answer off top-1."""
        return sum(m < 0 for m in self.random_margins)

    def to_dict(self) -> dict:
        return asdict(self) | {"random_flips": self.random_flips}


@dataclass
class Localisation:
    prompt: str
    target: str
    method: str
    k: Optional[int]  # fewest sites that localise the fact; None if no k <= max_sites did
    sites: list[Site]  # the k sites, Neurons or Features (all max_sites ranked ones if not localised)
    ranking: SiteRanking
    validation: Optional[LocalisationCheck] = None
    reason: str = ""  # why not localised ("" if it is)
    left_out: list[Site] = field(default_factory=list)  # sites the repairs left out (they cost other facts)

    def to_dict(self) -> dict:
        return {"prompt": self.prompt, "target": self.target, "method": self.method, "k": self.k,
                "sites": [s.label for s in self.sites], "ranking": self.ranking.to_dict(),
                "validation": None if self.validation is None else self.validation.to_dict(),
                "reason": self.reason, "left_out": [s.label for s in self.left_out]}


def _groups(model: Transformer, other_facts: Optional[Others]) -> dict[str, FactBatch]:
    return {g: FactBatch.of(model, f) for g, f in (other_facts or {}).items()}


def _smallest_k(model: Transformer, prefix: torch.Tensor, sites: list[Site], groups: dict, base: dict, source, keep: float):
    """(k, reason, the groups' accuracy after, the first k that moved the answer but cost too much or None)."""
    reason, after, failed = "", None, None
    for j in range(1, len(sites) + 1):
        if prefix[j] >= 0:
            continue
        after = accuracy(model, groups, sites[:j], source)
        costly = [g for g in base if after[g] < keep * base[g]]
        if not costly:
            return j, "", after, None
        if failed is None:
            failed = j
            reason = f"k={j} moves the answer off top-1 but costs " + ", ".join(
                f"{g} {base[g]:.3f} -> {after[g]:.3f}" for g in costly)
        elif j >= failed + TRIES:
            break
    if not reason:
        reason = f"the answer stays top-1 with all {len(sites)} sites zeroed (margin {float(prefix[-1]):+.2f})"
    return None, reason, after, failed


def _active_features(model: Transformer, tokens: torch.Tensor, sites) -> dict:
    """{(layer, pos): the features active there in this prompt}: random features drawn from all 512
    would mostly be silent (TopK keeps ~32), and zeroing a silent feature does nothing."""
    names = sorted({s.hook_name() for s in sites})
    with torch.no_grad():
        _, cache = model.run_with_cache(tokens[None], names_filter=names, return_type=None)
    return {(s.layer, s.pos): cache[s.hook_name()][0, s.pos].nonzero().flatten().tolist() for s in sites}


def localise(model: Transformer, prompt: str, target: str, *, max_sites: int = 20, method: str = DEFAULT_METHOD,
             other_facts: Optional[Others] = None, subject: Optional[str] = None, keep: float = 0.95,
             n_random: int = 5, seed: int = 0, candidates: int = 64, means: Optional[torch.Tensor] = None,
             roles: Optional[Sequence[str]] = None, repairs: int = 3,
             ranking: Optional[SiteRanking] = None, unit: str = "neuron") -> Localisation:
    """The smallest k <= max_sites such that zero-ablating the top-k sites of `method`'s ranking
    at their positions moves `target` off top-1, while each group of `other_facts`
    ({group: [(prompt, answer[, subject]), ...]} or a `FactBatch`) keeps >= `keep` of its top-1
    accuracy with the sites ablated at corresponding positions. `subject` (text in the prompt)
    gives positions their roles for other templates; without it positions count from the end.
    `roles` (e.g. the subject's: `SUBJECT_ROLES`) limits the sites to positions of those roles.
    When the smallest k that moves the answer costs the other facts too much, the sites of that
    prefix that cost them most on their own are left out and the ranking is redone (at most
    `repairs` times; not with a given `ranking`). The result's `validation` compares the zero
    ablation with `n_random` random draws at the same layers and positions. `unit="feature"`
    localises with the features of the transcoders attached to the model (`probes.sae.attached`)
    instead of neurons; its random draws are among the features active at each position."""
    check_unit(unit)
    tokens = one_prompt(model, prompt)
    target_id = answer_token(model, target)
    if not 0 < keep <= 1:
        raise ValueError(f"keep must be in (0, 1], got {keep}")
    before = float(margins(model, tokens, target_id, [[]])[0])
    if before <= 0:
        raise ValueError(f"{target!r} is not the model's top-1 answer to {prompt!r} (margin {before:+.2f}): "
                         "there is nothing to localise")
    source = prompt_layout(model, prompt, subject)
    groups = _groups(model, other_facts)
    positions = None
    if roles is not None:
        unknown = set(roles) - set(ROLES)
        if unknown:
            raise ValueError(f"unknown position roles {sorted(unknown)}; choose from {', '.join(ROLES)}")
        positions = [p for p in range(source.n_pos) if source.roles[p] in roles]
        if not positions:
            raise ValueError(f"no position of {prompt!r} has the roles {list(roles)} (its roles: {list(source.roles)}; "
                             "give the subject for subject roles)")
    if ranking is None and method == "mean" and means is None:
        means = layer_means(model, [f.prompt for b in groups.values() for f in b.facts] or [prompt])
    base = accuracy(model, groups)
    given, excluded = ranking, []
    for _ in range(1 + (repairs if given is None else 0)):
        ranking = given or rank_sites(model, tokens, target_id, method, max_sites=max_sites, candidates=candidates,
                                      means=means, positions=positions, exclude=excluded, unit=unit)
        sites = ranking.sites[:max_sites]
        prefix = torch.cat([torch.tensor([before], dtype=torch.float64, device=model.device),
                            margins(model, tokens, target_id, [sites[:k] for k in range(1, len(sites) + 1)])])
        k, reason, after, failed = _smallest_k(model, prefix, sites, groups, base, source, keep)
        if k is not None or failed is None:
            break
        # Repair: leave out the sites of the failing prefix that, on their own, lower the other facts'
        # margins most (the mean drop over facts still right before; summed over groups).
        cost = []
        for site in sites[:failed]:
            drop = 0.0
            for b in groups.values():
                unablated = b.margins(model)
                right = unablated > 0
                if right.any():
                    drop += float((unablated - b.margins(model, [site], source))[right].clamp_min(0).mean())
            cost.append(drop)
        worst = sorted(range(len(cost)), key=lambda i: -cost[i])[:2]
        excluded += [sites[i] for i in worst]
    chosen = sites[:k] if k else sites
    if k is None:
        after = accuracy(model, groups, chosen, source)
    spec = {g: {"n": len(groups[g]), "before": base[g], "after": after[g]} for g in base}
    rng = random.Random(seed)
    pools = _active_features(model, tokens, chosen) if unit == "feature" else None
    draws = [random_like(model, chosen, rng, pools) for _ in range(n_random)] if can_draw_like(model, chosen, pools) else []
    rand = margins(model, tokens, target_id, draws).tolist() if draws else []
    check = LocalisationCheck(float(prefix[0]), float(prefix[len(chosen)]), spec, rand,
                              [source.role(s.pos) for s in chosen])
    return Localisation(prompt, target, ranking.method, k, chosen, ranking, check, reason, excluded)


__all__ = ["Localisation", "LocalisationCheck", "localise", "DEFAULT_METHOD", "SUBJECT_ROLES"]
