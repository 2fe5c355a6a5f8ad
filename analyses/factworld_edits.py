"""The fact world's data shaped for editing: evaluation cases (paraphrases, neighbours, the
subject's other facts), prompts whose predictions an edit keeps, random edit requests, the
texts for key statistics and fluency, and `make_edit` (one request, any method, at a layer).

Neighbours of a subject are the people who share a name token with it (for Michael Jordan:
every other Michael and every other Jordan, among them Michael Phelps and Alexis Jordan) and
people whose answer is the edited fact's old answer (other basketball players).
"""

from __future__ import annotations

import random
from typing import Optional

from models import factworld
from models.factworld.corpus import default_corpus
from models.factworld.editing import KEEP_TEMPLATES, REWRITE_TEMPLATES, keep_prompts, rewrite_prompts
from models.transformer import Transformer
from probes.edit import Edit, EditCase, EditRequest
from probes.ffn import related_subjects


# The contexts and kept prompts of an edit live with the model (models.factworld.editing), which
# `rome` / `memit` / `alphaedit` find by themselves on the shipped model; re-exported here.


def request(subject: str, relation: str, new_target: str, template: int = 0) -> EditRequest:
    return EditRequest(factworld.prompt(subject, relation, template), subject, new_target)


def edit_case(subject: str, relation: str, new_target: str, *, same_answer: int = 10, seed: int = 0) -> EditCase:
    old = factworld.lookup(subject, relation)
    firsts, lasts = related_subjects(subject, factworld.subjects())
    rng = random.Random(f"{seed}-{subject}")
    peers = [f.subject for f in factworld.facts(relation) if f.object == old and f.subject != subject]
    peers = rng.sample(peers, min(same_answer, len(peers)))
    names = list(dict.fromkeys(firsts + lasts + peers))
    return EditCase(
        request(subject, relation, new_target), old,
        paraphrases=[t.format(subject=subject) for t in factworld.templates(relation, heldout=True)],
        neighbours=[(factworld.prompt(s, relation), factworld.lookup(s, relation)) for s in names],
        attributes=[(t.format(subject=subject), factworld.lookup(subject, r)) for r in factworld.relations()
                    if r != relation for t in factworld.templates(r)[:1] + factworld.templates(r, heldout=True)],
    )


def _known(model, facts: list, relation: str) -> list:
    """The facts whose answer (one token) the model gives top-1 in template 0."""
    from interp.words import answer_token
    from models.transformer import last_token_logits

    ids = {}
    for o in {f.object for f in facts}:
        try:
            ids[o] = answer_token(model, o)
        except ValueError:
            pass  # an answer of several tokens is never a top-1 token
    top = last_token_logits(model, [factworld.prompt(f.subject, relation) for f in facts]).argmax(-1).tolist()
    return [f for f, t in zip(facts, top) if ids.get(f.object) == t]


def random_edits(n: int, *, relation: str = "sport", seed: int = 0, known_by=None) -> list[tuple[str, str]]:
    """n (subject, new answer) pairs: distinct random subjects with a real answer (not "none"), each
    moved to another random object of the relation; seeded. With `known_by` (a model), only facts
    the model answers right in template 0."""
    rng = random.Random(seed)
    facts = [f for f in factworld.facts(relation) if f.object != "none"]
    if known_by is not None:
        facts = _known(known_by, facts, relation)
    if n > len(facts):
        raise ValueError(f"only {len(facts)} {relation} facts to edit, asked for {n}")
    objects = sorted({f.object for f in facts})
    return [(f.subject, rng.choice([o for o in objects if o != f.object])) for f in rng.sample(facts, n)]


def make_edit(model: Transformer, method: str, request: EditRequest, layer: int, relation: str, why: str,
              progress: bool = False) -> Edit:
    """The edit of one fact-world request at `layer` with the methods' defaults (the contexts and
    kept prompts come from the model's own `edit_prompts`; FT-L gets the same contexts)."""
    from probes.edit import alphaedit, fine_tune, key_second_moment, memit, rome

    if method == "ft":
        return fine_tune(model, [request], layer=layer, prefixes=factworld.openers(),
                         rewrites=[rewrite_prompts(request.subject, relation)])
    stats = key_second_moment(model, layer, stats_texts(), progress=progress)
    if method == "memit":
        return memit(model, [request], layers=[layer], stats={layer: stats}, progress=progress)
    if method == "alphaedit":
        return alphaedit(model, [request], layers=[layer], stats={layer: stats}, progress=progress)
    return rome(model, request, layer=layer, stats=stats, why_layer=why)


def stats_texts(n: int = 20_000, seed: int = 0) -> list[str]:
    """Training sentences for the key statistics (a seeded sample; the default is the shipped
    model's `default_corpus`)."""
    return default_corpus(n, seed)


def fluency_texts(n: int = 200, seed: int = 1, exclude: Optional[set] = None) -> list[str]:
    """Held-out-template sentences (never trained on) of random facts, objects included."""
    rng = random.Random(seed)
    facts = [f for f in factworld.facts() if not exclude or f.subject not in exclude]
    out = []
    for f in rng.sample(facts, n):
        template = rng.choice(factworld.templates(f.relation, heldout=True))
        out.append(f"{template.format(subject=f.subject)} {f.object} .")
    return out


__all__ = ["KEEP_TEMPLATES", "REWRITE_TEMPLATES", "make_edit", "request", "keep_prompts", "rewrite_prompts", "edit_case", "random_edits", "stats_texts", "fluency_texts"]
