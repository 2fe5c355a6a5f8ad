"""Our Transformer on every architecture option: shapes, hooks, paths, generation, loss."""

import math

import pytest
import torch
import torch.nn.functional as F

from conftest import make_model
from models import KVCache, Transformer, TransformerConfig


def test_logits_shape_and_hook_shapes(arch, tokens):
    model = make_model(arch)
    cfg = model.cfg
    logits, cache = model.run_with_cache(tokens)
    b, p = tokens.shape
    assert logits.shape == (b, p, cfg.d_vocab)
    expect = {
        "blocks.0.hook_resid_pre": (b, p, cfg.d_model),
        "blocks.1.attn.hook_q": (b, p, cfg.n_heads, cfg.d_head),
        "blocks.1.attn.hook_k": (b, p, cfg.n_kv_heads, cfg.d_head),
        "blocks.1.attn.hook_z": (b, p, cfg.n_heads, cfg.d_head),
        "blocks.1.attn.hook_pattern": (b, cfg.n_heads, p, p),
        "blocks.1.attn.hook_attn_scores": (b, cfg.n_heads, p, p),
        "blocks.1.mlp.hook_pre": (b, p, cfg.d_mlp),
        "blocks.1.mlp.hook_post": (b, p, cfg.d_mlp),
        "blocks.1.hook_mlp_out": (b, p, cfg.d_model),
        "blocks.1.ln1.hook_scale": (b, p, 1),
    }
    for name, shape in expect.items():
        assert cache[name].shape == shape, name
    assert ("blocks.0.hook_resid_mid" in cache) == (not cfg.parallel_attn_mlp)
    assert ("hook_pos_embed" in cache) == (cfg.positional != "rotary")
    assert ("blocks.0.attn.hook_rot_q" in cache) == (cfg.positional == "rotary")
    assert ("blocks.0.mlp.hook_pre_linear" in cache) == cfg.gated_mlp


def test_patterns_sum_to_one_and_are_causal(arch, tokens):
    model = make_model(arch, dtype="float64")
    _, cache = model.run_with_cache(tokens, names_filter=lambda n: n.endswith("hook_pattern"))
    assert len(cache) == model.cfg.n_layers
    for pattern in cache.values():
        torch.testing.assert_close(pattern.sum(-1), torch.ones_like(pattern.sum(-1)), atol=1e-12, rtol=0)
        upper = torch.triu(torch.ones(pattern.shape[-2:], dtype=torch.bool), diagonal=1)
        assert (pattern[..., upper] == 0).all()
        assert (pattern[..., ~upper] > 0).all()


def test_fused_and_explicit_paths_agree(arch, tokens):
    """Hooking scores/scale switches attention and LayerNorm to the explicit computation."""
    model = make_model(arch, dtype="float64")
    fast = model(tokens)
    explicit = model.run_with_hooks(tokens, fwd_hooks=[(lambda n: n.endswith(("hook_pattern", "hook_scale")),
                                                        lambda x, hook: None)])
    torch.testing.assert_close(fast, explicit, atol=1e-12, rtol=0)


def test_future_tokens_do_not_change_the_past(arch, tokens):
    model = make_model(arch, dtype="float64")
    changed = tokens.clone()
    changed[:, 5:] = (changed[:, 5:] + 7) % model.cfg.d_vocab
    a, b = model(tokens), model(changed)
    torch.testing.assert_close(a[:, :5], b[:, :5], atol=1e-12, rtol=0)
    assert (a[:, 5:] - b[:, 5:]).abs().max() > 1e-3


def test_kv_cache_forward_equals_full_forward(arch, tokens):
    model = make_model(arch, dtype="float64")
    full = model(tokens)
    cache = KVCache.empty(model.cfg.n_layers)
    first = model(tokens[:, :4], kv_cache=cache)
    rest = [model(tokens[:, i : i + 1], kv_cache=cache) for i in range(4, tokens.shape[1])]
    torch.testing.assert_close(torch.cat([first] + rest, dim=1), full, atol=1e-12, rtol=0)


@pytest.mark.parametrize("temperature,top_k", [(0.0, None), (1.0, None), (0.7, 5)])
def test_generate_with_kv_cache_equals_cache_free_loop(arch, tokens, temperature, top_k):
    model = make_model(arch, dtype="float64")
    prompt = tokens[:2, :4]
    with_cache = model.generate(prompt, max_new_tokens=12, temperature=temperature, top_k=top_k, seed=3)
    without = model.generate(prompt, max_new_tokens=12, temperature=temperature, top_k=top_k, seed=3,
                             use_kv_cache=False)
    assert with_cache.shape == (2, 16)
    assert torch.equal(with_cache, without)
    assert torch.equal(with_cache[:, :4], prompt)


