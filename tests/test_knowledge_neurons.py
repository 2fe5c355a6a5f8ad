"""Knowledge neurons by integrated gradients (probes.knowledge_neurons)."""

import json
import time

import pytest
import torch

from interp import Neuron

from conftest import make_model
from probes.knowledge_neurons import (
    KnowledgeNeuronResult,
    completeness_gap,
    knowledge_neurons,
    ranking_overlap,
)

PROMPT, TARGET = "Michael Jordan plays the sport of", "basketball"
TOKENS = torch.randint(0, 50, (9,), generator=torch.Generator().manual_seed(1))
TARGET_ID = 7


def no_hooks(model) -> bool:
    return not any(hp.has_hooks for hp in model.hook_dict.values())


@pytest.fixture(scope="module")
def factworld():
    from models import load

    return load("factworld")


# ============================================================ slow reference
def reference_ig(model, tokens, target, layer, pos, steps, output):
    """Dai et al.'s IG, one full forward + backward per Riemann step.

    A hook on hook_post scales the whole activation vector at `pos` by k / steps; the
    gradient is taken with respect to the tensor the hook returns (what the rest of
    the model reads).
    """
    name = f"blocks.{layer}.mlp.hook_post"
    _, cache = model.run_with_cache(tokens[None], names_filter=name)
    a = cache[name][0, pos]
    total = torch.zeros_like(a)
    for k in range(1, steps + 1):
        seen = {}

        def scale(x, hook, alpha=k / steps):
            x = x.clone()
            x[:, pos] = alpha * x[:, pos]
            seen["x"] = x
            return x

        with model.hooks(fwd_hooks=[(name, scale)]):
            logits = model(tokens[None])[0, -1]
        y = logits.softmax(-1)[target] if output == "prob" else logits[target]
        (g,) = torch.autograd.grad(y, seen["x"])
        total += g[0, pos]
    return a * total / steps


def output_with_layer_zeroed(model, tokens, target, layer, pos, output):
    def zero(x, hook):
        x = x.clone()
        x[:, pos] = 0
        return x

    with torch.no_grad(), model.hooks(fwd_hooks=[(f"blocks.{layer}.mlp.hook_post", zero)]):
        logits = model(tokens[None])[0, -1]
    return float(logits.softmax(-1)[target] if output == "prob" else logits[target])


@pytest.mark.parametrize("pos,output", [(-1, "prob"), (3, "logit")])
def test_batched_ig_matches_slow_reference(arch, pos, output):
    model = make_model(arch, "float64")
    steps = 7
    # batch_size 3: the 7 Riemann rows (+ the baseline row) take three forward passes
    res = knowledge_neurons(model, TOKENS, TARGET_ID, steps=steps, batch_size=3, pos=pos, output=output,
                            progress=False)
    assert res.attributions.shape == (model.cfg.n_layers, model.cfg.d_mlp)
    assert res.attributions.dtype == torch.float64
    assert res.layers == list(range(model.cfg.n_layers)) and res.pos == pos % len(TOKENS)
    for row, layer in enumerate(res.layers):
        ref = reference_ig(model, TOKENS, TARGET_ID, layer, pos % len(TOKENS), steps, output)
        if pos == -1 or layer < model.cfg.n_layers - 1:  # the last MLP before the last position reaches nothing
            assert ref.abs().max() > 1e-9  # a non-trivial comparison
        torch.testing.assert_close(res.attributions[row], ref, rtol=1e-8, atol=1e-10)
        zeroed = output_with_layer_zeroed(model, TOKENS, TARGET_ID, layer, pos % len(TOKENS), output)
        assert abs(float(res.zeroed_outputs[row]) - zeroed) < 1e-12
    with torch.no_grad():
        last = model(TOKENS[None])[0, -1]
    full = last.softmax(-1)[TARGET_ID] if output == "prob" else last[TARGET_ID]
    assert abs(res.full_output - float(full)) < 1e-12
    assert no_hooks(model)
    assert all(p.grad is None for p in model.parameters())


def test_batch_size_layers_and_no_grad_do_not_change_numbers():
    model = make_model("gpt2", "float64")
    full = knowledge_neurons(model, TOKENS, TARGET_ID, steps=6, progress=False)
    with torch.no_grad():  # the caller's no_grad must not break the gradients
        one = knowledge_neurons(model, TOKENS, TARGET_ID, steps=6, batch_size=1, layers=[1], progress=False)
    assert one.layers == [1] and one.attributions.shape == (1, model.cfg.d_mlp)
    torch.testing.assert_close(one.attributions[0], full.attributions[1], rtol=1e-10, atol=1e-14)
    neg = knowledge_neurons(model, TOKENS, TARGET_ID, steps=6, layers=[-1], progress=False)
    assert neg.layers == [1]


