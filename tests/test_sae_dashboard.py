"""Feature dashboards (probes.sae.dashboard) and `interp features`, checked against activations,
pre-activations and value logits computed here by hand: one unpadded forward pass per text,
the dictionary's encoder applied to the cached input, the decoder row read through ln_final."""

import json

import pytest
import torch

from conftest import make_model
from models import load
from probes.sae import SparseDictionary, load_transcoders
from probes.sae.dashboard import feature_dashboard, feature_key_sources, feature_table, plot_dashboard

MJ = "Michael Jordan plays the sport of"
LAYER = 0


@pytest.fixture(scope="module")
def fw():
    return load("factworld")


@pytest.fixture(scope="module")
def tc():
    return load_transcoders("factworld")[LAYER]


@pytest.fixture(scope="module")
def texts():
    from analyses.features import corpus

    return corpus(limit=2) + [MJ, "Michael Phelps plays the sport of", "Alexis Jordan plays the sport of",
                              "the sport played by Michael Jordan is"]


@pytest.fixture(scope="module")
def by_hand(fw, tc, texts):
    """Per text, its feature activations [pos, n_features], from its own (unpadded) run."""
    out = []
    with torch.no_grad():
        for t in texts:
            _, cache = fw.run_with_cache(t, names_filter=[tc.in_hook])
            x = cache[tc.in_hook][0]
            out.append(torch.relu((x - tc.b_pre) @ tc.W_enc + tc.b_enc).topk(tc.cfg.k, -1))
    return [torch.zeros(v.values.shape[0], tc.cfg.n_features).scatter(-1, v.indices, v.values) for v in out]


@pytest.fixture(scope="module")
def feature(by_hand, texts):
    """The feature that fires most at "Jordan" in "Michael Jordan plays the sport of"."""
    return int(by_hand[texts.index(MJ)][2].argmax())


@pytest.fixture(scope="module")
def dash(fw, tc, feature, texts):
    return feature_dashboard(fw, tc, feature, texts, k=5, bins=20, batch_size=64, progress=False)


def test_top_examples_are_the_largest_activations(dash, by_hand, feature, texts, fw):
    contexts = sorted(((float(a[p, feature]), i, p) for i, a in enumerate(by_hand) for p in range(len(a))),
                      key=lambda c: -c[0])
    assert dash.top_examples[0].activation == pytest.approx(contexts[0][0], abs=1e-5)
    assert [c.activation for c in dash.top_examples] == pytest.approx([c[0] for c in contexts[:5]], abs=1e-5)
    for c in dash.top_examples:
        i = texts.index(c.text)
        assert c.tokens == fw.to_str_tokens(c.text)
        assert c.activations == pytest.approx(by_hand[i][:, feature].tolist(), abs=1e-5)
        assert c.activations[c.pos] == pytest.approx(c.activation, abs=1e-6) and c.activation > 0
    assert dash.layer == LAYER and dash.index == feature and dash.n_texts == len(texts)


def test_frequency_and_histogram_count_the_firing_tokens(dash, by_hand, feature):
    acts = torch.cat([a[:, feature] for a in by_hand])
    assert dash.n_tokens == acts.numel()
    assert dash.frequency == pytest.approx(float((acts > 0).double().mean()))
    counts, edges = dash.histogram["counts"], dash.histogram["edges"]
    assert len(counts) == 20 and len(edges) == 21
    assert sum(counts) == int((acts > 0).sum())
    assert edges[-1] == pytest.approx(float(acts.max()), abs=1e-5)


