"""FFN key-value probing: a hand-built AND neuron is found, explained and validated; the
fact-world model's Michael Jordan neurons pass the ablation test."""

import pytest
import torch

from analyses.factworld_facts import other_facts_for
from interp import Neuron
from models import load
from probes.ffn import (
    and_detection, answer_stats, fact_neurons, key_decomposition, localise, neuron_activations, trigger_examples,
    validate, value_projection,
)
from conftest import make_model
from helpers import blank_word_model

WORDS = ["<pad>", "<bos>", "<eos>", "Michael", "Jordan", "Phelps", "Alexis", "basketball", "swimming", "hockey", "x", "y"]
FULL, FIRST_ONLY, LAST_ONLY = "Michael Jordan", "Michael Phelps", "Alexis Jordan"


@pytest.fixture(scope="module")
def hand_model():
    return build_hand_model()


def build_hand_model():
    """One layer. Attention averages the (normalised) tokens seen so far, so the last position
    holds both name parts. Neuron 0's key is u_Michael + u_Jordan with a bias set between the
    full name and either part: an AND. Its value writes u_basketball. Neuron 1 reads u_Jordan
    alone (fires for both Jordans) and writes u_hockey; neuron 2 fires for every name and
    writes a little u_basketball; neuron 3 never fires."""
    model, u = blank_word_model(WORDS, n_layers=1, d_model=24)
    with torch.no_grad():
        attn, mlp = model.blocks[0].attn, model.blocks[0].mlp
        attn.W_V[0] = torch.eye(24, dtype=torch.float64) * (2.0 / 24 ** 0.5)  # ln1 output has norm sqrt(24)
        attn.W_O[0] = torch.eye(24, dtype=torch.float64)
        model.unembed.W_U.copy_(torch.stack([u[w] for w in WORDS], dim=1))
        mlp.W_in[:, 0] = u["Michael"] + u["Jordan"]
        mlp.W_in[:, 1] = u["Jordan"]
        mlp.W_in[:, 2] = u["Michael"] + u["Jordan"] + u["Alexis"] + u["Phelps"]
        mlp.b_in[3] = -1.0
        pre = neuron_activations(model, [FULL, FIRST_ONLY, LAST_ONLY], [Neuron(0, 0)], pre=True)[:, 0]
        mlp.b_in[0] = -(pre[0] + pre[1:].max()) / 2  # threshold halfway between the full name and a part
        mlp.b_in[1] = -0.1
        mlp.W_out[0] = 40 * u["basketball"]
        mlp.W_out[1] = 1.0 * u["hockey"]
        mlp.W_out[2] = 0.1 * u["basketball"]
    return model


def top1(model, prompt):
    with torch.no_grad():
        return WORDS[int(model(prompt)[0, -1].argmax())]


def test_hand_model_behaves_as_built(hand_model):
    assert top1(hand_model, FULL) == "basketball"
    assert top1(hand_model, FIRST_ONLY) != "basketball" and top1(hand_model, LAST_ONLY) != "basketball"


def test_fact_neurons_ranks_the_and_neuron_first(hand_model):
    ranked = fact_neurons(hand_model, FULL, "basketball", k=4)
    assert (ranked[0].layer, ranked[0].index) == (0, 0)
    assert ranked[0].contribution > 0 and ranked[0].top_tokens[0] == "basketball"
    assert [n.index for n in ranked[:2]] == [0, 2]  # the weaker basketball writer second
    assert ranked.explained == pytest.approx(sum(n.contribution for n in ranked) / ranked.total)
    # The contribution is activation x value score.
    assert ranked[0].contribution == pytest.approx(ranked[0].activation * ranked[0].value_score, rel=1e-9)


def test_value_projection_names_the_token(hand_model):
    proj = value_projection(hand_model, Neuron(0, 0), k=3)
    assert proj.promoted[0][0] == "basketball" and proj.promoted[0][1] > 0
    assert value_projection(hand_model, Neuron(0, 1), k=1).promoted[0][0] == "hockey"


def test_and_detection_flags_only_the_and_neuron(hand_model):
    rows = and_detection(hand_model, FULL, FIRST_ONLY, LAST_ONLY, neurons=[Neuron(0, i) for i in range(4)])
    flags = {r.neuron.index: r.is_and for r in rows}
    assert flags == {0: True, 1: False, 2: False, 3: False}
    and_row = rows[0]
    assert and_row.full > 0 and and_row.first_only == 0 and and_row.last_only == 0
    # The bias is the gate: each part alone would fire without it.
    assert and_row.bias < 0 and and_row.bias_gates
    assert not rows[1].bias_gates  # neuron 1 fires for "Alexis Jordan" too
    # Scanning the whole layer finds it as the best AND.
    assert and_detection(hand_model, FULL, FIRST_ONLY, LAST_ONLY, k=1)[0].neuron == Neuron(0, 0)