# ============================================================ completeness
def strong_mlp_model(arch):
    """A tiny model whose MLPs matter (and are far from linear along the IG path)."""
    model = make_model(arch, "float64")
    with torch.no_grad():
        for block in model.blocks:
            block.mlp.W_in.mul_(3)
            block.mlp.W_out.mul_(10)
    return model


@pytest.mark.parametrize("arch", ["gpt2", "gpt2_relu_untied", "llama_gqa", "transformer_2017"])
@pytest.mark.parametrize("output", ["prob", "logit"])
def test_completeness(arch, output):
    """sum over a layer's neurons -> out(full) - out(layer zeroed at pos); error ~ 1 / steps."""
    model = strong_mlp_model(arch)
    coarse = knowledge_neurons(model, TOKENS, TARGET_ID, steps=5, output=output, progress=False)
    fine = knowledge_neurons(model, TOKENS, TARGET_ID, steps=200, output=output, progress=False)
    for layer in fine.layers:
        span = fine.full_output - float(fine.zeroed_outputs[layer])
        gap5, gap200 = abs(completeness_gap(coarse, layer)), abs(completeness_gap(fine, layer))
        # Seen: |gap200| / |span| from 2e-5 to 2e-2; the right Riemann sum's error falls ~40x from 5 to 200 steps.
        assert gap200 < 3e-2 * abs(span) + 1e-12
        assert gap200 < gap5 / 10


def test_completeness_on_factworld(factworld):
    coarse = knowledge_neurons(factworld, PROMPT, TARGET, steps=5, progress=False)
    fine = knowledge_neurons(factworld, PROMPT, TARGET, steps=200, progress=False)
    for layer in range(4):
        span = fine.full_output - float(fine.zeroed_outputs[layer])
        assert abs(completeness_gap(fine, layer)) < 3e-2 * abs(span) + 1e-6
        assert abs(completeness_gap(fine, layer)) < abs(completeness_gap(coarse, layer)) / 10


# ============================================================ result object
def test_result_api(tmp_path):
    model = make_model("gpt2", "float64")
    res = knowledge_neurons(model, TOKENS, TARGET_ID, steps=4, threshold=0.3, progress=False)
    d_mlp = model.cfg.d_mlp
    top = res.top(5)
    assert len(top) == 5
    assert [s for _, s in top] == sorted((s for _, s in top), reverse=True)
    assert top[0][1] == pytest.approx(float(res.attributions.max()))
    for neuron, score in top:
        assert isinstance(neuron, Neuron) and neuron.pos == res.pos
        assert res.attributions[res.layers.index(neuron.layer), neuron.index] == score
    best = float(res.attributions.max())
    sel = res.selected()  # default threshold from the call: 0.3
    assert sel and all(s > 0.3 * best for _, s in sel)
    assert len(sel) == int((res.attributions > 0.3 * best).sum())
    assert len(res.selected(0.0)) == int((res.attributions > 0).sum())
    assert res.values is res.attributions and res.axes == ("layer", "neuron")
    assert res.labels["layer"] == ["L0", "L1"] and res.labels["neuron"][:2] == ["N0", "N1"]
    assert len(res.labels["neuron"]) == d_mlp
    path = res.save_json(tmp_path / "kn" / "res.json")
    data = json.loads(path.read_text())
    assert data["values"] == res.attributions.tolist() and data["layers"] == [0, 1] and data["steps"] == 4
    assert data["target"] == TARGET_ID and data["axes"] == ["layer", "neuron"]
    with pytest.raises(ValueError, match="layer 5"):
        completeness_gap(res, 5)


def test_plots_like_patch_result():
    pytest.importorskip("matplotlib")
    from interp.plot import plot_result

    res = knowledge_neurons(make_model("gpt2", "float64"), TOKENS, TARGET_ID, steps=3, progress=False)
    fig = plot_result(res)
    assert fig is not None


