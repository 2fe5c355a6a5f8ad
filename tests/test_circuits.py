"""Circuits: the graph, edge scores (EAP, EAP-IG, exact path patching), faithfulness, on circuits
known in advance (a hand-built planted path, induction, the fact world's Michael Jordan)."""

import math

import pytest
import torch

from interp.attribution import agreement
from interp.circuits import Graph, attribute_edges, faithfulness, faithfulness_curve, greedy_circuit, top_edges
from interp.metrics import logit, logit_diff
from models import Transformer, TransformerConfig, load


def test_the_graph_has_an_edge_from_every_writer_to_every_later_reader():
    cfg = TransformerConfig(n_layers=3, d_model=16, n_heads=4, d_vocab=10)
    g = Graph(cfg)
    L, H = 3, 4
    heads = sum(3 * H * (1 + l * (H + 1)) for l in range(L))  # q, k, v of layer l read embed and every earlier head and MLP
    mlps = sum(1 + (l + 1) * H + l for l in range(L))        # MLP l also reads its own layer's heads
    assert g.n_edges == heads + mlps + 1 + L * (H + 1)          # logits read every writer
    assert ("L0H1", "L1H2.k") in g.edge_list() and ("L1H0", "MLP1") in g.edge_list()
    with pytest.raises(ValueError, match="not an edge"):
        g.index("L1H0", "L1H2.q")
    with pytest.raises(KeyError, match="unknown upstream node"):
        g.index("L9H0", "logits")
    parallel = Graph(TransformerConfig(n_layers=2, d_model=16, n_heads=4, d_vocab=10, parallel_attn_mlp=True))
    assert not any(u.startswith("L1H") and d == "MLP1" for u, d in parallel.edge_list())
    gqa = Graph(TransformerConfig(n_layers=2, d_model=16, n_heads=4, n_kv_heads=2, d_vocab=10))
    assert {i.name for i in gqa.inputs if i.layer == 1} == {"L1H0.q", "L1H1.q", "L1H2.q", "L1H3.q", "L1KV0.k",
                                                            "L1KV1.k", "L1KV0.v", "L1KV1.v", "MLP1"}
    attn_only = Graph(TransformerConfig(n_layers=2, d_model=16, n_heads=2, d_vocab=10, attn_only=True))
    assert not any("MLP" in n.name for n in attn_only.upstream)
    with pytest.raises(ValueError, match="pre-norm"):
        Graph(TransformerConfig(n_layers=1, d_model=16, n_heads=2, d_vocab=10, norm_position="post"))


# ------------------------------------------------------------ a planted path, scores in closed form
def planted_model() -> Transformer:
    """Tokens 0-3 embed as one-hots in dims 0-3. One head attends uniformly (W_Q = W_K = 0) and
    copies the tokens into dims 4-7; one ReLU neuron reads dim 4 (token 0 was seen) with bias -0.5
    and writes dim 8; logit 3 reads dim 8. RMSNorms with weight 1 everywhere."""
    cfg = TransformerConfig(n_layers=1, d_model=9, n_heads=1, d_head=4, d_mlp=1, d_vocab=4, n_ctx=4, act_fn="relu",
                            norm="rmsnorm", norm_eps=1e-12, tie_embeddings=False, dtype="float64")
    model = Transformer(cfg)
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
        for name, p in model.named_parameters():
            if name.endswith(".w"):
                p.fill_(1.0)
        model.embed.W_E[:, :4] = torch.eye(4)
        model.blocks[0].attn.W_V[0, :4, :] = torch.eye(4)
        model.blocks[0].attn.W_O[0, :, 4:8] = torch.eye(4)
        model.blocks[0].mlp.W_in[4, 0] = 1.0
        model.blocks[0].mlp.b_in[0] = -0.5
        model.blocks[0].mlp.W_out[0, 8] = 1.0
        model.unembed.W_U[8, 3] = 1.0
    return model.eval()


