"""The bugs a code review found, one test each (each failed before the fix)."""

import json
import os
import sys

import pytest
import torch
from torch import nn

from conftest import make_model
from interp import Head, Neuron, metrics
from interp.attribution import direct_logit_attribution
from interp.crosscheck import bridge_for, crosscheck_model, random_gpt2, random_hf
from interp.patching import sweep
from models import load
from models.loading import save

MJ, MP = "Michael Jordan plays the sport of", "Michael Phelps plays the sport of"


@pytest.fixture(scope="module")
def fw():
    return load("factworld")


def no_hooks(model) -> bool:
    return not any(hp.has_hooks for hp in model.hook_dict.values())


# ---------------------------------------------------------------- direct logit attribution's top
def test_dla_top_heads_are_the_largest_attributions(fw):
    """Attributions are effects already: top() must not subtract a baseline (it used to subtract
    the clean logit difference and return the most negative heads)."""
    dla = direct_logit_attribution(fw, MJ, "basketball", "swimming")
    top = dla.head_result().top(3)
    assert [label for label, _ in top[:2]] == ["L1H3", "L1H1"]
    assert top[0][1] == pytest.approx(float(dla.heads[1, 3])) and top[0][1] > 3
    assert top[1][1] > 1
    # In general: the k largest |values|, in order.
    flat = dla.heads.flatten()
    expected = flat.abs().argsort(descending=True)[:5]
    assert [v for _, v in dla.head_result().top(5)] == pytest.approx(flat[expected].tolist())
    assert dla.top(1) == dla.head_result().top(1)  # the result itself ranks its heads the same way


# ---------------------------------------------------------------- negative layers everywhere
def test_negative_layers_everywhere(tokens):
    model = make_model("gpt2", dtype="float64")
    n = model.cfg.n_layers
    logits, cache = model.run_with_cache(tokens)
    assert cache["resid_post", -1] is cache["resid_post", n - 1]
    assert cache["pattern", -2] is cache["pattern", 0]
    assert cache["blocks.-1.mlp.hook_post"] is cache["post", n - 1]
    assert ("resid_post", -1) in cache and ("resid_post", -3) not in cache
    # "Up to the input of layer L" arguments: -1 is the end (the input to the unembedding), as in TransformerLens.
    assert torch.equal(cache.accumulated_resid(-1), cache.accumulated_resid(n))
    assert torch.equal(cache.accumulated_resid(-2), cache.accumulated_resid(n - 1))
    assert torch.equal(cache.decompose_resid(-1), cache.decompose_resid())
    assert torch.equal(cache.decompose_resid(-2, mlp_input=True), cache.decompose_resid(n - 1, mlp_input=True))
    stack, labels = cache.stack_head_results(-1, pos_slice=-1, return_labels=True)
    assert stack.shape[0] == n * model.cfg.n_heads and labels[-1] == f"L{n - 1}H{model.cfg.n_heads - 1}"
    resid = cache.decompose_resid(pos_slice=-1)
    assert torch.equal(cache.apply_ln_to_stack(resid, -1, pos_slice=-1, ln_weight=True),
                       cache.apply_ln_to_stack(resid, pos_slice=-1, ln_weight=True))
    assert torch.equal(cache.apply_ln_to_stack(resid, -2, pos_slice=-1, ln_weight=True),
                       cache.apply_ln_to_stack(resid, n - 1, pos_slice=-1, ln_weight=True))
    # Sites read and write with negative layers.
    assert torch.equal(Head(-1, 2).read(cache), Head(n - 1, 2).read(cache))
    assert torch.equal(Neuron(-1, 5, pos=-1).read(cache), Neuron(n - 1, 5, pos=-1).read(cache))
    a = model.run_with_hooks(tokens, fwd_hooks=[Head(-1, 1).zero(), Neuron(-2, 3).scale(2.0)])
    b = model.run_with_hooks(tokens, fwd_hooks=[Head(n - 1, 1).zero(), Neuron(n - 2, 3).scale(2.0)])
    assert torch.equal(a, b) and not torch.equal(a, logits)
    assert model.hook_point("blocks.-1.hook_resid_post") is model.hook_point(f"blocks.{n - 1}.hook_resid_post")
    # Sweeps take negative layers.
    clean, corrupted = tokens[:1], tokens[1:2]
    metric = metrics.logit_diff(model, 3, 5)
    last = sweep(model, clean, corrupted, metric, "resid_pre", layers=[-1], progress=False)
    full = sweep(model, clean, corrupted, metric, "resid_pre", progress=False)
    assert torch.allclose(last.values[0], full.values[-1], atol=1e-12) and last.labels["layer"] == [f"L{n - 1}"]
    with pytest.raises(IndexError, match="does not exist"):
        cache["resid_post", -3]
    with pytest.raises(ValueError, match="does not exist"):
        sweep(model, clean, corrupted, metric, "resid_pre", layers=[-3], progress=False)


