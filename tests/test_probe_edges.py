"""Probes at the edges (issue 21): no stale cache, no silently ignored input, the run's precision,
no feature patch that silently does nothing, one zero ablation, one padded-batch helper."""

import copy

import pytest
import torch

from conftest import make_model
from interp import Feature, Neuron
from interp.checks import IndexRangeError
from interp.sites import zero_hooks
from interp.tokens import cached_batches, padded_batches
from probes.causal_trace import trace_with_patch, window_layers
from probes.edit import Edit
from probes.ffn import (
    FactBatch, check_neurons, fact_neurons, intervention_hooks, key_by_source, key_decomposition,
    neuron_contributions,
)
from probes.linear import residual_states
from probes.sae import SparseDictionary, attached
from probes.trace_average import average_trace
from test_localise import FACTS, build_stored_fact_model

PROMPTS = [f"{s} plays" for s, _ in FACTS]


@pytest.fixture(scope="module")
def stored():
    return build_stored_fact_model()


def _facts():
    return [(f"{s} plays", a, s) for s, a in FACTS]


# ---------------------------------------------------------------- FactBatch's unablated margins
def test_fact_batch_margins_follow_hooks(stored):
    batch = FactBatch(stored, _facts())
    known = batch.top1(stored)  # computed and kept
    assert bool(known.all())

    def zero(x, hook):
        return torch.zeros_like(x)

    names = [f"blocks.{l}.hook_mlp_out" for l in range(stored.cfg.n_layers)]
    with stored.hooks(fwd_hooks=[(n, zero) for n in names]):
        ablated = batch.margins(stored)
        fresh = FactBatch(stored, _facts()).margins(stored)
    torch.testing.assert_close(ablated, fresh, rtol=0, atol=0)
    assert not bool((ablated > 0).all())  # without MLPs the stored facts are gone
    torch.testing.assert_close(batch.margins(stored), FactBatch(stored, _facts()).margins(stored), rtol=0, atol=0)


def test_fact_batch_margins_follow_an_applied_edit(stored):
    batch = FactBatch(stored, _facts())
    before = batch.margins(stored).clone()
    delta = torch.zeros(stored.cfg.d_vocab, dtype=torch.float64)
    delta[stored.to_single_token("swimming")] = 50.0
    edit = Edit("ft", {"unembed.b_U": delta})
    with edit.applied(stored):
        edited = batch.margins(stored)
        torch.testing.assert_close(edited, FactBatch(stored, _facts()).margins(stored), rtol=0, atol=0)
    assert int((edited > 0).sum()) == 1  # only Phelps' fact (swimming) is still top-1
    torch.testing.assert_close(batch.margins(stored), before, rtol=0, atol=0)


def test_fact_batch_margins_of_another_model(stored):
    batch = FactBatch(stored, _facts())
    batch.margins(stored)
    other = copy.deepcopy(stored)
    with torch.no_grad():
        other.unembed.b_U[other.to_single_token("hockey")] += 20.0
    torch.testing.assert_close(batch.margins(other), FactBatch(other, _facts()).margins(other), rtol=0, atol=0)
    assert not torch.equal(batch.margins(other), batch.margins(stored))


def test_fact_batch_margins_with_a_permanent_hook(stored):
    batch = FactBatch(stored, _facts())
    batch.margins(stored)

    def zero(x, hook):
        return torch.zeros_like(x)

    handles = stored.add_hook("blocks.0.hook_mlp_out", zero, is_permanent=True)
    try:
        hooked = batch.margins(stored)
        assert not bool((hooked > 0).all())
    finally:
        for h in handles:
            h.remove()
    assert bool((batch.margins(stored) > 0).all())


# ---------------------------------------------------------------- one prompt, or the batch mean
def test_one_prompt_analyses_refuse_several(stored):
    two = PROMPTS[:2]
    with pytest.raises(ValueError, match="fact_neurons reads one prompt, got 2"):
        fact_neurons(stored, two, "basketball")
    with pytest.raises(ValueError, match="key_decomposition reads one prompt, got 2"):
        key_decomposition(stored, two, Neuron(0, 0))
    with pytest.raises(ValueError, match="key_by_source reads one prompt, got a batch of 2"):
        key_by_source(stored, stored.to_tokens(two), Neuron(0, 0))
    one = fact_neurons(stored, PROMPTS[:1], "basketball", k=3)  # a list of one prompt is one prompt
    assert [n.label for n in one] == [n.label for n in fact_neurons(stored, PROMPTS[0], "basketball", k=3)]


def test_neuron_contributions_average_the_prompts(stored):
    two = [PROMPTS[0], PROMPTS[4]]  # "Michael Jordan plays", "Michael Jones plays": the same length
    both = neuron_contributions(stored, two, "basketball")
    each = [neuron_contributions(stored, p, "basketball") for p in two]
    assert not torch.allclose(each[0], each[1])
    torch.testing.assert_close(both, (each[0] + each[1]) / 2, rtol=0, atol=1e-12)