def test_exact_path_patching_matches_the_planted_path_in_closed_form():
    model = planted_model()
    clean, corrupted = torch.tensor([[0, 1, 2]]), torch.tensor([[1, 1, 2]])
    metric = logit(model, 3)
    # Clean, at the last position: the residual is e2 (rms 1/3, so ln1 gives 3 e2); the head writes the
    # mean of 3 e0, 3 e1, 3 e2 = (1, 1, 1, 0) into dims 4-7; ln2 divides by rms = 2/3, so the neuron's
    # pre-activation is 1.5 - 0.5 = 1 and it writes 1 to dim 8; the final rms is sqrt(5)/3, so
    # logit 3 = 3 / sqrt(5). Any edge that removes "token 0 was seen" from the neuron's input (the
    # token's value, the head's output, the neuron's output) drops it to 0 (the neuron goes to
    # -0.5 -> 0); every other edge changes nothing at the last position.
    full = 3 / math.sqrt(5)
    exact = attribute_edges(model, clean, corrupted, metric, method="exact", progress=False)
    assert exact.clean_value == pytest.approx(full)
    expected = {("embed", "L0H0.v"): full, ("L0H0", "MLP0"): full, ("MLP0", "logits"): full}
    for u, d, s in exact.top():
        assert s == pytest.approx(expected.get((u, d), 0.0), abs=1e-9), (u, d)
    # EAP takes the ReLU's slope at the clean run: the neuron's input drops by 1.5 (not just to 0),
    # so the two edges before the neuron are overestimated by 1.5x; the neuron -> logits edge is exact.
    eap = attribute_edges(model, clean, corrupted, metric, method="eap")
    assert eap.score("MLP0", "logits") == pytest.approx(full)
    assert eap.score("embed", "L0H0.v") == pytest.approx(1.5 * full)
    assert eap.score("L0H0", "MLP0") == pytest.approx(1.5 * full)
    assert {(u, d) for u, d, _ in eap.top(3)} == set(expected)
    assert faithfulness(model, clean, corrupted, metric, list(expected)).value == pytest.approx(1.0)
    assert faithfulness(model, clean, corrupted, metric, list(expected)[:2]).value == pytest.approx(0.0)


# ------------------------------------------------------------ properties on the fact-world model
@pytest.fixture(scope="module")
def fw():
    return load("factworld")


PAIR = ("Michael Jordan plays the sport of", "Michael Phelps plays the sport of")


def test_eap_is_exact_on_edges_into_the_logits_and_matches_a_hand_made_gradient(fw):
    metric = logit_diff(fw, "basketball", "swimming")
    eap = attribute_edges(fw, *PAIR, metric, method="eap")
    exact = attribute_edges(fw, *PAIR, metric, method="exact", progress=False)
    # The logit difference is linear in the final norm's input once its scale is frozen.
    for u in ("embed", "L1H1", "MLP3", "MLP0"):
        assert eap.score(u, "logits") == pytest.approx(exact.score(u, "logits"), abs=1e-3)
    # One head-input edge by hand: d metric / d q of L1H1 in a run with every norm scale frozen,
    # against what MLP0's output change does to that query through ln1 of layer 1.
    clean, corrupted = fw.to_tokens(PAIR[0]), fw.to_tokens(PAIR[1])
    _, c_cache = fw.run_with_cache(clean)
    _, k_cache = fw.run_with_cache(corrupted)
    scales = [n for n in c_cache.keys() if n.endswith("hook_scale")]
    freeze = [(n, lambda x, hook: c_cache[hook.name]) for n in scales]
    q_grad = {}
    with torch.enable_grad(), fw.hooks(fwd_hooks=freeze + [("blocks.1.attn.hook_q", lambda x, hook: q_grad.setdefault("q", x))]):
        value = metric(fw(clean))
        (grad,) = torch.autograd.grad(value, [q_grad["q"]])
    delta = c_cache["mlp_out", 0] - k_cache["mlp_out", 0]  # clean - corrupted output of MLP0
    centred = delta - delta.mean(-1, keepdim=True)
    dq = (centred / c_cache["blocks.1.ln1.hook_scale"] * fw.blocks[1].ln1.w) @ fw.blocks[1].attn.W_Q[1]
    assert eap.score("MLP0", "L1H1.q") == pytest.approx(float((dq * grad[:, :, 1]).sum().detach()), rel=1e-3, abs=1e-4)
    # Agreement over all 479 edges (the target: Spearman >= 0.8 for EAP on this circuit).
    assert agreement(eap, exact, k=20).spearman >= 0.8