# ---------------------------------------------------------------- sites need both indices
def test_sites_need_both_indices():
    with pytest.raises(TypeError, match="head"):
        Head(3)
    with pytest.raises(TypeError, match="index"):
        Neuron(2)
    assert Neuron(0, 1).hook_name() == "blocks.0.mlp.hook_post"
    assert "post (the default" in Neuron.__doc__


# ---------------------------------------------------------------- grouped-query attention
def test_gqa_head_reads_its_key_value_head(tokens):
    model = make_model("llama_gqa", dtype="float64")  # 3 query heads share 1 key/value head
    _, cache = model.run_with_cache(tokens)
    k = cache["rot_k", 1]
    assert k.shape[2] == 1
    for h in range(3):
        assert torch.equal(Head(1, h).read(cache, "rot_k"), k[:, :, 0])
        assert torch.equal(Head(1, h).read(cache, "v"), cache["v", 1][:, :, 0])
    assert torch.equal(Head(1, 2).read(dict(cache), "k"), cache["k", 1][:, :, 0])  # a plain dict too
    with pytest.raises(ValueError, match="shared by query heads \\[0, 1, 2\\]"):
        model.run_with_hooks(tokens, fwd_hooks=[Head(1, 2).zero("k")])
    assert no_hooks(model)


# ---------------------------------------------------------------- use_attn_result per module
def test_attn_result_flag_is_read_per_block_and_restored(tokens):
    from models import from_hf

    model = from_hf(random_gpt2(n_layers=2, d_model=24, n_heads=3, d_vocab=50))
    model.blocks[1].attn.use_attn_result = True
    _, cache = model.run_with_cache(tokens)
    assert "blocks.1.attn.hook_result" in cache and "blocks.0.attn.hook_result" not in cache
    model.set_use_attn_result(True)
    report = crosscheck_model(model, tokens)
    assert report.passed
    assert all(block.attn.use_attn_result for block in model.blocks)  # crosscheck put them back as they were
    model.set_use_attn_result(False)
    crosscheck_model(model, tokens)
    assert not any(block.attn.use_attn_result for block in model.blocks)


# ---------------------------------------------------------------- no global state changed
def test_library_calls_leave_global_state_alone(monkeypatch, tmp_path):
    torch.manual_seed(1234)
    state = torch.random.get_rng_state()
    a = random_gpt2(n_layers=1, d_model=16, n_heads=2, d_vocab=20, seed=0)
    random_hf("llama", n_layers=1, d_model=16, n_heads=2, d_vocab=20, seed=0)
    assert torch.equal(torch.random.get_rng_state(), state), "random_gpt2 / random_hf reseeded the global RNG"
    b = random_gpt2(n_layers=1, d_model=16, n_heads=2, d_vocab=20, seed=0)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))  # still deterministic
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    before = dict(os.environ)
    bridge_for(a)
    from analyses.cli import main

    assert main(["verify", "--layers", "1", "--d-model", "12", "--heads", "3", "--vocab", "20", "--seq", "4"]) == 0
    assert dict(os.environ) == before, "a library call or the CLI wrote os.environ"


