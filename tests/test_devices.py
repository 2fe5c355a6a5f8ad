"""Devices and precisions, checked without a GPU.

Placement: every tensor factory the toolkit calls while a method runs says where the tensor goes
(tests/placement.py records them): on a CUDA model a `torch.zeros(n)` without `device=` would be a
CPU tensor. Run on a float64 model, the same record shows floating-point tensors made in the
default float32. Precision: patching, attribution patching, direct logit attribution, key
statistics and SAE encoding run on bfloat16 and float16 models and agree with float64 within
what the format's mantissa allows; key statistics are float64 whatever the model's dtype.
"""

import argparse

import pytest
import torch

from tests.placement import PACKAGES, ROOT, placement, report
from interp import logit_diff
from interp.attribution import attribution_patch, direct_logit_attribution
from interp.patching import sweep
from models import load
from probes.edit import key_second_moment
from probes.sae import SparseDictionary, activation_pairs, attached, evaluate_dictionary, load_transcoders, \
    train_dictionary

P, C, S, A = "Michael Jordan plays the sport of", "Michael Phelps plays the sport of", "Michael Jordan", "basketball"


@pytest.fixture(scope="module")
def f64():
    return load("factworld").double()


def test_the_recorder_flags_what_would_land_on_the_cpu_and_in_float32():
    """The check can fail: code under the toolkit's folders making tensors without device= (or,
    on a float64 model, floats without dtype=) is reported; explicit ones and copies are not."""
    source = (
        "import torch\n"
        "def method(x):\n"
        "    bad = torch.zeros(3)\n"
        "    worse = torch.tensor([1.0, 2.0])\n"
        "    ok = torch.arange(3, device=x.device)\n"
        "    fine = torch.as_tensor(x)\n"
        "    cpu = torch.ones(2, dtype=x.dtype, device='cpu')\n"
        "    return bad, worse, ok, fine, cpu\n")
    namespace: dict = {}
    exec(compile(source, str(ROOT / "probes" / "_placement_probe.py"), "exec"), namespace)
    with placement(torch.float64) as rec:
        namespace["method"](torch.ones(2, dtype=torch.float64))
        torch.zeros(5)  # from the test itself: not the toolkit's
    found = sorted((f.kind, f.line, f.factory) for f in rec.findings)
    assert found == [("device", 3, "zeros"), ("device", 4, "tensor"), ("dtype", 3, "zeros"), ("dtype", 4, "tensor")]
    assert rec.calls == 5 and str(ROOT / "probes") + "/" in PACKAGES


def _methods(m):
    from interp.circuits import attribute_edges
    from probes.causal_trace import trace
    from probes.ffn import fact_neurons, localise, neuron_dashboard
    from probes.graph import attribution_graph
    from probes.knockout import attention_knockout
    from probes.knowledge_neurons import knowledge_neurons
    from probes.logit_lens import logit_lens
    from probes.recall import attribute_extraction, moved_contributions, subject_enrichment
    from probes.sae import feature_dashboard
    from probes.trace_average import average_trace

    metric = logit_diff(m, "basketball", "swimming")
    texts = m.default_corpus()[:120]
    tcs = [t.double() for t in load_transcoders("factworld")]

    def with_transcoders():
        with attached(m, tcs):
            return sweep(m, P, C, metric, "resid_pre", progress=False)

    def dictionary():
        tc = SparseDictionary.transcoder(m, 1, 32, k=4)
        train_dictionary(tc, activation_pairs(m, tc, texts), steps=2, batch_size=256, progress=False)
        return tc.encode(torch.randn(3, 128, dtype=torch.float64)), evaluate_dictionary(m, tc, texts[:20], focus=[3] * 20)

    return {
        "patching": lambda: [sweep(m, P, C, metric, site, progress=False) for site in ("resid_pre", "head_z")],
        "attribution": lambda: (attribution_patch(m, P, C, metric, "resid_pre"),
                                direct_logit_attribution(m, P, "basketball", "swimming")),
        "causal tracing": lambda: (trace(m, P, S, A, n_samples=2, progress=False),
                                   attention_knockout(m, P, S, A, progress=False),
                                   average_trace(m, [(P, S, A)], n_samples=2, progress=False)),
        "recall": lambda: (subject_enrichment(m, P, S, ["basketball"], candidates=["basketball", "swimming"]),
                           attribute_extraction(m, P, S, A), moved_contributions(m, P, S, A), logit_lens(m, P, target=A)),
        "neurons": lambda: (knowledge_neurons(m, P, A, steps=3, progress=False), fact_neurons(m, P, A),
                            localise(m, P, A, max_sites=4), neuron_dashboard(m, 1, 3, texts, progress=False)),
        "key statistics": lambda: key_second_moment(m, 1, texts, cache=False, progress=False),
        "dictionaries": dictionary,
        "transcoders": lambda: (with_transcoders(), feature_dashboard(m, tcs[1], 3, texts, progress=False),
                                attribution_graph(m, P, tcs, max_feature_nodes=30, progress=False)),
        "circuits": lambda: attribute_edges(m, P, C, metric, "eap", progress=False),
    }


