"""Activation patching: the batched, resumed sweep equals one plain forward pass per patch."""

import pytest
import torch

from interp import metrics
from interp.patching import SITES, PromptLengthError, paired_tokens, sweep
from conftest import ARCHS, make_model


def slow_sweep(model, base, source_acts, metric, site, layers, positions):
    """Reference: one full forward pass per patch, written independently of interp.patching."""
    kind = SITES[site]
    out = {}
    for l in layers:
        name = kind.hook_name(l)
        src = source_acts[name]
        n_units = src.shape[kind.unit_dim] if kind.unit_dim is not None else None
        for p in positions if kind.by_pos else [None]:
            for u in range(n_units) if n_units else [None]:
                idx = [slice(None)] * src.dim()
                if p is not None:
                    idx[kind.pos_dim] = p
                if u is not None:
                    idx[kind.unit_dim] = u
                idx = tuple(idx)

                def hook(x, hook, idx=idx):
                    x = x.clone()
                    x[idx] = src[idx]
                    return x

                logits = model.run_with_hooks(base, fwd_hooks=[(name, hook)])
                where = {"layer": l, "pos": positions.index(p) if p is not None else None, "head": u, "neuron": u,
                         "feature": u}
                key = tuple(where[a] for a in kind.axes)  # the site's axis order (pattern: layer, head, pos)
                out[key] = float(metric(logits).detach())
    return out


def check_against_slow(result, slow, atol):
    assert len(slow) == result.values.numel()
    for key, v in slow.items():
        assert abs(float(result.values[key]) - v) < atol, (result.site, key, float(result.values[key]), v)


def pair(seed=1, batch=2, n_pos=7, d_vocab=50):
    gen = torch.Generator().manual_seed(seed)
    clean = torch.randint(0, d_vocab, (batch, n_pos), generator=gen)
    corrupted = clean.clone()
    corrupted[:, 2:4] = torch.randint(0, d_vocab, (batch, 2), generator=gen)
    return clean, corrupted


@pytest.mark.parametrize("site", list(SITES))
def test_every_site_matches_one_forward_per_patch(site):
    from probes.sae import SparseDictionary, attached

    model = make_model("gpt2", dtype="float64")
    clean, corrupted = pair()
    metric = metrics.logit_diff(model, [3, 4], [5, 6])
    positions = [1, 4, 6] if "neuron" in site else list(range(7))  # 96 neurons a position: keep it quick
    # Feature sites need transcoders attached (random ones: 12 features, 4 active, on both layers).
    transcoders = [SparseDictionary.transcoder(model, l, 12, activation="topk", k=4, seed=l) for l in range(2)]
    with attached(model, transcoders if SITES[site].act == "feature_acts" else []):
        result = sweep(model, clean, corrupted, metric, site, positions=positions, batch_size=7, progress=False)
        names = [SITES[site].hook_name(l) for l in range(model.cfg.n_layers)]
        acts = model.run_with_cache(clean, names_filter=names)[1]
        slow = slow_sweep(model, corrupted, acts, metric, site, range(model.cfg.n_layers), positions)
    check_against_slow(result, slow, 1e-10)
    assert result.axes == SITES[site].axes
    assert result.values.shape == tuple(len(result.labels[a]) for a in result.axes)


@pytest.mark.parametrize("arch", [a for a in ARCHS if a != "gpt2"])
@pytest.mark.parametrize("site", ["resid_pre", "head_z_by_pos", "head_k_by_pos", "head_pattern_by_pos", "neuron_post"])
def test_other_architectures(arch, site):
    model = make_model(arch, dtype="float64")
    if SITES[site].act == "resid_mid" and model.cfg.parallel_attn_mlp:
        return
    clean, corrupted = pair()
    metric = metrics.probability(model, 3)
    result = sweep(model, clean, corrupted, metric, site, direction="noise", progress=False)
    names = [SITES[site].hook_name(l) for l in range(model.cfg.n_layers)]
    acts = model.run_with_cache(corrupted, names_filter=names)[1]
    slow = slow_sweep(model, clean, acts, metric, site, range(model.cfg.n_layers), list(range(7)))
    check_against_slow(result, slow, 1e-10)


