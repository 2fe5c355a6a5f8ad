"""HF transformers -> our Transformer: `from_hf(hf_model, tokenizer=None)` converts the
weights of GPT2LMHeadModel, GPTNeoXForCausalLM (Pythia), LlamaForCausalLM and
Qwen2ForCausalLM; `hf_model_from_dir(path)` reads such a model from a local HF-format
directory (never the network)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import torch
from einops import rearrange

from interp.names import param_name
from models.checkpoint import load_weights
from models.config import TransformerConfig, dtype_name
from models.tokenizer import HFTokenizer, Tokenizer
from models.transformer import Transformer


# ============================================================ GPT-2
def _gpt2_config(hf_cfg: Any, dtype: str) -> TransformerConfig:
    unsupported = {
        "scale_attn_by_inverse_layer_idx": getattr(hf_cfg, "scale_attn_by_inverse_layer_idx", False),
        "add_cross_attention": getattr(hf_cfg, "add_cross_attention", False),
        "scale_attn_weights=False": not getattr(hf_cfg, "scale_attn_weights", True),
    }
    bad = [k for k, v in unsupported.items() if v]
    if bad:
        raise NotImplementedError(f"GPT-2 options not supported: {bad}")
    act = hf_cfg.activation_function
    if act not in ("gelu_new", "gelu", "relu", "silu"):
        raise NotImplementedError(f"GPT-2 activation_function={act!r} is not supported")
    return TransformerConfig(
        n_layers=hf_cfg.n_layer, d_model=hf_cfg.n_embd, n_heads=hf_cfg.n_head, d_vocab=hf_cfg.vocab_size,
        n_ctx=hf_cfg.n_positions, d_mlp=hf_cfg.n_inner or 4 * hf_cfg.n_embd, act_fn=act,
        norm="layernorm", norm_position="pre", positional="learned", norm_eps=hf_cfg.layer_norm_epsilon,
        tie_embeddings=bool(getattr(hf_cfg, "tie_word_embeddings", True)), dtype=dtype,
    )


# Per-block weights stored in the same layout by GPT-2 (HF's Conv1D keeps x @ W) and by us: (ours, HF's).
GPT2_SAME_LAYOUT = [("attn.b_O", "attn.c_proj.bias"), ("ln1.w", "ln_1.weight"), ("ln1.b", "ln_1.bias"),
                    ("ln2.w", "ln_2.weight"), ("ln2.b", "ln_2.bias"), ("mlp.W_in", "mlp.c_fc.weight"),
                    ("mlp.b_in", "mlp.c_fc.bias"), ("mlp.W_out", "mlp.c_proj.weight"), ("mlp.b_out", "mlp.c_proj.bias")]


def _gpt2_weights(hf_model: Any, cfg: TransformerConfig) -> dict[str, torch.Tensor]:
    sd = {k: v.detach() for k, v in hf_model.state_dict().items()}
    d, h = cfg.d_model, cfg.n_heads
    w: dict[str, torch.Tensor] = {"embed.W_E": sd["transformer.wte.weight"], "pos_embed.W_pos": sd["transformer.wpe.weight"]}
    for l in range(cfg.n_layers):
        p, o = f"transformer.h.{l}.", param_name("", l)
        qkv_w, qkv_b = sd[p + "attn.c_attn.weight"], sd[p + "attn.c_attn.bias"]  # Conv1D: x @ W + b, W [d, 3d]
        for i, X in enumerate("QKV"):
            w[o + f"attn.W_{X}"] = rearrange(qkv_w[:, i * d : (i + 1) * d], "m (h k) -> h m k", h=h)
            w[o + f"attn.b_{X}"] = rearrange(qkv_b[i * d : (i + 1) * d], "(h k) -> h k", h=h)
        w[o + "attn.W_O"] = rearrange(sd[p + "attn.c_proj.weight"], "(h k) m -> h k m", h=h)
        for ours, theirs in GPT2_SAME_LAYOUT:
            w[o + ours] = sd[p + theirs]
    w["ln_final.w"], w["ln_final.b"] = sd["transformer.ln_f.weight"], sd["transformer.ln_f.bias"]
    if not cfg.tie_embeddings:
        w["unembed.W_U"] = sd["lm_head.weight"].T
    w["unembed.b_U"] = torch.zeros(cfg.d_vocab, dtype=w["embed.W_E"].dtype)
    return w


def _rope(hf_cfg: Any) -> tuple[float, float]:
    """(rope_theta, partial_rotary_factor) of an HF config; only plain ("default") rotary is supported."""
    params = dict(getattr(hf_cfg, "rope_parameters", None) or {})
    kind = params.get("rope_type", "default")
    if kind != "default":
        raise NotImplementedError(f"rotary scaling rope_type={kind!r} is not supported (only plain rotary)")
    theta = params.get("rope_theta", getattr(hf_cfg, "rope_theta", 10000.0))
    return float(theta), float(params.get("partial_rotary_factor", 1.0))


def _act(name: str, arch: str) -> str:
    act = {"gelu": "gelu", "gelu_new": "gelu_new", "gelu_pytorch_tanh": "gelu_new", "relu": "relu", "silu": "silu"}.get(name)
    if act is None:
        raise NotImplementedError(f"{arch}: hidden_act={name!r} is not supported")
    return act


def _neox_config(hf_cfg: Any, dtype: str) -> TransformerConfig:
    theta, partial = _rope(hf_cfg)
    d_head = hf_cfg.hidden_size // hf_cfg.num_attention_heads
    return TransformerConfig(
        n_layers=hf_cfg.num_hidden_layers, d_model=hf_cfg.hidden_size, n_heads=hf_cfg.num_attention_heads,
        d_vocab=hf_cfg.vocab_size, n_ctx=hf_cfg.max_position_embeddings, d_mlp=hf_cfg.intermediate_size,
        act_fn=_act(hf_cfg.hidden_act, "GPT-NeoX"), norm="layernorm", positional="rotary",
        rotary_dim=int(d_head * partial), rotary_base=theta, parallel_attn_mlp=bool(hf_cfg.use_parallel_residual),
        norm_eps=hf_cfg.layer_norm_eps, tie_embeddings=bool(getattr(hf_cfg, "tie_word_embeddings", False)), dtype=dtype,
    )


def _neox_weights(hf_model: Any, cfg: TransformerConfig) -> dict[str, torch.Tensor]:
    sd = {k: v.detach() for k, v in hf_model.state_dict().items()}
    h = cfg.n_heads
    w: dict[str, torch.Tensor] = {"embed.W_E": sd["gpt_neox.embed_in.weight"]}
    for l in range(cfg.n_layers):
        p, o = f"gpt_neox.layers.{l}.", param_name("", l)
        # query_key_value: nn.Linear, output laid out per head as [q | k | v] (each d_head).
        qkv_w = rearrange(sd[p + "attention.query_key_value.weight"], "(h three k) m -> three h m k", h=h, three=3)
        qkv_b = rearrange(sd[p + "attention.query_key_value.bias"], "(h three k) -> three h k", h=h, three=3)
        for i, X in enumerate("QKV"):
            w[o + f"attn.W_{X}"], w[o + f"attn.b_{X}"] = qkv_w[i], qkv_b[i]
        w[o + "attn.W_O"] = rearrange(sd[p + "attention.dense.weight"], "m (h k) -> h k m", h=h)
        w[o + "attn.b_O"] = sd[p + "attention.dense.bias"]
        for ours, theirs in [("ln1", "input_layernorm"), ("ln2", "post_attention_layernorm")]:
            w[o + f"{ours}.w"], w[o + f"{ours}.b"] = sd[p + f"{theirs}.weight"], sd[p + f"{theirs}.bias"]
        w[o + "mlp.W_in"], w[o + "mlp.b_in"] = sd[p + "mlp.dense_h_to_4h.weight"].T, sd[p + "mlp.dense_h_to_4h.bias"]
        w[o + "mlp.W_out"], w[o + "mlp.b_out"] = sd[p + "mlp.dense_4h_to_h.weight"].T, sd[p + "mlp.dense_4h_to_h.bias"]
    w["ln_final.w"], w["ln_final.b"] = sd["gpt_neox.final_layer_norm.weight"], sd["gpt_neox.final_layer_norm.bias"]
    if not cfg.tie_embeddings:
        w["unembed.W_U"] = sd["lm_head.weight"].T
    w["unembed.b_U"] = torch.zeros(cfg.d_vocab, dtype=w["embed.W_E"].dtype)
    return w


def _llama_config(hf_cfg: Any, dtype: str) -> TransformerConfig:
    """LlamaForCausalLM and Qwen2ForCausalLM (Qwen2 adds biases to q, k, v)."""
    theta, partial = _rope(hf_cfg)
    d_head = getattr(hf_cfg, "head_dim", None) or hf_cfg.hidden_size // hf_cfg.num_attention_heads
    if getattr(hf_cfg, "mlp_bias", False):
        raise NotImplementedError("Llama with mlp_bias=True is not supported")
    if getattr(hf_cfg, "use_sliding_window", False):
        raise NotImplementedError("sliding-window attention is not supported")
    return TransformerConfig(
        n_layers=hf_cfg.num_hidden_layers, d_model=hf_cfg.hidden_size, n_heads=hf_cfg.num_attention_heads,
        d_head=d_head, n_kv_heads=hf_cfg.num_key_value_heads or hf_cfg.num_attention_heads,
        d_vocab=hf_cfg.vocab_size, n_ctx=hf_cfg.max_position_embeddings, d_mlp=hf_cfg.intermediate_size,
        act_fn=_act(hf_cfg.hidden_act, "Llama"), gated_mlp=True, norm="rmsnorm", positional="rotary",
        rotary_dim=int(d_head * partial), rotary_base=theta, norm_eps=hf_cfg.rms_norm_eps,
        tie_embeddings=bool(getattr(hf_cfg, "tie_word_embeddings", False)), dtype=dtype,
    )


def _llama_weights(hf_model: Any, cfg: TransformerConfig) -> dict[str, torch.Tensor]:
    sd = {k: v.detach() for k, v in hf_model.state_dict().items()}
    zeros = lambda *shape: torch.zeros(*shape, dtype=sd["model.embed_tokens.weight"].dtype)  # noqa: E731
    w: dict[str, torch.Tensor] = {"embed.W_E": sd["model.embed_tokens.weight"]}
    for l in range(cfg.n_layers):
        p, o = f"model.layers.{l}.", param_name("", l)
        for X, proj, heads in [("Q", "q_proj", cfg.n_heads), ("K", "k_proj", cfg.n_kv_heads), ("V", "v_proj", cfg.n_kv_heads)]:
            w[o + f"attn.W_{X}"] = rearrange(sd[p + f"self_attn.{proj}.weight"], "(h k) m -> h m k", h=heads)
            bias = sd.get(p + f"self_attn.{proj}.bias")
            w[o + f"attn.b_{X}"] = rearrange(bias, "(h k) -> h k", h=heads) if bias is not None else zeros(heads, cfg.d_head)
        w[o + "attn.W_O"] = rearrange(sd[p + "self_attn.o_proj.weight"], "m (h k) -> h k m", h=cfg.n_heads)
        w[o + "attn.b_O"] = sd.get(p + "self_attn.o_proj.bias", zeros(cfg.d_model))
        w[o + "ln1.w"], w[o + "ln2.w"] = sd[p + "input_layernorm.weight"], sd[p + "post_attention_layernorm.weight"]
        # SwiGLU: post = act(x W_gate) * (x W_in); the gate is hook_pre, the up projection hook_pre_linear.
        w[o + "mlp.W_gate"] = sd[p + "mlp.gate_proj.weight"].T
        w[o + "mlp.W_in"], w[o + "mlp.b_in"] = sd[p + "mlp.up_proj.weight"].T, zeros(cfg.d_mlp)
        w[o + "mlp.W_out"], w[o + "mlp.b_out"] = sd[p + "mlp.down_proj.weight"].T, zeros(cfg.d_model)
    w["ln_final.w"] = sd["model.norm.weight"]
    if not cfg.tie_embeddings:
        w["unembed.W_U"] = sd["lm_head.weight"].T
    w["unembed.b_U"] = zeros(cfg.d_vocab)
    return w


# HF architecture -> (config converter, weight converter)
ARCHITECTURES = {
    "GPT2LMHeadModel": (_gpt2_config, _gpt2_weights),
    "GPTNeoXForCausalLM": (_neox_config, _neox_weights),
    "LlamaForCausalLM": (_llama_config, _llama_weights),
    "Qwen2ForCausalLM": (_llama_config, _llama_weights),
}


def from_hf(hf_model: Any, tokenizer: Any = None, dtype: Optional[str] = None) -> Transformer:
    """Our `Transformer` with the weights of an HF model: GPT2LMHeadModel, GPTNeoXForCausalLM
    (Pythia), LlamaForCausalLM or Qwen2ForCausalLM.

    tokenizer: an HF tokenizer or one of ours (optional). dtype defaults to the HF model's.
    """
    arch = type(hf_model).__name__
    if arch not in ARCHITECTURES:
        raise NotImplementedError(f"from_hf supports {', '.join(ARCHITECTURES)}; got {arch}")
    if dtype is None:
        dtype = dtype_name(next(hf_model.parameters()).dtype)
    to_config, to_weights = ARCHITECTURES[arch]
    cfg = to_config(hf_model.config, dtype)
    weights = to_weights(hf_model, cfg)
    if tokenizer is not None and not isinstance(tokenizer, Tokenizer):
        tokenizer = HFTokenizer(tokenizer)
    model = Transformer(cfg, tokenizer=tokenizer)
    load_weights(model, {k: v.to(cfg.torch_dtype) for k, v in weights.items()})
    return model.to(hf_model.device)


MODEL_TYPES = {"gpt2": "GPT2LMHeadModel", "gpt_neox": "GPTNeoXForCausalLM", "llama": "LlamaForCausalLM",
               "qwen2": "Qwen2ForCausalLM"}


def hf_model_from_dir(path: Path) -> Any:
    """The HF model (eval mode) saved in a local HF-format directory, for the supported architectures."""
    import transformers
    from transformers import AutoConfig

    hf_cfg = AutoConfig.from_pretrained(str(path), local_files_only=True)
    if hf_cfg.model_type not in MODEL_TYPES:
        raise NotImplementedError(f"{path}: model_type={hf_cfg.model_type!r}; load() supports "
                                  f"{', '.join(MODEL_TYPES)} checkpoints")
    cls = getattr(transformers, MODEL_TYPES[hf_cfg.model_type])
    return cls.from_pretrained(str(path), local_files_only=True).eval()


__all__ = ["from_hf", "hf_model_from_dir", "ARCHITECTURES", "MODEL_TYPES"]
