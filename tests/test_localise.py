"""Position-aware localisation: on a hand-built model whose fact is stored by a neuron at the
subject position (and carried to the last position by a head), `localise` finds that neuron
there; on the shipped model, Michael Jordan's, Michael Phelps' and Alexis Jordan's facts."""

import pytest
import torch

from analyses.factworld_facts import other_facts
from interp import Neuron
from helpers import blank_word_model, unit
from models import Transformer, factworld, load
from probes.ffn import FactBatch, FactPrompt, localise, prompt_layout, rank_sites
from probes.ffn.keys import neuron_activations
from probes.ffn.rankings import margins

WORDS = ["<pad>", "<bos>", "<eos>", "Michael", "Jordan", "Phelps", "Alexis", "plays", "basketball", "swimming",
         "hockey", "Jones"]
ANSWERS = ["basketball", "swimming", "hockey"]
D = 2 * (len(WORDS) + len(ANSWERS))
FACTS = [("Michael Jordan", "basketball"), ("Michael Phelps", "swimming"), ("Alexis Jordan", "hockey"),
         ("Jones Jordan", "hockey"), ("Michael Jones", "hockey")]


def build_stored_fact_model() -> Transformer:
    """Two layers. Layer 0's attention averages the tokens so far; its neuron 0 is an AND of
    Michael and Jordan that is silenced wherever "plays" has been seen, so it fires only at the
    subject's last token, and writes a hidden "basketball store" direction there (neurons 1, 2
    likewise store Phelps -> swimming and Alexis (Jordan) -> hockey). Layer 1's head averages the
    positions and maps each store direction to its answer's unembedding. Layer 1's neuron 0 fires
    at the last position of every prompt and writes a little basketball: the only neuron that
    writes basketball directly at the last position. Without a stored fact the answer is hockey
    (an unembedding bias)."""
    model, u = blank_word_model(WORDS, n_layers=2, d_model=D)
    ids = {w: i for i, w in enumerate(WORDS)}
    store = {a: unit(len(WORDS) + j, D) for j, a in enumerate(ANSWERS)}
    eye = torch.eye(D, dtype=torch.float64)
    with torch.no_grad():
        attn0, mlp0, attn1, mlp1 = model.blocks[0].attn, model.blocks[0].mlp, model.blocks[1].attn, model.blocks[1].mlp
        attn0.W_V[0], attn0.W_O[0] = eye * (2.0 / D ** 0.5), eye
        keys = {0: u["Michael"] + u["Jordan"], 1: u["Phelps"], 2: u["Alexis"] + u["Jordan"]}
        for n, key in keys.items():
            mlp0.W_in[:, n] = key - 3 * u["plays"]
        mlp0.b_in[3] = -1.0
        names = [s for s, _ in FACTS]
        pre = neuron_activations(model, names, [Neuron(0, 0), Neuron(0, 2)], pos=2, pre=True)
        mlp0.b_in[0] = -(pre[0, 0] + pre[1:, 0].max()) / 2  # halfway between the full name and the best other
        mlp0.b_in[2] = -(pre[2, 1] + pre[[0, 1, 3, 4], 1].max()) / 2
        mlp0.b_in[1] = -0.1
        for n, answer in enumerate(ANSWERS):
            mlp0.W_out[n] = 10 * store[answer]
        attn1.W_V[0] = 2.0 * sum(torch.outer(store[a], u[a]) for a in ANSWERS)
        attn1.W_O[0] = eye
        mlp1.W_in[:, 0] = u["plays"]
        mlp1.W_out[0] = 0.05 * u["basketball"]
        mlp1.b_in[1:] = -1.0
        for a in ANSWERS:
            model.unembed.W_U[:, ids[a]] = u[a]
        model.unembed.b_U[ids["hockey"]] = 1.0
    return model


@pytest.fixture(scope="module")
def stored():
    return build_stored_fact_model()


def others(model):
    return {"other names": [FactPrompt(f"{s} plays", a, s) for s, a in FACTS[1:]]}


def top1(model, prompt):
    with torch.no_grad():
        return WORDS[int(model(prompt)[0, -1].argmax())]