def test_plain_function_metric_reading_every_position():
    """A metric without `pos` gets the full logits, with the unrecomputed prefix filled in."""
    model = make_model("gpt2", dtype="float64")
    clean, corrupted = pair()

    def mean_logit_of_3(logits):
        return logits[..., 3].mean()

    result = sweep(model, clean, corrupted, mean_logit_of_3, "head_z_by_pos", progress=False, batch_size=5)
    acts = model.run_with_cache(clean)[1]
    slow = slow_sweep(model, corrupted, acts, mean_logit_of_3, "head_z_by_pos", range(2), list(range(7)))
    check_against_slow(result, slow, 1e-10)


def test_layers_positions_subset_and_labels():
    model = make_model("gpt2", dtype="float64")
    clean, corrupted = pair()
    metric = metrics.logit_diff(model, 3, 5)
    full = sweep(model, clean, corrupted, metric, "resid_pre", progress=False)
    part = sweep(model, clean, corrupted, metric, "resid_pre", layers=[1], positions=[-1, 2], progress=False)
    assert part.values.shape == (1, 2)
    assert torch.equal(part.values[0], full.values[1, [6, 2]])
    assert part.labels["layer"] == ["L1"] and part.labels["pos"] == [f"{int(clean[0, 6])} (6)", f"{int(clean[0, 2])} (2)"]


def test_endpoints_and_normalisation():
    """Patching the whole clean residual at layer 0 restores the clean metric; at positions the
    corruption does not touch (before it), nothing changes."""
    model = make_model("gpt2", dtype="float64")
    clean, corrupted = pair(batch=1)
    metric = metrics.logit_diff(model, 3, 5)
    res = sweep(model, clean, corrupted, metric, "resid_pre", progress=False)
    assert res.clean_value == pytest.approx(float(metric(model(clean).detach())))
    assert res.corrupted_value == pytest.approx(float(metric(model(corrupted).detach())))
    assert torch.allclose(res.values[0, :2], torch.tensor(res.corrupted_value, dtype=torch.float64))
    # The last position of the last layer's resid_pre carries everything the logits read from it? No:
    # attention in the last layer still reads earlier positions. But resid_post of the last layer does.
    post = sweep(model, clean, corrupted, metric, "resid_post", progress=False)
    assert post.values[-1, -1] == pytest.approx(res.clean_value, abs=1e-10)
    norm = post.normalized()
    assert norm.values[-1, -1] == pytest.approx(1.0, abs=1e-9)
    assert norm.values[-1, 0] == pytest.approx(0.0, abs=1e-9)


def test_noise_direction_swaps_roles():
    model = make_model("gpt2", dtype="float64")
    clean, corrupted = pair()
    metric = metrics.logit_diff(model, 3, 5)
    a = sweep(model, clean, corrupted, metric, "attn_out", direction="noise", progress=False)
    b = sweep(model, corrupted, clean, metric, "attn_out", direction="denoise", progress=False)
    assert torch.allclose(a.values, b.values, atol=1e-12)
    assert a.base_value == a.clean_value and b.base_value == b.corrupted_value


def test_ablations():
    model = make_model("gpt2", dtype="float64")
    clean, corrupted = pair(batch=2)
    metric = metrics.logit_diff(model, 3, 5)
    ref = torch.randint(0, 50, (5, 7), generator=torch.Generator().manual_seed(9))
    names = [f"blocks.{l}.attn.hook_z" for l in range(2)]
    z_clean = model.run_with_cache(clean, names_filter=names)[1]

    zero = sweep(model, clean, None, metric, "head_z", ablation="zero", progress=False)
    zeros = {n: torch.zeros_like(z_clean[n]) for n in names}
    check_against_slow(zero, slow_sweep(model, clean, zeros, metric, "head_z", range(2), []), 1e-10)

    mean = sweep(model, clean, None, metric, "head_z", ablation="mean", reference=ref, progress=False)
    z_ref = model.run_with_cache(ref, names_filter=names)[1]
    means = {n: z_ref[n].mean(0, keepdim=True).expand_as(z_clean[n]) for n in names}
    check_against_slow(mean, slow_sweep(model, clean, means, metric, "head_z", range(2), []), 1e-10)

    res = sweep(model, clean, None, metric, "head_z", ablation="resample", reference=ref, seed=3, progress=False)
    rows = torch.randint(0, 5, (2,), generator=torch.Generator().manual_seed(3))
    picked = {n: z_ref[n][rows] for n in names}
    check_against_slow(res, slow_sweep(model, clean, picked, metric, "head_z", range(2), []), 1e-10)
    assert zero.corrupted_value is None and zero.direction == "zero"
    with pytest.raises(ValueError, match="no corrupted run"):
        zero.normalized()


