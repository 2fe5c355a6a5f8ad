"""The fact world's data, shaped for the generic probes: prompts, the facts to check
specificity on, and the relation-wide localisation view.

The probes take plain (prompt, subject, answer) data; this module is where the
fact-world knowledge base turns into it.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional, Sequence, Union

from tqdm.auto import tqdm

from interp.results import write_json
from interp.sites import Neuron
from models import factworld
from probes.ffn import FactPrompt, fact_neurons, localise


def factworld_prompts(templates_per_relation: int = 3) -> list[str]:
    """Prompts from the knowledge base: every subject in the first few training templates of each relation."""
    out = []
    for relation in factworld.relations():
        for template in factworld.templates(relation, heldout=False)[:templates_per_relation]:
            out += [template.format(subject=s) for s in factworld.subjects()]
    return out


def triples(facts: Sequence[factworld.Fact], template: str) -> list[tuple[str, str, str]]:
    """(prompt, subject, answer) triples of facts in one template holding "{subject}"."""
    return [(template.format(subject=f.subject), f.subject, f.object) for f in facts]


def other_facts(exclude_subject: str, relation: str, template: int = 0) -> dict[str, list[FactPrompt]]:
    """The facts other than `exclude_subject`'s, as prompts: {"same relation": ...,
    "other relations": ...} in each relation's template `template`."""
    groups: dict[str, list[FactPrompt]] = {"same relation": [], "other relations": []}
    for fact in factworld.facts():
        if fact.subject == exclude_subject:
            continue
        prompt = factworld.prompt(fact.subject, fact.relation, template)
        groups["same relation" if fact.relation == relation else "other relations"].append((prompt, fact.object))
    return groups


def find_subject(prompt: str) -> Optional[tuple[str, str, int]]:
    """(subject, relation, template index) if `prompt` is a fact-world prompt, else None."""
    for relation in factworld.relations():
        for template_index, template in enumerate(factworld.templates(relation)):
            head, _, tail = template.partition("{subject}")
            if prompt.startswith(head) and prompt.endswith(tail):
                subject = prompt[len(head): len(prompt) - len(tail)]
                if subject in factworld.subjects():
                    return subject, relation, template_index
    return None


def other_facts_for(prompt: str) -> dict[str, list[FactPrompt]]:
    """`other_facts` of the subject of a fact-world prompt; a clear error for any other prompt."""
    found = find_subject(prompt)
    if found is None:
        raise ValueError(f"{prompt!r} is not a fact-world prompt: pass the other facts to check specificity on "
                         "as {group: [(prompt, answer), ...]}")
    return other_facts(*found)


# ============================================================ a whole relation
@dataclass
class RelationView:
    relation: str
    n_facts: int
    localised: dict[str, Optional[int]]  # subject -> k (None if not localised)
    layer_histogram: dict[int, int]  # layer -> how many of the localising neurons (over localised facts) are there
    shared: list[tuple[str, int, list[str]]]  # neuron label, facts served, objects of those facts
    by_object: dict[str, list[tuple[str, int]]]  # object -> neurons in the top-k of most of its facts
    ks: list[int] = field(default_factory=list)

    @property
    def n_localised(self) -> int:
        return sum(k is not None for k in self.localised.values())

    def to_dict(self) -> dict:
        return asdict(self) | {"n_localised": self.n_localised}

    def save_json(self, path: Union[str, Path]) -> Path:
        return write_json(path, self.to_dict())


def relation_view(model, relation: str, *, template: int = 0, top: int = 10,
                  ks: Sequence[int] = (1, 2, 3, 5, 10, 20, 50), include_none: bool = False,
                  limit: Optional[int] = None, progress: bool = True) -> RelationView:
    """Localise every fact of a relation; count neurons per layer and neurons shared across
    facts (in each fact's top-`top` by contribution)."""
    facts = [f for f in factworld.facts(relation) if include_none or f.object != "none"][:limit]
    localised: dict[str, Optional[int]] = {}
    serve: dict[Neuron, list[str]] = defaultdict(list)
    layers: Counter = Counter()
    objects: dict[Neuron, list[str]] = defaultdict(list)
    for fact in tqdm(facts, desc=f"localising {relation} facts", disable=not progress):
        prompt = factworld.prompt(fact.subject, relation, template)
        loc = localise(model, prompt, fact.object, ks, other_facts=other_facts(fact.subject, relation, template))
        localised[fact.subject] = loc.k
        if loc.k is not None:
            for neuron in loc.sites[: loc.k]:
                layers[neuron.layer] += 1
        for neuron in fact_neurons(model, prompt, fact.object, top).sites:
            serve[neuron].append(fact.subject)
            objects[neuron].append(fact.object)
    shared = sorted(((n.label, len(s), sorted(set(objects[n]))) for n, s in serve.items()), key=lambda x: -x[1])[:30]
    count_by_object = Counter(f.object for f in facts)
    by_object: dict[str, list[tuple[str, int]]] = {}
    for obj, n_obj in count_by_object.items():
        hits = [(n.label, objects[n].count(obj)) for n in serve if objects[n].count(obj) > n_obj / 2]
        by_object[obj] = sorted(hits, key=lambda x: -x[1])[:10]
    return RelationView(relation, len(facts), localised, dict(sorted(layers.items())), shared, by_object, list(ks))


__all__ = ["factworld_prompts", "triples", "other_facts", "find_subject", "other_facts_for", "RelationView",
           "relation_view"]
