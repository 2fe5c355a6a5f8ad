"""TransformerLens idioms, literally, on our model and on a TransformerLens 4.3 bridge around the
same weights: equal numbers (1e-4, float32) or equal structure, or a loud error on our side.

The idioms are those of TransformerLens' Main_Demo, Exploratory_Analysis_Demo and
Activation_Patching_in_TL_Demo. Models: the shipped fact-world model (exported with `to_hf`,
its word tokenizer with `to_hf()`), unprocessed and, against the bridge's compatibility mode,
processed with `models.processing.process_weights`; and a random GPT-2.
"""

import contextlib
import copy
import io
import re
import warnings

import pytest
import torch
from transformer_lens import patching as tl_patching
from transformer_lens import utilities as tl_utils

from interp import act_name
from interp import tl_patching as our_patching
from interp.crosscheck import bridge_for, random_gpt2
from interp import explore
from interp.factored import FactoredMatrix
from models import from_hf, load, to_hf
from models.processing import process_weights

ATOL = 1e-4
PROMPT = "Michael Jordan plays the sport of"
CORRUPT = "Michael Phelps plays the sport of"


def close(ours, theirs, atol=ATOL):
    ours, theirs = torch.as_tensor(ours).detach().double(), torch.as_tensor(theirs).detach().double()
    assert ours.shape == theirs.shape, (ours.shape, theirs.shape)
    diff = (ours - theirs).abs().max().item() if ours.numel() else 0.0
    assert diff <= atol, diff


def quiet(fn, *args, **kwargs):
    with warnings.catch_warnings(), contextlib.redirect_stderr(io.StringIO()):
        warnings.simplefilter("ignore")
        return fn(*args, **kwargs)


@pytest.fixture(scope="module")
def fw():
    """(our fact-world model, a bridge around the same weights with the same tokenizer)."""
    model = load("factworld")
    bridge = quiet(bridge_for, to_hf(model))
    bridge.tokenizer = model.tokenizer.to_hf()
    return model, bridge


@pytest.fixture(scope="module")
def fw_folded(fw):
    """(our model processed as TransformerLens does, the bridge in compatibility mode)."""
    model, _ = fw
    bridge = quiet(bridge_for, to_hf(model))
    bridge.tokenizer = model.tokenizer.to_hf()
    quiet(bridge.enable_compatibility_mode, disable_warnings=True)
    return process_weights(model, fold_value_biases=True), bridge


@pytest.fixture(scope="module")
def gpt2():
    hf = random_gpt2(n_layers=3, d_model=64, n_heads=4, d_vocab=120, seed=3)
    return from_hf(hf), quiet(bridge_for, hf)


def both(fw, fn):
    """Run one idiom on our model and on the bridge."""
    model, bridge = fw
    with torch.no_grad():
        return fn(model), quiet(fn, bridge)


# ============================================================ tokens (Main_Demo)
def test_tokens_and_strings(fw):
    model, bridge = fw
    for m in (model, bridge):
        assert m.to_tokens(PROMPT).shape == (1, 7)
    assert torch.equal(model.to_tokens(PROMPT), bridge.to_tokens(PROMPT))
    assert torch.equal(model.to_tokens(PROMPT, prepend_bos=False), bridge.to_tokens(PROMPT, prepend_bos=False))
    tokens = model.to_tokens(PROMPT)
    # [1, pos] is squeezed: one label per position, not one nested list.
    assert model.to_str_tokens(tokens) == bridge.to_str_tokens(tokens) == model.to_str_tokens(PROMPT)
    assert len(model.to_str_tokens(tokens)) == 7
    assert model.to_str_tokens(tokens[0]) == bridge.to_str_tokens(tokens[0])
    assert model.to_str_tokens(torch.tensor(5)) == bridge.to_str_tokens(torch.tensor(5))
    assert model.to_str_tokens([PROMPT, CORRUPT]) == bridge.to_str_tokens([PROMPT, CORRUPT])
    assert model.to_string(tokens[0, 1:]) == bridge.to_string(tokens[0, 1:])
    assert model.to_string(tokens[:, 1:]) == bridge.to_string(tokens[:, 1:])
    assert model.to_string(329) == bridge.to_string(329)
    assert model.to_string(torch.tensor(329)) == bridge.to_string(torch.tensor(329))
    assert model.to_single_token("basketball") == bridge.to_single_token("basketball")
    for mode in ("first", "last"):
        assert model.get_token_position("Jordan", PROMPT, mode=mode) == bridge.get_token_position("Jordan", PROMPT, mode=mode)
    assert model.get_token_position("the", tokens, prepend_bos=False) == bridge.get_token_position("the", tokens)