def test_key_decomposition_sums_to_the_pre_activation(hand_model):
    parts = key_decomposition(hand_model, FULL, Neuron(0, 0))
    pre = neuron_activations(hand_model, FULL, [Neuron(0, 0)], pre=True)[0, 0]
    assert sum(parts.values()) == pytest.approx(float(pre), abs=1e-10)
    assert parts["bias"] == pytest.approx(float(hand_model.blocks[0].mlp.b_in[0].detach()))
    for arch in ("gpt2", "llama_gqa", "neox_partial_rotary"):
        model = make_model(arch, dtype="float64")
        tokens = torch.randint(0, 50, (1, 6), generator=torch.Generator().manual_seed(0))
        parts = key_decomposition(model, tokens, Neuron(1, 5, pos=3))
        pre = neuron_activations(model, tokens, [Neuron(1, 5)], pos=3, pre=True)[0, 0]
        assert sum(parts.values()) == pytest.approx(float(pre), abs=1e-10), arch


def test_ablating_the_neuron_removes_the_fact(hand_model):
    others = {"other names": [(FIRST_ONLY, top1(hand_model, FIRST_ONLY)), (LAST_ONLY, top1(hand_model, LAST_ONLY))]}
    result = validate(hand_model, FULL, "basketball", [Neuron(0, 0)], other_facts=others, n_random=2)
    zero = result.interventions[0]
    assert zero.mode == "zero" and zero.rank_before == 0 and zero.rank_after > 0
    assert zero.p_after < 0.5 * zero.p_before
    assert min(zero.random_p_after) > zero.p_after
    assert result.specificity["other names"]["after"] == result.specificity["other names"]["before"] == 1.0
    assert result.localised
    loc = localise(hand_model, FULL, "basketball", subject=FULL, other_facts=others)
    assert loc.k == 1 and (loc.sites[0].layer, loc.sites[0].index) == (0, 0)


def test_trigger_examples(hand_model):
    prompts = [FULL, FIRST_ONLY, LAST_ONLY, "x y", "Jordan Michael"]
    top = trigger_examples(hand_model, Neuron(0, 0), prompts, k=3)
    # Attention averages the names, so the key sees both parts in either order; nothing else fires.
    assert {(t.prompt, t.token) for t in top[:2]} == {(FULL, "Jordan"), ("Jordan Michael", "Michael")}
    assert top[1].activation > 0 and top[2].activation == 0


def test_bad_neuron_is_named(hand_model):
    with pytest.raises(ValueError, match="L0N9 does not exist"):
        value_projection(hand_model, Neuron(0, 9))
    with pytest.raises(TypeError, match=r"interp.Neuron\(layer, index"):
        value_projection(hand_model, (0, 1))


@pytest.fixture(scope="module")
def fw():
    return load("factworld")


def test_factworld_michael_jordan_neurons(fw):
    prompt = "Michael Jordan plays the sport of"
    ranked = fact_neurons(fw, prompt, "basketball", k=10)
    result = validate(fw, prompt, "basketball", ranked.sites, other_facts=other_facts_for(prompt), n_random=3)
    zero = result.interventions[0]
    print(f"top-10 zero ablation: P(basketball) {zero.p_before:.3f} -> {zero.p_after:.3f}; random "
          f"{zero.random_p_after}; specificity {result.specificity}")
    assert zero.p_after <= 0.5 * zero.p_before
    assert min(zero.random_p_after) > zero.p_after  # random neurons from the same layers do far less
    for group in result.specificity.values():
        assert group["n"] > 100 and group["after"] >= 0.95 * group["before"]
    p, rank, correct = answer_stats(fw, [(prompt, "basketball")])
    assert bool(correct[0])  # the model itself is untouched afterwards


def test_gated_mlp_neurons():
    """SwiGLU: the gate and the up projection both decompose exactly; a contribution is still
    activation x value score, and the neuron ranking is the direct logit attribution's."""
    model = make_model("llama_gqa", dtype="float64")
    tokens = torch.randint(0, 50, (1, 6), generator=torch.Generator().manual_seed(5))
    _, cache = model.run_with_cache(tokens)
    for which, hook in (("gate", "hook_pre"), ("up", "hook_pre_linear")):
        parts = key_decomposition(model, tokens, Neuron(1, 7), which=which)
        assert sum(parts.values()) == pytest.approx(float(cache[f"blocks.1.mlp.{hook}"][0, -1, 7]), abs=1e-10)
    ranked = fact_neurons(model, tokens, 3, k=5)
    for n in ranked:
        assert n.contribution == pytest.approx(n.activation * n.value_score, rel=1e-9, abs=1e-12)
        assert n.activation == pytest.approx(float(cache[f"blocks.{n.layer}.mlp.hook_post"][0, -1, n.index]))
