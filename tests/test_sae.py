"""Sparse dictionaries: training recovers known sparse features; a perfect dictionary spliced in
leaves the logits unchanged; the reconstruction-error path keeps the forward pass exact;
save / load round-trips; a transcoder on the fact-world model reconstructs its MLP."""

import pytest
import torch

from models import load
from probes.sae import (
    DictionaryConfig, SparseDictionary, activation_pairs, evaluate_dictionary, load_dictionary, save_dictionary,
    splice_hooks, train_dictionary,
)


def synthetic(n: int = 20_000, d: int = 16, n_true: int = 24, active: int = 3, seed: int = 0):
    """x = codes @ features: each sample a sum of `active` of `n_true` unit features, weights in [1, 2]."""
    g = torch.Generator().manual_seed(seed)
    features = torch.randn(n_true, d, generator=g)
    features = features / features.norm(dim=-1, keepdim=True)
    codes = torch.zeros(n, n_true)
    for i in range(n):
        codes[i, torch.randperm(n_true, generator=g)[:active]] = 1 + torch.rand(active, generator=g)
    return codes @ features, features


@pytest.mark.parametrize("activation,k,l1,least", [("topk", 3, 0.0, 22), ("batchtopk", 3, 0.0, 20),
                                                   ("relu", 1, 0.1, 20)])
def test_training_recovers_known_sparse_features(activation, k, l1, least):
    x, features = synthetic()
    sae = SparseDictionary(DictionaryConfig(16, 16, 48, activation=activation, k=k, seed=1))
    # 1000 steps recover as many features as 3000 did (topk 24, batchtopk 22, relu 24 of 24) in a third of the time
    record = train_dictionary(sae, (x, x), steps=1000, batch_size=256, lr=3e-3, l1=l1, dead_after=5000,
                              progress=False)
    best = (features @ sae.W_dec.detach().T).max(-1).values  # each true feature's closest decoder row
    assert int((best >= 0.95).sum()) >= least, best
    assert record.losses[-1] < record.losses[0]
    assert torch.allclose(sae.W_dec.norm(dim=-1), torch.ones(48), atol=1e-5)  # unit decoder rows
    if activation != "relu":
        assert (sae.encode(x[:100]) > 0).sum(-1).max() <= (k if activation == "topk" else 48)


def test_training_is_deterministic_given_the_seed():
    x, _ = synthetic(n=4000)
    runs = []
    for _ in range(2):
        sae = SparseDictionary(DictionaryConfig(16, 16, 32, activation="topk", k=3, seed=4))
        train_dictionary(sae, (x, x), steps=200, batch_size=256, progress=False)
        runs.append(sae.W_dec.detach().clone())
    assert torch.equal(runs[0], runs[1])


@pytest.fixture(scope="module")
def fw():
    return load("factworld")


def perfect_sae(d: int, hook: str) -> SparseDictionary:
    """Features = the +- standard basis with ReLU: decode(encode(x)) == x exactly."""
    sae = SparseDictionary.sae(d, 2 * d, hook=hook, activation="relu", dtype="float32")
    with torch.no_grad():
        eye = torch.eye(d)
        sae.W_enc.copy_(torch.cat([eye, -eye], dim=1))
        sae.W_dec.copy_(torch.cat([eye, -eye], dim=0))
        sae.b_enc.zero_()
        sae.b_dec.zero_()
    return sae


def test_a_perfect_dictionary_spliced_in_leaves_the_logits_unchanged(fw):
    tokens = fw.to_tokens(["Michael Jordan plays the sport of", "the sport played by Tom Brady is"])
    with torch.no_grad():
        clean = fw(tokens)
        sae = perfect_sae(fw.cfg.d_model, "blocks.1.hook_resid_pre")
        with fw.hooks(fwd_hooks=splice_hooks(sae)):
            spliced = fw(tokens)
    assert torch.allclose(clean, spliced, atol=1e-5)


def test_the_error_path_makes_any_dictionary_exact(fw):
    tokens = fw.to_tokens("Michael Jordan plays the sport of")
    tc = SparseDictionary.transcoder(fw, 1, 256, activation="topk", k=4)  # untrained: a poor reconstruction
    store: dict = {}
    with torch.no_grad():
        clean = fw(tokens)
        with fw.hooks(fwd_hooks=splice_hooks(tc)):
            rough = fw(tokens)
        with fw.hooks(fwd_hooks=splice_hooks(tc, keep_error=True, store=store)):
            exact = fw(tokens)
    assert not torch.allclose(clean, rough, atol=1e-3)
    assert torch.allclose(clean, exact, atol=1e-5)
    assert store["features"].shape == (1, 7, 256) and int((store["features"] > 0).sum(-1).max()) <= 4