def test_forward_return_types_and_loss(fw):
    tokens = fw[0].to_tokens([PROMPT, CORRUPT])
    (lo, lt) = both(fw, lambda m: m(tokens))
    close(lo, lt)
    close(*both(fw, lambda m: m(tokens, return_type="loss")))
    close(*both(fw, lambda m: m(tokens, return_type="loss", loss_per_token=True)))
    ours, theirs = both(fw, lambda m: m(tokens, return_type="both"))
    close(ours[0], theirs[0]) or close(ours[1], theirs[1])
    close(*both(fw, lambda m: m(PROMPT, prepend_bos=False)))
    per_token = fw[0].loss_fn(lo, tokens, per_token=True)
    assert per_token.shape == (2, 6)
    close(per_token, fw[1].loss_fn(lt, tokens, per_token=True))
    assert fw[0](tokens, return_type=None) is None


def test_test_prompt_prints_the_same_ranks(fw):
    model, bridge = fw
    out_ours, out_tl = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out_ours):
        ranks = explore.test_prompt(PROMPT, "basketball", model, top_k=3)
    with contextlib.redirect_stdout(out_tl):
        quiet(tl_utils.test_prompt, PROMPT, "basketball", bridge, top_k=3)
    line = lambda text: re.search(r"Ranks of the answer tokens: .*", text).group(0)
    assert line(out_ours.getvalue()) == line(out_tl.getvalue())
    assert ranks == [[("basketball", 0)]]
    assert "Top 0th token" in out_ours.getvalue()


# ============================================================ cache and hooks (Main_Demo)
def test_cache_keys_shortcuts_and_act_names(fw):
    tokens = fw[0].to_tokens(PROMPT)
    (_, ours), (_, theirs) = both(fw, lambda m: m.run_with_cache(tokens))
    n = fw[0].cfg.n_layers
    for key in [("pattern", 0), ("attn", 1), ("resid_post", -1), ("resid_pre", 2), ("z", -2), ("q", 0), ("k", 3),
                ("v", 1), ("post", 2), ("pre", 0), ("mlp_out", -1), ("attn_out", 0), ("scale", 1, "ln1"),
                ("normalized", 2, "ln2"), ("scale",), ("embed",), ("pos_embed",), ("resid_mid", 3)]:
        close(ours[key if len(key) > 1 else key[0]], theirs[key if len(key) > 1 else key[0]])
    for short in ["k3", "pattern0", "v1", "resid_pre2", "scale1ln2", "in0"]:
        close(ours[short], theirs[tl_utils.get_act_name(short)] if short != "resid_pre2" else theirs["resid_pre", 2])
    for args in [("k", 6), ("pattern", 0), ("scale", 1, "ln1"), ("resid_pre", 3), ("post", 2), ("embed",), ("scale",),
                 ("k6",), ("pattern0",), ("normalized", 3, "ln2"), ("attn_scores", 1), ("mlp_out", -1)]:
        assert act_name(*args) == tl_utils.get_act_name(*args)
    assert ours["resid_post", -1] is ours["resid_post", n - 1]


def test_hook_lifetime_and_layer(fw):
    """add_hook stays attached after run_with_cache (TransformerLens 4.3 bridge too) until reset_hooks."""
    model = fw[0]
    bridge = quiet(bridge_for, to_hf(model))  # its own: the bridge's reset_hooks also drops internal hooks
    tokens = model.to_tokens(PROMPT)
    seen = {"ours": [], "tl": []}

    def recorder(key):
        def fn(x, hook):
            seen[key].append(hook.layer())
        return fn

    model.add_hook(act_name("v", 2), recorder("ours"))
    quiet(bridge.add_hook, act_name("v", 2), recorder("tl"))
    try:
        with torch.no_grad():
            model.run_with_cache(tokens)
            model(tokens)
            quiet(bridge.run_with_cache, tokens)
            quiet(bridge, tokens)
    finally:
        model.reset_hooks()
        quiet(bridge.reset_hooks)
    assert seen["ours"] == seen["tl"] == [2, 2]
    with torch.no_grad():
        model(tokens)
    assert seen["ours"] == [2, 2]