# ---------------------------------------------------------------- loading never imports what a file names
def test_loading_refuses_unknown_tokenizer_kinds(tmp_path):
    model = make_model("gpt2")
    from models.tokenizer import WordTokenizer

    model.tokenizer = WordTokenizer(["<pad>", "<bos>", "<eos>"] + [f"w{i}" for i in range(47)])
    path = save(model, tmp_path / "ckpt")
    assert json.loads((path / "config.json").read_text())["tokenizer"] == "word"
    assert load(path).tokenizer.vocab == model.tokenizer.vocab
    # A checkpoint naming code to import: refused, and the code never runs.
    canary = tmp_path / "ran.txt"
    (tmp_path / "evil_tokenizer.py").write_text(f"open({str(canary)!r}, 'w').write('x')\nclass Tok: pass\n")
    sys.path.insert(0, str(tmp_path))
    try:
        meta = json.loads((path / "config.json").read_text())
        meta["tokenizer"] = "evil_tokenizer:Tok"
        (path / "config.json").write_text(json.dumps(meta))
        with pytest.raises(ValueError, match="'evil_tokenizer:Tok', which is not a known kind"):
            load(path)
        assert not canary.exists() and "evil_tokenizer" not in sys.modules
    finally:
        sys.path.remove(str(tmp_path))


def test_saving_an_unknown_tokenizer_writes_nothing(tmp_path):
    model = make_model("gpt2")

    class Custom:
        bos_token_id = eos_token_id = pad_token_id = 0

        def save(self, path):
            raise AssertionError("must not be called")

    model.tokenizer = Custom()
    with pytest.raises(TypeError, match="HF or word-level tokenizers"):
        save(model, tmp_path / "out")
    assert not (tmp_path / "out").exists()


# ---------------------------------------------------------------- norms are told apart by the config
def test_rmsnorm_is_read_from_the_config(tokens):
    """An RMSNorm model with a stray attribute `b` on its norms: nothing may treat it as a bias."""
    model = make_model("llama_gqa", dtype="float64")
    logits, cache = model.run_with_cache(tokens)
    model.ln_final.b = nn.Parameter(torch.ones(model.cfg.d_model, dtype=torch.float64))
    for block in model.blocks:
        block.ln2.b = nn.Parameter(torch.ones(model.cfg.d_model, dtype=torch.float64))
    attrs = cache.logit_attrs(cache.decompose_resid(pos_slice=-1), 7, pos_slice=-1, ln_weight=True)
    torch.testing.assert_close(attrs.sum(0) + cache.logit_bias(7), logits[:, -1, 7], atol=1e-10, rtol=0)
    from probes.ffn import key_decomposition

    parts = key_decomposition(model, tokens[:1], Neuron(1, 4), which="up")
    assert sum(parts.values()) == pytest.approx(float(cache["pre_linear", 1][0, -1, 4]), abs=1e-10)


# ---------------------------------------------------------------- weights are ordinary tensors
VIEWS = ("W_Q", "W_K", "W_V", "W_in", "W_gate")  # stored in their fastest layout: documented views


def test_public_weights_are_contiguous_except_the_documented_views():
    for arch in ("gpt2_relu_untied", "llama_gqa"):
        model = make_model(arch)
        for name, p in model.named_parameters():
            if name.endswith(VIEWS):
                assert p.reshape(-1).numel() == p.numel(), name
            else:
                assert p.is_contiguous(), name
                p.view(-1)  # raised before for W_out and W_U
        W_out = model.blocks[0].mlp.W_out
        assert W_out.shape == (model.cfg.d_mlp, model.cfg.d_model) and W_out.stride() == (model.cfg.d_model, 1)
    from models import components

    for name in VIEWS:  # the views are documented where the weights are described
        assert name in components.__doc__