def test_save_load_round_trip(tmp_path, fw):
    tc = SparseDictionary.transcoder(fw, 2, 64, activation="batchtopk", k=4, skip=True, seed=3)
    with torch.no_grad():
        tc.W_skip.normal_()
        tc.threshold.fill_(0.25)
    path = save_dictionary(tc, tmp_path / "tc", extra={"note": "test"})
    assert (path / "cfg.json").exists() and (path / "sae_weights.safetensors").exists()
    back = load_dictionary(path)
    assert back.cfg == tc.cfg and back.in_hook == "blocks.2.ln2.hook_normalized" and back.out_hook == "blocks.2.hook_mlp_out"
    x = torch.randn(5, fw.cfg.d_model)
    assert torch.equal(back(x), tc.eval()(x))
    with pytest.raises(FileNotFoundError, match="no dictionary"):
        load_dictionary(tmp_path)


def test_a_transcoder_learns_the_layer0_mlp(fw):
    from analyses.factworld_edits import stats_texts

    texts = stats_texts(1500)
    tc = SparseDictionary.transcoder(fw, 0, 512, activation="topk", k=16, seed=0)
    # 150 steps: variance explained 0.94 (0.97 after 300), well above the 0.8 asked, at half the time
    train_dictionary(tc, activation_pairs(fw, tc, texts), steps=150, batch_size=512, progress=False)
    scores = evaluate_dictionary(fw, tc.eval(), stats_texts(100, seed=9))
    assert scores.l0 == pytest.approx(16, abs=0.5)
    assert scores.variance_explained > 0.8
    assert scores.ce_zero > scores.ce_spliced  # better than no MLP at all
    assert 0 <= scores.dead <= 1 and scores.tokens > 500


def test_bad_configurations_are_refused():
    with pytest.raises(ValueError, match="activation"):
        DictionaryConfig(4, 4, 8, activation="gelu")
    with pytest.raises(ValueError, match="reconstructs its input"):
        DictionaryConfig(4, 5, 8, kind="sae")
    with pytest.raises(ValueError, match="k <= n_features"):
        DictionaryConfig(4, 4, 8, k=9)
    sae = SparseDictionary(DictionaryConfig(4, 4, 8, k=2))
    with pytest.raises(ValueError, match="paired rows"):
        train_dictionary(sae, (torch.zeros(10, 4), torch.zeros(10, 4)), batch_size=64)


def test_dedicated_units_are_the_and_of_the_name():
    from probes.sae.dedicated import dedicated_units

    # subjects: 0 Michael Jordan, 1 Michael Phelps, 2 Alexis Jordan, 3 Tom Brady (no shared tokens)
    neighbours = [[1, 2], [0], [0], []]
    acts = torch.tensor([
        # unit 0: Michael (fires for both Michaels); unit 1: Michael Jordan only; unit 2: MJ strong, AJ 20%
        [2.0, 1.5, 3.0, 0.0],
        [2.0, 0.1, 0.0, 0.0],
        [0.0, 0.0, 0.6, 0.0],
        [0.0, 0.0, 0.0, 0.5],
    ])
    assert dedicated_units(acts, neighbours) == [1, None, None, 3]
    # unit 1 for Michael Jordan: 0.1 < 10% of 1.5; unit 2 is the strongest but Alexis Jordan has 20% of it.
    assert dedicated_units(acts, neighbours, ratio=0.25) == [2, None, None, 3]
    with pytest.raises(ValueError, match="one neighbour list"):
        dedicated_units(acts, neighbours[:2])


def tmp_dir_that_does_not_exist():
    import pathlib
    import tempfile

    return pathlib.Path(tempfile.mkdtemp()) / "none"


def test_the_shipped_transcoders_reconstruct_every_mlp(fw):
    from probes.sae import load_transcoders

    transcoders = load_transcoders("factworld")
    assert [tc.out_hook for tc in transcoders] == [f"blocks.{l}.hook_mlp_out" for l in range(4)]
    assert [tc.in_hook for tc in transcoders] == [f"blocks.{l}.ln2.hook_normalized" for l in range(4)]
    prompts = ["Michael Jordan plays the sport of", "the country where Tom Brady was born is", "Alexis Jordan works as"]
    tokens = fw.to_tokens(prompts)
    with torch.no_grad():
        clean, cache = fw.run_with_cache(tokens)
        for tc in transcoders:
            y = cache[tc.out_hook]
            recon = tc(cache[tc.in_hook])
            assert 1 - (recon - y).pow(2).sum() / (y - y.mean((0, 1))).pow(2).sum() > 0.95
            assert int((tc.encode(cache[tc.in_hook]) > 0).sum(-1).max()) <= tc.cfg.k
        with fw.hooks(fwd_hooks=[h for tc in transcoders for h in splice_hooks(tc)]):
            spliced = fw(tokens)
    assert (spliced[:, -1].argmax(-1) == clean[:, -1].argmax(-1)).all()  # all four spliced in: same answers
    with pytest.raises(FileNotFoundError, match="no dictionaries"):
        load_transcoders(tmp_dir_that_does_not_exist())


