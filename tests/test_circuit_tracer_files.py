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

import gzip
import hashlib
import json
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from probes.sae.circuit_tracer_format import load_circuit_tracer_transcoders, save_circuit_tracer_transcoders

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "tests" / "data" / "circuit_tracer"
FRONTEND = DATA / "frontend"
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
def test_per_feature_jumprelu_thresholds_give_circuit_tracers_numbers(case):
    """Thresholds that differ per feature, some negative: circuit-tracer's JumpReLU keeps
    pre-activations above each feature's threshold, negative ones included."""
    ref = reference(case)
    tcs, pre, feats, out = ours(case)
    for layer, tc in enumerate(tcs):
        threshold = load_file(str(DATA / case / f"layer_{layer}.safetensors"))["activation_function.threshold"]
        assert threshold.min() < 0 < threshold.max()  # what circuit-tracer wrote
        assert tc.cfg.activation == "jumprelu" and torch.equal(tc.threshold, threshold)
    assert (ref["features"] < 0).any()  # negative activations survive, as in circuit-tracer
    torch.testing.assert_close(pre, ref["pre"], atol=TOL, rtol=0)
    torch.testing.assert_close(feats, ref["features"], atol=TOL, rtol=0)
    torch.testing.assert_close(out, ref["output"], atol=TOL, rtol=0)
    assert torch.equal(feats != 0, ref["features"] != 0)


def test_per_feature_thresholds_survive_our_own_files(tmp_path):
    from probes.sae.io import load_dictionary, save_dictionary

    tc = load_circuit_tracer_transcoders(DATA / "jumprelu")[1]
    save_dictionary(tc, tmp_path / "L1")
    back = load_dictionary(tmp_path / "L1")
    assert back.cfg.activation == "jumprelu" and torch.equal(back.threshold, tc.threshold)
    x = reference("jumprelu")["x"][1]
    torch.testing.assert_close(back(x), reference("jumprelu")["output"][1], atol=TOL, rtol=0)


def test_a_cross_layer_transcoder_is_refused():
    assert (DATA / "clt" / "W_enc_0.safetensors").is_file()  # circuit-tracer's CLT layout
    with pytest.raises(ValueError, match="cross_layer_transcoder"):
        load_circuit_tracer_transcoders(DATA / "clt")


@pytest.mark.parametrize("case", ["relu", "relu_skip", "jumprelu_shared", "jumprelu", "jumprelu_skip"])
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


# ============================================================ circuit-tracer's frontend file
def _node_key(node: dict) -> tuple:
    return node["feature_type"], node["layer"], node["ctx_idx"], node["feature"]


def test_our_frontend_json_is_circuit_tracers(tmp_path):
    """Our circuit_tracer_json for the fact-world graph of "Michael Jordan plays the sport of"
    against the file circuit-tracer 0.5.0's create_graph_files wrote for its own graph of the same
    prompt (tests/data/circuit_tracer/frontend; remade by
    benchmarks/peers/check_circuit_tracer_json.py --write-reference). Known differences: an error
    node's id (circuit-tracer's "0_{layer}_{pos}" can equal a layer-0 feature's "0_{feat}_{pos}";
    ours is "{layer}_-1_{pos}") and metadata.prompt (circuit-tracer decodes the ids, BOS included)."""
    from models import load
    from probes.graph import attribution_graph
    from probes.graph.io import circuit_tracer_json
    from probes.sae import load_transcoders

    made = json.loads((FRONTEND / "made_from.json").read_text())
    changed = [f for f, h in made["weights_sha256"].items() if hashlib.sha256((ROOT / f).read_bytes()).hexdigest() != h]
    assert not changed, (f"{changed} changed since circuit-tracer's reference was made: remake it with "
                         "benchmarks/peers/check_circuit_tracer_json.py --write-reference "
                         "tests/data/circuit_tracer/frontend")
    theirs = json.loads(gzip.decompress((FRONTEND / "jordan.json.gz").read_bytes()))
    graph = attribution_graph(load("factworld").eval(), made["prompt"], load_transcoders("factworld"), progress=False)
    ours = json.loads(circuit_tracer_json(graph, tmp_path, "jordan", scan=made["scan"]).read_text())

    assert set(ours) == set(theirs) and ours["qParams"] == theirs["qParams"]
    assert set(ours["metadata"]) == set(theirs["metadata"])
    assert {k: v for k, v in ours["metadata"].items() if k != "prompt"} == {
        k: v for k, v in theirs["metadata"].items() if k != "prompt"}
    assert theirs["metadata"]["prompt"].endswith(ours["metadata"]["prompt"])
    t_nodes, o_nodes = ({_node_key(n): n for n in d["nodes"]} for d in (theirs, ours))
    assert len(t_nodes) == len(theirs["nodes"]) == 81 and set(o_nodes) == set(t_nodes)
    for key, t in t_nodes.items():
        o = o_nodes[key]
        assert set(o) == set(t), key
        same = {f for f in t if f not in ("influence", "activation", "token_prob") and o[f] == t[f]}
        ids = {"node_id", "jsNodeId"} if t["feature_type"] == "mlp reconstruction error" else set()
        assert set(t) - same - {"influence", "activation", "token_prob"} == ids, (key, o, t)
        for f in ("influence", "activation", "token_prob"):
            assert (o[f] is None) == (t[f] is None) and (t[f] is None or abs(o[f] - t[f]) < 1e-4), (key, f, o[f], t[f])
    t_id, o_id = ({n["node_id"]: _node_key(n) for n in d["nodes"]} for d in (theirs, ours))
    t_links = {(t_id[lk["source"]], t_id[lk["target"]]): lk["weight"] for lk in theirs["links"]}
    o_links = {(o_id[lk["source"]], o_id[lk["target"]]): lk["weight"] for lk in ours["links"]}
    assert len(t_links) == len(theirs["links"]) == 1130 and set(o_links) == set(t_links)
    scale = max(abs(w) for w in t_links.values())
    assert max(abs(o_links[k] - w) for k, w in t_links.items()) < 1e-5 * scale


def test_per_feature_jumprelu_is_not_trained_nor_written_for_saelens(tmp_path):
    from probes.sae.saelens_format import save_saelens

    tc = load_circuit_tracer_transcoders(DATA / "jumprelu")[0]
    before = {k: v.clone() for k, v in tc.state_dict().items()}
    with pytest.raises(ValueError, match="not trained here"):
        tc.activate(tc.pre_acts(reference("jumprelu")["x"][0]), training=True)
    with pytest.raises(ValueError, match="not written in SAELens' format"):
        save_saelens(tc, tmp_path / "sl")
    assert not (tmp_path / "sl").exists()
    assert all(torch.equal(v, before[k]) for k, v in tc.state_dict().items())