def test_faithfulness_is_normalised_between_the_corrupted_run_and_the_clean_run(fw):
    metric = logit_diff(fw, "basketball", "swimming")
    scores = attribute_edges(fw, *PAIR, metric, method="eap-ig")
    every = [(u, d) for u, d, _ in scores.top()]
    full = faithfulness(fw, *PAIR, metric, every)
    assert full.value == pytest.approx(1.0) and full.metric == pytest.approx(scores.clean_value, abs=1e-3)
    # With no edge kept every input reads the corrupted run's values, the logits too: the corrupted
    # run's final residual through the final norm with the clean run's scale.
    _, c_cache = fw.run_with_cache(PAIR[0])
    _, k_cache = fw.run_with_cache(PAIR[1])
    resid = k_cache["blocks.3.hook_resid_post"]
    normed = (resid - resid.mean(-1, keepdim=True)) / c_cache["ln_final.hook_scale"] * fw.ln_final.w + fw.ln_final.b
    with torch.no_grad():
        empty = float(metric(normed @ fw.W_U + fw.unembed.b_U))
    assert full.empty == pytest.approx(empty, abs=1e-3)
    assert faithfulness(fw, *PAIR, metric, []).value == pytest.approx(0.0, abs=1e-6)
    # Mean ablation: every edge outside carries the writer's mean output over the corrupted prompts.
    cleans = [PAIR[0], "Tom Brady plays the sport of"]
    corrupteds = [PAIR[1], "Usain Bolt plays the sport of"]
    _, c_cache = fw.run_with_cache(cleans)
    _, k_cache = fw.run_with_cache(corrupteds)
    resid = k_cache["blocks.3.hook_resid_post"].mean(0, keepdim=True)
    normed = (resid - resid.mean(-1, keepdim=True)) / c_cache["ln_final.hook_scale"] * fw.ln_final.w + fw.ln_final.b
    with torch.no_grad():
        empty = float(metric(normed @ fw.W_U + fw.unembed.b_U))
    assert faithfulness(fw, cleans, corrupteds, metric, [], ablation="mean").metric == pytest.approx(empty, abs=1e-3)
    with pytest.raises(ValueError, match="ablation must be one of"):
        faithfulness(fw, *PAIR, metric, [], ablation="zero")
    with pytest.raises(ValueError, match="not an edge"):
        faithfulness(fw, *PAIR, metric, [("MLP3", "MLP0")])


def test_the_fact_world_circuit_follows_the_recall_chain(fw):
    """Subject-position MLP 0 -> layer-1 heads (their values) -> the last position's MLPs -> logits,
    as patching and the recall-chain analysis show; the top edges reach 90% faithfulness."""
    metric = logit_diff(fw, "basketball", "swimming")
    scores = attribute_edges(fw, *PAIR, metric, method="eap-ig")
    top = {(u, d) for u, d, _ in scores.top(12)}
    assert ("embed", "MLP0") in top and ("MLP3", "logits") in top
    assert any(u == "MLP0" and d.startswith("L1H") and d.endswith(".v") for u, d in top)
    assert any(u.startswith("L1H") and d in ("MLP2", "MLP3", "logits") for u, d in top)
    curve = dict(faithfulness_curve(fw, *PAIR, metric, scores))
    assert curve[0] == pytest.approx(0.0, abs=1e-6) and curve[scores.graph.n_edges] == pytest.approx(1.0)
    assert min(n for n, f in curve.items() if f >= 0.9) <= 48
    pruned = greedy_circuit(fw, *PAIR, metric, scores, 20, candidates=40, progress=False)
    assert len(pruned) == 20
    assert faithfulness(fw, *PAIR, metric, pruned).value > faithfulness(fw, *PAIR, metric, top_edges(scores, 20)).value


def test_bad_input_is_refused(fw):
    metric = logit_diff(fw, "basketball", "swimming")
    with pytest.raises(ValueError, match="unknown edge attribution method"):
        attribute_edges(fw, *PAIR, metric, method="acdc")
    with pytest.raises(Exception, match="tokens"):
        attribute_edges(fw, PAIR[0], "Michael plays the sport of", metric)
    from interp.circuits import EdgeRun

    run = EdgeRun(fw, Graph(fw.cfg), fw.to_tokens(PAIR[0]), fw.to_tokens(PAIR[1]), clean_pass=False)
    with pytest.raises(ValueError, match="must be the clean run"):
        run.run(Graph(fw.cfg).edges[None])

    def broken(logits):
        raise RuntimeError("metric failed")

    for method in ("eap", "exact"):
        with pytest.raises(RuntimeError, match="metric failed"):
            attribute_edges(fw, *PAIR, broken, method=method, progress=False)
    assert all(not fw.hook_dict[n].has_hooks for n in fw.hook_names)  # nothing left attached after the error