def test_interp_transcoders(tmp_path, capsys):
    import json

    from analyses.cli import main

    assert main(["transcoders", "--out", str(tmp_path)]) == 0
    data = json.loads((tmp_path / "transcoders.json").read_text())
    assert data["all_spliced"]["prompts"] == 4266 and data["all_spliced"]["ratio"] > 0.95
    for layer, entry in data["subject_features"].items():
        assert 0 <= entry["features"] <= 1 and 0 <= entry["neurons"] <= 1
    assert data["layers"]["0"]["l0"] <= 32 and (tmp_path / "transcoders.png").exists()


def test_attached_transcoders_make_features_sites(fw):
    from interp import Feature
    from probes.sae import attached, load_transcoders

    transcoders = load_transcoders("factworld")
    tokens = fw.to_tokens(["Michael Jordan plays the sport of", "Michael Phelps plays the sport of"])
    names_before = list(fw.hook_names)
    with torch.no_grad():
        clean = fw(tokens)
        with attached(fw, transcoders):
            logits, cache = fw.run_with_cache(tokens)
            acts = cache["blocks.1.transcoder.hook_feature_acts"]
            assert acts.shape == (2, 7, 512) and "blocks.3.transcoder.hook_error" in fw.hook_names
            assert torch.allclose(logits, clean, atol=1e-4)  # features + error = the MLP's own output
            on = int(acts[0, 2].argmax())
            off = int((acts[:, 2] == 0).all(0).nonzero()[0])
            assert float(Feature(1, on, pos=2).read(cache)[0]) == float(acts[0, 2, on])
            killed = fw.run_with_hooks(tokens, fwd_hooks=[Feature(1, on, pos=2).zero()])
            assert not torch.allclose(killed[0], clean[0], atol=1e-4)  # an active feature matters ...
            assert torch.allclose(fw.run_with_hooks(tokens, fwd_hooks=[Feature(1, off, pos=2).zero()]), clean,
                                  atol=1e-4)  # ... a silent one does not
            with pytest.raises(IndexError, match="feature 9999 out of range"):
                fw.run_with_hooks(tokens, fwd_hooks=[Feature(1, 9999).zero()])
            with pytest.raises(RuntimeError, match="already attached"):
                with attached(fw, transcoders[:1]):
                    pass
        with pytest.raises(RuntimeError, match="inside"):
            with attached(fw, transcoders):
                raise RuntimeError("inside")
    assert list(fw.hook_names) == names_before and not hasattr(fw.blocks[1], "transcoder")
    assert torch.allclose(fw(tokens), clean)
    assert Feature(1, 134, pos=2).label == "L1F134@2"
    sae = SparseDictionary.sae(fw.cfg.d_model, 8, hook="blocks.1.hook_resid_pre", k=2)
    with pytest.raises(ValueError, match="only transcoders"):
        with attached(fw, [sae]):
            pass