def test_greedy_generation_picks_argmax(tokens):
    model = make_model("gpt2", dtype="float64")
    out = model.generate(tokens[:1, :3], max_new_tokens=3)
    for i in range(3, 6):
        assert out[0, i] == model(out[:, :i])[0, -1].argmax()


def test_top_k_restricts_samples(tokens):
    model = make_model("gpt2", dtype="float64")
    prompt = tokens[:1, :3]
    allowed = set(model(prompt)[0, -1].topk(2).indices.tolist())
    for seed in range(20):
        out = model.generate(prompt, max_new_tokens=1, temperature=5.0, top_k=2, seed=seed)
        assert int(out[0, -1]) in allowed


def test_loss_is_next_token_cross_entropy(arch, tokens):
    model = make_model(arch, dtype="float64")
    logits = model(tokens)
    manual = F.cross_entropy(logits[:, :-1].reshape(-1, model.cfg.d_vocab), tokens[:, 1:].reshape(-1))
    torch.testing.assert_close(model.loss(tokens), manual)
    torch.testing.assert_close(model(tokens, return_type="loss"), manual)
    assert model.loss(tokens, per_token=True).shape == (3, 8)


def test_padding_mask_matches_unpadded_run(tokens):
    model = make_model("gpt2", dtype="float64")
    short = tokens[:1, :5]
    padded = torch.cat([short, torch.zeros(1, 4, dtype=torch.long)], dim=1)
    mask = torch.tensor([[1] * 5 + [0] * 4])
    torch.testing.assert_close(model(padded, attention_mask=mask)[:, :5], model(short), atol=1e-12, rtol=0)


def test_start_and_stop_at_layer_compose(arch, tokens):
    model = make_model(arch, dtype="float64")
    resid = model(tokens, stop_at_layer=1)
    _, cache = model.run_with_cache(tokens)
    torch.testing.assert_close(resid, cache["blocks.1.hook_resid_pre"], atol=1e-12, rtol=0)
    torch.testing.assert_close(model(resid, start_at_layer=1), model(tokens), atol=1e-12, rtol=0)


def test_rotary_is_relative(tokens):
    """With rotary positions and no other positional signal, shifting every position
    by a constant (via a KV-cache offset of dummy keys masked out) leaves q.k scores unchanged."""
    model = make_model("llama_gqa", dtype="float64")
    attn = model.blocks[0].attn
    q = torch.randn(1, 4, 3, 8, dtype=torch.float64)
    from models.components import rotate

    def scores(offset):
        cos, sin = attn.rotary_cos[offset : offset + 4], attn.rotary_sin[offset : offset + 4]
        r = rotate(q, cos, sin, model.cfg.rotary_dim)
        return torch.einsum("bqhd,bkhd->bhqk", r, r)

    torch.testing.assert_close(scores(0), scores(7), atol=1e-10, rtol=0)


def test_2017_config_is_the_paper_decoder():
    cfg = TransformerConfig.transformer_2017(d_vocab=1000)
    assert (cfg.n_layers, cfg.d_model, cfg.n_heads, cfg.d_mlp) == (6, 512, 8, 2048)
    assert (cfg.positional, cfg.act_fn, cfg.norm, cfg.norm_position) == ("sinusoidal", "relu", "layernorm", "post")
    assert cfg.scale_embeddings and not cfg.final_norm


def test_2017_blocks_equal_torch_transformer_layers():
    """Independent check of post-norm + ReLU + causal attention: our blocks vs
    torch.nn.TransformerEncoderLayer (self-attention + FFN, post-norm) with the same weights."""
    model = make_model("transformer_2017", dtype="float64")
    cfg = model.cfg
    layers = torch.nn.ModuleList([
        torch.nn.TransformerEncoderLayer(cfg.d_model, cfg.n_heads, cfg.d_mlp, dropout=0.0, activation="relu",
                                         batch_first=True, norm_first=False, dtype=torch.float64)
        for _ in range(cfg.n_layers)
    ])
    with torch.no_grad():
        for block, layer in zip(model.blocks, layers):
            a = block.attn
            layer.self_attn.in_proj_weight.copy_(torch.cat([
                w.permute(0, 2, 1).reshape(cfg.d_model, cfg.d_model) for w in (a.W_Q, a.W_K, a.W_V)]))
            layer.self_attn.in_proj_bias.copy_(torch.cat([b.reshape(-1) for b in (a.b_Q, a.b_K, a.b_V)]))
            layer.self_attn.out_proj.weight.copy_(a.W_O.reshape(cfg.d_model, cfg.d_model).T)
            layer.self_attn.out_proj.bias.copy_(a.b_O)
            layer.linear1.weight.copy_(block.mlp.W_in.T)
            layer.linear1.bias.copy_(block.mlp.b_in)
            layer.linear2.weight.copy_(block.mlp.W_out.T)
            layer.linear2.bias.copy_(block.mlp.b_out)
            for ours, theirs in ((block.ln1, layer.norm1), (block.ln2, layer.norm2)):
                theirs.weight.copy_(ours.w)
                theirs.bias.copy_(ours.b)
    layers.eval()
    x = torch.randn(2, 7, cfg.d_model, dtype=torch.float64)
    mask = torch.nn.Transformer.generate_square_subsequent_mask(7, dtype=torch.float64)
    expected = x
    for layer in layers:
        expected = layer(expected, src_mask=mask, is_causal=True)
    ours = model(x, start_at_layer=0, stop_at_layer=cfg.n_layers)
    torch.testing.assert_close(ours, expected, atol=1e-10, rtol=0)