def test_stored_fact_model_behaves_as_built(stored):
    for subject, answer in FACTS:
        assert top1(stored, f"{subject} plays") == answer, subject
    _, cache = stored.run_with_cache("Michael Jordan plays")
    post0 = cache["post", 0][0]
    assert post0[2, 0] > 0.5 and post0[[0, 1, 3], 0].abs().max() == 0  # the store fires at "Jordan" only
    assert cache["post", 1][0, 3, 0] > 1  # the decoy fires at the last position


@pytest.mark.parametrize("method", ["greedy", "exact", "ig"])
def test_localise_finds_the_storing_neuron_at_the_subject_position(stored, method):
    loc = localise(stored, "Michael Jordan plays", "basketball", subject="Michael Jordan", other_facts=others(stored),
                   method=method)
    assert loc.k == 1 and loc.sites == [Neuron(0, 0, pos=2)]
    assert loc.validation.roles == ["last subject token"]
    assert loc.validation.margin_before > 0 > loc.validation.margin_after
    assert loc.validation.specificity["other names"] == {"n": 4, "before": 1.0, "after": 1.0}
    # Random neurons of layer 0 at position 2 do nothing (they never fire).
    assert len(loc.validation.random_margins) == 5 and loc.validation.random_flips == 0
    # The same neuron at the last position carries nothing.
    tokens = stored.to_tokens("Michael Jordan plays")[0]
    at_last = margins(stored, tokens, WORDS.index("basketball"), [[Neuron(0, 0, pos=3)], []])
    assert at_last[0] == at_last[1] > 0


def test_direct_contribution_cannot_localise_it(stored):
    loc = localise(stored, "Michael Jordan plays", "basketball", subject="Michael Jordan", other_facts=others(stored),
                   method="direct")
    assert loc.k is None and "stays top-1" in loc.reason
    assert loc.ranking.sites[0] == Neuron(1, 0, pos=3)  # the last-position decoy
    assert all(s.pos == 3 for s in loc.ranking.sites)


def test_specificity_failure_is_reported(stored):
    # Michael Phelps' fact as an "other fact" of itself: ablating its store costs that group all its accuracy.
    group = {"phelps": [FactPrompt("Michael Phelps plays", "swimming", "Michael Phelps")]}
    loc = localise(stored, "Michael Phelps plays", "swimming", subject="Michael Phelps", other_facts=group, repairs=0)
    assert loc.k is None and "costs phelps 1.000 -> 0.000" in loc.reason
    # The repair leaves out the sites that cost the others most: here the store itself, after which
    # nothing else moves the answer.
    repaired = localise(stored, "Michael Phelps plays", "swimming", subject="Michael Phelps", other_facts=group)
    assert repaired.k is None and Neuron(0, 1, pos=2) in repaired.left_out and "stays top-1" in repaired.reason


def test_positions_correspond_by_template_and_role():
    fw = load("factworld")
    src = prompt_layout(fw, "Michael Jordan plays the sport of", "Michael Jordan")
    same = prompt_layout(fw, "Alexis Jordan plays the sport of", "Alexis Jordan")
    other = prompt_layout(fw, "the sport played by Tom Brady is", "Tom Brady")
    assert [src.corresponding(same, p) for p in range(7)] == [[p] for p in range(7)]
    assert src.role(2) == "last subject token" and src.role(6) == "last token" and src.role(3) == "first subsequent token"
    # other template ("<bos> the sport played by Tom Brady is"): subject at 5-6, "is" (7) last
    assert other.roles[1:5] == ("before subject",) * 4
    assert src.corresponding(other, 1) == [5] and src.corresponding(other, 2) == [6]
    assert src.corresponding(other, 6) == [7] and src.corresponding(other, 0) == [0]
    assert src.corresponding(other, 3) == [] and src.corresponding(other, 4) == []  # no subsequent tokens there
    no_subject = prompt_layout(fw, "Michael Jordan plays the sport of", None)
    assert no_subject.corresponding(other, 6) == [7] and no_subject.corresponding(other, 5) == [6]


