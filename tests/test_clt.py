"""Cross-layer transcoders (probes.sae.clt) and attribution graphs over them.

The maps are checked against independent computations: decoding against one dense block-upper-
triangular decoder matrix, encoding against per-layer SparseDictionary transcoders with the
same weights, splicing against `splice_hooks` per layer, evaluation against
`evaluate_dictionary`. The graphs get the same exactness checks as per-layer transcoders
(tests/test_graph_build.py, whose frozen model and helpers are reused), in float64, on a random
3-layer model with random ReLU and TopK CLTs and on the fact-world model with its shipped CLT.
Plus files, training and bad input."""

import json
import math

import pytest
import torch

from models import TransformerConfig, Transformer, load
from probes.graph.build import attribution_graph
from probes.graph.replacement import frozen_parameters, replacement_forward
from probes.sae import SparseDictionary, splice_hooks
from probes.sae.clt import (
    CLTConfig, CrossLayerTranscoder, as_cross_layer, evaluate_layers, layer_pairs, load_clt, save_clt,
    splice_all_hooks, train_clt,
)
from probes.sae.clt.io import shipped_clt
from probes.sae.evaluate import evaluate_dictionary
from tests.conftest import perturb_
from tests.test_graph_build import clean_cache, frozen_run, node_values, value_rows

PROMPT = "Michael Jordan plays the sport of"


# ============================================================ set-up
def random_model(n_layers: int = 3) -> Transformer:
    cfg = TransformerConfig(n_layers=n_layers, d_model=24, n_heads=3, d_vocab=50, n_ctx=32, dtype="float64", seed=7)
    model = Transformer(cfg).eval()
    perturb_(model, 7)
    return model


def random_clt(model, activation: str = "relu", n_features: int = 16, k: int = 5, seed: int = 0) -> CrossLayerTranscoder:
    """A CLT with non-trivial random weights (about half the ReLU features active)."""
    clt = CrossLayerTranscoder.for_model(model, n_features, activation=activation, k=k, seed=seed)
    d = model.cfg.d_model
    g = torch.Generator().manual_seed(seed + 50)
    with torch.no_grad():
        for p, scale in ((clt.W_enc, 1 / d ** 0.5), (clt.b_enc, 0.5), (clt.b_pre, 0.1), (clt.b_dec, 0.1)):
            p.copy_(scale * torch.randn(p.shape, generator=g, dtype=torch.float64))
        for W in clt.W_dec:
            W.copy_(0.5 * torch.randn(W.shape, generator=g, dtype=torch.float64))
    return clt


class LayerView:
    """One source layer of a CLT with the attributes tests/test_graph_build.py's helpers read of a
    transcoder (in_hook, out_hook, W_skip, pre_acts)."""

    def __init__(self, clt, layer):
        self.clt, self.layer = clt, layer
        self.in_hook, self.out_hook, self.W_skip = clt.in_hooks[layer], clt.out_hooks[layer], None

    def pre_acts(self, x):
        return self.clt.pre_acts(x, self.layer)


def dense_decoder(clt) -> torch.Tensor:
    """[n_layers * n_features, n_layers * d_model]: block (l, l') = W_dec[l -> l'] for l' >= l, else 0."""
    L, F, d = clt.cfg.n_layers, clt.cfg.n_features, clt.cfg.d_model
    D = torch.zeros(L * F, L * d, dtype=clt.W_enc.dtype)
    for l in range(L):
        for t in range(L - l):
            D[l * F: (l + 1) * F, (l + t) * d: (l + t + 1) * d] = clt.W_dec[l].detach()[t]
    return D


def reconstruction(clt, acts: list) -> list:
    """Every layer's reconstruction [pos, d] from acts [pos, n_features] per layer, through dense_decoder."""
    L, d = clt.cfg.n_layers, clt.cfg.d_model
    flat = torch.cat(acts, dim=-1) @ dense_decoder(clt)  # [pos, L * d]
    return [flat[:, l * d: (l + 1) * d] + clt.b_dec.detach()[l] for l in range(L)]


_CASES: dict = {}