def test_key_sources_sum_to_the_pre_activation(fw, tc, dash, feature):
    top = dash.top_examples[0]
    with torch.no_grad():
        _, cache = fw.run_with_cache(top.text)
        x = cache[tc.in_hook][0, top.pos]
        pre = float((x - tc.b_pre) @ tc.W_enc[:, feature] + tc.b_enc[feature])
    assert sum(dash.key_sources.values()) == pytest.approx(pre, abs=1e-4)
    assert dash.key_pre_activation == pytest.approx(pre, abs=1e-5)
    assert pre == pytest.approx(top.activation, abs=1e-4)  # it fires: the activation is the pre-activation
    assert {f"{w}@{p}" for p, w in enumerate(top.tokens[: top.pos + 1])} <= set(dash.key_sources)


@pytest.mark.parametrize("layer", range(4))
def test_key_sources_at_every_layer(fw, layer):
    tc = load_transcoders("factworld")[layer]
    with torch.no_grad():
        _, cache = fw.run_with_cache(MJ)
        pre = (cache[tc.in_hook][0, 2] - tc.b_pre) @ tc.W_enc + tc.b_enc  # [n_features] at "Jordan"
    f = int(pre.argmax())
    sources = feature_key_sources(fw, tc, f, MJ, pos=2)
    assert sum(sources.values()) == pytest.approx(float(pre[f]), abs=1e-4)
    assert [s for s in sources if s.startswith("mlp")] == [f"mlp L{l}" for l in range(layer)]
    assert {"<bos>@0", "Michael@1", "Jordan@2", "position", "biases"} <= set(sources) and "plays@3" not in sources
    if layer:  # an earlier MLP's part: its output at the position, centred, over the ln2 scale, through the key
        out = cache["mlp_out", 0][0, 2]
        expected = (out - out.mean()) / cache["scale", layer, "ln2"][0, 2] @ tc.W_enc.detach()[:, f]
        assert sources["mlp L0"] == pytest.approx(float(expected), abs=1e-5)


@pytest.mark.parametrize("arch", ["gpt2", "llama_gqa"])
@pytest.mark.parametrize("hook", ["blocks.1.hook_resid_pre", "blocks.0.hook_resid_mid", "blocks.1.hook_resid_post",
                                  "blocks.1.ln1.hook_normalized", "blocks.1.ln2.hook_normalized",
                                  "ln_final.hook_normalized"])
def test_key_sources_of_any_residual_dictionary(arch, hook):
    model = make_model(arch)
    sae = SparseDictionary.sae(model.cfg.d_model, 16, hook=hook, activation="relu")
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        sae.b_dec.copy_(torch.randn(sae.b_dec.shape, generator=g))
        sae.b_enc.copy_(torch.randn(sae.b_enc.shape, generator=g))
    tokens = torch.randint(0, model.cfg.d_vocab, (7,), generator=g)
    with torch.no_grad():
        _, cache = model.run_with_cache(tokens[None], names_filter=[hook])
        pres = sae.pre_acts(cache[hook][0])  # [pos, n_features]
    for pos in (0, 4):
        pre = pres[pos]
        for f in (0, 9):
            assert sum(feature_key_sources(model, sae, f, tokens, pos).values()) == pytest.approx(float(pre[f]), abs=1e-4)


def test_key_sources_refuse_what_they_cannot_split():
    model = make_model("neox_partial_rotary")  # attention and MLP in parallel
    sae = SparseDictionary.sae(model.cfg.d_model, 8, hook="blocks.1.hook_resid_pre", activation="relu")
    with pytest.raises(ValueError, match="sequential"):
        feature_key_sources(model, sae, 0, torch.arange(5))
    gpt2 = make_model("gpt2")
    on_z = SparseDictionary.sae(gpt2.cfg.d_model, 8, hook="blocks.1.hook_attn_out", activation="relu")
    with pytest.raises(ValueError, match="residual stream"):
        feature_key_sources(gpt2, on_z, 0, torch.arange(5))


