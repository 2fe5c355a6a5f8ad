"""The engine at its edges: shared patch values, the final norm, the metric's position, plain-function
metrics, a model the engine has never heard of, and the sweep's defaults shared with attribution."""

import ast
import re
from pathlib import Path

import pytest
import torch

from conftest import make_model
from interp import metrics
from interp.checks import IndexRangeError
from interp.engine import FromRun, Patch, run_patched
from test_engine import reference

ROOT = Path(__file__).resolve().parents[1]


def _tokens(n_pos=7, seed=0, batch=1):
    return torch.randint(0, 50, (batch, n_pos), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("plan", ["fused", "resumed"])
@pytest.mark.parametrize("op", ["set", "add"])
def test_rows_sharing_one_value_object_at_different_positions(plan, op):
    """One tensor object in every row, each row at its own position: each row gets the value."""
    model = make_model("gpt2", dtype="float64")
    base = _tokens()
    v = torch.linspace(-1, 1, model.cfg.d_model, dtype=torch.float64)
    rows = [[Patch("blocks.0.hook_resid_pre", (p,), v, op=op)] for p in range(6)]
    for metric in (metrics.logit_diff(model, 3, 5), lambda logits: logits[:, -1, 2].mean()):
        out = run_patched(model, base, rows, metric, plan=plan)
        torch.testing.assert_close(out.values, reference(model, base, rows, metric, {}), atol=1e-10, rtol=0)
        assert len(set(out.values.tolist())) == 6  # every position has its own effect


@pytest.mark.parametrize("hook", ["ln_final.hook_normalized", "ln_final.hook_scale"])
@pytest.mark.parametrize("plan", ["fused", "resumed"])
def test_patches_at_the_final_norm(plan, hook):
    model = make_model("gpt2", dtype="float64")
    base = _tokens(seed=1)
    src = _tokens(seed=2)
    rows = [[Patch(hook, (p,), FromRun("src"))] for p in range(7)] + [[Patch(hook, (slice(None),), 0.5)]]
    for metric in (metrics.logit_diff(model, 3, 5), lambda logits: logits[:, -1, 2].mean(),
                   lambda logits: logits[:, :, 4].mean()):
        out = run_patched(model, base, rows, metric, sources={"src": src}, plan=plan)
        torch.testing.assert_close(out.values, reference(model, base, rows, metric, {"src": src}), atol=1e-10, rtol=0)
        assert out.plan == plan


def test_causal_trace_restores_the_final_norm_on_a_deep_model():
    """On a 12-layer d_model-256 model the cost model picks the resumed plan by itself."""
    from models import Transformer, TransformerConfig
    from probes.causal_trace import trace_with_patch

    model = Transformer(TransformerConfig(n_layers=12, d_model=256, n_heads=4, d_vocab=50, n_ctx=16, seed=0)).eval()
    tokens = _tokens(n_pos=6, seed=3)[0]
    states = [[("ln_final.hook_normalized", p)] for p in range(6)] + [[("resid", 11, 5)]]
    probs = trace_with_patch(model, tokens, (1, 3), 7, states=states, n_samples=2)
    with torch.no_grad():
        clean = float(model(tokens[None])[0, -1].softmax(-1)[7])
    # Restoring the last position's final-norm output (or the last block's output there) is the clean run.
    assert float(probs[5]) == pytest.approx(clean, abs=1e-5) and float(probs[6]) == pytest.approx(clean, abs=1e-5)
    assert float(probs[0]) == pytest.approx(float(probs[4]), abs=1e-7)  # other positions: no effect on the answer


@pytest.mark.parametrize("plan", ["fused", "resumed"])
def test_a_metric_position_outside_the_prompt_is_an_error(plan):
    model = make_model("gpt2")
    base = _tokens(n_pos=5)
    rows = [[Patch("blocks.0.hook_resid_pre", (1,), 0.0)]]
    for pos in (7, 5, -6):
        with pytest.raises(IndexRangeError, match="outside a prompt of 5 tokens"):
            run_patched(model, base, rows, metrics.logit_diff(model, 3, 5, pos=pos), plan=plan)
    out = run_patched(model, base, rows, metrics.logit_diff(model, 3, 5, pos=-5), plan=plan)  # position 0
    assert float(out.values[0]) == pytest.approx(out.base_value)  # a patch at position 1 cannot reach position 0
    assert not any(hp.has_hooks for hp in model.hook_dict.values())


# ------------------------------------------------------------ plain-function metrics
def _unembedded_positions(model):
    """Record the number of positions (rows x positions) each call of the unembedding computes."""
    seen = []
    handle = model.unembed.register_forward_pre_hook(lambda m, args: seen.append(args[0].shape[:-1].numel()))
    return seen, handle


@pytest.mark.parametrize("plan", ["fused", "resumed"])
def test_a_plain_function_metric_unembeds_only_the_positions_it_reads(plan):
    model = make_model("gpt2", dtype="float64")
    base, src = _tokens(n_pos=8, seed=4, batch=2), _tokens(n_pos=8, seed=5, batch=2)
    rows = [[Patch(f"blocks.{l}.hook_resid_pre", (p,), FromRun("src"))] for l in range(2) for p in range(8)]
    ld = metrics.logit_diff(model, 3, 5)
    plain = lambda logits: (logits[:, -1, 3] - logits[:, -1, 5]).mean()  # noqa: E731
    two = lambda logits: (logits[:, 2, 3] - logits[:, -1, 5]).mean()  # noqa: E731
    expected = run_patched(model, base, rows, ld, sources={"src": src}, plan=plan).values
    for metric, reads in ((plain, 1), (two, 2)):
        seen, handle = _unembedded_positions(model)
        try:
            out = run_patched(model, base, rows, metric, sources={"src": src}, plan=plan)
        finally:
            handle.remove()
        torch.testing.assert_close(out.values, reference(model, base, rows, metric, {"src": src}), atol=1e-10, rtol=0)
        if metric is plain:
            torch.testing.assert_close(out.values, expected, atol=1e-12, rtol=0)
        # The base and source runs are unembedded in full (once: that is where the positions are found);
        # every patched row only at the positions read.
        patched = sum(seen) - 4 * 8
        assert patched <= len(rows) * 2 * reads, (seen, reads)


@pytest.mark.parametrize("plan", ["fused", "resumed"])
def test_plain_functions_that_read_everything_or_refuse_nan_fall_back_to_all_positions(plan):
    model = make_model("gpt2", dtype="float64")
    base, src = _tokens(n_pos=6, seed=6), _tokens(n_pos=6, seed=7)
    rows = [[Patch("blocks.1.attn.hook_z", (p, 1), FromRun("src"))] for p in range(6)]

    def strict(logits):  # reads the last position only, but refuses NaN anywhere
        assert not torch.isnan(logits).any()
        return logits[:, -1, 2].mean()

    for metric in (lambda logits: logits.mean(), lambda logits: logits.argmax(-1).float().mean(),
                   lambda logits: logits[:, :3, 1].sum(), strict):
        out = run_patched(model, base, rows, metric, sources={"src": src}, plan=plan)
        torch.testing.assert_close(out.values, reference(model, base, rows, metric, {"src": src}), atol=1e-10, rtol=0)


# ------------------------------------------------------------ the engine knows no model class
def test_the_engine_imports_no_model_code():
    for module in ("engine", "engine_plan", "metric_positions", "resumable", "patches"):
        tree = ast.parse((ROOT / "interp" / f"{module}.py").read_text())
        imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
        imported |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        assert not any(m.split(".")[0] == "models" for m in imported if m), (module, imported)
        source = (ROOT / "interp" / f"{module}.py").read_text()
        for word in (r"\bTransformer\b", r"\bEncoderDecoder\b", "KVCache", "decode_from", r"cfg\.", r"isinstance\(model"):
            assert not re.search(word, source), (module, word)


def test_a_model_without_an_engine_adapter_runs_every_row_from_its_inputs():
    """The same numbers from a model the engine knows nothing about (the adapter hidden)."""
    model = make_model("gpt2", dtype="float64")

    class Plain(type(model)):
        engine_adapter = None

    plain = make_model("gpt2", dtype="float64")
    plain.__class__ = Plain
    base, src = _tokens(seed=8), _tokens(seed=9)
    rows = [[Patch("blocks.0.attn.hook_z", (p, 0), FromRun("src"))] for p in range(7)]
    metric = metrics.logit_diff(model, 3, 5)
    ours = run_patched(model, base, rows, metric, sources={"src": src})
    theirs = run_patched(plain, base, rows, metric, sources={"src": src})
    assert theirs.plan == "fused"
    torch.testing.assert_close(theirs.values, ours.values, atol=1e-10, rtol=0)
    with pytest.raises(ValueError, match="engine_adapter"):
        run_patched(plain, base, rows, metric, sources={"src": src}, plan="resumed")


# ------------------------------------------------------------ one vocabulary
def test_sweep_and_attribution_patch_share_their_default_site():
    from interp.attribution import agreement, attribution_patch
    from interp.patching import sweep

    model = make_model("gpt2", dtype="float64")
    clean, corrupted = _tokens(seed=10), _tokens(seed=11)
    metric = metrics.logit_diff(model, 3, 5)
    actual = sweep(model, clean, corrupted, metric, progress=False)
    estimate = attribution_patch(model, clean, corrupted, metric)
    assert estimate.axes == actual.axes == ("layer", "pos") and estimate.site == actual.site == "resid_pre"
    agree = agreement(estimate, actual)
    assert -1.0 <= agree.spearman <= 1.0


def test_batch_size_is_the_engines_knob():
    model = make_model("gpt2", dtype="float64")
    base = _tokens(seed=12)
    rows = [[Patch("blocks.1.hook_mlp_out", (p,), 0.0)] for p in range(7)]
    metric = metrics.probability(model, 4)
    one = run_patched(model, base, rows, metric, batch_size=1, plan="resumed")
    assert one.n_forwards == 1 + 7
    torch.testing.assert_close(one.values, run_patched(model, base, rows, metric).values, atol=1e-12, rtol=0)
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        run_patched(model, base, rows, metric, batch_size=0)
