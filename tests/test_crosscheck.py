"""Same weights in HF transformers, our Transformer and TransformerLens 4's bridge."""

import pytest
import torch

from interp.crosscheck import crosscheck, crosscheck_model, random_gpt2
from models import from_hf, to_hf

# (n_layers, d_model, n_heads): odd head counts and d_head not a power of two (12, 10, 7, 13).
SHAPES = [(2, 60, 5), (3, 30, 3), (1, 49, 7), (2, 26, 2)]


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "L{}_d{}_h{}".format(*s))
@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-4), (torch.float64, 1e-9)], ids=["fp32", "fp64"])
def test_every_shared_hook_matches_hf_and_bridge(shape, dtype, tol):
    n_layers, d_model, n_heads = shape
    hf = random_gpt2(n_layers=n_layers, d_model=d_model, n_heads=n_heads, d_vocab=97, n_ctx=32, dtype=dtype,
                     act_fn="gelu_new" if n_heads != 7 else "relu")
    tokens = torch.randint(0, 97, (2, 11), generator=torch.Generator().manual_seed(0))
    report = crosscheck(hf, tokens)
    assert report.logits_vs_hf <= tol and report.logits_vs_bridge <= tol
    # The comparison must cover every hook family, in every layer.
    compared = {r.hook for r in report.rows}
    per_layer = ["hook_resid_pre", "ln1.hook_scale", "ln1.hook_normalized", "attn.hook_q", "attn.hook_k",
                 "attn.hook_v", "attn.hook_attn_scores", "attn.hook_pattern", "attn.hook_z", "attn.hook_result",
                 "hook_attn_out", "hook_resid_mid", "ln2.hook_scale", "ln2.hook_normalized", "mlp.hook_pre",
                 "mlp.hook_post", "hook_mlp_out", "hook_resid_post"]
    expected = {f"blocks.{l}.{n}" for l in range(n_layers) for n in per_layer}
    expected |= {"hook_embed", "hook_pos_embed", "ln_final.hook_scale", "ln_final.hook_normalized"}
    assert expected <= compared, expected - compared
    bad = [(r.hook, r.max_abs_diff) for r in report.rows if not r.passed]
    assert not bad, bad
    assert report.passed


def test_crosscheck_detects_a_wrong_weight():
    """The cross-check can fail: perturb one of our weights and it must say so."""
    hf = random_gpt2(n_layers=2, d_model=24, n_heads=3, d_vocab=50, dtype=torch.float64)
    ours = from_hf(hf)
    with torch.no_grad():
        ours.blocks[1].mlp.b_in[3] += 1e-3
    report = crosscheck(hf, torch.randint(0, 50, (1, 6)), model=ours)
    failed = {r.hook for r in report.rows if not r.passed}
    assert "blocks.1.mlp.hook_pre" in failed and "blocks.0.mlp.hook_pre" not in failed
    assert not report.passed


def test_to_hf_roundtrip_and_crosscheck_model():
    hf = random_gpt2(n_layers=2, d_model=30, n_heads=3, d_vocab=40, dtype=torch.float64)
    ours = from_hf(hf)
    back = to_hf(ours)
    for (n, a), (_, b) in zip(sorted(hf.state_dict().items()), sorted(back.state_dict().items())):
        if a.dtype.is_floating_point:
            assert torch.equal(a, b), n
    report = crosscheck_model(ours, torch.randint(0, 40, (2, 8)))
    assert report.passed, report.table()


def test_to_hf_refuses_what_gpt2_cannot_express():
    from conftest import make_model

    with pytest.raises(ValueError, match="rmsnorm.*rotary|rotary"):
        to_hf(make_model("llama_gqa"))
    with pytest.raises(ValueError, match="post-norm"):
        to_hf(make_model("transformer_2017"))