def test_a_plain_metric_gives_the_same_scores_as_a_batched_one(fw):
    """A metric written for [batch, pos, d_vocab] is called once per patched row (2 prompts, 2 rows
    per pass: rows == batch must not confuse it)."""
    prompts = (["Michael Jordan plays the sport of", "Tom Brady plays the sport of"],
               ["Michael Phelps plays the sport of", "Usain Bolt plays the sport of"])
    a, c = fw.to_single_token("basketball"), fw.to_single_token("swimming")

    def plain(logits):  # [batch, pos, d_vocab] -> scalar (on [rows, batch, ...] it would average the wrong axis)
        return (logits[..., -1, a] - logits[..., -1, c]).mean(0)

    ours = attribute_edges(fw, *prompts, plain, method="exact", batch_size=4, progress=False)
    batched = attribute_edges(fw, *prompts, logit_diff(fw, "basketball", "swimming"), method="exact", progress=False)
    assert torch.allclose(ours.values, batched.values, atol=1e-4)


def test_grouped_query_rotary_rmsnorm_models_are_handled():
    cfg = TransformerConfig(n_layers=2, d_model=32, n_heads=4, n_kv_heads=2, d_vocab=50, n_ctx=16, positional="rotary",
                            norm="rmsnorm", act_fn="silu", gated_mlp=True, tie_embeddings=False, seed=3,
                            dtype="float64")
    model = Transformer(cfg).eval()
    clean, corrupted = torch.tensor([[1, 5, 9, 12, 7]]), torch.tensor([[1, 6, 9, 12, 7]])
    metric = logit_diff(model, 3, 4)
    exact = attribute_edges(model, clean, corrupted, metric, method="exact", progress=False)
    eap = attribute_edges(model, clean, corrupted, metric, method="eap")
    assert torch.isfinite(exact.values).all() and exact.values.abs().max() > 0
    assert ("L0H3", "L1KV1.k") in exact.graph.edge_list()
    for u in ("embed", "L0H2", "MLP0", "MLP1", "L1H3"):
        assert eap.score(u, "logits") == pytest.approx(exact.score(u, "logits"), abs=1e-9)
    every = [(u, d) for u, d, _ in exact.top()]  # keeping every edge is the clean run
    assert faithfulness(model, clean, corrupted, metric, every).metric == pytest.approx(exact.clean_value)
    # EAP-IG with one step takes the gradient at the clean run: it is EAP.
    ig1 = attribute_edges(model, clean, corrupted, metric, method="eap-ig", steps=1)
    assert torch.allclose(ig1.values, eap.values, atol=1e-10)