def test_features_are_sites_for_patching_attribution_and_direct_logit_attribution(fw):
    from interp import Feature
    from interp.attribution import agreement, attribution_patch, direct_logit_attribution, feature_logit_attribution
    from interp.metrics import logit_diff
    from interp.patching import sweep
    from probes.sae import attached, load_transcoders

    transcoders = load_transcoders("factworld")
    clean, corrupted = "Michael Jordan plays the sport of", "Michael Phelps plays the sport of"
    metric = logit_diff(fw, "basketball", "swimming")
    with pytest.raises(ValueError, match="no transcoder is attached"):
        sweep(fw, clean, corrupted, metric, "feature_acts_by_pos", progress=False)
    with pytest.raises(ValueError, match="no transcoder is attached"):
        feature_logit_attribution(fw, clean, "basketball")
    with torch.enable_grad():
        _, plain = fw.run_with_cache(corrupted, names_filter=["blocks.0.hook_resid_mid"], incl_bwd=True, metric=metric)
    with attached(fw, transcoders):
        result = sweep(fw, clean, corrupted, metric, "feature_acts_by_pos", layers=[0, 1], positions=[2, 6],
                       progress=False)
        assert result.axes == ("layer", "pos", "feature") and result.values.shape == (2, 2, 512)
        _, clean_cache = fw.run_with_cache(clean)
        effect = (result.values - result.corrupted_value).abs()
        for li, pi, f in [tuple(int(i) for i in torch.unravel_index(effect.argmax(), effect.shape)), (1, 0, 7)]:
            layer, pos = [0, 1][li], [2, 6][pi]
            site = Feature(layer, f, pos=pos)
            with torch.no_grad():
                patched = fw.run_with_hooks(corrupted, fwd_hooks=[site.patch(site.read(clean_cache)[0])])
            assert float(metric(patched)) == pytest.approx(float(result.values[li, pi, f]), abs=1e-4)
        estimate = attribution_patch(fw, clean, corrupted, metric, "feature_acts_by_pos", layers=[0, 1], positions=[2, 6])
        assert agreement(estimate, result, k=10).pearson > 0.8

        # The gradient at a feature is its decoder row against the MLP output's gradient, and
        # attaching leaves the gradients upstream (the residual stream) as they were.
        with torch.enable_grad():
            _, cache = fw.run_with_cache(corrupted, names_filter=["blocks.1.transcoder.hook_feature_acts",
                                                                  "blocks.1.hook_mlp_out", "blocks.0.hook_resid_mid"],
                                         incl_bwd=True, metric=metric)
        W_dec = transcoders[1].W_dec.detach()
        assert torch.allclose(cache["blocks.1.transcoder.hook_feature_acts_grad"],
                              cache["blocks.1.hook_mlp_out_grad"] @ W_dec.T, atol=1e-5)
        assert torch.allclose(cache["blocks.0.hook_resid_mid_grad"], plain["blocks.0.hook_resid_mid_grad"], atol=1e-5)

        # Direct logit attribution: features + error + the rest add up to the MLP's, and one
        # feature's share is its activation times its decoder row read through the frozen final norm.
        dla_features = feature_logit_attribution(fw, clean, "basketball", "swimming")
        _, run = fw.run_with_cache(clean)
    dla = direct_logit_attribution(fw, clean, "basketball", "swimming")
    assert dla_features.layers == [0, 1, 2, 3]
    assert torch.allclose(dla_features.mlp, dla.mlp, atol=1e-4)
    layer, f = 3, int(dla_features.features[3].abs().argmax())
    written = run["blocks.3.transcoder.hook_feature_acts"][0, -1, f] * transcoders[3].W_dec[f].detach()
    written = (written - written.mean()) / run["ln_final.hook_scale"][0, -1] * fw.ln_final.w
    direction = fw.W_U[:, fw.to_single_token("basketball")] - fw.W_U[:, fw.to_single_token("swimming")]
    assert float(dla_features.features[3, f]) == pytest.approx(float(written @ direction), abs=1e-4)


def test_localise_with_features(fw):
    from analyses.factworld_facts import other_facts_for
    from interp import Feature
    from probes.ffn import localise
    from probes.ffn.rankings import Margin
    from probes.sae import attached, load_transcoders

    prompt = "Michael Jordan plays the sport of"
    with pytest.raises(ValueError, match="no feature hooks"):
        localise(fw, prompt, "basketball", unit="feature", max_sites=2)
    with attached(fw, load_transcoders("factworld")):
        # max_sites=5: the first k that moves the answer costs the other facts, so sites are left out
        loc = localise(fw, prompt, "basketball", subject="Michael Jordan", other_facts=other_facts_for(prompt),
                       max_sites=5, unit="feature")
        assert loc.sites and all(isinstance(s, Feature) for s in loc.sites)
        hooks = [s.zero() for s in loc.sites]
        after = float(Margin(fw.to_single_token("basketball"))(fw.run_with_hooks(prompt, fwd_hooks=hooks))[0])
    assert after == pytest.approx(loc.validation.margin_after, abs=1e-4)
    assert (loc.k is not None) == (after < 0)
    assert loc.left_out or loc.k is not None


def test_feature_rankings_with_one_layer_attached(fw):
    """Layers without a transcoder have no feature sites: nothing there is ranked (not +inf)."""
    import math

    from probes.ffn.rankings import rank_sites, site_scores
    from probes.sae import attached, load_transcoders

    prompt = "Michael Jordan plays the sport of"
    with attached(fw, load_transcoders("factworld")[1:2]):
        scores = site_scores(fw, prompt, "basketball", "attribution", unit="feature")
        assert scores.shape == (4, 7, 512) and not torch.isfinite(scores[[0, 2, 3]]).any()
        assert torch.isfinite(scores[1]).all()
        for method in ("attribution", "greedy"):
            ranking = rank_sites(fw, prompt, "basketball", method, max_sites=3, unit="feature")
            assert [s.layer for s in ranking.sites] == [1, 1, 1] and all(math.isfinite(v) for v in ranking.scores)
