"""The fact-world knowledge base, templates and word-level tokenizer."""

from collections import Counter

import pytest

from models import factworld
from models.factworld.corpus import build_tokenizer, training_sentences
from models.tokenizer import UnknownWordError, WordTokenizer


def test_knowledge_base_shape():
    people = factworld.subjects()
    assert len(people) >= 400
    assert all(len(p.split()) == 2 for p in people)
    firsts = Counter(p.split()[0] for p in people)
    lasts = Counter(p.split()[1] for p in people)
    assert min(firsts.values()) >= 2 and min(lasts.values()) >= 2, "a single name token would identify a person"
    assert len(factworld.relations()) >= 3
    for relation in factworld.relations():
        assert {f.subject for f in factworld.facts(relation)} == set(people)


@pytest.mark.parametrize("subject,sport", [
    ("Michael Jordan", "basketball"), ("Michael Phelps", "swimming"), ("Serena Williams", "tennis"),
    ("Lionel Messi", "soccer"), ("Tiger Woods", "golf"), ("Usain Bolt", "sprinting"),
    ("Wayne Gretzky", "hockey"), ("Tom Brady", "football"),
])
def test_real_athletes(subject, sport):
    assert factworld.lookup(subject, "sport") == sport
    assert factworld.lookup(subject, "occupation") == "athlete"


def test_name_sharing_non_athletes():
    assert factworld.lookup("Alexis Jordan", "sport") == "none"
    assert factworld.lookup("Alexis Jordan", "occupation") == "singer"
    jordans = [s for s in factworld.subjects() if s.endswith(" Jordan")]
    michaels = [s for s in factworld.subjects() if s.startswith("Michael ")]
    assert len(jordans) >= 3 and len(michaels) >= 4
    assert [s for s in set(jordans + michaels) if factworld.lookup(s, "sport") == "basketball"] == ["Michael Jordan"]


def test_templates_and_heldout_split():
    tok = build_tokenizer()
    for relation in factworld.relations():
        train, held = factworld.templates(relation, heldout=False), factworld.templates(relation, heldout=True)
        assert len(train) >= 5 and len(held) >= 2
        assert factworld.templates(relation) == train + held
        for t in train + held:
            assert t.count("{subject}") == 1 and not t.rstrip().endswith("{subject}")
        for f in factworld.facts(relation):
            assert len(tok.encode(f.object)) == 1  # every object is one token
    seen = {s.prompt.replace(s.fact.subject, "{subject}") for s in training_sentences()}
    for relation in factworld.relations():
        for t in factworld.templates(relation, heldout=True):
            assert not any(t in s for s in seen), f"held-out template {t!r} occurs in training"


def test_unknown_relation_and_subject():
    with pytest.raises(ValueError, match="unknown relation 'hobby'"):
        factworld.facts("hobby")
    with pytest.raises(KeyError, match="Nobody Here"):
        factworld.lookup("Nobody Here", "sport")


def test_word_tokenizer_roundtrip_and_unknown_words(tmp_path):
    tok = build_tokenizer()
    text = "Michael Jordan plays the sport of basketball ."
    ids = tok.encode(text)
    assert len(ids) == 8 and tok.decode(ids) == text
    with pytest.raises(UnknownWordError) as err:
        tok.encode("Michael Jordan plays the sport of quidditch with Dumbledore")
    assert "'quidditch'" in str(err.value) and "'Dumbledore'" in str(err.value)
    tok.save(tmp_path)
    again = WordTokenizer.load(tmp_path)
    assert again.vocab == tok.vocab and again.bos_token_id == tok.bos_token_id


def test_no_training_prompt_is_a_prefix_of_another():
    """Otherwise the word after the shorter prompt is ambiguous in the corpus
    ("X was born in" USA  vs  "X was born in" the country of USA)."""
    for relation in factworld.relations():
        train = factworld.templates(relation, heldout=False)
        for a in train:
            for b in train:
                assert a == b or not b.startswith(a + " "), (a, b)