def test_run_with_hooks_head_ablation(fw):
    tokens = fw[0].to_tokens([PROMPT, CORRUPT])

    def ablate_head(value, hook):
        value[:, :, 1, :] = 0.0
        return value

    close(*both(fw, lambda m: m.run_with_hooks(tokens, fwd_hooks=[(act_name("v", 1), ablate_head)])))
    close(*both(fw, lambda m: m.run_with_hooks(
        tokens, fwd_hooks=[(lambda name: name.endswith("hook_pattern"), lambda p, hook: p * 0.5)])))


def test_remove_batch_dim(fw):
    tokens = fw[0].to_tokens(PROMPT)
    (_, ours), (_, theirs) = both(fw, lambda m: m.run_with_cache(tokens, remove_batch_dim=True))
    assert ours["pattern", 0].shape == theirs["pattern", 0].shape == (4, 7, 7)
    close(ours["resid_post", -1], theirs["resid_post", -1])
    (_, ours), (_, theirs) = both(fw, lambda m: m.run_with_cache(tokens))
    close(ours.remove_batch_dim()["z", 1], theirs.remove_batch_dim()["z", 1])
    close(ours.accumulated_resid(pos_slice=-1), theirs.accumulated_resid(pos_slice=-1))
    _, batch = fw[0].run_with_cache(fw[0].to_tokens([PROMPT, CORRUPT]))
    with pytest.raises(ValueError, match="batch of one"):
        batch.remove_batch_dim()


# ============================================================ weights (Main_Demo)
def test_stacked_weights_and_factored_circuits(fw):
    model, bridge = fw
    for name in ["W_Q", "W_K", "W_V", "W_O", "b_Q", "b_K", "b_V", "b_O", "W_in", "W_out", "b_in", "b_out",
                 "W_E", "W_pos", "W_U"]:
        close(getattr(model, name), getattr(bridge, name))
    assert model.W_Q.shape == (4, 4, 128, 32)
    with torch.no_grad():
        close(model.OV.AB, bridge.OV.AB)
        close(model.QK[1, 2].AB, bridge.QK[1, 2].AB)
        ours_eig = model.OV[1, 2].eigenvalues
        theirs_eig = bridge.OV[1, 2].eigenvalues
    key = lambda e: sorted(zip(e.real.tolist(), e.imag.tolist()))
    close(torch.tensor(key(ours_eig)), torch.tensor(key(theirs_eig)))
    close(model.OV.S, bridge.OV.S, 1e-3)
    close(model.OV.norm(), bridge.OV.norm(), 1e-3)
    U, S, V = model.OV[0, 0].svd()
    close(U @ torch.diag_embed(S) @ V.transpose(-2, -1), model.OV[0, 0].AB.double())
    close(model.OV.get_corner(2), bridge.OV.get_corner(2))
    x = torch.randn(5, 128)
    close((x @ model.OV[0, 1]).AB, (x @ bridge.OV[0, 1]).AB)
    with pytest.raises(AttributeError, match="Use .V"):
        model.OV.Vh


def test_factored_matrix_products_match_transformer_lens():
    from transformer_lens import FactoredMatrix as TLFactored

    gen = torch.Generator().manual_seed(0)
    A, B, C = (torch.randn(3, 6, 2, generator=gen), torch.randn(3, 2, 5, generator=gen),
               torch.randn(5, 4, generator=gen))
    ours, theirs = FactoredMatrix(A, B), TLFactored(A, B)
    close((ours @ C).AB, (theirs @ C).AB)
    close(ours.T.AB, theirs.T.AB)
    close(ours[1].AB, theirs[1].AB)
    close(ours.collapse_l(), theirs.collapse_l())
    close(ours.make_even().AB, theirs.make_even().AB)
    sq = FactoredMatrix(A, A.transpose(-2, -1))
    close(sq.BA, TLFactored(A, A.transpose(-2, -1)).BA)


def test_attn_only_config():
    from models import Transformer, TransformerConfig

    model = Transformer(TransformerConfig(n_layers=2, d_model=32, n_heads=4, d_vocab=50, attn_only=True, seed=0))
    assert not any("mlp" in n for n in model.hook_names)
    _, cache = model.run_with_cache(torch.tensor([[1, 2, 3]]))
    stack, labels = cache.decompose_resid(return_labels=True)
    assert labels == ["embed", "pos_embed", "0_attn_out", "1_attn_out"]
    close(stack.sum(0), cache["resid_post", -1])
    with pytest.raises(AttributeError, match="attn_only"):
        model.W_in