def test_methods_make_their_tensors_on_the_model_s_device_in_its_dtype(f64):
    failures = {}
    for name, method in _methods(f64).items():
        with placement(torch.float64) as rec:
            method()
        assert rec.calls > 0, name  # the recorder saw the method's factories
        if rec.findings:
            failures[name] = report(rec.findings)
    assert not failures, "\n".join(f"{k}:\n{v}" for k, v in failures.items())


@pytest.fixture(scope="module")
def reference(f64):
    return _precision_run(f64)


def _precision_run(m):
    metric = logit_diff(m, "basketball", "swimming")
    tc = load_transcoders("factworld")[1].to(m.W_E.dtype)
    _, cache = m.run_with_cache(P, names_filter=[tc.in_hook])
    return {
        "patching": sweep(m, P, C, metric, "resid_pre", progress=False).values,
        "attribution": attribution_patch(m, P, C, metric, "resid_pre").values,
        "direct": direct_logit_attribution(m, P, "basketball", "swimming").heads,
        "key statistics": key_second_moment(m, 1, m.default_corpus()[:300], cache=False, progress=False),
        "encode": tc.encode(cache[tc.in_hook]),
    }


# bfloat16 keeps 8 bits of mantissa (relative rounding 2^-9), float16 11 (2^-12): a few roundings
# through 4 layers stay within a few percent and a few tenths of a percent of each result's scale.
@pytest.mark.parametrize("dtype,tolerance", [("float32", 1e-4), ("float16", 5e-3), ("bfloat16", 3e-2)])
def test_half_precision_models_agree_with_float64(dtype, tolerance, reference):
    m = load("factworld", dtype=dtype)
    got = _precision_run(m)
    assert got["key statistics"].dtype == torch.float64  # summed in float64 whatever the model's dtype
    assert got["encode"].dtype == getattr(torch, dtype)
    for name, want in reference.items():
        have = got[name]
        assert torch.isfinite(have.double()).all(), name
        scale = float(want.detach().double().abs().max())
        err = float((have.detach().double() - want.detach().double()).abs().max())
        assert err <= tolerance * scale, f"{name}: {err:.3g} off at scale {scale:.3g} in {dtype}"


def test_every_command_takes_device_and_dtype(capsys):
    from analyses.common import ModelName, add_model_arguments, as_model

    p = argparse.ArgumentParser()
    add_model_arguments(p)
    args = p.parse_args(["--device", "cpu", "--dtype", "bfloat16", "--model", "factworld"])
    assert isinstance(args.model, ModelName) and args.model.device == "cpu" and args.model == "factworld"
    model = as_model(args.model, args.dtype)
    assert model.W_E.dtype == torch.bfloat16 and model.W_E.device.type == "cpu"
    with pytest.raises(SystemExit):
        p.parse_args(["--device", "nonsense"])
    assert "unknown device 'nonsense'" in capsys.readouterr().err
    if not torch.cuda.is_available():
        with pytest.raises(SystemExit):
            p.parse_args(["--device", "cuda"])
        assert "sees no CUDA GPU" in capsys.readouterr().err
    with pytest.raises(ValueError, match="model on cpu"):
        as_model(model, device="meta")



def test_a_dictionary_for_a_half_precision_model_trains_in_float32(tmp_path):
    from analyses.train_sae import train_sae
    from interp.store import ActivationStore

    texts = load("factworld").default_corpus()[:300]
    runs = {}
    for dtype in ("bfloat16", "float32"):
        runs[dtype] = train_sae("factworld", hook="blocks.1.hook_resid_post", out=tmp_path / dtype, features=32, k=4,
                                steps=60, batch_size=256, texts=texts, progress=False, dtype=dtype,
                                store=tmp_path / f"acts-{dtype}")
    half, full = runs["bfloat16"], runs["float32"]
    assert half.results["sae"].W_dec.dtype == torch.float32  # Adam in float32, not in bfloat16
    assert ActivationStore.open(tmp_path / "acts-bfloat16").dtype == torch.bfloat16  # harvested as the model runs
    assert half.results["record"].losses[-1] < half.results["record"].losses[0]
    assert half["scores"]["variance_explained"] == pytest.approx(full["scores"]["variance_explained"], abs=0.03)