def test_fact_batch_ablates_at_corresponding_positions(stored):
    batch = FactBatch(stored, [FactPrompt(f"{s} plays", a, s) for s, a in FACTS])
    assert batch.top1(stored).tolist() == [True] * 5
    source = prompt_layout(stored, "Michael Jordan plays", "Michael Jordan")
    # Zeroing neuron 1 (Phelps' store) at the last subject token breaks Michael Phelps' fact only.
    assert batch.top1(stored, [Neuron(0, 1, pos=2)], source).tolist() == [True, False, True, True, True]
    # ... and at the last token it breaks nothing.
    assert batch.top1(stored, [Neuron(0, 1, pos=3)], source).tolist() == [True] * 5
    with pytest.raises(ValueError, match="Layout"):
        batch.top1(stored, [Neuron(0, 1, pos=2)])


def test_localise_refuses_an_answer_the_model_does_not_give(stored):
    with pytest.raises(ValueError, match="not the model's top-1 answer"):
        localise(stored, "Michael Jordan plays", "swimming", subject="Michael Jordan")


def test_rank_sites_refuses_unknown_methods(stored):
    with pytest.raises(ValueError, match="unknown ranking method 'magic'"):
        rank_sites(stored, "Michael Jordan plays", "basketball", "magic")
    with pytest.raises(ValueError, match="needs means"):
        rank_sites(stored, "Michael Jordan plays", "basketball", "mean")


@pytest.fixture(scope="module")
def fw():
    return load("factworld")


@pytest.mark.parametrize("subject,relation", [("Michael Jordan", "sport"), ("Michael Phelps", "sport"),
                                              ("Alexis Jordan", "occupation")])
def test_shipped_model_facts_are_localised(fw, subject, relation):
    prompt, answer = factworld.prompt(subject, relation), factworld.lookup(subject, relation)
    loc = localise(fw, prompt, answer, subject=subject, other_facts=other_facts(subject, relation))
    assert loc.k is not None and loc.k <= 20
    check = loc.validation
    assert check.margin_before > 0 > check.margin_after
    assert all(s["after"] >= 0.95 * s["before"] for s in check.specificity.values())
    assert check.specificity["same relation"]["n"] == 473 and check.specificity["other relations"]["n"] == 946
    assert check.random_flips == 0  # 5 random draws at the same layers and positions leave the answer on top
    # Independent recomputation: zero the sites with plain hooks and read the top-1.
    hooks = [s.zero() for s in loc.sites]
    with torch.no_grad():
        after = fw.run_with_hooks(prompt, fwd_hooks=hooks)[0, -1]
    assert fw.tokenizer.token_str(int(after.argmax())) != answer
    assert set(check.roles) <= {"first subject token", "last subject token", "first subsequent token",
                                "further tokens", "last token", "bos"}


# ============================================================ the recall chain on the same model
def test_key_by_source_splits_the_store_key_by_token(stored):
    from probes.ffn import key_by_source

    for subject in ("Michael Jordan", "Michael Phelps", "Alexis Jordan"):
        prompt = f"{subject} plays"
        parts = key_by_source(stored, prompt, Neuron(0, 0), pos=2)
        pre = float(neuron_activations(stored, prompt, [Neuron(0, 0)], pos=2, pre=True)[0, 0])
        assert sum(parts.values()) == pytest.approx(pre, abs=1e-10)
    parts = key_by_source(stored, "Michael Jordan plays", Neuron(0, 0), pos=2)
    assert parts["Michael@1"] > 0 and parts["Jordan@2"] > 0 and parts["biases"] < 0
    assert parts["Michael@1"] + parts["Jordan@2"] > -parts["biases"]  # both parts together beat the bias
    phelps = key_by_source(stored, "Michael Phelps plays", Neuron(0, 0), pos=2)
    assert phelps["Michael@1"] == pytest.approx(parts["Michael@1"]) and phelps["Phelps@2"] < 0.5 * parts["Jordan@2"]


def test_key_by_source_refuses_gated_models():
    from conftest import make_model
    from probes.ffn import key_by_source

    with pytest.raises(ValueError, match="ungated"):
        key_by_source(make_model("llama_gqa"), torch.tensor([[1, 2, 3]]), Neuron(0, 1))