# ============================================================ residual stream (Exploratory_Analysis_Demo)
def test_logit_lens_accumulated_resid_apply_ln(fw):
    """accumulated_resid(apply_ln=True) renormalises each component with the final norm: TL's logit lens."""
    model, bridge = fw
    tokens = model.to_tokens(PROMPT)
    basketball = model.to_single_token("basketball")
    (_, ours), (_, theirs) = both(fw, lambda m: m.run_with_cache(tokens))
    for layer in (None, -1, 2, 0):
        o, lo = ours.accumulated_resid(layer=layer, incl_mid=True, pos_slice=-1, apply_ln=True, return_labels=True,
                                       ln_weight=False)
        t, lt = theirs.accumulated_resid(layer=layer, incl_mid=True, pos_slice=-1, apply_ln=True, return_labels=True)
        assert lo == lt
        close(o, t)
    lens = ours.accumulated_resid(apply_ln=True, pos_slice=-1)[:, 0] @ model.W_U[:, basketball]
    close(lens, theirs.accumulated_resid(apply_ln=True, pos_slice=-1)[:, 0] @ bridge.W_U[:, basketball])


def test_unfolded_norms_need_an_explicit_choice(fw):
    """TL's apply_ln ignores ln weights (its numbers assume folding): ours asks, then matches."""
    model, bridge = fw
    tokens = model.to_tokens([PROMPT, CORRUPT])
    (_, ours), (_, theirs) = both(fw, lambda m: m.run_with_cache(tokens))
    stack = ours.decompose_resid(layer=-1, pos_slice=-1)
    with pytest.raises(ValueError, match="ln_weight=True"):
        ours.apply_ln_to_stack(stack, layer=-1, pos_slice=-1)
    with pytest.raises(ValueError, match="ln_weight"):
        ours.logit_attrs(stack, "basketball", "swimming", pos_slice=-1)
    with pytest.raises(ValueError, match="ln_weight"):
        ours.stack_head_results(layer=-1, pos_slice=-1, apply_ln=True)
    close(ours.apply_ln_to_stack(stack, layer=-1, pos_slice=-1, ln_weight=False),
          theirs.apply_ln_to_stack(theirs.decompose_resid(layer=-1, pos_slice=-1), layer=-1, pos_slice=-1))
    close(ours.logit_attrs(stack, "basketball", "swimming", pos_slice=-1, ln_weight=False),
          theirs.logit_attrs(theirs.decompose_resid(layer=-1, pos_slice=-1), "basketball", "swimming", pos_slice=-1))
    # ln_weight=True is exact: components plus the bias add up to the real logit difference.
    logits = model(tokens)[:, -1]
    b, s = model.to_single_token("basketball"), model.to_single_token("swimming")
    exact = ours.logit_attrs(stack, b, s, pos_slice=-1, ln_weight=True).sum(0) + ours.logit_bias(b, s)
    close(exact, logits[:, b] - logits[:, s])


def exploratory_demo(model, cache, answer_tokens):
    """The Exploratory_Analysis_Demo's direct logit attribution, verbatim (on a folded model)."""
    answer_residual_directions = model.tokens_to_residual_directions(answer_tokens)
    logit_diff_directions = answer_residual_directions[:, 0] - answer_residual_directions[:, 1]
    final_residual_stream = cache["resid_post", -1]
    final_token_residual_stream = final_residual_stream[:, -1, :]
    scaled_final = cache.apply_ln_to_stack(final_token_residual_stream, layer=-1, pos_slice=-1)
    average_logit_diff = (scaled_final * logit_diff_directions).sum(-1).mean()
    accumulated_residual, labels = cache.accumulated_resid(layer=-1, incl_mid=True, pos_slice=-1, return_labels=True)
    scaled_accum = cache.apply_ln_to_stack(accumulated_residual, layer=-1, pos_slice=-1)
    logit_lens = (scaled_accum * logit_diff_directions).sum(-1).mean(-1)
    per_layer_residual, layer_labels = cache.decompose_resid(layer=-1, pos_slice=-1, return_labels=True)
    per_layer = (cache.apply_ln_to_stack(per_layer_residual, layer=-1, pos_slice=-1) * logit_diff_directions).sum(-1)
    per_head_residual, head_labels = cache.stack_head_results(layer=-1, pos_slice=-1, return_labels=True)
    per_head = cache.logit_attrs(per_head_residual, answer_tokens[:, 0], answer_tokens[:, 1], pos_slice=-1)
    direct_path = (model.W_E @ model.W_U)[answer_tokens[:, 0], answer_tokens[:, 0]]
    return dict(average_logit_diff=average_logit_diff, logit_lens=logit_lens, per_layer=per_layer, per_head=per_head,
                direct_path=direct_path), (labels, layer_labels, head_labels)


