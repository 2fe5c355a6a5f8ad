"""Hook machinery: adding, removing (also on errors), caching, backward hooks, errors."""

import pytest
import torch

from conftest import make_model
from interp import HookShapeError, UnknownHookError


def attached(model):
    return sum(len(hp._hooks["fwd"]) + len(hp._hooks["bwd"]) for hp in model.hook_dict.values())


def test_hook_sees_name_and_can_replace_activation(tokens):
    model = make_model("gpt2")
    seen = []

    def zero_mlp(x, hook):
        seen.append(hook.name)
        return torch.zeros_like(x)

    clean = model(tokens)
    patched = model.run_with_hooks(tokens, fwd_hooks=[("blocks.1.hook_mlp_out", zero_mlp)])
    assert seen == ["blocks.1.hook_mlp_out"]
    assert not torch.allclose(clean, patched)
    # Same as removing the MLP's contribution by hand: resid_post = resid_mid.
    _, cache = model.run_with_cache(tokens)
    resid = cache["blocks.1.hook_resid_mid"]
    expected = model.unembed(model.ln_final(resid))
    torch.testing.assert_close(patched, expected, atol=1e-5, rtol=0)
    assert attached(model) == 0


def test_hooks_removed_when_body_raises(tokens):
    model = make_model("gpt2")
    with pytest.raises(RuntimeError, match="boom"):
        with model.hooks(fwd_hooks=[("blocks.0.hook_resid_pre", lambda x, hook: None)],
                         bwd_hooks=[("blocks.0.hook_resid_pre", lambda g, hook: None)]):
            assert attached(model) == 2
            raise RuntimeError("boom")
    assert attached(model) == 0


def test_hooks_removed_when_hook_raises(tokens):
    model = make_model("gpt2")

    def bad(x, hook):
        raise ValueError("inside hook")

    with pytest.raises(ValueError, match="inside hook"):
        model.run_with_hooks(tokens, fwd_hooks=[("blocks.0.attn.hook_z", bad)])
    assert attached(model) == 0
    with pytest.raises(ValueError, match="inside hook"):
        with model.hooks(fwd_hooks=[("blocks.1.mlp.hook_post", bad)]):
            model.run_with_cache(tokens)  # its own caching hooks must go too
    assert attached(model) == 0


def test_unknown_hook_name_lists_closest_and_attaches_nothing(tokens):
    model = make_model("gpt2")
    with pytest.raises(UnknownHookError) as err:
        model.run_with_hooks(tokens, fwd_hooks=[("blocks.0.hook_resid_pre", lambda x, hook: None),
                                                ("blocks.1.attn.hook_patern", lambda x, hook: None)])
    msg = str(err.value)
    assert "'blocks.1.attn.hook_patern'" in msg and "blocks.1.attn.hook_pattern" in msg
    assert attached(model) == 0
    with pytest.raises(UnknownHookError, match="blocks.0.hook_resid_pre"):
        model.add_hook("blocks.0.resid_pre", lambda x, hook: None)
    with pytest.raises(UnknownHookError, match="not in|no hook"):
        model.run_with_cache(tokens, names_filter=["blocks.9.hook_resid_pre"])


def test_wrong_shape_from_hook_names_hook_and_shapes(tokens):
    model = make_model("gpt2")

    def shrink(x, hook):
        return x[:, :-1]

    with pytest.raises(HookShapeError) as err:
        model.run_with_hooks(tokens, fwd_hooks=[("blocks.0.hook_attn_out", shrink)])
    msg = str(err.value)
    assert "blocks.0.hook_attn_out" in msg and "(3, 8, 24)" in msg and "(3, 9, 24)" in msg
    assert attached(model) == 0


def test_add_hook_stays_until_removed(tokens):
    model = make_model("gpt2")
    calls = []
    handles = model.add_hook("blocks.0.hook_resid_post", lambda x, hook: calls.append(1))
    model(tokens)
    model(tokens)
    assert len(calls) == 2
    handles[0].remove()
    model(tokens)
    assert len(calls) == 2
    model.add_hook(lambda name: name.endswith("hook_z"), lambda x, hook: calls.append(hook.name))
    assert attached(model) == model.cfg.n_layers
    model.reset_hooks()
    assert attached(model) == 0


def test_hooks_run_in_order_added(tokens):
    model = make_model("gpt2")
    out = []
    model.run_with_hooks(tokens, fwd_hooks=[
        ("blocks.0.hook_resid_pre", lambda x, hook: x * 2),
        ("blocks.0.hook_resid_pre", lambda x, hook: out.append(x.clone())),
    ])
    _, cache = model.run_with_cache(tokens, names_filter="blocks.0.hook_resid_pre")
    torch.testing.assert_close(out[0], 2 * cache["blocks.0.hook_resid_pre"])


def test_run_with_cache_filters(tokens):
    model = make_model("gpt2")
    _, all_cache = model.run_with_cache(tokens)
    assert set(all_cache) == set(model.hook_names) - model.opt_in_hooks
    _, one = model.run_with_cache(tokens, names_filter="blocks.1.hook_resid_post")
    assert list(one) == ["blocks.1.hook_resid_post"]
    _, some = model.run_with_cache(tokens, names_filter=lambda n: n.endswith("hook_pattern"))
    assert list(some) == ["blocks.0.attn.hook_pattern", "blocks.1.attn.hook_pattern"]
    assert not any(t.requires_grad for t in all_cache.values())
    assert attached(model) == 0


