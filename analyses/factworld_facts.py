"""The fact world's data, shaped for the generic probes: prompts, the facts to check
specificity on, and the relation-wide localisation view.

The probes take plain (prompt, subject, answer) data; this module is where the
fact-world knowledge base turns into it.
"""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path
from typing import Optional, Sequence, Union

import torch

from interp.progress import progress_bar
from interp.results import write_json
from models import Transformer, factworld
from models.factworld.editing import parse_prompt
from probes.ffn import DEFAULT_METHOD, ROLES, FactBatch, FactPrompt, layer_means, localise
from probes.ffn.units import site_from_label


def is_factworld(model: Union[Transformer, str, Path]) -> bool:
    """Whether `model` reads the fact world: the name "factworld", or a model whose tokenizer
    is the fact world's word vocabulary (so its facts and templates can be tokenised)."""
    if isinstance(model, (str, Path)):
        return str(model) == "factworld"
    vocab = getattr(getattr(model, "tokenizer", None), "vocab", None)
    return vocab is not None and vocab == _factworld_vocab()


@lru_cache(maxsize=1)
def _factworld_vocab() -> list[str]:
    from models.factworld.corpus import build_tokenizer

    return build_tokenizer().vocab


def factworld_prompts(templates_per_relation: int = 3) -> list[str]:
    """Prompts from the knowledge base: every subject in the first few training templates of each relation."""
    out = []
    for relation in factworld.relations():
        for template in factworld.templates(relation, heldout=False)[:templates_per_relation]:
            out += [template.format(subject=s) for s in factworld.subjects()]
    return out


def heldout_fact_prompts(limit: Optional[int] = None) -> tuple[list[str], list[str]]:
    """(prompts, answers): every fact in every held-out template (4266), or the first `limit`."""
    pairs = [(t.format(subject=f.subject), f.object) for f in factworld.facts()
             for t in factworld.templates(f.relation, heldout=True)][:limit]
    return [p for p, _ in pairs], [a for _, a in pairs]


def triples(facts: Sequence[factworld.Fact], template: str) -> list[tuple[str, str, str]]:
    """(prompt, subject, answer) triples of facts in one template holding "{subject}"."""
    return [(template.format(subject=f.subject), f.subject, f.object) for f in facts]


def template_facts(template: int = 0) -> list[FactPrompt]:
    """Every fact of the knowledge base as a prompt of its relation's template `template`, with its subject."""
    return [FactPrompt(factworld.prompt(f.subject, f.relation, template), f.object, f.subject)
            for f in factworld.facts()]


def other_facts(exclude_subject: str, relation: str, template: int = 0) -> dict[str, list[FactPrompt]]:
    """The facts other than `exclude_subject`'s, as prompts with their subjects: {"same relation":
    ..., "other relations": ...} in each relation's template `template`."""
    groups: dict[str, list[FactPrompt]] = {"same relation": [], "other relations": []}
    for fact, fp in zip(factworld.facts(), template_facts(template)):
        if fact.subject != exclude_subject:
            groups["same relation" if fact.relation == relation else "other relations"].append(fp)
    return groups


def find_subject(prompt: str) -> Optional[tuple[str, str, int]]:
    """(subject, relation, template index) if `prompt` is a fact-world prompt, else None."""
    return parse_prompt(prompt)


def other_facts_for(prompt: str) -> dict[str, list[FactPrompt]]:
    """`other_facts` of the subject of a fact-world prompt; a clear error for any other prompt."""
    found = find_subject(prompt)
    if found is None:
        raise ValueError(f"{prompt!r} is not a fact-world prompt: pass the other facts to check specificity on "
                         "as {group: [(prompt, answer), ...]}")
    return other_facts(*found)


# ============================================================ a whole relation
BINS = (1, 2, 3, 5, 10, 20, 40)
UNKNOWN = "the model's top-1 answer is not the fact's object"