def _frozen_run(model, prompt, hooks):
    """Logits at the last position with every norm scale and attention pattern frozen from the clean run."""
    _, clean = model.run_with_cache(prompt)
    frozen = [(name, lambda x, hook: clean[hook.name]) for name in clean.keys()
              if name.endswith(("hook_scale", "hook_pattern"))]
    with torch.no_grad():
        return model.run_with_hooks(prompt, fwd_hooks=frozen + hooks)[0, -1]


def test_moved_contribution_is_the_frozen_path_effect(stored):
    from probes.recall import moved_contributions

    prompt = "Michael Jordan plays"
    moved = moved_contributions(stored, prompt, "Michael Jordan", "basketball")
    assert moved.shape == (2, 4, 4) and moved[0, 2, 0] > 1
    assert moved.abs().flatten().topk(2).values[1] < 1e-9  # the store is the only site that is carried
    b = WORDS.index("basketball")
    full = _frozen_run(stored, prompt, [])[b]
    without = _frozen_run(stored, prompt, [Neuron(0, 0, pos=2).zero()])[b]
    assert float(full - without) == pytest.approx(float(moved[0, 2, 0]), rel=1e-9)


def test_attribute_extraction_finds_the_moving_head(stored):
    from probes.recall import attribute_extraction, extraction_rate

    prompt = "Michael Jordan plays"
    ext = attribute_extraction(stored, prompt, "Michael Jordan", "basketball")
    assert ext.extracts.tolist() == [[False], [True]]
    assert ext.attention[1, 0] == pytest.approx(0.5)  # uniform attention over 4 positions, 2 of them the subject
    # Independently: let the last position attend only to the subject (weights as in the run), read the
    # head's output through the frozen final norm.
    _, clean = stored.run_with_cache(prompt)

    def subject_only(p, hook):
        p = p.clone()
        p[:, :, -1, [0, 3]] = 0.0
        return p

    frozen = [("ln_final.hook_scale", lambda x, hook: clean["ln_final.hook_scale"]),
              ("blocks.1.attn.hook_pattern", subject_only)]
    seen = {}
    with torch.no_grad(), stored.hooks(fwd_hooks=frozen + [("blocks.1.attn.hook_z", lambda z, hook: seen.update(z=z))]):
        stored(prompt)
    out = seen["z"][0, -1, 0] @ stored.blocks[1].attn.W_O[0]
    logit = (out - out.mean()) / clean["ln_final.hook_scale"][0, -1] @ stored.W_U[:, WORDS.index("basketball")]
    assert float(ext.from_subject[1, 0]) == pytest.approx(float(logit.detach()), rel=1e-9)
    rate = extraction_rate([ext, attribute_extraction(stored, "Michael Phelps plays", "Michael Phelps", "swimming")])
    assert rate.tolist() == [[0.0], [1.0]]


def test_subject_enrichment_counts_attributes_in_the_logit_lens(stored):
    from probes.logit_lens import logit_lens
    from probes.recall import subject_enrichment

    # At "Jordan": hockey (the unembedding bias) is on top until layer 1's head copies the store
    # (written there by layer 0's MLP) into basketball's direction.
    enrich = subject_enrichment(stored, "Michael Jordan plays", "Michael Jordan", ["hockey"])
    assert enrich.pos == 2 and enrich.points == ["embed", "L0", "L1"]
    assert enrich.rate == [1.0, 1.0, 0.0] and enrich.ranks["hockey"] == [0, 0, 1]
    assert subject_enrichment(stored, "Michael Jordan plays", "Michael Jordan", ["basketball"]).rate == [0.0, 0.0, 1.0]
    both = subject_enrichment(stored, "Michael Jordan plays", "Michael Jordan", ["basketball", "swimming"],
                              candidates=["basketball", "swimming", "hockey"])
    assert both.rate == [0.5, 0.5, 0.5] and both.top_tokens[2][0] == "basketball"
    labels, logits = logit_lens(stored, "Michael Jordan plays", -1)
    assert torch.allclose(logits[-1], stored("Michael Jordan plays")[0, -1].detach(), atol=1e-10)
    with pytest.raises(ValueError, match="attributes"):
        subject_enrichment(stored, "Michael Jordan plays", "Michael Jordan", [])