# ============================================================ ranking overlap
def test_ranking_overlap_hand_made():
    N = Neuron
    a = [(N(3, 10), 0.9), (N(2, 5), 0.8), (N(1, 1), 0.5), (N(0, 7), 0.1)]
    b = [N(2, 5), N(4, 4), N(3, 10, pos=6), N(0, 7)]  # rankings at one position: the position is not compared
    r = ranking_overlap(a, b, k=3)
    assert r == {"k": 3, "overlap": 2, "jaccard": 2 / 4, "shared": [N(3, 10), N(2, 5)]}
    r = ranking_overlap(a, b, k=4)
    assert r["overlap"] == 3 and r["jaccard"] == pytest.approx(3 / 5) and r["shared"] == [N(3, 10), N(2, 5), N(0, 7)]
    assert ranking_overlap(a, a, k=2) == {"k": 2, "overlap": 2, "jaccard": 1.0, "shared": [N(3, 10), N(2, 5)]}
    assert ranking_overlap([N(0, 1)], [N(0, 2)], k=5) == {"k": 5, "overlap": 0, "jaccard": 0.0, "shared": []}

    class Contribution:  # like probes.ffn.NeuronContribution
        def __init__(self, layer, index):
            self.layer, self.index = layer, index

    r = ranking_overlap(a, [Contribution(1, 1), Contribution(3, 10)], k=3)
    assert r["overlap"] == 2 and r["shared"] == [N(3, 10), N(1, 1)]
    with pytest.raises(ValueError, match="k must be"):
        ranking_overlap(a, b, k=0)
    with pytest.raises(TypeError, match="ranking entries"):
        ranking_overlap(a, ["oops"], k=2)
    with pytest.raises(TypeError, match="ranking entries"):
        ranking_overlap(a, [(3, 10)], k=2)  # plain tuples are not neurons


def test_ranking_overlap_accepts_result():
    res = knowledge_neurons(make_model("gpt2", "float64"), TOKENS, TARGET_ID, steps=3, progress=False)
    top = res.top(4)
    assert ranking_overlap(res, top, k=4)["overlap"] == 4
    assert ranking_overlap(res, [n for n, _ in reversed(top)], k=4)["jaccard"] == 1.0


# ============================================================ bad input, hooks
def test_bad_target_word_names_the_word(factworld):
    with pytest.raises(ValueError, match="notaword"):
        knowledge_neurons(factworld, PROMPT, "notaword", progress=False)
    with pytest.raises(ValueError, match="basket ball"):
        knowledge_neurons(factworld, PROMPT, "basket ball", progress=False)
    assert no_hooks(factworld)


def test_bad_arguments():
    model = make_model("gpt2", "float64")
    with pytest.raises(ValueError, match="outside the vocabulary"):
        knowledge_neurons(model, TOKENS, 50, progress=False)
    with pytest.raises(ValueError, match="layer 2"):
        knowledge_neurons(model, TOKENS, 1, layers=[2], progress=False)
    with pytest.raises(ValueError, match="pos 9"):
        knowledge_neurons(model, TOKENS, 1, pos=9, progress=False)
    with pytest.raises(ValueError, match="output"):
        knowledge_neurons(model, TOKENS, 1, output="loss", progress=False)
    with pytest.raises(ValueError, match="steps"):
        knowledge_neurons(model, TOKENS, 1, steps=0, progress=False)
    with pytest.raises(ValueError, match="one prompt"):
        knowledge_neurons(model, TOKENS.reshape(3, 3), 1, progress=False)
    assert no_hooks(model)


def test_hooks_removed_when_an_error_is_raised_midway(monkeypatch):
    model = make_model("gpt2", "float64")
    calls = {"n": 0}
    forward = model.unembed.forward

    def flaky(x):
        calls["n"] += 1
        if calls["n"] == 2:  # the first call is the clean run; the second is inside the IG loop
            assert not no_hooks(model)  # our scaling hook is attached right now
            raise RuntimeError("boom")
        return forward(x)

    monkeypatch.setattr(model.unembed, "forward", flaky)
    with pytest.raises(RuntimeError, match="boom"):
        knowledge_neurons(model, TOKENS, TARGET_ID, steps=3, progress=False)
    assert calls["n"] == 2
    assert no_hooks(model)
    assert all(p.grad is None for p in model.parameters())


# ============================================================ the fact-world model
def test_factworld_michael_jordan(factworld):
    start = time.perf_counter()
    res = knowledge_neurons(factworld, PROMPT, TARGET, progress=False)
    elapsed = time.perf_counter() - start
    assert isinstance(res, KnowledgeNeuronResult)
    assert res.attributions.shape == (4, 512)
    assert res.target == factworld.to_single_token(TARGET) and res.target_str == TARGET
    assert res.tokens[-1] == "of" and res.pos == len(res.tokens) - 1
    top = res.top(10)
    assert top[0][1] > 0
    assert res.selected() and len(res.selected()) <= 4 * 512
    assert no_hooks(factworld)
    print(f"\nknowledge neurons, {PROMPT!r} -> {TARGET!r} ({elapsed:.3f}s, steps={res.steps}):")
    for neuron, score in top:
        print(f"  {neuron.label}: {score:.4f}")