def test_value_tokens_are_the_decoder_row_through_the_unembedding(fw, tc, dash, feature):
    v = tc.W_dec[feature].detach()
    logits = ((v - v.mean()) * fw.get_parameter("ln_final.w").detach()) @ fw.W_U.detach()
    for got, ranked in ((dash.value_top, logits.topk(5)), (dash.value_bottom, (-logits).topk(5))):
        assert [t for t, _ in got] == [fw.to_str_tokens(int(i))[0] for i in ranked.indices]
        assert [abs(x) for _, x in got] == pytest.approx(ranked.values.abs().tolist(), abs=1e-5)
    assert all(x > 0 for _, x in dash.value_top) and all(x < 0 for _, x in dash.value_bottom)


def test_the_table_agrees_with_the_activations(fw, tc, by_hand, texts):
    table = feature_table(fw, tc, texts, batch_size=64, progress=False)
    acts = torch.cat(by_hand)  # [tokens, n_features]
    live = (acts > 0).any(0)
    assert [r.index for r in table.rows] == live.nonzero().flatten().tolist()
    assert table.n_dead == int((~live).sum()) and table.n_tokens == acts.shape[0]
    rows = {r.index: r for r in table.rows}
    for f in live.nonzero().flatten().tolist()[:: 7]:
        row = rows[f]
        assert row.frequency == pytest.approx(float((acts[:, f] > 0).double().mean()))
        assert row.max_activation == pytest.approx(float(acts[:, f].max()), abs=1e-5)
        assert float(by_hand[texts.index(row.text)][row.pos, f]) == pytest.approx(row.max_activation, abs=1e-5)
        assert row.token == fw.to_str_tokens(row.text)[row.pos]


def test_bad_input_is_refused(fw, tc, texts):
    with pytest.raises(ValueError, match=r"outside \[0, 512\)"):
        feature_dashboard(fw, tc, 512, texts, progress=False)
    with pytest.raises(ValueError, match=r"outside \[0, 512\)"):
        feature_dashboard(fw, tc, -1, texts, progress=False)
    with pytest.raises(ValueError, match="no texts"):
        feature_dashboard(fw, tc, 0, [], progress=False)
    with pytest.raises(ValueError, match="no texts"):
        feature_table(fw, tc, [], progress=False)
    with pytest.raises(ValueError, match="outside a prompt"):
        feature_key_sources(fw, tc, 0, MJ, pos=7)


def test_plot_and_json(tmp_path, dash):
    path = plot_dashboard(dash, tmp_path / "dash.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    data = json.loads(json.dumps(dash.to_dict()))
    assert data["index"] == dash.index and data["top_examples"][0]["token"] == dash.top_examples[0].token


def test_interp_features(tmp_path, capsys, feature):
    from analyses.cli import main

    assert main(["features", str(LAYER), "--limit", "2", "--quiet", "--out", str(tmp_path)]) == 0
    table = json.loads((tmp_path / f"L{LAYER}_features.json").read_text())
    assert table["n_live"] + table["n_dead"] == 512 and table["n_live"] == len(table["features"])
    assert "live features of 512" in capsys.readouterr().out
    assert main(["features", str(LAYER), str(feature), "--limit", "2", "-k", "3", "--quiet",
                 "--out", str(tmp_path)]) == 0
    dash = json.loads((tmp_path / f"L{LAYER}F{feature}.json").read_text())
    assert (tmp_path / f"L{LAYER}F{feature}.png").read_bytes()[:4] == b"\x89PNG"
    assert dash["index"] == feature and len(dash["top_examples"]) <= 3
    row = next((r for r in table["features"] if r["index"] == feature), None)  # the same corpus: the same numbers
    assert dash["max_activation"] == pytest.approx(row["max_activation"] if row else 0.0, abs=1e-6)
    with pytest.raises(SystemExit, match=r"outside \[0, 512\)"):
        main(["features", str(LAYER), "512", "--limit", "1", "--quiet", "--out", str(tmp_path)])
    with pytest.raises(SystemExit, match="out of range"):
        main(["features", "9", "--limit", "1", "--quiet", "--out", str(tmp_path)])
