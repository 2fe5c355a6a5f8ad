"""Sentences from the knowledge base, and the word-level tokenizer that covers them.

A training sentence is  <bos> [opener] template(subject) object .
for a fact, one of its relation's training templates and an opener ("" for none).
Held-out templates never appear here.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import torch

from models.factworld import Fact, facts, openers, relations, templates
from models.tokenizer import WordTokenizer


@dataclass(frozen=True)
class Sentence:
    fact: Fact
    template: str
    opener: str

    @property
    def prompt(self) -> str:
        """Everything before the object."""
        body = self.template.format(subject=self.fact.subject)
        return f"{self.opener} {body}" if self.opener else body

    @property
    def text(self) -> str:
        return f"{self.prompt} {self.fact.object} ."


def training_sentences() -> list[Sentence]:
    """Every (fact, training template, opener) combination."""
    out = []
    for fact in facts():
        for template, opener in itertools.product(templates(fact.relation, heldout=False), openers()):
            out.append(Sentence(fact, template, opener))
    return out


def default_corpus(n: int = 20_000, seed: int = 0) -> list[str]:
    """A seeded sample of `n` training sentences: the corpus that statistics over the model's
    inputs default to (editing's key statistics; `models.load("factworld")` sets it as
    `model.default_corpus`)."""
    import random

    return [s.text for s in random.Random(seed).sample(training_sentences(), n)]


def build_tokenizer() -> WordTokenizer:
    """Vocabulary: specials, then every word of every template (held-out ones too, so they
    can be tokenized for evaluation), opener, subject and object."""
    texts = list(openers()) + ["."]
    for relation in relations():
        texts += [t.replace("{subject}", "") for t in templates(relation)]
    texts += [f"{f.subject} {f.object}" for f in facts()]
    return WordTokenizer.from_texts(texts)


def encode_batch(tokenizer: WordTokenizer, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """<bos> + words, padded on the right: tokens [batch, pos] and mask [batch, pos]."""
    ids = [[tokenizer.bos_token_id] + tokenizer.encode(t) for t in texts]
    n = max(map(len, ids))
    tokens = torch.full((len(ids), n), tokenizer.pad_token_id, dtype=torch.long)
    mask = torch.zeros((len(ids), n), dtype=torch.long)
    for i, row in enumerate(ids):
        tokens[i, : len(row)] = torch.tensor(row)
        mask[i, : len(row)] = 1
    return tokens, mask