def graph_case(name: str):
    """(model, CLT, per-layer views, tokens, graph), built once per name."""
    if name not in _CASES:
        if name == "factworld":
            model = load("factworld").double()
            clt = load_clt("factworld").double()
            tokens = model.to_tokens(PROMPT)[0]
            graph = attribution_graph(model, PROMPT, clt, progress=False)
        else:
            model = random_model()
            clt = random_clt(model, activation=name)
            tokens = torch.randint(0, 50, (8,), generator=torch.Generator().manual_seed(5))
            graph = attribution_graph(model, tokens, clt, targets=[3, 17, 41], batch_size=16, progress=False)
        _CASES[name] = model, clt, [LayerView(clt, l) for l in range(clt.n_layers)], tokens, graph
    return _CASES[name]


@pytest.fixture(params=["relu", "topk", "factworld"])
def case(request):
    return graph_case(request.param)


# ============================================================ 1. the maps
def test_decode_is_one_block_triangular_matrix_and_encode_is_per_layer_transcoders():
    model = random_model()
    clt = random_clt(model, activation="topk")
    x = torch.randn(6, 3, 24, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    f = clt.encode(x)
    for l in range(3):  # each layer's encoder is a TopK transcoder's with the same weights
        tc = SparseDictionary.transcoder(model, l, 16, activation="topk", k=5)
        with torch.no_grad():
            tc.W_enc.copy_(clt.W_enc[l]), tc.b_enc.copy_(clt.b_enc[l]), tc.b_pre.copy_(clt.b_pre[l])
        expected = tc.encode(x[:, l])
        assert torch.equal(f[:, l] > 0, expected > 0) and torch.allclose(f[:, l], expected, atol=1e-12)
        assert (f[:, l] > 0).sum(-1).eq(5).all()
    y = clt.decode(f)
    expected = torch.stack(reconstruction(clt, list(f.unbind(1))), dim=1)
    assert torch.allclose(y, expected, atol=1e-12)
    # Layer 0's features reach layer 2; layer 2's do not reach layer 0.
    f2 = torch.zeros_like(f)
    f2[:, 0] = f[:, 0]
    assert (clt.decode(f2)[:, 2] - clt.b_dec[2]).abs().max() > 0.1
    f2 = torch.zeros_like(f)
    f2[:, 2] = f[:, 2]
    assert torch.equal(clt.decode(f2)[:, :2], clt.b_dec[:2].expand(6, -1, -1))
    assert torch.equal(clt.decoder(0, 2), clt.W_dec[0][2])


def test_decoders_are_stored_triangularly_and_kept_at_unit_norm():
    model = random_model()
    clt = CrossLayerTranscoder.for_model(model, 16, activation="relu")
    assert [tuple(W.shape) for W in clt.W_dec] == [(3, 16, 24), (2, 16, 24), (1, 16, 24)]
    for W in clt.W_dec:
        assert torch.allclose(W.pow(2).sum((0, 2)), torch.ones(16, dtype=torch.float64))
    with torch.no_grad():
        clt.W_dec[1][1].mul_(3.0)  # the decoders to layer 2 only
    before = clt.W_dec[1].detach().clone()
    clt.normalise_decoder()
    for f in range(16):  # feature f of layer 1: its two decoders together at norm 1, in proportion
        joint = before[:, f]
        assert torch.allclose(clt.W_dec[1][:, f], joint / joint.norm(), atol=1e-12)


# ============================================================ 2. splicing and evaluation
@pytest.fixture(scope="module")
def factworld32():
    from analyses.train_transcoders import held_out
    from probes.sae import load_transcoders

    model = load("factworld")
    texts, focus = held_out(model, 40)
    return model, load_transcoders("factworld"), texts, focus


def local_clt_of(tcs, model) -> CrossLayerTranscoder:
    """A CLT with the per-layer transcoders' weights and no cross-layer decoders."""
    L = len(tcs)
    clt = CrossLayerTranscoder.for_model(model, tcs[0].cfg.n_features, activation="topk", k=tcs[0].cfg.k)
    with torch.no_grad():
        for l, tc in enumerate(tcs):
            clt.W_enc[l].copy_(tc.W_enc), clt.b_enc[l].copy_(tc.b_enc), clt.b_pre[l].copy_(tc.b_pre)
            clt.b_dec[l].copy_(tc.b_dec)
            clt.W_dec[l].zero_()
            clt.W_dec[l][0].copy_(tc.W_dec)
    assert clt.n_layers == L
    return clt


def test_splicing_every_layer_matches_splicing_each_transcoder(factworld32):
    model, tcs, texts, _ = factworld32
    tokens = model.to_tokens(texts[:8])
    with torch.no_grad():
        with model.hooks(fwd_hooks=[h for tc in tcs for h in splice_hooks(tc)]):
            expected = model(tokens)
        for replacement in (tcs, local_clt_of(tcs, model)):
            with model.hooks(fwd_hooks=splice_all_hooks(replacement)):
                got = model(tokens)
            assert torch.allclose(got, expected, atol=1e-4), (got - expected).abs().max()
        clean = model(tokens)
        with model.hooks(fwd_hooks=splice_all_hooks(tcs, keep_error=True)):
            assert torch.allclose(model(tokens), clean, atol=1e-4)
    assert not any(hp._hooks["fwd"] for hp in model.hook_dict.values())  # nothing left attached


def test_evaluate_layers_agrees_with_evaluate_dictionary_and_a_direct_kl(factworld32):
    model, tcs, texts, focus = factworld32
    scores = evaluate_layers(model, tcs, texts, focus=focus)
    for l, tc in enumerate(tcs):
        one = evaluate_dictionary(model, tc, texts, focus=focus)
        assert math.isclose(scores.layers[l]["l0"], one.l0, rel_tol=1e-9)
        assert math.isclose(scores.layers[l]["variance_explained"], one.variance_explained, abs_tol=1e-6)
        assert math.isclose(scores.layers[l]["dead"], one.dead, abs_tol=1e-12)
    assert math.isclose(scores.ce_clean, one.ce_clean, rel_tol=1e-6)
    # The KL with every layer spliced, directly, text by text.
    total, n = 0.0, 0
    with torch.no_grad():
        for text in texts:
            tokens = model.to_tokens(text)
            clean = model(tokens)[0, :-1].double().log_softmax(-1)
            with model.hooks(fwd_hooks=[h for tc in tcs for h in splice_hooks(tc)]):
                spliced = model(tokens)[0, :-1].double().log_softmax(-1)
            total += float((clean.exp() * (clean - spliced)).sum())
            n += clean.shape[0]
    assert math.isclose(scores.kl, total / n, rel_tol=1e-4)
    # The same scores for the CLT made of the same transcoders.
    same = evaluate_layers(model, local_clt_of(tcs, model), texts, focus=focus)
    assert math.isclose(same.kl, scores.kl, rel_tol=1e-3)
    assert all(math.isclose(a["variance_explained"], b["variance_explained"], abs_tol=1e-5)
               for a, b in zip(same.layers, scores.layers))


# ============================================================ 3. graphs: sums and constants
def test_rows_sum_to_the_values_and_the_constant_is_the_run_with_every_source_removed(case):
    model, clt, views, tokens, graph = case
    zp = graph.zero_positions
    _, cache = clean_cache(model, tokens, views)
    xs_clean = [cache[v.in_hook][0] for v in views]
    _, _, clean_final = frozen_run(model, tokens, views, cache)
    rows = value_rows(graph)
    assert torch.allclose(graph.values[rows], node_values(graph, views, xs_clean, clean_final), atol=1e-10)
    # Every source removed: token embeddings 0; each MLP writes only b_dec, except at the zeroed
    # positions, where its whole output stays.
    const = []
    for l, v in enumerate(views):
        c = clt.b_dec.detach()[l].expand(len(tokens), -1).clone()
        c[:zp] = cache[v.out_hook][0, :zp]
        const.append(c)
    zeros = torch.zeros(len(tokens), model.cfg.d_model, dtype=torch.float64)
    xs, _, final = frozen_run(model, tokens, views, cache, embed=zeros, mlp_const=const)
    expected = node_values(graph, views, xs, final)
    assert torch.allclose(graph.constants[rows], expected, atol=1e-9), (graph.constants[rows] - expected).abs().max()
    assert (graph.values[rows] - expected).abs().max() > 0.1


# ============================================================ 4. graphs: edges are direct effects
def test_removing_a_source_moves_every_target_by_minus_its_edge(case):
    model, clt, views, tokens, graph = case
    _, cache = clean_cache(model, tokens, views)
    xs0, _, final0 = frozen_run(model, tokens, views, cache)
    base = node_values(graph, views, xs0, final0)
    d, n_pos, L = model.cfg.d_model, len(tokens), clt.n_layers
    # The errors, independently: each MLP's output minus the dense decoder's reconstruction.
    acts = [clt.activate(clt.pre_acts(cache[v.in_hook][0], l), l) for l, v in enumerate(views)]
    recon = reconstruction(clt, acts)
    # Features of layer 0 (they write to every layer), of the last layer, and others.
    first = [i for i in range(graph.n_features) if graph.features[i, 0] == 0]
    picks = sorted(set(first[:: max(1, len(first) // 3)][:3] + torch.linspace(0, graph.n_features - 1, 4).long().tolist()))
    checked = crossing = 0
    for node in picks + [graph.error_node(0, n_pos - 1), graph.error_node(1, 2), graph.token_node(1),
                         graph.token_node(n_pos - 1)]:
        delta = [torch.zeros(n_pos, d, dtype=torch.float64) for _ in range(L)]
        embed = None
        kind, layer, pos, index = graph.node_site(node)
        if kind == "feature":
            for later in range(layer, L):  # a feature writes to its own MLP and every later one
                delta[later][pos] = -graph.activations[node] * clt.decoder(layer, later).detach()[index]
        elif kind == "error":
            delta[layer][pos] = -(cache[views[layer].out_hook][0, pos] - recon[layer][pos])
        else:
            embed = model.W_E[tokens].detach().clone()
            embed[pos] = 0
        xs, _, final = frozen_run(model, tokens, views, cache, embed=embed, mlp_delta=delta)
        moved = node_values(graph, views, xs, final) - base
        edge = graph.adjacency[value_rows(graph), node]
        assert torch.allclose(moved, -edge, atol=1e-9), (graph.node_label(node), (moved + edge).abs().max())
        checked += int(edge.abs().max() > 1e-3)
        crossing += int(kind == "feature" and layer < L - 1)
    assert checked >= 6 and crossing >= 2


def test_the_cross_layer_decoders_carry_part_of_the_edges(case):
    """The own-layer decoder alone moves the targets by something else than minus the edge of a
    layer-0 feature: its decoders to later layers are part of it (checked exactly above)."""
    model, clt, views, tokens, graph = case
    _, cache = clean_cache(model, tokens, views)
    _, _, final0 = frozen_run(model, tokens, views, cache)
    differs = 0
    for node in [i for i in range(graph.n_features) if graph.features[i, 0] == 0][:5]:
        _, layer, pos, index = graph.node_site(node)
        delta = [torch.zeros(len(tokens), model.cfg.d_model, dtype=torch.float64) for _ in range(clt.n_layers)]
        delta[0][pos] = -graph.activations[node] * clt.decoder(0, 0).detach()[index]
        _, _, final = frozen_run(model, tokens, views, cache, mlp_delta=delta)
        own = torch.stack([t.vector @ (final[-1] - final0[-1]) for t in graph.targets])
        differs += int((own + graph.adjacency[graph.target_nodes, node]).abs().max() > 1e-4)
    assert differs >= 3


# ============================================================ 5. graphs: the replacement reproduces the model
def test_features_plus_errors_reproduce_the_logits(case):
    model, clt, views, tokens, graph = case
    logits, cache = clean_cache(model, tokens, views)
    zp = graph.zero_positions
    with torch.enable_grad(), frozen_parameters(model, clt):
        run = replacement_forward(model, tokens, clt, batch=2)
    assert torch.allclose(run.logits, logits, atol=1e-10)
    dense = [torch.zeros(len(tokens), clt.cfg.n_features, dtype=torch.float64) for _ in range(clt.n_layers)]
    for (l, p, f), a in zip(graph.features.tolist(), graph.activations):
        dense[l][p, f] = a
    recon = reconstruction(clt, dense)

    def write(y, hook):
        l = int(hook.name.split(".")[1])
        out = recon[l] + run.errors[l]
        out[:zp] = y[0, :zp]
        return out[None]
    with torch.no_grad():
        spliced = model.run_with_hooks(tokens[None], fwd_hooks=[(v.out_hook, write) for v in views])[0]
    assert torch.allclose(spliced, logits, atol=1e-9)
    assert max(float(e[zp:].abs().max()) for e in run.errors) > 1e-3


def test_per_layer_transcoders_are_the_clt_without_cross_layer_decoders(factworld32):
    """The same graph from per-layer transcoders and from the CLT holding their weights."""
    model, tcs, _, _ = factworld32
    model = load("factworld").double()
    tcs = [tc.double() for tc in tcs]
    a = attribution_graph(model, PROMPT, tcs, max_feature_nodes=40, progress=False)
    b = attribution_graph(model, PROMPT, local_clt_of(tcs, model), max_feature_nodes=40, progress=False)
    assert torch.equal(a.features, b.features)
    assert torch.allclose(a.adjacency, b.adjacency, atol=1e-10)
    assert b.transcoders[0].endswith("cross-layer)") and not a.transcoders[0].endswith("cross-layer)")


# ============================================================ 6. files
def test_save_and_load_round_trip_and_refusals(tmp_path):
    model = random_model()
    clt = random_clt(model, activation="batchtopk")
    with torch.no_grad():
        clt.threshold.copy_(torch.tensor([0.1, 0.2, 0.3]))
    path = save_clt(clt, tmp_path / "clt", extra={"note": "test"})
    meta = json.loads((path / "cfg.json").read_text())
    assert meta["model_kind"] == "cross_layer_transcoder" and meta["extra"] == {"note": "test"}
    back = load_clt(path)
    assert set(back.state_dict()) == set(clt.state_dict())
    assert all(torch.equal(back.state_dict()[k], v) for k, v in clt.state_dict().items())
    x = torch.randn(4, 3, 24, dtype=torch.float64)
    assert torch.equal(back(x), clt.eval()(x)) and not back.training
    before = (path / "clt_weights.safetensors").read_bytes()
    with pytest.raises(FileExistsError, match="not empty"):
        save_clt(clt, path)
    with pytest.raises(ValueError, match="shipped fact-world CLT"):
        save_clt(clt, shipped_clt() / "sub")
    assert (path / "clt_weights.safetensors").read_bytes() == before and not (shipped_clt() / "sub").exists()
    with pytest.raises(TypeError, match="CrossLayerTranscoder"):
        save_clt(SparseDictionary.transcoder(model, 0, 8, activation="relu"), tmp_path / "other")
    # A per-layer folder is not a CLT; a CLT folder with a wrong shape is refused.
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "cfg.json").write_text(json.dumps({"d_in": 4}))
    (tmp_path / "bad" / "clt_weights.safetensors").write_bytes(before)
    with pytest.raises(ValueError, match="model_kind"):
        load_clt(tmp_path / "bad")
    meta["n_features"] = 8
    (tmp_path / "bad" / "cfg.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="wrong shape"):
        load_clt(tmp_path / "bad")
    with pytest.raises(FileNotFoundError, match="no cross-layer transcoder"):
        load_clt(tmp_path / "missing")


def test_the_shipped_clt_loads_and_is_small():
    clt = load_clt("factworld")
    assert (clt.cfg.n_layers, clt.cfg.d_model, clt.cfg.activation) == (4, 128, "topk")
    size = sum(p.stat().st_size for p in shipped_clt().iterdir())
    assert size < 8e6


# ============================================================ 7. training
def test_training_reduces_the_loss_deterministically_without_the_global_rng():
    model = load("factworld")
    texts = [f"{s} plays the sport of basketball" for s in ("Michael Jordan", "Serena Williams", "Lionel Messi")] * 30
    state = torch.get_rng_state()
    records, weights = [], []
    for _ in range(2):
        clt = CrossLayerTranscoder.for_model(model, 32, activation="topk", k=4, seed=3)
        data = layer_pairs(model, clt, texts, max_tokens=300)
        assert data[0].shape == (300, 4, 128) and data[1].shape == (300, 4, 128)
        records.append(train_clt(clt, data, steps=40, batch_size=64, lr=3e-3, progress=False))
        weights.append(clt.state_dict())
    assert torch.equal(torch.get_rng_state(), state)
    assert records[0].losses == records[1].losses
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
    losses = records[0].losses
    assert sum(losses[-10:]) / 10 < 0.5 * sum(losses[:5]) / 5
    # The pairs are each layer's hook activations at the real tokens.
    with torch.no_grad():
        _, cache = model.run_with_cache(texts[0])
    n = cache["blocks.0.hook_mlp_out"].shape[1]
    assert torch.allclose(data[0][:n, 2], cache["blocks.2.ln2.hook_normalized"][0], atol=1e-5)
    assert torch.allclose(data[1][:n, 3], cache["blocks.3.hook_mlp_out"][0], atol=1e-5)


# ============================================================ 8. bad input
def test_bad_input_gives_clear_errors_and_changes_nothing():
    model = random_model()
    other = random_model(n_layers=2)
    clt = random_clt(model)
    params = {k: v.clone() for k, v in model.state_dict().items()}
    flags = [p.requires_grad for p in clt.parameters()]
    with pytest.raises(ValueError, match="3 layers of width 24; the model has 2"):
        attribution_graph(other, torch.tensor([1, 2, 3]), clt, progress=False)
    with pytest.raises(TypeError, match="CrossLayerTranscoder"):
        attribution_graph(model, torch.tensor([1, 2, 3]), clt.W_enc, progress=False)
    bad = CrossLayerTranscoder(CLTConfig(3, 24, 8, activation="relu",
                                         in_hooks=[f"blocks.{l}.hook_resid_pre" for l in range(3)])).double()
    with pytest.raises(ValueError, match="reads 'blocks.0.hook_resid_pre'"):
        attribution_graph(model, torch.tensor([1, 2, 3]), bad, progress=False)
    assert not any(hp._hooks["fwd"] or hp._hooks["bwd"] for hp in model.hook_dict.values())
    assert all(torch.equal(v, params[k]) for k, v in model.state_dict().items())
    assert [p.requires_grad for p in clt.parameters()] == flags
    with pytest.raises(ValueError, match="activation must be one of"):
        CLTConfig(3, 24, 8, activation="gelu")
    with pytest.raises(ValueError, match="1 <= k <= n_features"):
        CLTConfig(3, 24, 8, k=9)
    with pytest.raises(ValueError, match="in_hooks must be a list of 3"):
        CLTConfig(3, 24, 8, k=4, in_hooks=["blocks.0.ln2.hook_normalized"])
    with pytest.raises(ValueError, match=r"x must be \[\.\.\., n_layers=3, 24\]"):
        clt.encode(torch.zeros(2, 24, dtype=torch.float64))
    with pytest.raises(ValueError, match="writes only to layers 2..2"):
        clt.decoder(2, 1)
    with pytest.raises(IndexError, match=r"layer must be an int in \[0, 3\)"):
        clt.pre_acts(torch.zeros(24, dtype=torch.float64), 3)
    with pytest.raises(ValueError, match="not trained here"):
        train_clt(random_clt(model, activation="jumprelu"), (torch.zeros(2000, 3, 24), torch.zeros(2000, 3, 24)),
                  progress=False)
    with pytest.raises(ValueError, match="inputs and targets must be"):
        train_clt(clt, (torch.zeros(2000, 2, 24), torch.zeros(2000, 2, 24)), progress=False)
    with pytest.raises(TypeError, match="CrossLayerTranscoder or a list"):
        as_cross_layer("factworld")


# ============================================================ 9. the documentation's example
def test_the_docs_example_runs_and_its_numbers_are_the_shipped_clts():
    from pathlib import Path
    import re

    page = (Path(__file__).resolve().parent.parent / "docs" / "clt.md").read_text()
    block = re.search(r"```python\n(.*?)```", page, re.S).group(1)
    namespace: dict = {}
    exec(compile(block, "docs/clt.md", "exec"), namespace)
    graph = namespace["graph"]
    scores = graph.scores()
    assert f"graph.n_features, graph.scores()             # {graph.n_features}, " in block
    assert f'{{"replacement": {scores["replacement"]:.3f}, "completeness": {scores["completeness"]:.3f}}}' in block
    assert f"# {graph.transcoders[0]!r}".replace("'", '"') in block


# ============================================================ 10. interventions
def test_frozen_interventions_move_each_target_by_minus_the_edge(case):
    from probes.graph import feature_intervention, zero

    model, clt, _, tokens, graph = case
    names = list(model.hook_dict)
    clean = feature_intervention(model, tokens, clt, [], mode="frozen")
    demeaned = clean.clean_logits[-1] - clean.clean_logits[-1].mean()
    ids = [t.token for t in graph.targets]
    checked = 0
    for node in [i for i in range(graph.n_features) if graph.features[i, 0] == 0][:3] + [graph.n_features - 1]:
        _, layer, pos, index = graph.node_site(node)
        res = feature_intervention(model, tokens, clt, [zero(layer, pos, index)], mode="frozen")
        moved = (res.logits[-1] - res.logits[-1].mean())[ids] - demeaned[ids]
        edge = graph.adjacency[graph.target_nodes, node]
        assert torch.allclose(moved, -edge, atol=1e-9), (moved + edge).abs().max()
        checked += int(edge.abs().max() > 1e-3)
    assert checked >= 2
    assert list(model.hook_dict) == names and not any(hp._hooks["fwd"] for hp in model.hook_dict.values())


def test_free_interventions_write_through_every_later_decoder():
    from probes.graph import feature_intervention, zero

    model, clt, _, tokens, graph = graph_case("relu")
    with torch.no_grad():
        plain = model(tokens[None])[0]
    none = feature_intervention(model, tokens, clt, [], freeze_attention=False)
    assert torch.allclose(none.logits, plain, atol=1e-10)  # attached, nothing edited: the model itself
    node = next(i for i in range(graph.n_features) if graph.features[i, 0] == 0)
    _, layer, pos, index = graph.node_site(node)
    a = float(graph.activations[node])
    res = feature_intervention(model, tokens, clt, [zero(layer, pos, index)], freeze_attention=False)
    # By hand: every MLP output l' gets -a W_dec[0 -> l'][index] at pos, the MLPs run as they are.

    def minus(y, hook):
        l = int(hook.name.split(".")[1])
        out = y.clone()
        out[0, pos] -= a * clt.decoder(0, l).detach()[index]
        return out
    with torch.no_grad():
        expected = model.run_with_hooks(tokens[None], fwd_hooks=[(h, minus) for h in clt.out_hooks])[0]
    assert torch.allclose(res.logits, expected, atol=1e-10)
    assert float((res.logits - plain).abs().max()) > 1e-4
    assert float(res.activations[0][pos, index]) == 0.0
    # Attached, each layer's feature value is what it writes into the residual stream in all.
    from probes.sae import attached

    with attached(model, clt):
        for l in range(clt.n_layers):
            total = sum(clt.decoder(l, later).detach() for later in range(l, clt.n_layers))
            assert torch.allclose(model.blocks[l].transcoder.W_dec, total, atol=1e-12)
    assert not hasattr(model.blocks[0], "transcoder")


# ============================================================ 11. circuit-tracer's CLT files
def test_circuit_tracer_files_hold_the_same_maps(tmp_path):
    """The layout circuit-tracer's load_clt reads (W_enc_{i}: [n_features, d_model] used as
    x @ W_enc.T + b_enc, b_pre folded in; W_dec_{i}: [n_features, n_layers - i, d_model]), checked
    by computing the maps from the files by hand; a BatchTopK threshold becomes JumpReLU's."""
    from safetensors.torch import load_file

    from probes.sae.clt import load_circuit_tracer_clt, save_circuit_tracer_clt

    model = random_model()
    x = torch.randn(5, 3, 24, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    for activation in ("relu", "batchtopk", "jumprelu"):
        clt = random_clt(model, activation=activation)
        with torch.no_grad():  # per layer; for jumprelu per feature, some negative
            clt.threshold.copy_(torch.tensor([0.3, -0.1, 0.8]) if activation != "jumprelu" else
                                0.4 * torch.randn(3, 16, generator=torch.Generator().manual_seed(4)))
        path = save_circuit_tracer_clt(clt, tmp_path / activation)
        enc = [load_file(str(path / f"W_enc_{i}.safetensors")) for i in range(3)]
        dec = [load_file(str(path / f"W_dec_{i}.safetensors"))[f"W_dec_{i}"] for i in range(3)]
        feats = []
        for i, e in enumerate(enc):
            pre = x[:, i] @ e[f"W_enc_{i}"].T + e[f"b_enc_{i}"]
            feats.append(torch.relu(pre) if activation == "relu" else pre * (pre > e[f"threshold_{i}"]))
            assert (f"threshold_{i}" in e) == (activation != "relu")
        for out in range(3):
            y = enc[out][f"b_dec_{out}"] + sum(feats[i] @ dec[i][:, out - i] for i in range(out + 1))
            assert torch.allclose(y, clt(x)[:, out].detach(), atol=1e-12)
        assert (torch.stack(feats, 1) > 0).sum() > 20
        if activation == "jumprelu":  # a negative threshold lets negative pre-activations through
            assert (torch.stack(feats, 1) < 0).any()
        back = load_circuit_tracer_clt(path)
        assert back.cfg.activation == activation and torch.allclose(back(x), clt(x), atol=1e-12)
        with pytest.raises(FileExistsError):
            save_circuit_tracer_clt(clt, path)
    with pytest.raises(ValueError, match="no exact export"):
        save_circuit_tracer_clt(random_clt(model, activation="topk"), tmp_path / "topk")
    assert not (tmp_path / "topk").exists()


# ============================================================ 12. the analyses
def test_spliced_fact_accuracy_agrees_with_the_per_layer_analysis_and_the_commands_refuse_shipped_folders(
        factworld32, tmp_path):
    from analyses.clt import spliced_fact_accuracy
    from analyses.graph_study import athlete_facts, spread_athlete_facts
    from analyses.train_clt import output_dir
    from analyses.transcoders import spliced_accuracy
    from interp.words import answer_tokens
    from models.transformer import last_token_logits
    from probes.sae import splice_hooks

    model, tcs, _, _ = factworld32
    facts = spread_athlete_facts(5)
    prompts, answers = [p for _, p, _ in facts], [s for _, _, s in facts]
    prompts += ["Serena Williams plays the sport of", "Michael Jordan is a citizen of"]
    answers += ["tennis", "football"]  # the last one is wrong on purpose
    got = spliced_fact_accuracy(model, {"per_layer": tcs, "clt": load_clt("factworld")}, prompts, answers)
    clean, spliced = spliced_accuracy(model, tcs, prompts, answers)
    ids = answer_tokens(model, answers)  # and by hand: each transcoder spliced into its own layer
    with torch.no_grad(), model.hooks(fwd_hooks=[h for tc in tcs for h in splice_hooks(tc)]):
        by_hand = float((last_token_logits(model, prompts).argmax(-1) == ids).double().mean())
    assert got["clean"] == clean == 6 / 7 and got["per_layer"] == spliced == by_hand
    assert 0 < got["clt"] <= 6 / 7
    everyone = athlete_facts()
    assert facts[0] == everyone[0] and facts[-1] == everyone[-1] and len(set(facts)) == 5
    with pytest.raises(ValueError, match="give --out DIR"):
        output_dir(None)
    with pytest.raises(ValueError, match="pass --force"):
        output_dir(shipped_clt())
    with pytest.raises(ValueError, match="give --out DIR for --model"):
        output_dir(None, model=str(tmp_path), force=True)
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    with pytest.raises(FileExistsError):
        output_dir(tmp_path / "full")
    assert output_dir(tmp_path / "new") == (tmp_path / "new", False)


def test_per_layer_transcoders_must_come_one_per_layer_in_order(factworld32):
    _, tcs, texts, _ = factworld32
    with pytest.raises(ValueError, match=r"transcoders\[0\] is a transcoder writing 'blocks.1.hook_mlp_out'"):
        splice_all_hooks([tcs[1], tcs[0], tcs[2], tcs[3]])
    with pytest.raises(ValueError, match="in layer order"):
        evaluate_layers(load("factworld"), list(reversed(tcs)), texts)


# ============================================================ 13. the memory bound
@pytest.mark.parametrize("bound", [2.5, 3])  # 2.5: 2.66 MB with one row per feature counted
def test_the_memory_bound_counts_every_decoder_row_a_clt_feature_keeps(bound):
    """A CLT feature keeps a decoder row per layer it writes: with them counted, the measured peak
    (tests/test_graph_memory.py's profiler measure) stays under the bound on the fact world."""
    import warnings

    from tests.test_graph_memory import measured_peak_mb

    model, clt = load("factworld"), load_clt("factworld")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        graph, peak = measured_peak_mb(lambda: attribution_graph(model, PROMPT, clt, batch_size=32,
                                                                 max_memory_mb=bound, progress=False))
    assert peak <= bound and graph.n_features > 0 and graph.settings["memory_plan"]["limited"]


def test_a_clt_graph_saves_loads_and_draws(tmp_path):
    from probes.graph import circuit_tracer_json, load_graph, save_graph

    *_, graph = graph_case("factworld")
    back = load_graph(save_graph(graph, tmp_path / "g.pt"))
    assert torch.equal(back.adjacency, graph.adjacency) and back.transcoders == graph.transcoders
    assert circuit_tracer_json(graph, tmp_path / "ct", slug="jordan").exists()
    assert graph.to_view().save_html(tmp_path / "g.html").stat().st_size > 1000