def test_cached_values_equal_recomputation(tokens):
    """hook_q equals ln1's output times W_Q plus b_Q, computed by hand."""
    model = make_model("gpt2", dtype="float64")
    _, cache = model.run_with_cache(tokens)
    a, ln = model.blocks[1].attn, model.blocks[1].ln1
    ln_out = cache["blocks.1.ln1.hook_normalized"] * ln.w + ln.b
    q = torch.einsum("bpd,hdk->bphk", ln_out, a.W_Q) + a.b_Q
    torch.testing.assert_close(cache["q", 1], q, atol=1e-12, rtol=0)
    x = cache["blocks.1.hook_resid_pre"]
    centred = x - x.mean(-1, keepdim=True)
    torch.testing.assert_close(cache["scale", 1, "ln1"], (centred.pow(2).mean(-1, keepdim=True) + 1e-5).sqrt())


def test_opt_in_head_results(tokens):
    model = make_model("gpt2", dtype="float64")
    _, cache = model.run_with_cache(tokens, names_filter=lambda n: n.endswith(("hook_result", "hook_attn_out")))
    result, attn_out = cache["result", 0], cache["attn_out", 0]
    torch.testing.assert_close(result.sum(2) + model.blocks[0].attn.b_O, attn_out, atol=1e-12, rtol=0)
    model.set_use_attn_result(True)
    _, cache = model.run_with_cache(tokens)
    assert "blocks.0.attn.hook_result" in cache
    model.set_use_attn_result(False)


def test_incl_bwd_gradients_match_autograd(tokens):
    model = make_model("gpt2", dtype="float64")

    def metric(logits):
        return logits[:, -1, 3].sum()

    params_before = [p.grad for p in model.parameters()]
    _, cache = model.run_with_cache(tokens, incl_bwd=True, metric=metric)
    assert all(g is None for g in params_before)
    assert all(p.grad is None for p in model.parameters()), "parameters' .grad must stay untouched"
    # Reference: gradient w.r.t. resid_mid of block 1 by autograd through a hook.
    store = {}

    def keep(x, hook):
        x.retain_grad()
        store["x"] = x

    logits = model.run_with_hooks(tokens, fwd_hooks=[("blocks.1.hook_resid_mid", keep)])
    metric(logits).backward()
    torch.testing.assert_close(cache["blocks.1.hook_resid_mid_grad"], store["x"].grad, atol=1e-12, rtol=0)
    model.zero_grad(set_to_none=True)
    assert attached(model) == 0


def test_backward_hook_can_replace_gradient(tokens):
    model = make_model("gpt2", dtype="float64")
    emb = model.embed.W_E

    def run(bwd):
        model.zero_grad(set_to_none=True)
        with model.hooks(bwd_hooks=bwd):
            model(tokens)[:, -1, 0].sum().backward()
        return emb.grad.clone()

    normal = run([])
    zeroed = run([(f"blocks.{l}.hook_resid_pre", lambda g, hook: torch.zeros_like(g)) for l in range(1)])
    # Zeroing the gradient entering block 0 leaves only the unembedding (tied W_E) path.
    assert not torch.allclose(normal, zeroed)
    grads = []
    run([("blocks.1.hook_resid_pre", lambda g, hook: grads.append(hook.name))])
    assert grads == ["blocks.1.hook_resid_pre"]
    model.zero_grad(set_to_none=True)
    assert attached(model) == 0


def test_permanent_hooks_survive_reset_hooks_as_in_transformer_lens():
    model = make_model("gpt2")
    tokens = torch.randint(0, 50, (1, 5), generator=torch.Generator().manual_seed(0))
    clean = model(tokens)
    seen = []
    model.add_hook("blocks.0.hook_resid_pre", lambda x, hook: seen.append(1), "fwd", True)  # TL: 4th is is_permanent
    model.add_perma_hook("blocks.1.hook_mlp_out", lambda x, hook: torch.zeros_like(x))
    model.add_hook("blocks.0.hook_resid_pre", lambda x, hook: seen.append(2))
    model.reset_hooks()
    killed = model(tokens)
    assert seen == [1] and not torch.allclose(killed, clean)  # the permanent ones stayed, the other went
    handles = model.add_perma_hook("hook_embed", lambda x, hook: x)
    handles[0].remove()
    assert not model.hook_dict["hook_embed"].has_hooks
    model.reset_hooks(including_permanent=True)
    assert torch.allclose(model(tokens), clean) and not any(hp.has_hooks for hp in model.hook_dict.values())
    with pytest.raises(NotImplementedError, match="hook levels"):
        model.add_hook("hook_embed", lambda x, hook: x, level=1)
    with pytest.raises(ValueError, match="dir must be"):
        model.reset_hooks(direction="sideways")


def test_reset_hooks_inside_attached_transcoders_keeps_them():
    from probes.sae import SparseDictionary, attached

    model = make_model("gpt2", dtype="float64")
    tokens = torch.randint(0, 50, (1, 5), generator=torch.Generator().manual_seed(0))
    transcoders = [SparseDictionary.transcoder(model, l, 12, activation="topk", k=4, seed=l) for l in range(2)]
    with attached(model, transcoders):
        model.reset_hooks()
        _, cache = model.run_with_cache(tokens)
        assert "blocks.1.transcoder.hook_feature_acts" in cache  # still attached and computing features
        assert (cache["blocks.1.transcoder.hook_feature_acts"] > 0).sum(-1).max() <= 4
    assert not any(hp.has_hooks for hp in model.hook_dict.values())