@pytest.mark.parametrize("arch", ["parallel", "no_final_norm", "gqa"])
def test_patching_every_edge_into_one_reader_feeds_it_the_corrupted_residual(arch):
    """Written independently of interp.circuits: run the clean prompt with every norm's scale
    frozen at its clean value and hand one reader the corrupted run's residual stream."""
    from interp.circuits import EdgeRun

    options = {"parallel": dict(parallel_attn_mlp=True), "no_final_norm": dict(final_norm=False),
               "gqa": dict(n_kv_heads=2, positional="rotary", norm="rmsnorm")}[arch]
    cfg = TransformerConfig(n_layers=2, d_model=16, n_heads=4, d_vocab=30, n_ctx=8, seed=5, dtype="float64",
                            tie_embeddings=False, **options)
    model = Transformer(cfg).eval()
    clean, corrupted = torch.tensor([[1, 4, 7, 2, 9]]), torch.tensor([[1, 5, 8, 2, 9]])
    metric = logit_diff(model, 3, 6)
    graph = Graph(cfg)
    run = EdgeRun(model, graph, clean, corrupted)
    _, c_cache = model.run_with_cache(clean)
    _, k_cache = model.run_with_cache(corrupted)
    freeze = [(n, lambda x, hook: c_cache[hook.name]) for n in c_cache.keys() if n.endswith("hook_scale")]

    def centred(x):
        return x - x.mean(-1, keepdim=True) if cfg.norm == "layernorm" else x

    reads_resid_pre = "blocks.1.hook_resid_pre" if cfg.parallel_attn_mlp else "blocks.1.hook_resid_mid"
    readers = {
        "MLP1": ("blocks.1.ln2.hook_normalized",
                 lambda x, hook: centred(k_cache[reads_resid_pre]) / c_cache["blocks.1.ln2.hook_scale"]),
        "logits": ("ln_final.hook_normalized",
                   lambda x, hook: centred(k_cache["blocks.1.hook_resid_post"]) / c_cache["ln_final.hook_scale"])
        if cfg.final_norm else ("blocks.1.hook_resid_post", lambda x, hook: k_cache["blocks.1.hook_resid_post"]),
    }
    kv = "L1KV1.k" if cfg.n_kv_heads < cfg.n_heads else "L1H1.k"
    W_K, ln1 = model.blocks[1].attn.W_K, model.blocks[1].ln1
    normed = centred(k_cache["blocks.1.hook_resid_pre"]) / c_cache["blocks.1.ln1.hook_scale"] * ln1.w
    if cfg.norm == "layernorm":
        normed = normed + ln1.b
    k_head = 1

    def corrupted_key(x, hook):
        x = x.clone()
        x[:, :, k_head] = normed @ W_K[k_head] + model.blocks[1].attn.b_K[k_head]
        return x

    readers[kv] = ("blocks.1.attn.hook_k", corrupted_key)
    with torch.no_grad():
        for reader, (name, hook) in readers.items():
            d = graph.inputs.index(next(i for i in graph.inputs if i.name == reader))
            masks = torch.zeros(1, *graph.edges.shape, dtype=torch.bool)
            masks[0, :, d] = True
            ours = float(metric(run.run(masks)))
            theirs = float(metric(model.run_with_hooks(clean, fwd_hooks=freeze + [(name, hook)])))
            assert ours == pytest.approx(theirs, abs=1e-9), reader


# ------------------------------------------------------------ induction: trained here, circuit known
@pytest.fixture(scope="module")
def induction():
    from probes.induction import InductionMetric, induction_pair, train_induction_model

    # 500 steps (half the default) already give both heads (prev-token attention ~0.88, induction ~0.88,
    # the 4 known edges ~0.96 faithful): the same properties at half the suite's time.
    model, record = train_induction_model(seed=0, steps=500)
    clean, corrupted = induction_pair(model.cfg.d_vocab, half=8, length=model.cfg.n_ctx, seed=1)
    return model, record, clean, corrupted, InductionMetric(clean, half=8)


def test_the_trained_model_has_a_previous_token_head_and_an_induction_head(induction):
    model, record, clean, _, _ = induction
    assert record.second_half_loss < 0.5 < 3.0 < record.first_half_loss  # the copies are predicted, the rest is not
    _, cache = model.run_with_cache(clean)
    prev = torch.stack([cache["pattern", 0][:, 0, i, i - 1] for i in range(1, 17)]).mean()
    ind = torch.stack([cache["pattern", 1][:, 0, i, i - 7] for i in range(9, 17)]).mean()
    assert prev > 0.8 and ind > 0.6


@pytest.mark.parametrize("method", ["eap", "eap-ig", "exact"])
def test_edge_attribution_recovers_the_induction_circuit(induction, method):
    model, _, clean, corrupted, metric = induction
    scores = attribute_edges(model, clean, corrupted, metric, method=method, progress=False)
    known = {("embed", "L0H0.v"), ("L0H0", "L1H0.k"), ("embed", "L1H0.v"), ("L1H0", "logits")}
    assert {(u, d) for u, d, _ in scores.top(4)} == known
    assert all(s > 0 for _, _, s in scores.top(4))
    assert faithfulness(model, clean, corrupted, metric, known).value >= 0.9
    # Through the query or from the embedding to the key, nothing (positions only enter through rotary).
    assert abs(scores.score("L0H0", "L1H0.q")) < 0.1 * scores.score("L0H0", "L1H0.k")
