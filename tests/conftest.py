import os

import tempfile

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
# Key statistics for editing are cached on disk: the tests keep theirs in a folder of their own.
os.environ["INTERP_CACHE"] = tempfile.mkdtemp(prefix="interp-test-cache-")
# torch's OpenMP threads spin-wait between parallel regions (300,000 spins by default); with other
# processes on the same cores that spinning starves them (measured on 2 shared cores: the README's
# causal-tracing block 126 s instead of 6 s, evaluating the fact world 22 s instead of 7 s). A short
# spin keeps small training loops as fast as with the default (passive waiting makes them 2x slower)
# and frees the cores under sharing. Must be set before torch is first imported.
os.environ.setdefault("GOMP_SPINCOUNT", "10000")

import pytest
import torch

from models import Transformer, TransformerConfig

# Every architecture option at least once; small enough to run in milliseconds.
ARCHS = {
    "gpt2": dict(),
    "gpt2_relu_untied": dict(act_fn="relu", tie_embeddings=False),
    "llama_gqa": dict(norm="rmsnorm", positional="rotary", act_fn="silu", gated_mlp=True, n_kv_heads=1,
                      tie_embeddings=False),
    "neox_partial_rotary": dict(positional="rotary", rotary_dim=4, parallel_attn_mlp=True, act_fn="gelu"),
    "transformer_2017": "2017",
}


def make_model(arch: str, dtype: str = "float32", seed: int = 0) -> Transformer:
    kw = ARCHS[arch]
    if kw == "2017":
        cfg = TransformerConfig.transformer_2017(d_vocab=50, n_layers=2, d_model=24, n_heads=3, n_ctx=32,
                                                 dtype=dtype, seed=seed)
    else:
        cfg = TransformerConfig(n_layers=2, d_model=24, n_heads=3, d_vocab=50, n_ctx=32, dtype=dtype,
                                seed=seed, **kw)
    model = Transformer(cfg).eval()
    perturb_(model, seed)
    return model


def perturb_(model: Transformer, seed: int = 0) -> None:
    """Non-trivial norm weights and biases, so that mistakes in using them show."""
    gen = torch.Generator().manual_seed(seed + 100)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith((".w", ".b")) or name.split(".")[-1].startswith("b_"):
                p.add_((0.2 * torch.randn(p.shape, generator=gen, dtype=torch.float64)).to(p.dtype))


@pytest.fixture(params=list(ARCHS))
def arch(request):
    return request.param


@pytest.fixture
def tokens():
    return torch.randint(0, 50, (3, 9), generator=torch.Generator().manual_seed(1))


@pytest.fixture(scope="session")
def browser():
    """One headless system Chromium for the session's browser tests (interp.views.browser)."""
    from interp.views.browser import Browser

    with Browser() as b:
        yield b
