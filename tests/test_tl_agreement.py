"""Our patching sweeps and direct logit attribution against TransformerLens 4 on the same weights."""

import warnings

import pytest
import torch

from interp import metrics
from interp.attribution import direct_logit_attribution
from interp.crosscheck import bridge_for, random_gpt2
from interp.patching import sweep
from models import from_hf

tl_patching = pytest.importorskip("transformer_lens.patching")

# (our site, TransformerLens function, permutation taking TL's axes to ours)
SWEEPS = [
    ("resid_pre", "get_act_patch_resid_pre", None),
    ("resid_mid", "get_act_patch_resid_mid", None),
    ("attn_out", "get_act_patch_attn_out", None),
    ("mlp_out", "get_act_patch_mlp_out", None),
    ("head_z_by_pos", "get_act_patch_attn_head_out_by_pos", None),
    ("head_z", "get_act_patch_attn_head_out_all_pos", None),
    ("head_q_by_pos", "get_act_patch_attn_head_q_by_pos", None),
    ("head_v", "get_act_patch_attn_head_v_all_pos", None),
    ("head_pattern_by_pos", "get_act_patch_attn_head_pattern_by_pos", None),  # both [layer, head, dest_pos]
]


def loud_gpt2(seed):
    """A random GPT-2 whose weight matrices are 10x GPT-2's initial scale: sharp attention and
    large MLP outputs, so that patches and attributions are far from zero."""
    hf = random_gpt2(n_layers=2, d_model=36, n_heads=3, d_vocab=60, n_ctx=32, d_mlp=96, dtype=torch.float64, seed=seed)
    with torch.no_grad():
        for p in hf.parameters():
            if p.dim() == 2:
                p.mul_(10)
    return hf


@pytest.fixture(scope="module")
def setup():
    hf = loud_gpt2(3)
    model = from_hf(hf)
    bridge = bridge_for(hf)
    gen = torch.Generator().manual_seed(0)
    clean = torch.randint(0, 60, (2, 6), generator=gen)
    corrupted = clean.clone()
    corrupted[:, 2:4] = torch.randint(0, 60, (2, 2), generator=gen)
    return model, bridge, clean, corrupted


@pytest.mark.parametrize("site,tl_fn,perm", SWEEPS)
def test_patching_equals_transformer_lens(setup, site, tl_fn, perm):
    model, bridge, clean, corrupted = setup
    metric = metrics.logit_diff(model, [3, 4], [8, 9])
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _, clean_cache = bridge.run_with_cache(clean)
        theirs = getattr(tl_patching, tl_fn)(bridge, corrupted, clean_cache, lambda logits: metric(logits))
    if perm:
        theirs = theirs.permute(*perm)
    ours = sweep(model, clean, corrupted, metric, site, progress=False)
    assert ours.values.shape == theirs.shape
    spread = float(ours.values.max() - ours.values.min())
    assert spread > 0.05  # the patches do something, so agreement means something
    assert torch.allclose(ours.values, theirs.double(), atol=1e-5, rtol=0), (ours.values - theirs).abs().max()


def test_direct_logit_attribution_equals_transformer_lens():
    hf = loud_gpt2(5)
    model = from_hf(hf)
    bridge = bridge_for(hf)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        bridge.enable_compatibility_mode(disable_warnings=True, fold_value_biases=False)
    tokens = torch.randint(0, 60, (2, 7), generator=torch.Generator().manual_seed(1))
    answer, counterfactual = torch.tensor([3, 4]), torch.tensor([8, 9])
    with torch.no_grad():
        _, cache = bridge.run_with_cache(tokens)
        stack = cache.stack_head_results(layer=-1, pos_slice=-1)
        theirs = cache.logit_attrs(stack, tokens=answer, incorrect_tokens=counterfactual, pos_slice=-1)
    theirs = theirs.mean(-1).reshape(2, 3).double()
    ours = direct_logit_attribution(model, tokens, answer, counterfactual).heads
    assert ours.abs().max() > 0.3
    assert torch.allclose(ours, theirs, atol=1e-5, rtol=0), (ours - theirs).abs().max()