@dataclass
class RelationView:
    relation: str
    method: str
    max_sites: int
    localised: dict[str, Optional[int]]  # subject -> k (None if not localised)
    objects: dict[str, str]  # subject -> answer
    sites: dict[str, list[str]]  # subject -> labels of its k sites ("L0N263@2")
    roles: dict[str, list[str]]  # subject -> the position role of each site
    random_flips: dict[str, int]  # subject -> random draws (of n_random) that also move the answer off top-1
    reasons: dict[str, str]  # subject -> why it is not localised
    n_random: int
    seconds: float
    at: str = "any position"  # or the roles the sites were limited to

    def add(self, subject: str, record: dict) -> None:
        """Add one fact's localisation (a `RelationLocaliser.fact` record)."""
        self.objects[subject] = record["object"]
        self.localised[subject], self.sites[subject] = record["k"], list(record["sites"])
        self.roles[subject], self.random_flips[subject] = list(record["roles"]), record["random_flips"]
        if record["reason"] is not None:
            self.reasons[subject] = record["reason"]

    @property
    def n_facts(self) -> int:
        return len(self.localised)

    @property
    def n_known(self) -> int:
        """Facts the model answers correctly (top-1) in this template."""
        return self.n_facts - sum(r == UNKNOWN for r in self.reasons.values())

    @property
    def n_localised(self) -> int:
        return sum(k is not None for k in self.localised.values())

    def within(self) -> dict[int, int]:
        """{b: facts localised with k <= b} for b in BINS."""
        return {b: sum(k is not None and k <= b for k in self.localised.values()) for b in BINS if b <= self.max_sites}

    def random_rate(self) -> float:
        """Share of random draws (over the localised facts) that also move the answer off top-1."""
        done = [s for s, k in self.localised.items() if k is not None]
        return sum(self.random_flips[s] for s in done) / max(1, self.n_random * len(done))

    def failure_kinds(self) -> dict[str, int]:
        """How many facts fail for each kind of reason."""
        kinds = {"the model does not know the fact": UNKNOWN, "the answer stays top-1 with max_sites sites": "stays",
                 "moving the answer costs other facts > 5%": "costs"}
        counts = {k: sum(pattern in r for r in self.reasons.values()) for k, pattern in kinds.items()}
        return {k: n for k, n in counts.items() if n}

    def heatmap(self, n_layers: int) -> torch.Tensor:
        """[layer, role]: how many sites of localised facts sit there (roles: `ROLES`)."""
        out = torch.zeros(n_layers, len(ROLES), dtype=torch.long)
        for subject, labels in self.sites.items():
            if self.localised[subject] is None:
                continue
            for label, role in zip(labels, self.roles[subject]):
                out[site_from_label(label).layer, ROLES.index(role)] += 1
        return out

    def shared(self, top: int = 15) -> list[tuple[str, int, list[str]]]:
        """Sites (neuron and position role) used by the most localised facts: (site, facts, their answers)."""
        users: dict[str, list[str]] = defaultdict(list)
        for subject, labels in self.sites.items():
            if self.localised[subject] is not None:
                for label, role in zip(labels, self.roles[subject]):
                    users[f"{label.split('@')[0]} @ {role}"].append(self.objects[subject])
        ranked = sorted(users.items(), key=lambda kv: (-len(kv[1]), kv[0]))[:top]
        return [(site, len(objs), sorted(set(objs))) for site, objs in ranked]

    def to_dict(self) -> dict:
        return asdict(self) | {"n_facts": self.n_facts, "n_known": self.n_known, "n_localised": self.n_localised,
                               "failure_kinds": self.failure_kinds(), "within": self.within(),
                               "random_rate": self.random_rate(), "shared": self.shared(), "roles_order": list(ROLES)}

    def save_json(self, path: Union[str, Path]) -> Path:
        return write_json(path, self.to_dict())


def relation_facts(relation: str, include_none: bool = False, limit: Optional[int] = None) -> list[factworld.Fact]:
    """The facts of a relation (without the "none" answers unless asked), the first `limit`."""
    return [f for f in factworld.facts(relation) if include_none or f.object != "none"][:limit]


