"""Attribution patching and direct logit attribution on real numbers."""

import pytest
import torch

from interp import metrics
from interp.attribution import agreement, attribution_patch, direct_logit_attribution
from interp.patching import PatchResult, sweep
from models import Transformer, TransformerConfig
from conftest import make_model, perturb_


def pair(batch=2, n_pos=7):
    gen = torch.Generator().manual_seed(4)
    clean = torch.randint(0, 50, (batch, n_pos), generator=gen)
    corrupted = clean.clone()
    corrupted[:, 1:3] = torch.randint(0, 50, (batch, 2), generator=gen)
    return clean, corrupted


def no_final_norm_model():
    cfg = TransformerConfig(n_layers=2, d_model=24, n_heads=3, d_vocab=50, n_ctx=32, dtype="float64", final_norm=False,
                            seed=0)
    model = Transformer(cfg).eval()
    perturb_(model)
    return model


@pytest.mark.parametrize("site", ["resid_post", "attn_out", "mlp_out", "head_z_by_pos", "head_z", "neuron_post_by_pos"])
@pytest.mark.parametrize("direction", ["denoise", "noise"])
def test_exact_where_the_metric_is_linear(site, direction):
    """Without a final norm the logits are linear in the last layer's outputs, so the first-order
    estimate must equal real patching there, patch by patch."""
    model = no_final_norm_model()
    clean, corrupted = pair()
    metric = metrics.logit_diff(model, [3, 8], [5, 9])
    est = attribution_patch(model, clean, corrupted, metric, site, direction=direction, layers=[1])
    real = sweep(model, clean, corrupted, metric, site, direction=direction, layers=[1], progress=False)
    assert est.values.shape == real.values.shape and est.axes == real.axes and est.labels == real.labels
    assert torch.allclose(est.values, real.values, atol=1e-10)
    assert est.clean_value == pytest.approx(real.clean_value) and est.corrupted_value == pytest.approx(real.corrupted_value)
    # Earlier layers are not linear: the estimate differs from the truth somewhere.
    est0 = attribution_patch(model, clean, corrupted, metric, "resid_pre", direction=direction, layers=[0])
    real0 = sweep(model, clean, corrupted, metric, "resid_pre", direction=direction, layers=[0], progress=False)
    assert not torch.allclose(est0.values, real0.values, atol=1e-6)


def test_attribution_tracks_real_patching():
    model = make_model("gpt2", dtype="float64")
    clean, corrupted = pair()
    metric = metrics.logit_diff(model, [3, 8], [5, 9])
    est = attribution_patch(model, clean, corrupted, metric, "head_z_by_pos")
    real = sweep(model, clean, corrupted, metric, "head_z_by_pos", progress=False)
    agree = agreement(est, real, k=5)
    assert agree.n == real.values.numel()
    assert agree.pearson > 0.5, str(agree)


def test_agreement_statistics():
    vals = torch.tensor([[0.0, 1.0, -3.0], [2.0, 0.5, 4.0]], dtype=torch.float64)

    def res(v):
        return PatchResult(v, ("layer", "head"), {"layer": ["L0", "L1"], "head": ["H0", "H1", "H2"]},
                           "head_z", "denoise", "m", 1.0, 0.0)

    same = agreement(res(vals), res(vals), k=2)
    assert same.pearson == pytest.approx(1.0) and same.spearman == pytest.approx(1.0) and same.top_k_overlap == 1.0
    flipped = agreement(res(-vals), res(vals), k=2)
    assert flipped.pearson == pytest.approx(-1.0) and flipped.spearman == pytest.approx(-1.0)
    # Monotone but not linear: Spearman 1, Pearson below 1. Top-2 by |effect| are 4 and -3.
    cubed = agreement(res(vals ** 3), res(vals), k=2)
    assert cubed.spearman == pytest.approx(1.0) and cubed.pearson < 0.999 and cubed.top_k_overlap == 1.0
    other = vals.clone()
    other[0, 2] = 0.1  # -3 drops out of the top 2; 2.0 takes its place
    assert agreement(res(other), res(vals), k=2).top_k_overlap == 0.5
    with pytest.raises(ValueError, match="different shapes"):
        agreement(res(vals[:1]), res(vals))


@pytest.mark.parametrize("arch", ["gpt2", "gpt2_relu_untied", "llama_gqa", "neox_partial_rotary"])
@pytest.mark.parametrize("dtype,tol", [("float32", 1e-5), ("float64", 1e-10)])
def test_dla_parts_sum_to_logit_difference(arch, dtype, tol):
    model = make_model(arch, dtype=dtype)
    tokens = torch.randint(0, 50, (3, 8), generator=torch.Generator().manual_seed(2))
    dla = direct_logit_attribution(model, tokens, [1, 2, 3], 4, pos=-2)
    logits = model(tokens)
    truth = (logits[torch.arange(3), -2, torch.tensor([1, 2, 3])] - logits[:, -2, 4]).detach().double().mean()
    assert dla.logit_diff == pytest.approx(float(truth), abs=tol)
    assert dla.total() == pytest.approx(dla.logit_diff, abs=tol)
    assert dla.heads.shape == (2, 3) and dla.neurons.shape == (2, model.cfg.d_mlp)


def test_dla_heads_agree_with_cache_decomposition():
    """Two routes: per-head DLA here, and ActivationCache.stack_head_results + logit_attrs."""
    model = make_model("gpt2", dtype="float64")
    tokens = torch.randint(0, 50, (1, 6), generator=torch.Generator().manual_seed(3))
    dla = direct_logit_attribution(model, tokens, 7, 9)
    _, cache = model.run_with_cache(tokens)
    stack = cache.stack_head_results(pos_slice=-1)
    attrs = cache.logit_attrs(stack, 7, 9, pos_slice=-1, ln_weight=True)  # [layer*head, batch]
    assert torch.allclose(dla.heads.flatten(), attrs[:, 0], atol=1e-12)
    mlp_out = cache["blocks.1.hook_mlp_out"][:, -1:]
    mlp_attr = cache.logit_attrs(mlp_out[None], 7, 9, pos_slice=-1, ln_weight=True)
    assert float(dla.mlp[1]) == pytest.approx(float(mlp_attr), abs=1e-12)


def test_dla_bad_token_count():
    model = make_model("gpt2")
    with pytest.raises(ValueError, match="3 answer tokens for 2 prompts"):
        direct_logit_attribution(model, torch.zeros(2, 4, dtype=torch.long), [1, 2, 3], 4)


def test_dla_refuses_post_norm():
    model = make_model("transformer_2017")
    with pytest.raises(ValueError, match="pre-norm"):
        direct_logit_attribution(model, torch.zeros(1, 4, dtype=torch.long), 1, 2)
