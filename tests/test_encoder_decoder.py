"""The encoder-decoder Transformer: equal to torch.nn.Transformer, hooked, trainable."""

import json
import math
import warnings

import pytest
import torch
from torch import nn

from interp import UnknownHookError
from interp import EncDecHead, EncDecNeuron
from models import EncoderDecoder, EncoderDecoderConfig

D_MODEL, N_HEADS = 32, 4


def nn_transformer(norm_first: bool, dtype=torch.float32, seed: int = 0) -> nn.Transformer:
    """A small torch.nn.Transformer (eval, no dropout) with perturbed norm weights and biases."""
    torch.manual_seed(seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "enable_nested_tensor is True, but ... norm_first was True"
        core = nn.Transformer(d_model=D_MODEL, nhead=N_HEADS, num_encoder_layers=2, num_decoder_layers=2,
                              dim_feedforward=128, dropout=0.0, batch_first=True, norm_first=norm_first)
    core = core.to(dtype).eval()
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, p in core.named_parameters():
            if "norm" in name or name.endswith("bias"):
                p.add_(0.3 * torch.randn(p.shape, generator=gen, dtype=dtype))
    return core


def padding(batch: int, n: int, lengths) -> torch.Tensor:
    """[batch, n] True at padding (torch's key_padding_mask convention)."""
    return torch.arange(n)[None, :] >= torch.tensor(lengths)[:, None]


def sinusoids(n_pos: int, d: int) -> torch.Tensor:
    pos = torch.arange(n_pos, dtype=torch.float64)[:, None]
    i = torch.arange(d, dtype=torch.float64)[None, :]
    angle = pos / 10000 ** ((i - i % 2) / d)
    return torch.where(i % 2 == 0, angle.sin(), angle.cos()).float()


def small_model(norm_position: str = "post", seed: int = 0, **kw) -> EncoderDecoder:
    cfg = EncoderDecoderConfig(d_vocab_src=17, d_vocab_tgt=13, d_model=D_MODEL, n_heads=N_HEADS, n_layers_enc=2,
                               n_layers_dec=2, n_ctx=16, norm_position=norm_position, seed=seed, **kw)
    model = EncoderDecoder(cfg).eval()
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():  # non-trivial norms and biases
        for name, p in model.named_parameters():
            if name.endswith((".w", ".b")) or name.split(".")[-1].startswith("b_"):
                p.add_(0.2 * torch.randn(p.shape, generator=gen))
    return model


@pytest.fixture
def src_tgt():
    gen = torch.Generator().manual_seed(3)
    return torch.randint(0, 17, (3, 7), generator=gen), torch.randint(0, 13, (3, 6), generator=gen)


# ------------------------------------------------------------ equal to torch.nn.Transformer
@pytest.mark.filterwarnings("ignore:The PyTorch API of nested tensors")
@pytest.mark.parametrize("norm_first", [False, True], ids=["post_norm", "pre_norm"])
@pytest.mark.parametrize("grad", [False, True], ids=["no_grad_fast_path", "grad"])
def test_core_forward_matches_nn_transformer(norm_first, grad):
    core = nn_transformer(norm_first)
    model = EncoderDecoder.from_torch(core, d_vocab_src=20)
    assert model.cfg.norm_position == ("pre" if norm_first else "post") and model.cfg.final_norm
    gen = torch.Generator().manual_seed(0)
    src, tgt = torch.randn(3, 7, D_MODEL, generator=gen), torch.randn(3, 5, D_MODEL, generator=gen)
    causal = nn.Transformer.generate_square_subsequent_mask(5)
    pad = padding(3, 7, [7, 5, 3])
    with torch.set_grad_enabled(grad):
        expected = core(src, tgt, tgt_mask=causal)
        expected_pad = core(src, tgt, tgt_mask=causal, src_key_padding_mask=pad, memory_key_padding_mask=pad)
        ours = model.core_forward(src, tgt)
        ours_pad = model.core_forward(src, tgt, src_mask=~pad)
    assert (expected_pad - expected).abs().max() > 0.1  # the mask matters
    torch.testing.assert_close(ours, expected, atol=1e-5, rtol=0)
    torch.testing.assert_close(ours_pad, expected_pad, atol=1e-5, rtol=0)


@pytest.mark.parametrize("norm_first", [False, True], ids=["post_norm", "pre_norm"])
def test_core_forward_matches_nn_transformer_float64(norm_first):
    core = nn_transformer(norm_first, torch.float64)
    model = EncoderDecoder.from_torch(core, d_vocab_src=20)
    assert model.cfg.dtype == "float64"
    gen = torch.Generator().manual_seed(0)
    src = torch.randn(2, 6, D_MODEL, generator=gen, dtype=torch.float64)
    tgt = torch.randn(2, 4, D_MODEL, generator=gen, dtype=torch.float64)
    causal = nn.Transformer.generate_square_subsequent_mask(4, dtype=torch.float64)
    torch.testing.assert_close(model.core_forward(src, tgt), core(src, tgt, tgt_mask=causal), atol=1e-12, rtol=0)


@pytest.mark.filterwarnings("ignore:The PyTorch API of nested tensors")
def test_from_torch_embeddings_and_output():
    """Full forward: embeddings * sqrt(d_model) + sinusoids -> core -> output layer."""
    core = nn_transformer(False)
    torch.manual_seed(5)
    emb_src, emb_tgt, out = nn.Embedding(17, D_MODEL), nn.Embedding(13, D_MODEL), nn.Linear(D_MODEL, 13)
    model = EncoderDecoder.from_torch(core, 17, 13, embeddings=(emb_src, emb_tgt), output=out)
    src, tgt = torch.randint(0, 17, (2, 7)), torch.randint(0, 13, (2, 5))
    pad = padding(2, 7, [7, 4])

    def embed(emb, tokens):
        return emb(tokens) * math.sqrt(D_MODEL) + sinusoids(tokens.shape[1], D_MODEL)

    with torch.no_grad():
        expected = out(core(embed(emb_src, src), embed(emb_tgt, tgt), tgt_mask=nn.Transformer.generate_square_subsequent_mask(5),
                            src_key_padding_mask=pad, memory_key_padding_mask=pad))
        torch.testing.assert_close(model(src, tgt, src_mask=~pad), expected, atol=1e-5, rtol=0)


def test_from_torch_shared_and_tied():
    core = nn_transformer(True)
    emb = nn.Embedding(11, D_MODEL)
    out = nn.Linear(D_MODEL, 11, bias=False)
    out.weight = emb.weight
    model = EncoderDecoder.from_torch(core, 11, embeddings=emb, output=out)
    assert model.cfg.share_embeddings and model.cfg.tie_embeddings
    assert model.decoder.embed is model.encoder.embed
    torch.testing.assert_close(model.W_U, emb.weight.T)


def test_from_torch_rejects_non_relu_and_bad_shapes():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        gelu = nn.Transformer(d_model=16, nhead=2, num_encoder_layers=1, num_decoder_layers=1, dim_feedforward=32,
                              activation="gelu", batch_first=True)
    with pytest.raises(ValueError, match="only ReLU"):
        EncoderDecoder.from_torch(gelu, 10)
    with pytest.raises(ValueError, match="target embedding"):
        EncoderDecoder.from_torch(nn_transformer(False), 10, embeddings=(nn.Embedding(10, D_MODEL), nn.Embedding(9, D_MODEL)))
    with pytest.raises(TypeError, match="torch.nn.Transformer"):
        EncoderDecoder.from_torch(nn.Linear(2, 2), 10)


# ------------------------------------------------------------ config
def test_config_defaults_and_round_trip(tmp_path):
    cfg = EncoderDecoderConfig(d_vocab_src=100)
    assert (cfg.d_vocab_tgt, cfg.d_model, cfg.d_head, cfg.d_mlp, cfg.n_layers_enc, cfg.n_layers_dec) == (100, 512, 64, 2048, 6, 6)
    assert cfg.norm_position == "post" and cfg.final_norm is False
    assert EncoderDecoderConfig(d_vocab_src=10, norm_position="pre").final_norm is True
    cfg = EncoderDecoderConfig(d_vocab_src=10, d_vocab_tgt=12, d_model=8, n_heads=2, seed=3, dtype=torch.float64)
    assert EncoderDecoderConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    cfg.save(tmp_path / "c.json")
    assert EncoderDecoderConfig.load(tmp_path / "c.json") == cfg
    with pytest.raises(ValueError, match="unknown EncoderDecoderConfig fields"):
        EncoderDecoderConfig.from_dict({**cfg.to_dict(), "n_layers": 2})
    with pytest.raises(ValueError, match="share_embeddings"):
        EncoderDecoderConfig(d_vocab_src=10, d_vocab_tgt=12, share_embeddings=True)
    with pytest.raises(ValueError, match="norm_position"):
        EncoderDecoderConfig(d_vocab_src=10, norm_position="middle")


def test_weight_names_and_shapes():
    model = small_model(tie_embeddings=True)
    params = dict(model.named_parameters())
    assert params["encoder.embed.W_E"].shape == (17, D_MODEL)
    assert params["decoder.embed.W_E"].shape == (13, D_MODEL)
    assert params["decoder.blocks.1.cross_attn.W_Q"].shape == (N_HEADS, D_MODEL, D_MODEL // N_HEADS)
    assert params["decoder.blocks.1.cross_attn.W_O"].shape == (N_HEADS, D_MODEL // N_HEADS, D_MODEL)
    assert params["encoder.blocks.0.mlp.W_in"].shape == (D_MODEL, 4 * D_MODEL)
    assert "decoder.blocks.0.ln3.w" in params and "decoder.ln_final.w" not in params  # post-norm: no final norm
    assert "unembed.W_U" not in params and model.W_U.shape == (D_MODEL, 13)  # tied to the target embedding
    assert "encoder.ln_final.w" in dict(small_model("pre").named_parameters())


# ------------------------------------------------------------ forward, masks
def test_forward_shapes_and_padding_is_ignored(src_tgt):
    model = small_model()
    src, tgt = src_tgt
    mask = ~padding(3, 7, [7, 5, 2])
    logits = model(src, tgt, src_mask=mask)
    assert logits.shape == (3, 6, 13)
    changed = src.clone()
    changed[~mask] = (changed[~mask] + 1) % 17  # other tokens at the padded positions
    torch.testing.assert_close(model(changed, tgt, src_mask=mask), logits, atol=1e-6, rtol=0)
    assert (model(changed, tgt) - model(src, tgt)).abs().max() > 1e-3  # without the mask they matter
    # Teacher forcing: a target token only affects later positions (causal decoder).
    tgt2 = tgt.clone()
    tgt2[:, 3] = (tgt2[:, 3] + 1) % 13
    diff = (model(src, tgt2, src_mask=mask) - logits).abs().amax(dim=(0, 2))
    assert diff[:3].max() == 0 and diff[3:].min() > 1e-4


def test_bad_input_errors(src_tgt):
    model = small_model()
    src, tgt = src_tgt
    with pytest.raises(ValueError, match=r"src_tokens ids must be in \[0, 17\)"):
        model(src + 17, tgt)
    with pytest.raises(ValueError, match="src_mask has shape"):
        model(src, tgt, src_mask=torch.ones(3, 6, dtype=torch.bool))
    with pytest.raises(ValueError, match="hides every source position"):
        model(src, tgt, src_mask=torch.zeros(3, 7, dtype=torch.bool))
    with pytest.raises(ValueError, match="n_ctx=16"):
        model(torch.zeros(1, 17, dtype=torch.long), tgt[:1])


def test_loss_ignores_padding(src_tgt):
    model = small_model()
    src, tgt = src_tgt
    per_token = model.loss(src, tgt, per_token=True)
    assert per_token.shape == (3, 5)
    padded = tgt.clamp(min=1)
    padded[:, -2:] = 0
    assert torch.isclose(model.loss(src, padded, pad_id=0), model.loss(src, padded, per_token=True)[:, :3].mean())


# ------------------------------------------------------------ hooks
def test_hook_names():
    model = small_model("pre")
    names = model.hook_names
    for name in ["encoder.hook_embed", "encoder.hook_pos_embed", "encoder.blocks.0.hook_resid_pre",
                 "encoder.blocks.1.attn.hook_pattern", "encoder.blocks.1.mlp.hook_post", "encoder.ln_final.hook_scale",
                 "decoder.hook_embed", "decoder.blocks.0.attn.hook_pattern", "decoder.blocks.1.cross_attn.hook_q",
                 "decoder.blocks.1.cross_attn.hook_k", "decoder.blocks.1.cross_attn.hook_v",
                 "decoder.blocks.1.cross_attn.hook_attn_scores", "decoder.blocks.1.cross_attn.hook_pattern",
                 "decoder.blocks.1.cross_attn.hook_z", "decoder.blocks.1.hook_cross_attn_out",
                 "decoder.blocks.1.hook_resid_mid_cross", "decoder.blocks.1.ln3.hook_normalized",
                 "decoder.blocks.1.mlp.hook_post", "decoder.blocks.1.hook_resid_post", "decoder.ln_final.hook_scale"]:
        assert name in names, name
    assert names.index("encoder.ln_final.hook_scale") < names.index("decoder.hook_embed")  # forward order
    assert len(names) == len(set(names))


def test_cache_cross_attention_pattern(src_tgt):
    model = small_model()
    src, tgt = src_tgt
    mask = ~padding(3, 7, [7, 5, 2])
    logits, cache = model.run_with_cache(src, tgt, src_mask=mask)
    torch.testing.assert_close(logits, model(src, tgt, src_mask=mask), atol=1e-5, rtol=0)  # explicit path = fused
    pattern = cache["decoder.blocks.1.cross_attn.hook_pattern"]
    assert pattern.shape == (3, N_HEADS, 6, 7)  # [batch, head, tgt_pos, src_pos]
    torch.testing.assert_close(pattern.sum(-1), torch.ones(3, N_HEADS, 6))
    assert (pattern[2, :, :, 2:] == 0).all() and (pattern[2, :, :, :2] > 0).all()  # padded keys get nothing
    assert cache["decoder.blocks.0.cross_attn.hook_k"].shape == (3, 7, N_HEADS, D_MODEL // N_HEADS)
    assert cache["decoder.blocks.0.cross_attn.hook_q"].shape == (3, 6, N_HEADS, D_MODEL // N_HEADS)
    enc = cache["encoder.blocks.0.attn.hook_pattern"]  # non-causal: the upper triangle is used
    assert enc.shape == (3, N_HEADS, 7, 7) and enc[0].triu(1).sum() > 1
    dec = cache["decoder.blocks.0.attn.hook_pattern"]  # causal
    assert dec.shape == (3, N_HEADS, 6, 6) and dec.triu(1).abs().max() == 0
    # Output of the cross-attention sublayer is the head results summed, plus b_O.
    assert "decoder.blocks.0.cross_attn.hook_result" not in cache  # opt-in
    model.set_use_attn_result(True)
    _, cache = model.run_with_cache(src, tgt, src_mask=mask)
    result = cache["decoder.blocks.0.cross_attn.hook_result"]  # [batch, pos, head, d_model]
    b_O = model.decoder.blocks[0].cross_attn.b_O
    torch.testing.assert_close(result.sum(2) + b_O, cache["decoder.blocks.0.hook_cross_attn_out"], atol=1e-5, rtol=0)


def test_patching_cross_attention_head_changes_logits_from_its_position_on(src_tgt):
    model = small_model()
    src, tgt = src_tgt
    clean = model(src, tgt)
    head = EncDecHead(0, 2, pos=3)  # decoder.blocks.0.cross_attn, head 2, query position 3
    assert head.hook_name() == "decoder.blocks.0.cross_attn.hook_z"
    patched = model.run_with_hooks(src, tgt, fwd_hooks=[head.patch(5.0)])
    diff = (patched - clean).abs().amax(dim=(0, 2))  # [tgt_pos]
    assert diff[:3].max() == 0 and diff[3:].min() > 1e-3
    # Only this head's slice changed.
    _, cache = model.run_with_cache(src, tgt, names_filter=head.hook_name())
    seen = {}
    model.run_with_hooks(src, tgt, fwd_hooks=[head.patch(5.0), (head.hook_name(), lambda x, hook: seen.update(z=x))])
    z, z0 = seen["z"], cache[head.hook_name()]
    assert (z[:, 3, 2] == 5.0).all()
    z[:, 3, 2] = z0[:, 3, 2]
    assert torch.equal(z, z0)
    # An encoder head at one source position reaches every target position.
    patched = model.run_with_hooks(src, tgt, fwd_hooks=[EncDecHead(1, 0, pos=1, attn="encoder.attn").zero()])
    assert (patched - clean).abs().amax(dim=(0, 2)).min() > 1e-4


def test_sites_names():
    assert EncDecHead(1, 3).hook_name("pattern") == "decoder.blocks.1.cross_attn.hook_pattern"
    assert EncDecHead(0, 1, attn="decoder.attn").hook_name("q") == "decoder.blocks.0.attn.hook_q"
    assert EncDecHead(0, 1, attn="encoder.attn").hook_name() == "encoder.blocks.0.attn.hook_z"
    assert EncDecNeuron(0, 7, stack="encoder").hook_name() == "encoder.blocks.0.mlp.hook_post"
    assert EncDecNeuron(1, 7).hook_name("pre") == "decoder.blocks.1.mlp.hook_pre"
    assert EncDecHead(1, 3).label == "cross.L1H3" and EncDecNeuron(1, 7, pos=2).label == "dec.L1N7@2"
    with pytest.raises(ValueError, match="attn="):
        EncDecHead(0, 0, attn="cross")
    with pytest.raises(ValueError, match="stack="):
        EncDecNeuron(0, 0, stack="middle")


def test_neuron_ablation_reads_and_writes(src_tgt):
    model = small_model()
    src, tgt = src_tgt
    neuron = EncDecNeuron(1, 5, stack="encoder")
    _, cache = model.run_with_cache(src, tgt, names_filter=neuron.hook_name())
    assert neuron.read(cache).shape == (3, 7)
    seen = {}
    model.run_with_hooks(src, tgt, fwd_hooks=[neuron.zero(), (neuron.hook_name(), lambda x, hook: seen.update(p=x))])
    assert (seen["p"][:, :, 5] == 0).all() and torch.equal(seen["p"][:, :, 6], cache[neuron.hook_name()][:, :, 6])


def test_unknown_hook_name_lists_closest(src_tgt):
    model = small_model()
    with pytest.raises(UnknownHookError, match=r"decoder\.blocks\.0\.cross_attn\.hook_pattern"):
        model.run_with_hooks(*src_tgt, fwd_hooks=[("decoder.blocks.0.cross_attn.hook_patern", lambda x, hook: None)])
    with pytest.raises(UnknownHookError, match=r"decoder\.blocks\.1\.cross_attn\.hook_z"):
        model.run_with_cache(*src_tgt, names_filter=["blocks.1.cross_attn.hook_z"])


def test_hooks_removed_after_exception(src_tgt):
    model = small_model()
    clean = model(*src_tgt)

    def boom(x, hook):
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        model.run_with_hooks(*src_tgt, fwd_hooks=[("decoder.blocks.0.hook_resid_pre", lambda x, hook: x * 2),
                                                  ("decoder.blocks.1.cross_attn.hook_pattern", boom)])
    assert not any(hp.has_hooks for hp in model.hook_dict.values())
    assert torch.equal(model(*src_tgt), clean)


# ------------------------------------------------------------ generation
def test_generate_greedy_kv_cache_and_sampling(src_tgt):
    model = small_model("pre")
    src, _ = src_tgt
    mask = ~padding(3, 7, [7, 5, 2])
    greedy = model.generate(src, max_new_tokens=8, bos_id=1, src_mask=mask)
    assert greedy.shape == (3, 9) and (greedy[:, 0] == 1).all()
    assert torch.equal(greedy, model.generate(src, 8, bos_id=1, src_mask=mask, use_kv_cache=False))
    # Greedy is the argmax of a full forward pass on its own output.
    logits = model(src, greedy[:, :-1], src_mask=mask)
    assert torch.equal(logits.argmax(-1), greedy[:, 1:])
    assert torch.equal(greedy, model.generate(src, 8, bos_id=1, src_mask=mask, temperature=1.0, top_k=1, seed=0))
    a = model.generate(src, 8, bos_id=1, temperature=2.0, seed=7)
    assert torch.equal(a, model.generate(src, 8, bos_id=1, temperature=2.0, seed=7, use_kv_cache=False))
    assert not torch.equal(a, model.generate(src, 8, bos_id=1, temperature=2.0, seed=8))
    # After EOS a row continues with EOS; it stops when every row has ended.
    eos = int(greedy[0, 2])
    out = model.generate(src, 8, bos_id=1, eos_id=eos, src_mask=mask)
    assert (out[0, 2:] == eos).all()
    with pytest.raises(ValueError, match="temperature"):
        model.generate(src, 3, bos_id=1, temperature=-1)
    with pytest.raises(ValueError, match="bos_id"):
        model.generate(src, 3, bos_id=13)


# ------------------------------------------------------------ a trained example: sequence reversal
@pytest.fixture(scope="module")
def reversal():
    from analyses.translate import as_set, make_model, reversal_data, train

    test = reversal_data(500, torch.Generator().manual_seed(1))
    model = make_model(seed=0)
    # 200 steps (was 300): final loss 0.025, held-out exact 98%, mirror scores 0.73 / 0.66, at 2/3 of the time
    record = train(model, steps=200, seed=0, exclude=as_set(*test[:2]), progress=False)
    return model, test, record


def test_reversal_is_learned(reversal):
    from analyses.translate import BOS, EOS, greedy_accuracy

    model, (src, src_mask, tgt), record = reversal
    assert sum(record["losses"][-20:]) / 20 < 0.05 < record["losses"][0]
    acc = greedy_accuracy(model, src, src_mask, tgt)  # 98% seen with seed 0 (100% after 300 steps)
    assert acc["exact"] >= 0.9, acc
    # Spot check one held-out example by hand.
    n = int(src_mask[0].sum())
    out = model.generate(src[:1, :n], max_new_tokens=n + 1, bos_id=BOS, eos_id=EOS)
    assert out[0, 1:].tolist() == src[0, :n].flip(0).tolist() + [EOS]


def test_reversal_cross_attention_reads_the_mirrored_position(reversal):
    from analyses.translate import mirror_scores

    model, test, _ = reversal
    scores = mirror_scores(model, *test)  # [layer, head]; chance is about 1/6
    assert scores.shape == (2, N_HEADS)
    assert scores.max() >= 0.6, scores  # seen: 0.80 (L1H1), 0.80 / 0.92 / 0.89 with other seeds
    assert scores[1].mean() >= 0.5, scores


def test_translate_analysis_writes_outputs(tmp_path):
    from analyses.translate import main

    assert main(["--steps", "5", "--n-test", "40", "--quiet", "--out", str(tmp_path)]) == 0
    report = json.loads((tmp_path / "translate.json").read_text())
    assert set(report["heldout_greedy_accuracy"]) == {"exact", "token", "n"}
    assert len(report["mirror_scores"]["values"]) == 2
    for name in ("cross_attention.png", "cross_attention.svg", "loss.png", "loss.svg"):
        assert (tmp_path / name).stat().st_size > 0
