"""Files for attribution graphs (ours and circuit-tracer's) and circuit-tracer's transcoder
format: round trips, the frontend JSON against circuit-tracer's rules, refusals."""

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
import yaml
from safetensors.torch import load_file, save_file

from probes.graph.graph import AttributionGraph, Target
from probes.graph.io import (circuit_tracer_json, load_graph, save_graph, to_circuit_tracer_pt)
from probes.sae.circuit_tracer_format import load_circuit_tracer_transcoders, save_circuit_tracer_transcoders
from probes.sae.dictionary import DictionaryConfig, SparseDictionary

VOCAB = 50


# ============================================================ a small hand-made graph
def make_graph(seed: int = 0) -> AttributionGraph:
    """2 layers, 3 positions, 3 active features, 2 targets (one a custom direction): 14 nodes."""
    g = torch.Generator().manual_seed(seed)
    n_layers, n_pos = 2, 3
    features = torch.tensor([[0, 1, 3], [0, 2, 1], [1, 2, 4]])
    n = 3 + n_layers * n_pos + n_pos + 2
    adjacency = torch.randn(n, n, generator=g)
    adjacency[3:12] = 0  # error and token rows have no inputs
    values = torch.randn(n, generator=g)
    values[3:12] = float("nan")
    targets = [Target("basketball", 9, 0.7, torch.randn(8, generator=g)),
               Target("custom dir", None, 0.0, torch.randn(8, generator=g))]
    return AttributionGraph(prompt="<bos>Michael Jordan\n", token_ids=torch.tensor([0, 5, 7]),
                            tokens=["<bos>", "Michael", " Jordan\n"], n_layers=n_layers, features=features,
                            activations=torch.rand(3, generator=g) + 0.5, targets=targets, adjacency=adjacency,
                            values=values, zero_positions=1, transcoders=["factworld"],
                            settings={"max_n_logits": 10, "desired_logit_prob": 0.95, "pair": (1, "x"),
                                      "nested": {"a": [1, 2.5, None, True], "t": torch.arange(4)}})


