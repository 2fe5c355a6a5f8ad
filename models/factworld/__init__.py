"""The fact-world: a knowledge base we write, a corpus made from it, and a small
transformer trained on that corpus, shipped as the default model.

    facts(relation=None) -> list[Fact]          # (subject, relation, object) triples
    templates(relation, heldout=None) -> list[str]
    prompt = templates("sport")[0].format(subject="Michael Jordan")  # next word: "basketball"

Data files (plain text, meant to be read and extended): data/facts.csv and
data/templates.json.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Optional

HERE = Path(__file__).resolve().parent
DATA = HERE / "data"


@dataclass(frozen=True)
class Fact:
    subject: str
    relation: str
    object: str


def checkpoint_dir() -> Path:
    """Where the shipped fact-world checkpoint lives (inside the package)."""
    return HERE / "checkpoint"


@lru_cache(maxsize=None)
def _all_facts() -> tuple[Fact, ...]:
    with open(DATA / "facts.csv", newline="") as f:
        return tuple(Fact(r["subject"], r["relation"], r["object"]) for r in csv.DictReader(f))


@lru_cache(maxsize=None)
def _templates() -> dict:
    return json.loads((DATA / "templates.json").read_text())


def relations() -> list[str]:
    return [r for r in _templates() if r not in ("openers",) and not r.startswith("_")]


def _check_relation(relation: str) -> None:
    if relation not in relations():
        raise ValueError(f"unknown relation {relation!r}; the fact-world has {relations()}")


def facts(relation: Optional[str] = None) -> list[Fact]:
    """All facts, or those of one relation."""
    if relation is not None:
        _check_relation(relation)
    return [f for f in _all_facts() if relation is None or f.relation == relation]


def subjects() -> list[str]:
    return list(dict.fromkeys(f.subject for f in _all_facts()))


def objects(relation: str) -> list[str]:
    """The distinct objects of a relation (its answer set), in order of first appearance."""
    return list(dict.fromkeys(f.object for f in facts(relation)))


def lookup(subject: str, relation: str) -> str:
    """The object of (subject, relation); a KeyError names the subject if unknown."""
    for f in facts(relation):
        if f.subject == subject:
            return f.object
    raise KeyError(f"no {relation!r} fact about {subject!r}")


def templates(relation: str, heldout: Optional[bool] = None) -> list[str]:
    """Templates of a relation: heldout=None all, False the training ones, True only those
    never seen in training. Each holds {subject} and ends right before the object."""
    _check_relation(relation)
    t = _templates()[relation]
    if heldout is None:
        return t["train"] + t["heldout"]
    return list(t["heldout"] if heldout else t["train"])


def openers() -> list[str]:
    """Sentence openers prepended to training templates ("in fact ,", ...); "" is none."""
    return list(_templates()["openers"])


def prompt(subject: str, relation: str, template: int = 0, heldout: bool = False) -> str:
    return templates(relation, heldout=heldout)[template].format(subject=subject)
