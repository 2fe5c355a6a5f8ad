"""Head and Neuron sites: read one, write one, leave every other bit-identical."""

import pytest
import torch

from conftest import make_model
from interp import Feature, Head, Neuron


def run_and_cache(model, tokens, edit, names):
    """Run with `edit` applied and cache `names` as they are after the edit."""
    store = {}
    with model.hooks(fwd_hooks=[edit] + [(n, lambda x, hook: store.__setitem__(hook.name, x.clone())) for n in names]):
        model(tokens)
    return store


def edited_and_clean(model, tokens, site, act, edit):
    """The site's activation without and with the edit, and a mask of the site's slice."""
    name = site.hook_name(act)
    clean = run_and_cache(model, tokens, (name, lambda x, hook: None), [name])[name]
    edited = run_and_cache(model, tokens, edit, [name])[name]
    mask = torch.zeros_like(clean, dtype=torch.bool)
    mask[site.selector(act)] = True
    assert torch.equal(edited[~mask], clean[~mask]), "everything outside the site must be bit-identical"
    return clean, edited, mask


@pytest.mark.parametrize("act", ["q", "k", "v", "z", "result", "pattern", "attn_scores"])
@pytest.mark.parametrize("pos", [None, 4])
def test_head_write_touches_only_that_head(tokens, act, pos):
    model = make_model("gpt2", dtype="float64")
    site = Head(1, 2, pos=pos)
    clean, edited, mask = edited_and_clean(model, tokens, site, act, site.patch(7.0, act))
    assert (edited[mask] == 7.0).all()
    assert torch.equal(site.read({site.hook_name(act): edited}, act), torch.full_like(clean[site.selector(act)], 7.0))


@pytest.mark.parametrize("act", ["pre", "post"])
@pytest.mark.parametrize("pos", [None, -1])
def test_neuron_write_touches_only_that_neuron(tokens, act, pos):
    model = make_model("gpt2", dtype="float64")
    site = Neuron(0, 17, pos=pos)
    clean, edited, mask = edited_and_clean(model, tokens, site, act, site.scale(3.0, act))
    torch.testing.assert_close(edited[mask], 3.0 * clean[mask])


def test_gated_neuron_pre_linear(tokens):
    model = make_model("llama_gqa", dtype="float64")
    site = Neuron(1, 5)
    _, cache = model.run_with_cache(tokens)
    gate, lin = site.read(cache, "pre"), site.read(cache, "pre_linear")
    torch.testing.assert_close(site.read(cache, "post"), torch.nn.functional.silu(gate) * lin)


def test_zeroing_a_head_equals_removing_its_output_by_hand(tokens):
    model = make_model("gpt2", dtype="float64")
    _, cache = model.run_with_cache(tokens)
    ablated_out = run_and_cache(model, tokens, Head(0, 1).zero("z"), ["blocks.0.hook_attn_out"])["blocks.0.hook_attn_out"]
    head_out = torch.einsum("bpk,kd->bpd", cache["z", 0][:, :, 1], model.blocks[0].attn.W_O[1])
    torch.testing.assert_close(ablated_out, cache["attn_out", 0] - head_out, atol=1e-12, rtol=0)


def test_site_labels_and_errors(tokens):
    model = make_model("gpt2")
    assert Head(3, 5).label == "L3H5" and Neuron(1, 42, pos=2).label == "L1N42@2"
    assert Head(3, 5).hook_name("pattern") == "blocks.3.attn.hook_pattern"
    assert Neuron(1, 42).hook_name() == "blocks.1.mlp.hook_post"
    with pytest.raises(ValueError, match="no activation 'post'"):
        Head(0, 0).hook_name("post")
    with pytest.raises(IndexError, match="head 9 out of range.*3 heads"):
        model.run_with_hooks(tokens, fwd_hooks=[Head(0, 9).zero()])
    with pytest.raises(IndexError, match="neuron 500 out of range"):
        model.run_with_hooks(tokens, fwd_hooks=[Neuron(0, 500).zero()])


def test_neuron_from_label_round_trips():
    for n in (Neuron(2, 411, pos=2), Neuron(0, 7), Neuron(-1, 3, pos=-1)):
        assert Neuron.from_label(n.label) == n
    with pytest.raises(ValueError, match="not a neuron label"):
        Neuron.from_label("L2H3")
    for f in (Feature(1, 134, pos=2), Feature(3, 0)):
        assert Feature.from_label(f.label) == f
    with pytest.raises(ValueError, match="not a feature label"):
        Feature.from_label("L2N411")
