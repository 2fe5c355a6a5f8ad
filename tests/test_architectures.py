"""GPT-NeoX (Pythia), Llama and Qwen2 checkpoints: same logits as HF, same hooks as TransformerLens."""

import warnings

import pytest
import torch

from interp.crosscheck import crosscheck, random_hf
from models import from_hf, load


def build(arch: str, dtype=torch.float32, tie: bool = False):
    """Small random HF models; norm weights and biases perturbed (interp.crosscheck.random_hf)."""
    if arch == "neox_parallel":  # Pythia layout: parallel attention + MLP, rotary on a quarter of each head
        return random_hf("neox", d_model=64, dtype=dtype, tie_word_embeddings=tie)
    if arch == "neox_sequential":
        return random_hf("neox", d_model=48, dtype=dtype, rotary_pct=0.5, use_parallel_residual=False,
                         tie_word_embeddings=tie)
    # llama: RMSNorm, rotary, SwiGLU, 2 key/value heads for 4 query heads; qwen2: plus q/k/v biases
    return random_hf(arch, d_model=48, dtype=dtype, n_kv_heads=2, intermediate_size=80, tie_word_embeddings=tie)


ARCHS = ["neox_parallel", "neox_sequential", "llama", "qwen2"]
TOKENS = torch.randint(0, 97, (2, 9), generator=torch.Generator().manual_seed(2))


@pytest.mark.parametrize("arch", ARCHS)
# float64: HF computes the rotary tables (and Llama's RMSNorm) in float32 whatever the model's
# dtype, so the three implementations agree to ~1e-7 there, not 1e-12 as for GPT-2.
@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-4), (torch.float64, 1e-6)])
def test_logits_and_every_shared_hook(arch, dtype, tol):
    hf = build(arch, dtype)
    model = from_hf(hf)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert (model(TOKENS) - hf(TOKENS).logits).abs().max() < tol
        report = crosscheck(hf, TOKENS, model, tol=tol)
    assert report.passed, report.table(by_family=True)
    # Every hook we have, the bridge has too (the NeoX bridge has no post-rotary q/k hooks).
    assert {n.split(".", 2)[-1] for n in report.ours_only} <= ({"attn.hook_rot_q", "attn.hook_rot_k"}
                                                                if arch.startswith("neox") else set())
    families = set(report.worst_by_family())
    assert {"attn.hook_pattern", "attn.hook_z", "mlp.hook_post", "ln1.hook_scale"} <= families
    if arch in ("llama", "qwen2"):
        assert {"mlp.hook_pre_linear", "attn.hook_rot_q", "attn.hook_rot_k"} <= families
        _, cache = model.run_with_cache(TOKENS, names_filter=lambda n: n.endswith("hook_k"))
        assert cache["blocks.0.attn.hook_k"].shape[2] == 2  # the key/value heads, not the query heads


def test_architecture_features_map_to_the_config():
    neox, llama = from_hf(build("neox_parallel")), from_hf(build("llama"))
    assert neox.cfg.parallel_attn_mlp and neox.cfg.rotary_dim == 4 and neox.cfg.norm == "layernorm"
    assert not from_hf(build("neox_sequential")).cfg.parallel_attn_mlp
    assert llama.cfg.gated_mlp and llama.cfg.n_kv_heads == 2 and llama.cfg.norm == "rmsnorm"
    assert llama.cfg.act_fn == "silu" and llama.cfg.rotary_dim == 12


def test_tied_embeddings():
    hf = build("qwen2", tie=True)
    model = from_hf(hf)
    assert model.cfg.tie_embeddings
    with torch.no_grad():
        assert (model(TOKENS) - hf(TOKENS).logits).abs().max() < 1e-4


@pytest.mark.parametrize("arch", ["neox_parallel", "llama", "qwen2"])
def test_load_from_local_directory(arch, tmp_path):
    hf = build(arch)
    hf.save_pretrained(str(tmp_path))
    model = load(tmp_path)
    with torch.no_grad():
        assert (model(TOKENS) - hf(TOKENS).logits).abs().max() < 1e-4


def test_unsupported_rope_scaling_is_refused():
    hf = build("llama")
    hf.config.rope_parameters = dict(hf.config.rope_parameters, rope_type="linear", factor=2.0)
    with pytest.raises(NotImplementedError, match="rope_type='linear'"):
        from_hf(hf)