def same_tensor(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Equal dtype, shape and values, NaN where the other has NaN."""
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    if a.is_floating_point():
        return torch.equal(a.isnan(), b.isnan()) and torch.equal(a.nan_to_num(0.0), b.nan_to_num(0.0))
    return torch.equal(a, b)


def same_value(a, b) -> bool:
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and same_tensor(a, b)
    if isinstance(a, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(same_value(x, y) for x, y in zip(a, b))
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(same_value(a[k], b[k]) for k in a)
    return type(a) is type(b) and a == b


def assert_same_graph(a: AttributionGraph, b: AttributionGraph) -> None:
    for name in ("prompt", "token_ids", "tokens", "n_layers", "features", "activations", "adjacency", "values",
                 "zero_positions", "transcoders", "settings"):
        assert same_value(getattr(a, name), getattr(b, name)), name
    assert len(a.targets) == len(b.targets)
    for s, t in zip(a.targets, b.targets):
        assert (s.label, s.token, s.prob) == (t.label, t.token, t.prob)
        assert same_tensor(s.vector, t.vector)


# ============================================================ our own file
def test_save_load_round_trip_is_exact(tmp_path):
    graph = make_graph()
    path = save_graph(graph, tmp_path / "sub" / "g.pt")
    assert path == tmp_path / "sub" / "g.pt"
    raw = torch.load(path, weights_only=True)  # plain data only
    assert raw["format"] == "probes.graph.AttributionGraph" and raw["n_layers"] == 2
    back = load_graph(path)
    assert_same_graph(graph, back)
    assert back.n_nodes == 14 and back.node_label(back.error_node(1, 2)) == "error L1 @  Jordan\n (2)"
    assert_same_graph(graph, load_graph(save_graph(graph, tmp_path / "h.pt")))
    # float64 tensors keep their dtype
    g64 = make_graph()
    g64.adjacency, g64.values = g64.adjacency.double(), g64.values.double()
    assert load_graph(save_graph(g64, tmp_path / "d.pt")).adjacency.dtype == torch.float64
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == ["d.pt", "g.pt", "h.pt"]  # no temp files


def test_save_refuses_to_overwrite(tmp_path):
    path = save_graph(make_graph(0), tmp_path / "g.pt")
    before = path.read_bytes()
    with pytest.raises(FileExistsError, match="overwrite=True"):
        save_graph(make_graph(1), path)
    assert path.read_bytes() == before
    save_graph(make_graph(1), path, overwrite=True)
    assert_same_graph(load_graph(path), make_graph(1))
    with pytest.raises(IsADirectoryError):
        save_graph(make_graph(), tmp_path)


def test_bad_graphs_write_nothing(tmp_path):
    unsorted = make_graph()
    unsorted.features = unsorted.features.flip(0)
    with pytest.raises(ValueError, match="sorted"):
        save_graph(unsorted, tmp_path / "a.pt")
    short = make_graph()
    short.adjacency = short.adjacency[:-1]
    with pytest.raises(ValueError, match=r"adjacency has shape \[13, 14\], expected \[14, 14\]"):
        save_graph(short, tmp_path / "b.pt")
    odd = make_graph()
    odd.settings = {"where": Path("x")}
    with pytest.raises(TypeError, match=r"settings\['where'\] is a PosixPath|settings\['where'\] is a"):
        save_graph(odd, tmp_path / "c.pt")
    assert list(tmp_path.iterdir()) == []


def test_load_rejects_files_that_are_not_graphs(tmp_path):
    (tmp_path / "junk.pt").write_bytes(b"not a torch file at all")
    with pytest.raises(ValueError, match="not an attribution graph file"):
        load_graph(tmp_path / "junk.pt")
    torch.save({"a": 1}, tmp_path / "dict.pt")
    with pytest.raises(ValueError, match="not an attribution graph file"):
        load_graph(tmp_path / "dict.pt")
    to_circuit_tracer_pt(make_graph(), tmp_path / "ct.pt", vocab_size=VOCAB)
    with pytest.raises(ValueError, match="circuit-tracer"):
        load_graph(tmp_path / "ct.pt")
    with pytest.raises(FileNotFoundError):
        load_graph(tmp_path / "missing.pt")
    # a graph file whose adjacency no longer fits its nodes
    path = save_graph(make_graph(), tmp_path / "g.pt")
    raw = torch.load(path, weights_only=True)
    raw["adjacency"] = raw["adjacency"][:, :5]
    torch.save(raw, path)
    with pytest.raises(ValueError, match="inconsistent graph: adjacency has shape"):
        load_graph(path)


# ============================================================ circuit-tracer .pt
def test_circuit_tracer_pt_layout(tmp_path):
    graph = make_graph()
    graph.adjacency = graph.adjacency.double()
    path = to_circuit_tracer_pt(graph, tmp_path / "ct.pt", scan="factworld-tc", vocab_size=VOCAB,
                                cfg={"model_name": "factworld"})
    d = torch.load(path, weights_only=True)
    assert set(d) == {"input_string", "input_tokens", "adjacency_matrix", "active_features", "selected_features",
                      "activation_values", "logit_probabilities", "logit_tokens", "logit_targets", "vocab_size", "cfg",
                      "scan"}
    assert d["input_string"] == "<bos>Michael Jordan\n"
    assert torch.equal(d["input_tokens"], torch.tensor([0, 5, 7]))
    assert d["adjacency_matrix"].dtype == torch.float32 and d["adjacency_matrix"].shape == (14, 14)
    assert torch.equal(d["adjacency_matrix"], graph.adjacency.float())
    # circuit-tracer's node count: n_selected + (n_layers + 1) * n_pos + n_logits
    assert d["adjacency_matrix"].shape[0] == len(d["selected_features"]) + 3 * 3 + len(d["logit_tokens"])
    assert torch.equal(d["active_features"], torch.tensor([[0, 1, 3], [0, 2, 1], [1, 2, 4]]))
    assert torch.equal(d["selected_features"], torch.tensor([0, 1, 2]))
    assert torch.equal(d["activation_values"], graph.activations)
    assert torch.allclose(d["logit_probabilities"], torch.tensor([0.7, 0.0]))
    assert torch.equal(d["logit_tokens"], torch.tensor([9, VOCAB + 1]))  # a custom target: vocab_size + i
    assert d["logit_targets"] == [("basketball", 9), ("custom dir", VOCAB + 1)]
    assert d["vocab_size"] == VOCAB and d["scan"] == "factworld-tc"
    assert d["cfg"] == {"model_name": "factworld", "n_layers": 2, "d_vocab": VOCAB}
    assert torch.load(to_circuit_tracer_pt(graph, tmp_path / "b.pt", vocab_size=VOCAB))["scan"] == "factworld"
    with pytest.raises(ValueError, match="vocab_size"):
        to_circuit_tracer_pt(graph, tmp_path / "c.pt")
    with pytest.raises(ValueError, match="too small"):
        to_circuit_tracer_pt(graph, tmp_path / "c.pt", vocab_size=8)
    with pytest.raises(FileExistsError):
        to_circuit_tracer_pt(graph, path, vocab_size=VOCAB)
    assert not (tmp_path / "c.pt").exists()


# ============================================================ circuit-tracer frontend JSON
def hand_pruned(graph: AttributionGraph):
    """A prune result built by hand. Kept: features 0, 1, 2; errors (0, 2) and (1, 2); token 1;
    target 0. Edges: f2<-f0, f2<-tok1, t0<-f2, t0<-err(0,2), t1<-f0, and t0<-err(1,1) (whose
    source is dropped). Feature 1 and error (1, 2) have no kept edge, so they are not written;
    tokens 0 and 2 and target 1 are written anyway."""
    n = graph.n_nodes
    f0, f1, f2 = 0, 1, 2
    e02, e12, e11 = graph.error_node(0, 2), graph.error_node(1, 2), graph.error_node(1, 1)
    tok1, t0, t1 = graph.token_node(1), graph.target_node(0), graph.target_node(1)
    node_mask = torch.zeros(n, dtype=torch.bool)
    node_mask[[f0, f1, f2, e02, e12, tok1, t0]] = True
    edges = [(f2, f0), (f2, tok1), (t0, f2), (t0, e02), (t1, f0), (t0, e11)]
    edge_mask = torch.zeros(n, n, dtype=torch.bool)
    for t, s in edges:
        edge_mask[t, s] = True
    cumulative = torch.linspace(0.05, 0.95, n)
    return SimpleNamespace(node_mask=node_mask, edge_mask=edge_mask, cumulative=cumulative), edges[:5]


def test_frontend_json_follows_circuit_tracers_rules(tmp_path):
    graph = make_graph()
    pruned, kept_edges = hand_pruned(graph)
    path = circuit_tracer_json(graph, tmp_path, "jordan", pruned=pruned, scan="factworld-tc", vocab_size=VOCAB,
                               node_threshold=0.8)
    assert path == tmp_path / "jordan.json"
    data = json.loads(path.read_text(encoding="utf-8"))
    assert list(data) == ["metadata", "qParams", "nodes", "links"]
    assert data["metadata"] == {"slug": "jordan", "scan": "factworld-tc", "transcoder_list": [],
                                "prompt_tokens": ["<bos>", "Michael", " Jordan⏎"], "prompt": "<bos>Michael Jordan\n",
                                "node_threshold": 0.8, "schema_version": 1}
    assert data["qParams"] == {"pinnedIds": [], "supernodes": [], "linkType": "both", "clickedId": "", "sg_pos": ""}
    nodes = {n["node_id"]: n for n in data["nodes"]}
    # kept nodes touched by a kept link, plus every embedding and logit; in node order
    assert [n["node_id"] for n in data["nodes"]] == ["0_3_1", "1_4_2", "0_-1_2", "E_0_0", "E_5_1", "E_7_2", "3_9_2",
                                                      f"3_{VOCAB + 1}_2"]
    for n in data["nodes"]:
        assert set(n) == {"node_id", "feature", "layer", "ctx_idx", "feature_type", "token_prob", "is_target_logit",
                          "run_idx", "reverse_ctx_idx", "jsNodeId", "clerp", "influence", "activation"}
    cum = pruned.cumulative
    f = nodes["1_4_2"]  # feature (layer 1, pos 2, index 4); Cantor pairing (1+4)(1+4+1)/2 + 4 = 19
    assert (f["feature"], f["layer"], f["ctx_idx"], f["feature_type"], f["jsNodeId"]) == (
        19, "1", 2, "cross layer transcoder", "1_4-0")
    assert f["activation"] == float(graph.activations[2]) and f["influence"] == float(cum[2])
    assert nodes["0_3_1"]["feature"] == 9  # (0+3)(0+3+1)/2 + 3
    e = nodes["0_-1_2"]
    assert (e["feature"], e["layer"], e["ctx_idx"], e["feature_type"], e["jsNodeId"], e["activation"]) == (
        -1, "0", 2, "mlp reconstruction error", "0_-1-2", None)
    assert e["influence"] == float(cum[graph.error_node(0, 2)])
    tok = nodes["E_5_1"]
    assert (tok["feature"], tok["layer"], tok["ctx_idx"], tok["feature_type"], tok["jsNodeId"]) == (
        1, "E", 1, "embedding", "E_5-1")
    logit, custom = nodes["3_9_2"], nodes[f"3_{VOCAB + 1}_2"]
    assert (logit["feature"], logit["layer"], logit["ctx_idx"], logit["feature_type"], logit["jsNodeId"]) == (
        9, "3", 2, "logit", "L_9-2")
    assert logit["token_prob"] == 0.7 and logit["is_target_logit"] and not custom["is_target_logit"]
    assert logit["clerp"] == 'Output "basketball" (p=0.700)'
    # links: only kept edges between kept nodes, weight = the raw adjacency[target, source]
    ids = {i: graph_node_id for i, graph_node_id in [(0, "0_3_1"), (2, "1_4_2"), (graph.error_node(0, 2), "0_-1_2"),
                                                     (graph.token_node(1), "E_5_1"), (graph.target_node(0), "3_9_2"),
                                                     (graph.target_node(1), f"3_{VOCAB + 1}_2")]}
    want = {(ids[s], ids[t], float(graph.adjacency[t, s])) for t, s in kept_edges}
    assert {(link["source"], link["target"], link["weight"]) for link in data["links"]} == want
    assert len(data["links"]) == 5
    assert json.loads((tmp_path / "graph-metadata.json").read_text()) == {"graphs": [data["metadata"]]}


def test_graph_metadata_upsert_keeps_other_slugs(tmp_path):
    graph = make_graph()
    pruned, _ = hand_pruned(graph)
    other = {"slug": "other", "scan": "x", "prompt": "hi"}
    (tmp_path / "graph-metadata.json").write_text(json.dumps({"graphs": [other, {"slug": "jordan", "old": True}]}))
    circuit_tracer_json(graph, tmp_path, "jordan", pruned=pruned, vocab_size=VOCAB)
    graphs = json.loads((tmp_path / "graph-metadata.json").read_text())["graphs"]
    assert [g["slug"] for g in graphs] == ["other", "jordan"] and graphs[0] == other and "old" not in graphs[1]
    assert graphs[1]["scan"] == "factworld"  # from graph.transcoders
    circuit_tracer_json(graph, tmp_path, "second", pruned=pruned, scan=["L0", "L1"], vocab_size=VOCAB)
    graphs = json.loads((tmp_path / "graph-metadata.json").read_text())["graphs"]
    assert [g["slug"] for g in graphs] == ["other", "jordan", "second"]
    assert graphs[2]["scan"].startswith("custom-") and graphs[2]["transcoder_list"] == ["L0", "L1"]
    # the same slug again is refused, and nothing changes
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    with pytest.raises(FileExistsError):
        circuit_tracer_json(make_graph(1), tmp_path, "jordan", pruned=pruned, vocab_size=VOCAB)
    with pytest.raises(ValueError, match="edge_mask"):
        bad = SimpleNamespace(node_mask=pruned.node_mask, edge_mask=pruned.edge_mask[:3], cumulative=pruned.cumulative)
        circuit_tracer_json(graph, tmp_path, "third", pruned=bad, vocab_size=VOCAB)
    with pytest.raises(ValueError, match="slug"):
        circuit_tracer_json(graph, tmp_path, "../escape", pruned=pruned, vocab_size=VOCAB)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before
    circuit_tracer_json(make_graph(1), tmp_path, "jordan", pruned=pruned, vocab_size=VOCAB, overwrite=True)
    assert [g["slug"] for g in json.loads((tmp_path / "graph-metadata.json").read_text())["graphs"]] == [
        "other", "second", "jordan"]


# ============================================================ transcoders in circuit-tracer's format
def make_transcoder(layer: int, *, activation="relu", k=4, skip=True, d=6, n=10, seed=0, dtype="float32",
                    pre_bias=True) -> SparseDictionary:
    cfg = DictionaryConfig(d, d, n, activation=activation, k=k, skip=skip, in_hook=f"blocks.{layer}.ln2.hook_normalized",
                           out_hook=f"blocks.{layer}.hook_mlp_out", kind="transcoder", dtype=dtype, seed=seed)
    tc = SparseDictionary(cfg).eval()
    g = torch.Generator().manual_seed(100 + seed)
    with torch.no_grad():
        for name, p in tc.named_parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype) * (0.5 if name.startswith("b") else 1.0))
        if not pre_bias:
            tc.b_pre.zero_()
    return tc


def ct_pre_acts(file: Path, x: torch.Tensor) -> torch.Tensor:
    """circuit-tracer's encoder: F.linear(x, W_enc, b_enc) on the layer file's tensors."""
    t = load_file(str(file))
    return F.linear(x.to(t["W_enc"].dtype), t["W_enc"], t["b_enc"])


def test_transcoders_round_trip_with_folded_pre_bias(tmp_path):
    tcs = [make_transcoder(0, seed=1), make_transcoder(1, seed=2)]
    assert tcs[0].b_pre.abs().sum() > 0
    out = save_circuit_tracer_transcoders(tcs, tmp_path / "ct", model_name="factworld")
    assert sorted(p.name for p in out.iterdir()) == ["config.yaml", "layer_0.safetensors", "layer_1.safetensors"]
    config = yaml.safe_load((out / "config.yaml").read_text())
    assert config == {"model_kind": "transcoder_set", "model_name": "factworld",
                      "feature_input_hook": "ln2.hook_normalized", "feature_output_hook": "hook_mlp_out",
                      "activation": "relu"}
    file = load_file(str(out / "layer_0.safetensors"))
    assert set(file) == {"W_enc", "W_dec", "b_enc", "b_dec", "W_skip"}
    assert file["W_enc"].shape == (10, 6) and file["W_dec"].shape == (10, 6) and file["W_skip"].shape == (6, 6)
    x = torch.randn(20, 6, generator=torch.Generator().manual_seed(5))
    for i, tc in enumerate(tcs):
        theirs = ct_pre_acts(out / f"layer_{i}.safetensors", x)
        torch.testing.assert_close(theirs, tc.pre_acts(x), rtol=1e-5, atol=1e-5)
        t = load_file(str(out / f"layer_{i}.safetensors"))
        assert torch.equal(t["W_skip"], tc.W_skip.detach().T)  # circuit-tracer's x @ W_skip.T is ours, x @ W_skip
    back = load_circuit_tracer_transcoders(out)
    assert len(back) == 2
    for layer, (a, b) in enumerate(zip(tcs, back)):
        assert (b.in_hook, b.out_hook) == (f"blocks.{layer}.ln2.hook_normalized", f"blocks.{layer}.hook_mlp_out")
        assert b.cfg.activation == "relu" and b.W_skip is not None and torch.equal(b.b_pre, torch.zeros(6))
        assert torch.equal(b.W_dec, a.W_dec) and torch.equal(b.W_enc, a.W_enc) and torch.equal(b.W_skip, a.W_skip)
        torch.testing.assert_close(b.encode(x), a.encode(x), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(b(x), a(x), rtol=1e-5, atol=1e-5)


def test_folded_pre_bias_is_exact_in_exact_arithmetic(tmp_path):
    """Integer weights and inputs in float64: every product and sum is exact, so the folded
    encoder's pre-activations must equal ours bit for bit."""
    tc = make_transcoder(0, dtype="float64")
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for p in (tc.W_enc, tc.b_enc, tc.b_pre):
            p.copy_(torch.randint(-4, 5, p.shape, generator=g).double())
    x = torch.randint(-4, 5, (16, 6), generator=g).double()
    out = save_circuit_tracer_transcoders([tc], tmp_path / "ct", model_name="m")
    assert torch.equal(ct_pre_acts(out / "layer_0.safetensors", x), tc.pre_acts(x))
    manual = tc.b_enc - tc.b_pre @ tc.W_enc  # b_enc' = b_enc - b_pre W_enc
    assert torch.equal(load_file(str(out / "layer_0.safetensors"))["b_enc"], manual.detach())
    back = load_circuit_tracer_transcoders(out)[0]
    assert back.W_enc.dtype == torch.float64 and torch.equal(back.pre_acts(x), tc.pre_acts(x))


def test_topk_round_trip_is_exact_and_differs_from_circuit_tracer_topk(tmp_path):
    tcs = [make_transcoder(i, activation="topk", k=4, seed=i, pre_bias=False, skip=False) for i in range(3)]
    out = save_circuit_tracer_transcoders(tcs, tmp_path / "ct", model_name="m")
    config = yaml.safe_load((out / "config.yaml").read_text())
    assert config["activation"] == "topk" and config["k"] == 4
    assert "k" not in load_file(str(out / "layer_0.safetensors"))  # k lives in config.yaml
    back = load_circuit_tracer_transcoders(out)
    x = torch.randn(32, 6, generator=torch.Generator().manual_seed(7))
    for a, b in zip(tcs, back):
        assert b.cfg.activation == "topk" and b.cfg.k == 4 and b.W_skip is None
        assert torch.equal(b.encode(x), a.encode(x)) and torch.equal(b(x), a(x))

    def ct_topk(pre):  # circuit-tracer's TopK: the k largest pre-activations, no ReLU
        gate = torch.zeros_like(pre).scatter(-1, pre.topk(4, dim=-1).indices, 1.0)
        return pre * gate

    pre = ct_pre_acts(out / "layer_0.safetensors", x)
    n_pos = (pre > 0).sum(-1)
    full, short = n_pos >= 4, n_pos < 4
    assert full.any() and short.any()
    ours = tcs[0].encode(x)
    assert torch.equal(ct_topk(pre)[full], ours[full])  # at least k positive: the same
    assert (ct_topk(pre)[short] < 0).any() and (ours >= 0).all()  # fewer: circuit-tracer has negatives


def test_batchtopk_exports_as_jumprelu(tmp_path):
    tc = make_transcoder(0, activation="batchtopk", k=3, seed=4)
    with torch.no_grad():
        tc.threshold.fill_(0.3)
    out = save_circuit_tracer_transcoders([tc], tmp_path / "ct", model_name="m")
    config = yaml.safe_load((out / "config.yaml").read_text())
    assert "activation" not in config and config["k"] == 3  # JumpReLU: threshold in the file
    file = load_file(str(out / "layer_0.safetensors"))
    assert torch.equal(file["activation_function.threshold"], torch.full((10,), 0.3))
    x = torch.randn(32, 6, generator=torch.Generator().manual_seed(8))
    pre = ct_pre_acts(out / "layer_0.safetensors", x)
    jump = pre * (pre > file["activation_function.threshold"])  # circuit-tracer's JumpReLU
    ours = tc.encode(x)
    assert (ours > 0).any() and (ours == 0).any()
    torch.testing.assert_close(jump, ours, rtol=1e-5, atol=1e-5)
    back = load_circuit_tracer_transcoders(out)[0]
    assert back.cfg.activation == "batchtopk" and back.cfg.k == 3 and float(back.threshold) == pytest.approx(0.3)
    torch.testing.assert_close(back.encode(x), ours, rtol=1e-5, atol=1e-5)
    # a negative threshold makes ours a plain ReLU: exported as threshold 0
    with torch.no_grad():
        tc.threshold.fill_(-0.2)
    neg = save_circuit_tracer_transcoders([tc], tmp_path / "neg", model_name="m")
    zero = load_file(str(neg / "layer_0.safetensors"))["activation_function.threshold"]
    assert torch.equal(zero, torch.zeros(10))
    torch.testing.assert_close(pre * (pre > zero), torch.relu(tc.pre_acts(x)), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(tc.encode(x), torch.relu(tc.pre_acts(x)), rtol=0, atol=0)
    # per-feature thresholds load as jumprelu, circuit-tracer's rule
    file["activation_function.threshold"] = torch.linspace(-0.5, 1, 10)
    save_file(file, str(out / "layer_0.safetensors"))
    per_feature = load_circuit_tracer_transcoders(out)[0]
    assert per_feature.cfg.activation == "jumprelu"
    pre = ct_pre_acts(out / "layer_0.safetensors", x)
    torch.testing.assert_close(per_feature.encode(x), pre * (pre > torch.linspace(-0.5, 1, 10)), rtol=1e-5, atol=1e-5)


def test_transcoder_refusals_leave_files_untouched(tmp_path):
    tcs = [make_transcoder(0, seed=1), make_transcoder(1, seed=2)]
    out = save_circuit_tracer_transcoders(tcs, tmp_path / "ct", model_name="m")
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    with pytest.raises(FileExistsError):
        save_circuit_tracer_transcoders([make_transcoder(0, seed=9)], out, model_name="m")
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    save_circuit_tracer_transcoders([make_transcoder(0, seed=9)], out, model_name="m", overwrite=True)
    assert sorted(p.name for p in out.iterdir()) == ["config.yaml", "layer_0.safetensors"]  # stale layer_1 removed
    assert torch.equal(load_circuit_tracer_transcoders(out)[0].W_dec, make_transcoder(0, seed=9).W_dec)
    with pytest.raises(ValueError, match="number of features"):
        save_circuit_tracer_transcoders([make_transcoder(0), make_transcoder(1, n=12)], tmp_path / "a", model_name="m")
    with pytest.raises(ValueError, match="not a hook of block 1"):
        save_circuit_tracer_transcoders([make_transcoder(0), make_transcoder(0)], tmp_path / "b", model_name="m")
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
    (out / "config.yaml").write_text("model_kind: cross_layer_transcoder\nfeature_input_hook: a\nfeature_output_hook: b\n")
    with pytest.raises(ValueError, match="cross-layer"):
        load_circuit_tracer_transcoders(out)