def test_2017_embeddings_are_scaled_and_sinusoidal(tokens):
    model = make_model("transformer_2017", dtype="float64")
    _, cache = model.run_with_cache(tokens)
    torch.testing.assert_close(cache["hook_embed"], model.embed.W_E[tokens] * math.sqrt(model.cfg.d_model))
    pe = cache["hook_pos_embed"][0]
    pos, i = 3, 2  # PE[pos, 2i] = sin(pos / 10000^(2i/d)), PE[pos, 2i+1] = cos(...)
    angle = pos / 10000 ** (2 * i / model.cfg.d_model)
    assert abs(pe[pos, 2 * i].item() - math.sin(angle)) < 1e-12
    assert abs(pe[pos, 2 * i + 1].item() - math.cos(angle)) < 1e-12


def test_weights_have_transformerlens_names_and_shapes():
    model = make_model("llama_gqa")
    cfg = model.cfg
    p = dict(model.named_parameters())
    assert p["blocks.0.attn.W_Q"].shape == (cfg.n_heads, cfg.d_model, cfg.d_head)
    assert p["blocks.0.attn.W_K"].shape == (cfg.n_kv_heads, cfg.d_model, cfg.d_head)
    assert p["blocks.0.attn.W_O"].shape == (cfg.n_heads, cfg.d_head, cfg.d_model)
    assert p["blocks.0.mlp.W_in"].shape == (cfg.d_model, cfg.d_mlp)
    assert p["blocks.0.mlp.W_gate"].shape == (cfg.d_model, cfg.d_mlp)
    assert p["blocks.0.mlp.W_out"].shape == (cfg.d_mlp, cfg.d_model)
    assert p["unembed.W_U"].shape == (cfg.d_model, cfg.d_vocab)
    tied = make_model("gpt2")
    assert "unembed.W_U" not in dict(tied.named_parameters())
    assert torch.equal(tied.unembed.W_U, tied.embed.W_E.T)


def test_neuron_value_is_a_row_of_W_out(tokens):
    """The MLP output is sum_n post[n] * W_out[n, :] + b_out (the key-value view)."""
    model = make_model("gpt2_relu_untied", dtype="float64")
    _, cache = model.run_with_cache(tokens)
    mlp = model.blocks[1].mlp
    post = cache["post", 1]
    rebuilt = torch.einsum("bpn,nd->bpd", post, mlp.W_out) + mlp.b_out
    torch.testing.assert_close(rebuilt, cache["mlp_out", 1], atol=1e-12, rtol=0)


def test_config_validation_names_the_problem():
    with pytest.raises(ValueError, match="act_fn='swish'"):
        TransformerConfig(n_layers=1, d_model=8, n_heads=2, d_vocab=10, act_fn="swish")
    with pytest.raises(ValueError, match="n_kv_heads=3"):
        TransformerConfig(n_layers=1, d_model=8, n_heads=2, d_vocab=10, n_kv_heads=3)
    with pytest.raises(ValueError, match="not divisible"):
        TransformerConfig(n_layers=1, d_model=10, n_heads=3, d_vocab=10)


def test_bad_token_input_is_rejected_clearly():
    model = make_model("gpt2")
    with pytest.raises(ValueError, match=r"token ids must be in \[0, 50\)"):
        model(torch.tensor([[1, 2, 99]]))
    with pytest.raises(ValueError, match="no tokenizer"):
        model("hello")
    with pytest.raises(ValueError, match="exceed the model's n_ctx=32"):
        model(torch.zeros(1, 40, dtype=torch.long))


def test_seeded_init_is_deterministic():
    cfg = dict(n_layers=1, d_model=8, n_heads=2, d_vocab=10, seed=5)
    a, b = Transformer(TransformerConfig(**cfg)), Transformer(TransformerConfig(**cfg))
    for (n, p), (_, q) in zip(a.named_parameters(), b.named_parameters()):
        assert torch.equal(p, q), n