def test_exploratory_demo_on_folded_weights(fw_folded):
    model, bridge = fw_folded
    tokens = model.to_tokens([PROMPT, CORRUPT])
    answers = torch.tensor([[model.to_single_token(w) for w in pair]
                            for pair in (("basketball", "swimming"), ("swimming", "basketball"))])
    with torch.no_grad():
        close(model(tokens), bridge(tokens))
        ours, ours_labels = exploratory_demo(model, model.run_with_cache(tokens)[1], answers)
        theirs, their_labels = quiet(exploratory_demo, bridge, quiet(bridge.run_with_cache, tokens)[1], answers)
    assert ours_labels == their_labels
    for key in ours:
        close(ours[key], theirs[key])
    assert ours["per_head"].abs().max() > 0.1  # real numbers, not zeros


def test_processing_keeps_the_logits(fw):
    model, _ = fw
    tokens = model.to_tokens([PROMPT, CORRUPT])
    with torch.no_grad():
        ref = model(tokens)
        for kw in [dict(center_unembed=False, fold_value_biases=False), dict(center_unembed=False, fold_value_biases=True)]:
            close(process_weights(model, **kw)(tokens), ref, 1e-4)
        full = process_weights(model, fold_value_biases=True)(tokens)
    close(full.log_softmax(-1), ref.log_softmax(-1), 1e-4)  # center_unembed shifts each position's logits
    assert (full - ref).abs().max() > 1e-3
    close(model(tokens), ref, 0.0)  # the original is untouched
    with pytest.raises(TypeError, match="fold_value_biases"):
        process_weights(model)


# ============================================================ patching (Activation_Patching_in_TL_Demo)
PATCHES = ["get_act_patch_resid_pre", "get_act_patch_resid_mid", "get_act_patch_attn_out", "get_act_patch_mlp_out",
           "get_act_patch_attn_head_out_by_pos", "get_act_patch_attn_head_q_by_pos", "get_act_patch_attn_head_k_by_pos",
           "get_act_patch_attn_head_v_by_pos", "get_act_patch_attn_head_pattern_by_pos",
           "get_act_patch_attn_head_out_all_pos", "get_act_patch_attn_head_q_all_pos",
           "get_act_patch_attn_head_k_all_pos", "get_act_patch_attn_head_v_all_pos",
           "get_act_patch_attn_head_pattern_all_pos", "get_act_patch_block_every",
           "get_act_patch_attn_head_all_pos_every", "get_act_patch_attn_head_by_pos_every"]


@pytest.fixture(scope="module")
def patching_setup(fw):
    model, bridge = fw
    clean, corrupted = model.to_tokens(PROMPT), model.to_tokens(CORRUPT)
    b, s = model.to_single_token("basketball"), model.to_single_token("swimming")

    def metric(logits):
        return logits[0, -1, b] - logits[0, -1, s]

    with torch.no_grad():
        ours_cache = model.run_with_cache(clean)[1]
        theirs_cache = quiet(bridge.run_with_cache, clean)[1]
    return model, bridge, corrupted, ours_cache, theirs_cache, metric


@pytest.mark.parametrize("name", PATCHES)
def test_patching_functions(patching_setup, name):
    model, bridge, corrupted, ours_cache, theirs_cache, metric = patching_setup
    # The tutorial runs under torch.set_grad_enabled(False). With gradients on, the bridge's
    # resid_mid patch reaches only ln2's input, not the residual skip (see the README).
    with torch.no_grad():
        ours = getattr(our_patching, name)(model, corrupted, ours_cache, metric)
        theirs = quiet(getattr(tl_patching, name), bridge, corrupted, theirs_cache, metric)
    close(ours, theirs)
    assert ours.abs().max() > 0.5  # the patches matter on this model