# ---------------------------------------------------------------- precision
def test_average_trace_keeps_float64():
    model = make_model("gpt2").double()
    tokens = torch.randint(0, 50, (2, 7), generator=torch.Generator().manual_seed(3))
    facts = [(tokens[i], (1, 3), int(tokens[i, -1])) for i in range(2)]
    result = average_trace(model, facts, kind="mlp", window=1, n_samples=3, only_correct=False, progress=False)
    assert result.indirect_effect.dtype == torch.float64
    first = result.traces[0].indirect_effect  # category "first subject token" is position 1
    expected = (first[:, 1] + result.traces[1].indirect_effect[:, 1]) / 2
    torch.testing.assert_close(result.indirect_effect[:, 0], expected, rtol=0, atol=1e-15)
    single = average_trace(make_model("gpt2"), facts, kind="mlp", window=1, n_samples=3, only_correct=False,
                           progress=False)
    assert single.indirect_effect.dtype == torch.float32


# ---------------------------------------------------------------- attached transcoders
def test_feature_patch_after_removing_the_transcoders_hooks_raises(tokens):
    model = make_model("gpt2")
    tc = SparseDictionary.transcoder(model, layer=1, n_features=16, k=4)
    with attached(model, [tc]):
        clean = model(tokens)
        patched = model.run_with_hooks(tokens, fwd_hooks=[Feature(1, 3).zero()])
        model.reset_hooks()  # permanent hooks stay: features still work
        torch.testing.assert_close(model.run_with_hooks(tokens, fwd_hooks=[Feature(1, 3).zero()]), patched)
        model.reset_hooks(including_permanent=True)
        with pytest.raises(RuntimeError, match="features are no longer computed"):
            model.run_with_hooks(tokens, fwd_hooks=[Feature(1, 3).zero()])
        with pytest.raises(RuntimeError, match="attach the transcoders again"):
            model.run_with_cache(tokens, names_filter=["blocks.1.transcoder.hook_feature_acts"])
    assert not hasattr(model.blocks[1], "transcoder")
    assert not any(hp.has_hooks for hp in model.hook_dict.values())
    with attached(model, [tc]):  # attaching again works
        torch.testing.assert_close(model.run_with_hooks(tokens, fwd_hooks=[Feature(1, 3).zero()]), patched)
    torch.testing.assert_close(model(tokens), clean, rtol=0, atol=1e-5)


# ---------------------------------------------------------------- one zero ablation
def test_zero_hooks_per_row_match_one_run_per_row(tokens):
    model = make_model("gpt2_relu_untied")
    rows = [[Neuron(0, 5, pos=2)], [Neuron(1, 7, pos=-1), Neuron(0, 1)], []]
    batched = model.run_with_hooks(tokens[:1].expand(3, -1), fwd_hooks=zero_hooks(rows))
    for i, row in enumerate(rows):
        alone = model.run_with_hooks(tokens[:1], fwd_hooks=[n.zero() for n in row])
        torch.testing.assert_close(batched[i], alone[0], rtol=0, atol=1e-6)
    via_interventions = model.run_with_hooks(tokens, fwd_hooks=intervention_hooks(rows[1], "zero"))
    torch.testing.assert_close(via_interventions, model.run_with_hooks(tokens, fwd_hooks=zero_hooks(rows[1:2],
                                                                                          every_row=True)))
    with pytest.raises(IndexRangeError, match="outside the activation"):
        model.run_with_hooks(tokens, fwd_hooks=zero_hooks([[Neuron(0, 1, pos=9)]]))


# ---------------------------------------------------------------- one range check
def test_out_of_range_layers_and_positions_raise_index_range_error(stored):
    with pytest.raises(IndexRangeError):
        window_layers(2, 1, 2)
    assert window_layers(-1, 1, 2) == [1]
    with pytest.raises(IndexRangeError, match="L5N0 does not exist"):
        check_neurons(stored, [Neuron(5, 0)])
    with pytest.raises(IndexRangeError):
        trace_with_patch(stored, PROMPTS[0], "Michael Jordan", "basketball", states=[[("mlp", 2, 1)]], n_samples=1)
    with pytest.raises(IndexRangeError):
        trace_with_patch(stored, PROMPTS[0], "Michael Jordan", "basketball", states=[[("mlp", 0, 7)]], n_samples=1)
    with pytest.raises(IndexRangeError):
        fact_neurons(stored, PROMPTS[0], "basketball", pos=9)


# ---------------------------------------------------------------- texts of any lengths
def test_padded_batches_and_residual_states(stored):
    texts = ["Michael Jordan plays", "Michael", "Alexis Jordan"]
    batches = list(padded_batches(stored, texts, batch_size=2))
    assert [b.start for b in batches] == [0, 2] and [b.texts for b in batches] == [texts[:2], texts[2:]]
    assert batches[0].lengths.tolist() == [4, 2] and batches[0].real.tolist() == [[True] * 4, [True, True, False, False]]
    assert batches[1].mask is None and batches[1].last.tolist() == [2]
    (batch, cache), = list(cached_batches(stored, texts[:2], ["blocks.0.hook_resid_post"], 2))
    assert cache["blocks.0.hook_resid_post"].shape[:2] == (2, 4)


def test_residual_states_read_each_prompts_own_tokens(stored):
    texts = ["Michael Jordan plays", "Michael", "Alexis Jordan"]
    states = residual_states(stored, texts, [-1, -1, -1])  # each prompt's own last token, not the padding
    for i, text in enumerate(texts):
        alone = residual_states(stored, [text], [len(stored.to_str_tokens(text)) - 1])
        torch.testing.assert_close(states[:, i], alone[:, 0], rtol=0, atol=1e-12)
    with pytest.raises(IndexRangeError):
        residual_states(stored, texts, [0, 3, 0])  # position 3 of "Michael" is padding
