"""The one intervention engine: every plan gives the numbers of one plain forward pass per row."""

import pytest
import torch

from conftest import ARCHS, make_model
from interp import metrics
from interp.engine import FromRun, Patch, run_patched
from interp.tokens import answer_token


def reference(model, base, rows, metric, sources, base_patches=()):
    """One run_with_hooks per row, written without the engine: patches applied in order."""
    with torch.no_grad():
        source_acts = {k: model.run_with_cache(t)[1] for k, t in sources.items()}
    out = []
    for row in rows:
        hooks = []
        for p in list(base_patches) + list(row):
            def hook(x, hook, p=p):
                x = x.clone()
                idx = (slice(None),) + p.index
                if isinstance(p.value, FromRun):
                    x[idx] = source_acts[p.value.run][hook.name].expand_as(x)[idx]
                elif callable(p.value):
                    x[idx] = p.value(x)[idx]
                elif p.op == "add":
                    x[idx] = x[idx] + p.value
                else:
                    x[idx] = p.value
                return x
            hooks.append((p.name, hook))
        with torch.no_grad():
            out.append(float(metric(model.run_with_hooks(base, fwd_hooks=hooks))))
    return torch.tensor(out, dtype=torch.float64)


def mixed_rows():
    """Rows of several patches each, across layers, positions, hooks and value kinds."""
    return [
        [Patch("blocks.1.attn.hook_z", (4, 1), FromRun("src"))],
        [Patch("blocks.0.hook_resid_pre", (2,), FromRun("src")), Patch("blocks.1.mlp.hook_post", (5, 7), 0.0)],
        [Patch("blocks.0.attn.hook_pattern", (slice(None), 6), torch.nan_to_num),
         Patch("blocks.0.attn.hook_attn_scores", (0, 6, [1, 3]), float("-inf"))],
        [Patch("hook_embed", (3,), 0.5, op="add")],
        [Patch("blocks.-1.hook_mlp_out", (slice(None),), FromRun("src"))],
        [],
        [Patch("blocks.1.hook_resid_post", (0,), FromRun("src"))],  # position 0 agrees in both runs: a no-op
    ]


@pytest.mark.parametrize("arch", list(ARCHS))
@pytest.mark.parametrize("plan", ["fused", "resumed"])
def test_plans_equal_one_forward_per_row(arch, plan):
    model = make_model(arch, dtype="float64")
    gen = torch.Generator().manual_seed(5)
    base = torch.randint(0, 50, (2, 8), generator=gen)
    src = base.clone()
    src[:, 2:5] = torch.randint(0, 50, (2, 3), generator=gen)
    rows = mixed_rows()
    for metric in (metrics.logit_diff(model, [3, 4], [5, 6]), lambda logits: logits[..., 2].mean()):
        out = run_patched(model, base, rows, metric, sources={"src": src}, plan=plan, batch_size=4)
        expected = reference(model, base, rows, metric, {"src": src})
        torch.testing.assert_close(out.values, expected, atol=1e-10, rtol=0)
        with torch.no_grad():
            assert out.plan == plan and out.values[5] == out.base_value == float(metric(model(base)))
            assert out.source_values["src"] == pytest.approx(float(metric(model(src))), abs=1e-10)
    assert not any(hp.has_hooks for hp in model.hook_dict.values())