def test_length_mismatch_names_prompts():
    model = make_model("gpt2")
    with pytest.raises(PromptLengthError, match=r"7 tokens.*6"):
        paired_tokens(model, torch.zeros(1, 7, dtype=torch.long), torch.zeros(1, 6, dtype=torch.long))


def test_bad_input_leaves_no_hooks():
    model = make_model("gpt2")
    clean, corrupted = pair()
    with pytest.raises(ValueError, match="unknown site 'head_x'.*head_z"):
        sweep(model, clean, corrupted, metrics.probability(model, 3), "head_x")
    with pytest.raises(ValueError, match="does not exist"):
        sweep(model, clean, corrupted, metrics.probability(model, 3), "resid_pre", layers=[5])

    def broken(logits):
        raise RuntimeError("metric failed")

    with pytest.raises(RuntimeError, match="metric failed"):
        sweep(model, clean, corrupted, broken, "head_z", progress=False)
    assert not any(model.hook_point(n).has_hooks for n in model.hook_names)
    neox = make_model("neox_partial_rotary")
    with pytest.raises(ValueError, match="parallel attention"):
        sweep(neox, clean, corrupted, metrics.probability(neox, 3), "resid_mid")


def test_any_hooked_model_path_equals_the_fast_path():
    """sweep_hooked (batched, no resuming; for models like the encoder-decoder) gives the same
    numbers as the resumed sweep on the decoder-only model, site by site."""
    from interp.patching import sweep_hooked

    model = make_model("gpt2", dtype="float64")
    clean, corrupted = pair()
    metric = metrics.logit_diff(model, [3, 4], [5, 6])
    for site in ["resid_pre", "attn_out", "head_z_by_pos", "head_k_by_pos", "head_pattern", "neuron_post"]:
        fast = sweep(model, clean, corrupted, metric, site, progress=False)
        hooked = sweep_hooked(model, (clean,), (corrupted,), metric, site, progress=False)
        assert torch.allclose(fast.values, hooked.values, atol=1e-10), site


def test_encoder_decoder_cross_attention_sweep():
    from models import EncoderDecoder, EncoderDecoderConfig

    model = EncoderDecoder(EncoderDecoderConfig(d_vocab_src=10, d_model=16, n_heads=2, n_layers_enc=1,
                                                n_layers_dec=2, n_ctx=8, dtype="float64", seed=0)).eval()
    gen = torch.Generator().manual_seed(0)
    src = torch.randint(0, 10, (2, 5), generator=gen)
    src_corrupted = src.clone()
    src_corrupted[:, 1] = (src[:, 1] + 3) % 10
    tgt = torch.randint(0, 10, (2, 4), generator=gen)
    metric = metrics.logit_diff(None, [1, 2], [3, 4])
    for site, hook in [("decoder.cross_attn.head_z_by_pos", "decoder.blocks.{l}.cross_attn.hook_z"),
                       ("encoder.resid_pre", "encoder.blocks.{l}.hook_resid_pre"),
                       ("decoder.cross_attn.attn_out", "decoder.blocks.{l}.hook_cross_attn_out")]:
        result = sweep(model, (src, tgt), (src_corrupted, tgt), metric, site, progress=False)
        kind = SITES[site.split(".")[-1]]
        n_layers = result.values.shape[0]
        names = [hook.format(l=l) for l in range(n_layers)]
        acts = model.run_with_cache(src, tgt, names_filter=names)[1]
        for key in [(0, 1), (n_layers - 1, 2)] + ([(n_layers - 1, 2, 1)] if kind.unit_dim else []):
            if len(key) != result.values.dim():
                continue
            idx = [slice(None)] * acts[names[key[0]]].dim()
            idx[kind.pos_dim] = key[1]
            if kind.unit_dim is not None:
                idx[kind.unit_dim] = key[2]

            def patch(x, hook, name=names[key[0]], idx=tuple(idx)):
                x = x.clone()
                x[idx] = acts[name][idx]
                return x

            with torch.no_grad():
                expected = float(metric(model.run_with_hooks(src_corrupted, tgt, fwd_hooks=[(names[key[0]], patch)])))
            assert float(result.values[key]) == pytest.approx(expected, abs=1e-10), (site, key)
    # Patching the corrupted source position in the only encoder layer restores the clean run.
    full = sweep(model, (src, tgt), (src_corrupted, tgt), metric, "encoder.resid_pre", progress=False)
    assert float(full.values[0, 1]) == pytest.approx(full.clean_value, abs=1e-10)
