"""ActivationCache: shortcuts, residual decompositions, and logit attribution that adds up."""

import pytest
import torch

from conftest import make_model

PRE_NORM = ["gpt2", "gpt2_relu_untied", "llama_gqa", "neox_partial_rotary"]


@pytest.fixture(params=PRE_NORM)
def model_and_cache(request, tokens):
    model = make_model(request.param, dtype="float64")
    logits, cache = model.run_with_cache(tokens)
    return model, logits, cache


def test_shortcuts(model_and_cache):
    model, _, cache = model_and_cache
    assert cache["pattern", 1] is cache["blocks.1.attn.hook_pattern"]
    assert cache["resid_post", 0] is cache["blocks.0.hook_resid_post"]
    assert cache["post", 1] is cache["blocks.1.mlp.hook_post"]
    assert cache["scale"] is cache["ln_final.hook_scale"]
    assert cache["scale", 0, "ln2"] is cache["blocks.0.ln2.hook_scale"]
    assert cache["embed"] is cache["hook_embed"]
    with pytest.raises(KeyError, match="not in the cache"):
        cache["blocks.7.hook_resid_pre"]


def test_decompose_resid_sums_to_residual(model_and_cache):
    model, _, cache = model_and_cache
    stack, labels = cache.decompose_resid(return_labels=True)
    assert labels[0] == "embed" and labels[-1] == "1_mlp_out"
    torch.testing.assert_close(stack.sum(0), cache["blocks.1.hook_resid_post"], atol=1e-12, rtol=0)
    for layer in range(model.cfg.n_layers):
        torch.testing.assert_close(cache.decompose_resid(layer).sum(0), cache["resid_pre", layer], atol=1e-12, rtol=0)
        if model.cfg.parallel_attn_mlp:  # the MLP reads resid_pre; TransformerLens would add attn_out
            with pytest.raises(ValueError, match="parallel block"):
                cache.decompose_resid(layer, mlp_input=True)
            continue
        mlp_in = cache["resid_mid", layer]
        torch.testing.assert_close(cache.decompose_resid(layer, mlp_input=True).sum(0), mlp_in, atol=1e-12, rtol=0)


def test_accumulated_resid(model_and_cache):
    model, _, cache = model_and_cache
    stack, labels = cache.accumulated_resid(return_labels=True, incl_mid=not model.cfg.parallel_attn_mlp)
    assert labels[-1] == "final_post"
    assert torch.equal(stack[0], cache["resid_pre", 0]) and torch.equal(stack[-1], cache["resid_post", 1])
    # Up to layer 1 means resid_pre of blocks 0 and 1 (TransformerLens includes layer L's resid_pre).
    assert cache.accumulated_resid(layer=1, pos_slice=-1).shape == (2, 3, model.cfg.d_model)


def test_head_results_plus_bias_equal_attn_out(model_and_cache):
    model, _, cache = model_and_cache
    heads, labels = cache.stack_head_results(return_labels=True)
    n = model.cfg.n_heads
    assert labels[:2] == ["L0H0", "L0H1"] and len(labels) == model.cfg.n_layers * n
    for l in range(model.cfg.n_layers):
        torch.testing.assert_close(heads[l * n : (l + 1) * n].sum(0) + model.blocks[l].attn.b_O,
                                   cache["attn_out", l], atol=1e-12, rtol=0)
    with_rest = cache.stack_head_results(incl_remainder=True)
    torch.testing.assert_close(with_rest.sum(0), cache["resid_post", 1], atol=1e-12, rtol=0)


def test_apply_ln_to_stack_reproduces_norm_output(model_and_cache):
    model, _, cache = model_and_cache
    stack = cache.decompose_resid(apply_ln=True, ln_weight=True)
    ln = model.ln_final
    expected = cache["ln_final.hook_normalized"] * ln.w + (ln.b if hasattr(ln, "b") else 0)
    torch.testing.assert_close(stack.sum(0) + (ln.b if hasattr(ln, "b") else 0), expected, atol=1e-12, rtol=0)
    # Block norms too: ln2's input decomposed, normed, equals what the MLP reads.
    # (A parallel block's MLP reads resid_pre.)
    stack = cache.decompose_resid(1, mlp_input=not model.cfg.parallel_attn_mlp)
    normed = cache.apply_ln_to_stack(stack, 1, mlp_input=True, ln_weight=True)
    ln2 = model.blocks[1].ln2
    expected = cache["normalized", 1, "ln2"] * ln2.w + (ln2.b if hasattr(ln2, "b") else 0)
    torch.testing.assert_close(normed.sum(0) + (ln2.b if hasattr(ln2, "b") else 0), expected, atol=1e-12, rtol=0)


def test_logit_attrs_add_up_to_logits_without_folding(model_and_cache, tokens):
    model, logits, cache = model_and_cache
    answer = tokens[:, -1]  # one token per prompt
    wrong = (answer + 1) % model.cfg.d_vocab
    stack = cache.decompose_resid()
    attrs = cache.logit_attrs(stack, answer, wrong, ln_weight=True)
    assert attrs.shape == (stack.shape[0], 3, tokens.shape[1])
    true_diff = logits.gather(-1, answer[:, None, None].expand(-1, tokens.shape[1], 1))[..., 0] - \
        logits.gather(-1, wrong[:, None, None].expand(-1, tokens.shape[1], 1))[..., 0]
    total = attrs.sum(0) + cache.logit_bias(answer, wrong)[:, None]
    torch.testing.assert_close(total, true_diff, atol=1e-10, rtol=0)
    # Per head: heads + remainder add up the same way at the last position.
    heads = cache.stack_head_results(incl_remainder=True, pos_slice=-1)
    head_attrs = cache.logit_attrs(heads, answer, wrong, pos_slice=-1, ln_weight=True)
    torch.testing.assert_close(head_attrs.sum(0) + cache.logit_bias(answer, wrong), true_diff[:, -1],
                               atol=1e-10, rtol=0)


def test_logit_attrs_float32_within_1e5(tokens):
    model = make_model("gpt2")
    logits, cache = model.run_with_cache(tokens)
    attrs = cache.logit_attrs(cache.decompose_resid(pos_slice=-1), 5, pos_slice=-1, ln_weight=True)
    torch.testing.assert_close(attrs.sum(0) + cache.logit_bias(5), logits[:, -1, 5], atol=1e-5, rtol=0)


def test_post_norm_decomposition_is_refused(tokens):
    model = make_model("transformer_2017")
    _, cache = model.run_with_cache(tokens)
    with pytest.raises(ValueError, match="pre-norm"):
        cache.decompose_resid()