def test_patching_refuses_what_it_does_not_do(patching_setup):
    model, _, corrupted, ours_cache, _, metric = patching_setup
    with pytest.raises(TypeError, match="sweep"):
        our_patching.get_act_patch_resid_pre(model, corrupted, ours_cache, metric, reduce="mean")
    with pytest.raises(ValueError, match="does not match"):
        our_patching.get_act_patch_resid_pre(model, corrupted[:, :5], ours_cache, metric)


# ============================================================ a random GPT-2, tokens only
def test_random_gpt2_idioms(gpt2):
    model, bridge = gpt2
    tokens = torch.randint(0, 120, (2, 9), generator=torch.Generator().manual_seed(0))
    (lo, co), (lt, ct) = both(gpt2, lambda m: m.run_with_cache(tokens))
    close(lo, lt)
    for key in [("resid_pre", 1), ("pattern", 2), ("scale", -1, "ln2"), ("z", 0)]:
        close(co[key], ct[key])
    for kwargs in [dict(), dict(incl_mid=True, layer=2), dict(layer=1, mlp_input=True), dict(mlp_input=True, apply_ln=True)]:
        close(co.accumulated_resid(pos_slice=-1, **kwargs), ct.accumulated_resid(pos_slice=-1, **kwargs))
    for kwargs in [dict(), dict(layer=2, mode="attn"), dict(layer=1, mlp_input=True, apply_ln=True),
                   dict(apply_ln=True, pos_slice=(1, 4))]:
        close(co.decompose_resid(ln_weight=False, **kwargs), ct.decompose_resid(**kwargs))
    o, lo_ = co.stack_head_results(layer=2, incl_remainder=True, return_labels=True, apply_ln=True, ln_weight=False)
    t, lt_ = ct.stack_head_results(layer=2, incl_remainder=True, return_labels=True, apply_ln=True)
    assert lo_ == lt_
    close(o, t)
    close(co.logit_attrs(co.decompose_resid(pos_slice=-1), tokens[:, -1], pos_slice=-1, ln_weight=False),
          ct.logit_attrs(ct.decompose_resid(pos_slice=-1), tokens[:, -1], pos_slice=-1))
    close(model.tokens_to_residual_directions(tokens), bridge.tokens_to_residual_directions(tokens))
    close(model.tokens_to_residual_directions(7), bridge.tokens_to_residual_directions(7))
    assert model.cfg.device == str(bridge.cfg.device) == "cpu"
    double = copy.deepcopy(model).double()
    assert double.cfg.device == "cpu" and "device" not in double.cfg.to_dict()


def test_small_refusals_say_what_to_do(fw):
    model, _ = fw
    with pytest.raises(ValueError, match="right only"):
        model(PROMPT, padding_side="left")
    with pytest.raises(ValueError, match="normalized"):
        act_name("in", 0, "mlp")
    with pytest.raises(ValueError, match="tokens="):
        model(torch.zeros(1, 3, 128), return_type="loss", start_at_layer=2)


def test_grouped_query_stacks_keep_kv_heads_and_circuits_repeat_them():
    from interp.crosscheck import random_hf

    hf = random_hf("llama", n_layers=2, d_model=48, n_heads=4, n_kv_heads=2)
    model, bridge = from_hf(hf), quiet(bridge_for, hf)
    for name in ["W_Q", "W_K", "W_V", "W_O"]:
        close(getattr(model, name), quiet(getattr, bridge, name))
    assert model.W_K.shape == (2, 2, 48, 12)
    with torch.no_grad():
        close(model.OV.AB, bridge.OV.AB)
        close(model.QK.AB, bridge.QK.AB)


def test_processed_weights_equal_the_compatibility_mode_bridge(fw_folded):
    """Each processing step is visible in the weights, and equals TransformerLens' result."""
    model, bridge = fw_folded
    for name in ["W_Q", "W_K", "W_V", "W_O", "b_Q", "b_K", "b_V", "b_O", "W_in", "b_in", "W_out", "b_out",
                 "W_E", "W_pos", "W_U", "b_U"]:
        close(getattr(model, name), getattr(bridge, name))
    assert model.b_V.abs().max() == 0 and model.W_E.mean(-1).abs().max() < 1e-5  # folded b_V, centred writers
    assert model.W_U.mean(-1).abs().max() < 1e-5  # centred unembedding
    assert all(bool((model.get_parameter(n) == 1).all()) for n in ["ln_final.w", "blocks.0.ln1.w", "blocks.3.ln2.w"])
