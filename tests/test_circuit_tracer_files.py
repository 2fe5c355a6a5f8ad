"""Transcoder folders WRITTEN BY circuit-tracer 0.5.0's own code, read by ours.

tests/data/circuit_tracer/ was made by benchmarks/peers/circuit_tracer_files.py in .venv-ct:
circuit-tracer modules with random weights, saved by its TranscoderSet.to_safetensors and its
cache writer (save_transcoders_to_cache: config.yaml + layer_{i}.safetensors), and
<case>.reference.safetensors holding the pre-activations, features and outputs that
circuit-tracer's own loader and modules computed on fixed inputs. Regenerate with
`.venv/bin/python benchmarks/peers/check_circuit_tracer_files.py --out tests/data/circuit_tracer`.
These tests compare our reading with circuit-tracer's numbers (not with our own code).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from probes.sae.circuit_tracer_format import load_circuit_tracer_transcoders, save_circuit_tracer_transcoders

DATA = Path(__file__).parent / "data" / "circuit_tracer"
TOL = 1e-5


def reference(case: str) -> dict[str, torch.Tensor]:
    return load_file(str(DATA / f"{case}.reference.safetensors"))


@torch.no_grad()
def ours(case: str):
    """(transcoders, pre, features, outputs) of our reading of circuit-tracer's folder for `case`."""
    x = reference(case)["x"]
    tcs = load_circuit_tracer_transcoders(DATA / case)
    pre = torch.stack([tc.pre_acts(x[l]) for l, tc in enumerate(tcs)])
    feats = torch.stack([tc.encode(x[l]) for l, tc in enumerate(tcs)])
    out = torch.stack([tc(x[l]) for l, tc in enumerate(tcs)])
    return tcs, pre, feats, out


def test_the_fixtures_were_written_by_circuit_tracer():
    manifest = json.loads((DATA / "manifest.json").read_text())
    assert manifest["versions"]["circuit-tracer"] == "0.5.0"
    config = yaml.safe_load((DATA / "relu" / "config.yaml").read_text())
    # the keys circuit-tracer's cache writer adds (scan, revision) and no `transcoders` list
    assert config["model_kind"] == "transcoder_set" and config["scan"] == "fixture/relu" and "revision" in config
    assert "transcoders" not in config
    assert set(load_file(str(DATA / "relu_skip" / "layer_0.safetensors"))) == {"W_enc", "W_dec", "b_enc", "b_dec",
                                                                              "W_skip"}


@pytest.mark.parametrize("case,activation,skip", [("relu", "relu", False), ("relu_skip", "relu", True),
                                                  ("jumprelu_shared", "batchtopk", False)])
def test_per_layer_sets_give_circuit_tracers_numbers(case, activation, skip):
    ref = reference(case)
    tcs, pre, feats, out = ours(case)
    assert len(tcs) == ref["x"].shape[0] == 2
    assert [tc.cfg.activation for tc in tcs] == [activation] * 2
    assert [tc.W_skip is not None for tc in tcs] == [skip] * 2
    assert [(tc.in_hook, tc.out_hook) for tc in tcs] == [
        (f"blocks.{l}.ln2.hook_normalized", f"blocks.{l}.hook_mlp_out") for l in range(2)]
    assert (ref["features"] != 0).sum() > 10 and (ref["features"] == 0).any()  # sparse, not empty
    torch.testing.assert_close(pre, ref["pre"], atol=TOL, rtol=0)
    torch.testing.assert_close(feats, ref["features"], atol=TOL, rtol=0)
    torch.testing.assert_close(out, ref["output"], atol=TOL, rtol=0)
    assert torch.equal(feats != 0, ref["features"] != 0)  # the same active features


def test_a_shared_jumprelu_threshold_is_circuit_tracers():
    threshold = load_file(str(DATA / "jumprelu_shared" / "layer_0.safetensors"))["activation_function.threshold"]
    tcs, *_ = ours("jumprelu_shared")
    assert float(tcs[0].threshold) == pytest.approx(float(threshold[0])) == pytest.approx(0.3)
    ref = reference("jumprelu_shared")
    kept = ref["features"][ref["features"] != 0]
    assert kept.min() > 0.3  # circuit-tracer's rule, pre * (pre > 0.3): the fixture exercises the threshold
    assert ((ref["pre"] > 0) & (ref["pre"] <= 0.3)).any()  # ...and has pre-activations it cuts


def test_topk_is_relu_then_topk_where_circuit_tracer_keeps_negatives():
    """circuit-tracer's TopK keeps the k largest pre-activations as they are; ours takes the
    ReLU first. So ours == relu(theirs) everywhere, and == theirs where a row has >= k positive
    pre-activations; the fixture has a row (x = 0) with fewer, where theirs keeps negatives."""
    ref = reference("topk")
    tcs, pre, feats, out = ours("topk")
    k = tcs[0].cfg.k
    assert k == 4 and tcs[0].cfg.activation == "topk"
    torch.testing.assert_close(feats, ref["features"].relu(), atol=TOL, rtol=0)
    full = (ref["pre"] > 0).sum(-1) >= k
    assert not full.all() and full.any()
    torch.testing.assert_close(feats[full], ref["features"][full], atol=TOL, rtol=0)
    torch.testing.assert_close(out[full], ref["output"][full], atol=TOL, rtol=0)
    assert (ref["features"][~full] < 0).any() and ((ref["features"] != 0).sum(-1) == k).all()


@pytest.mark.parametrize("case", ["jumprelu", "jumprelu_skip"])
def test_per_feature_jumprelu_thresholds_are_refused(case):
    threshold = load_file(str(DATA / case / "layer_0.safetensors"))["activation_function.threshold"]
    assert threshold.min() < 0 < threshold.max()  # what circuit-tracer wrote: thresholds differ per feature
    with pytest.raises(ValueError, match="per-feature thresholds"):
        load_circuit_tracer_transcoders(DATA / case)


def test_a_cross_layer_transcoder_is_refused():
    assert (DATA / "clt" / "W_enc_0.safetensors").is_file()  # circuit-tracer's CLT layout
    with pytest.raises(ValueError, match="cross_layer_transcoder"):
        load_circuit_tracer_transcoders(DATA / "clt")


@pytest.mark.parametrize("case", ["relu", "relu_skip", "jumprelu_shared"])
def test_our_writer_writes_what_circuit_tracer_wrote(case, tmp_path):
    """Read circuit-tracer's folder, write it with ours: the same tensors under the same names."""
    tcs = load_circuit_tracer_transcoders(DATA / case)
    save_circuit_tracer_transcoders(tcs, tmp_path / "ours", model_name="fixture")
    for layer in range(len(tcs)):
        theirs = load_file(str(DATA / case / f"layer_{layer}.safetensors"))
        written = load_file(str(tmp_path / "ours" / f"layer_{layer}.safetensors"))
        assert set(written) == set(theirs)
        for name, tensor in theirs.items():
            assert written[name].shape == tensor.shape and written[name].dtype == tensor.dtype, name
            torch.testing.assert_close(written[name], tensor, atol=0, rtol=0)
    theirs_cfg = yaml.safe_load((DATA / case / "config.yaml").read_text())
    ours_cfg = yaml.safe_load((tmp_path / "ours" / "config.yaml").read_text())
    for key in ("model_kind", "model_name", "feature_input_hook", "feature_output_hook"):
        assert ours_cfg[key] == theirs_cfg[key], key