def test_base_patches_apply_to_every_row_but_not_to_sources():
    model = make_model("gpt2", dtype="float64")
    base = torch.randint(0, 50, (1, 7), generator=torch.Generator().manual_seed(2)).expand(3, -1)  # 3 noise samples
    noise = torch.randn(3, 2, model.cfg.d_model, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    base_patches = [Patch("hook_embed", (slice(1, 3),), noise, op="add")]
    rows = [[Patch(f"blocks.{l}.hook_resid_post", (p,), FromRun("clean"))] for l in range(2) for p in range(7)]
    metric = metrics.probability(model, 4)
    expected = reference(model, base, rows, metric, {"clean": base[:1]}, base_patches)
    for plan in ("fused", "resumed"):
        out = run_patched(model, base, rows, metric, sources={"clean": base[:1]}, base_patches=base_patches, plan=plan)
        torch.testing.assert_close(out.values, expected, atol=1e-10, rtol=0)
        # Position 0 is before the noise: restoring it changes nothing; the last layer's last position restores all.
        assert out.values[0] == pytest.approx(out.base_value, abs=1e-12)
        with torch.no_grad():
            assert out.values[-1] == pytest.approx(float(metric(model(base[:1].expand(3, -1)))), abs=1e-10)


def test_resumed_runs_fewer_positions_and_layers():
    """The resumed plan starts each chunk at its layer and position: a patch in the last layer at the
    last position runs one block on one position (checked by counting what the blocks see)."""
    model = make_model("gpt2", dtype="float64")
    base = torch.randint(0, 50, (1, 9), generator=torch.Generator().manual_seed(0))
    seen = []
    handle = model.blocks[0].register_forward_pre_hook(lambda m, args: seen.append(("b0", args[0].shape[1])))
    handle1 = model.blocks[1].register_forward_pre_hook(lambda m, args: seen.append(("b1", args[0].shape[1])))
    try:
        out = run_patched(model, base, [[Patch("blocks.1.attn.hook_z", (8, 0), 0.0)]], metrics.probability(model, 3),
                          plan="resumed")
    finally:
        handle.remove(), handle1.remove()
    assert seen == [("b0", 9), ("b1", 9), ("b1", 1)]  # the cached base run, then one position of block 1
    assert out.n_forwards == 2


def test_gradients_flow_through_patch_values():
    model = make_model("gpt2", dtype="float64")
    base = torch.randint(0, 50, (1, 6), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        post = model.run_with_cache(base, names_filter="blocks.0.mlp.hook_post")[1]["blocks.0.mlp.hook_post"][0, 4]
    alphas = torch.tensor([0.5, 1.0], dtype=torch.float64)
    scaled = (alphas[:, None] * post[None]).requires_grad_(True)
    rows = [[Patch("blocks.0.mlp.hook_post", (4,), scaled[i])] for i in range(2)]
    metric = metrics.logit(model, 7)
    out = run_patched(model, base, rows, metric, grad=True)
    (grad,) = torch.autograd.grad(out.values.sum(), scaled)
    for i in range(2):  # the same gradient from a plain forward with the value as a leaf
        leaf = scaled[i].detach().clone().requires_grad_(True)

        def put(x, hook, leaf=leaf):
            x = x.clone()
            x[0, 4] = leaf
            return x

        y = metric(model.run_with_hooks(base, fwd_hooks=[("blocks.0.mlp.hook_post", put)]))
        (g,) = torch.autograd.grad(y, leaf)
        torch.testing.assert_close(grad[i], g, atol=1e-10, rtol=0)


def test_bad_input_is_refused_before_anything_runs():
    model = make_model("gpt2")
    base = torch.randint(0, 50, (1, 6))
    metric = metrics.probability(model, 1)
    with pytest.raises(KeyError, match="hook_zz"):
        run_patched(model, base, [[Patch("blocks.0.attn.hook_zz", (1,), 0.0)]], metric)
    with pytest.raises(KeyError, match="'clean', which is not in sources"):
        run_patched(model, base, [[Patch("blocks.0.attn.hook_z", (1,), FromRun("clean"))]], metric)
    with pytest.raises(TypeError, match="Patch objects"):
        run_patched(model, base, [[("blocks.0.attn.hook_z", 0.0)]], metric)
    with pytest.raises(ValueError, match="op must be"):
        Patch("blocks.0.attn.hook_z", (1,), 0.0, op="mul")
    with pytest.raises(ValueError, match="source run 'src' has token shape"):
        run_patched(model, base, [[Patch("blocks.0.attn.hook_z", (1,), FromRun("src"))]], metric,
                    sources={"src": torch.zeros(1, 5, dtype=torch.long)})
    assert not any(hp.has_hooks for hp in model.hook_dict.values())


def test_one_answer_token_policy(tmp_path):
    """Metrics, attribution, causal tracing and knowledge neurons read the same token for a word:
    " word" when that is one token (the next word after a prompt), else the word."""
    from helpers import build_hf_tokenizer
    from interp.attribution import direct_logit_attribution
    from models import Transformer, TransformerConfig
    from models.tokenizer import HFTokenizer
    from probes.causal_trace import prepare
    from probes.knowledge_neurons import knowledge_neurons

    tok = HFTokenizer(build_hf_tokenizer(tmp_path, vocab_size=400))
    model = Transformer(TransformerConfig(n_layers=1, d_model=16, n_heads=2, d_vocab=tok.vocab_size, n_ctx=32, seed=0),
                        tokenizer=tok)
    spaced, bare = model.to_single_token(" the"), model.to_single_token("the")
    assert spaced != bare  # a vocabulary where the spelling matters
    assert answer_token(model, "the") == spaced and answer_token(model, " the") == spaced
    assert answer_token(model, bare) == bare  # ids are taken as given
    prompt = "the cat sat on"
    assert int(metrics.logit_diff(model, "the", "cat").answer) == spaced
    assert int(metrics.probability(model, "the").answer) == spaced
    dla = direct_logit_attribution(model, prompt, "the")
    assert dla.answer == " the"
    assert prepare(model, prompt, "cat", "the").answer_id == spaced
    assert knowledge_neurons(model, prompt, "the", steps=2, progress=False).target == spaced
    with pytest.raises(ValueError, match="not a single token"):
        answer_token(model, "basketballs")