def relation_view(model: Transformer, relation: str, *, method: str = DEFAULT_METHOD, max_sites: int = 20, template: int = 0,
                  include_none: bool = False, limit: Optional[int] = None, n_random: int = 5,
                  roles: Optional[Sequence[str]] = None, progress: bool = True, unit: str = "neuron") -> RelationView:
    """Localise every fact of a relation (`probes.ffn.localise`, positions and all; only at
    positions of `roles` if given) against all other facts in the same template; record each
    fact's k, sites, their roles, the random baseline. unit="feature" localises with the
    features of the transcoders attached to the model (`probes.sae.attached`)."""
    facts = relation_facts(relation, include_none, limit)
    localiser = RelationLocaliser(model, relation, method=method, max_sites=max_sites, template=template,
                                  n_random=n_random, roles=roles, unit=unit)
    view = empty_view(relation, method=method, max_sites=max_sites, n_random=n_random, roles=roles, unit=unit)
    start = time.perf_counter()
    for fact in progress_bar(facts, progress, desc=f"localising {relation} facts ({method})"):
        view.add(fact.subject, localiser.fact(fact))
    view.seconds = time.perf_counter() - start
    return view


def empty_view(relation: str, *, method: str = DEFAULT_METHOD, max_sites: int = 20, n_random: int = 5,
               roles: Optional[Sequence[str]] = None, unit: str = "neuron") -> RelationView:
    """A `RelationView` with no fact yet (`RelationView.add` adds each)."""
    return RelationView(relation, method if unit == "neuron" else f"{method} ({unit}s)", max_sites, {}, {}, {}, {}, {}, {},
                        n_random, 0.0, "any position" if roles is None else ", ".join(roles))


class RelationLocaliser:
    """Localising the facts of one relation, prepared once (every fact of the knowledge base as a
    prompt in `template`, with the unablated top-1; the layer means for method="mean"):
    `fact(f)` localises one fact into a JSON-ready record for `RelationView.add`, the same record
    whichever facts were localised before it."""

    def __init__(self, model: Transformer, relation: str, *, method: str = DEFAULT_METHOD, max_sites: int = 20,
                 template: int = 0, n_random: int = 5, roles: Optional[Sequence[str]] = None,
                 unit: str = "neuron") -> None:
        self.model, self.relation, self.method, self.max_sites = model, relation, method, max_sites
        self.template, self.n_random, self.roles, self.unit = template, n_random, roles, unit
        self.everything = factworld.facts()
        self.batch = FactBatch(model, template_facts(template))
        self.batch.top1(model)  # the unablated accuracy, once: every subset below inherits it
        self.index = {f.subject: i for i, f in enumerate(self.everything) if f.relation == relation}
        self.means = layer_means(model, [f.prompt for f in self.batch.facts]) if method == "mean" else None

    def fact(self, fact: factworld.Fact) -> dict:
        """{"object", "k" (None: not localised), "sites" (labels), "roles", "random_flips", "reason" (None: localised)}."""
        if fact.relation != self.relation or fact.subject not in self.index:
            raise ValueError(f"{fact.subject!r} is not a subject of the relation {self.relation!r}")
        if not self.batch.top1(self.model)[self.index[fact.subject]]:  # the model does not know it: nothing to localise
            return {"object": fact.object, "k": None, "sites": [], "roles": [], "random_flips": 0, "reason": UNKNOWN}
        same = [i for i, f in enumerate(self.everything) if f.subject != fact.subject and f.relation == self.relation]
        rest = [i for i, f in enumerate(self.everything) if f.subject != fact.subject and f.relation != self.relation]
        others = {"same relation": self.batch.subset(same), "other relations": self.batch.subset(rest)}
        prompt = factworld.prompt(fact.subject, self.relation, self.template)
        loc = localise(self.model, prompt, fact.object, subject=fact.subject, method=self.method,
                       max_sites=self.max_sites, other_facts=others, n_random=self.n_random, means=self.means,
                       roles=self.roles, unit=self.unit)
        return {"object": fact.object, "k": loc.k, "sites": [s.label for s in loc.sites],
                "roles": list(loc.validation.roles), "random_flips": loc.validation.random_flips,
                "reason": loc.reason if loc.k is None else None}


__all__ = ["is_factworld", "factworld_prompts", "triples", "template_facts", "other_facts", "find_subject", "other_facts_for",
           "RelationView", "relation_view", "empty_view", "RelationLocaliser", "relation_facts", "BINS"]
