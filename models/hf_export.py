"""Our Transformer -> HF transformers: `to_hf(model)` gives a GPT2LMHeadModel with the same
weights, in the same dtype, for the configurations GPT-2 can express; others raise a clear error."""

from __future__ import annotations

from typing import Any

import torch
from einops import rearrange

from interp.names import param_name
from models.hf_import import GPT2_SAME_LAYOUT
from models.transformer import Transformer


def gpt2_problems(model: Transformer) -> list[str]:
    """What keeps `model` from being a GPT-2 (empty: it can be exported)."""
    cfg = model.cfg
    return [
        msg for cond, msg in [
            (cfg.norm != "layernorm", f"norm={cfg.norm!r} (GPT-2 uses layernorm)"),
            (cfg.norm_position != "pre", "post-norm blocks"),
            (not cfg.final_norm, "no final norm"),
            (cfg.positional != "learned", f"positional={cfg.positional!r} (GPT-2 learns positions)"),
            (cfg.gated_mlp, "gated MLP"),
            (cfg.parallel_attn_mlp, "parallel attention and MLP"),
            (cfg.attn_only, "attention-only blocks (no MLP)"),
            (cfg.n_kv_heads != cfg.n_heads, "grouped-query attention"),
            (cfg.d_head * cfg.n_heads != cfg.d_model, f"d_head * n_heads = {cfg.d_head * cfg.n_heads} != d_model"),
            (cfg.scale_embeddings, "scaled embeddings"),
            (bool(model.unembed.b_U.abs().max() > 0), "a non-zero unembedding bias b_U"),
        ] if cond
    ]


def _gpt2_state_dict(model: Transformer) -> dict[str, torch.Tensor]:
    """Our weights under GPT2LMHeadModel's names and in its (Conv1D) layout."""
    cfg = model.cfg
    p = {n: t.detach() for n, t in model.named_parameters()}
    sd: dict[str, torch.Tensor] = {"transformer.wte.weight": p["embed.W_E"], "transformer.wpe.weight": p["pos_embed.W_pos"]}
    for l in range(cfg.n_layers):
        o, t = param_name("", l), f"transformer.h.{l}."
        sd[t + "attn.c_attn.weight"] = torch.cat(
            [rearrange(p[o + f"attn.W_{X}"], "h m k -> m (h k)") for X in "QKV"], dim=1)
        sd[t + "attn.c_attn.bias"] = torch.cat([rearrange(p[o + f"attn.b_{X}"], "h k -> (h k)") for X in "QKV"])
        sd[t + "attn.c_proj.weight"] = rearrange(p[o + "attn.W_O"], "h k m -> (h k) m")
        for ours, theirs in GPT2_SAME_LAYOUT:
            sd[t + theirs] = p[o + ours]
    sd["transformer.ln_f.weight"], sd["transformer.ln_f.bias"] = p["ln_final.w"], p["ln_final.b"]
    sd["lm_head.weight"] = p["embed.W_E"] if cfg.tie_embeddings else p["unembed.W_U"].T
    return {k: v.contiguous() for k, v in sd.items()}


def to_hf(model: Transformer) -> Any:
    """An HF `GPT2LMHeadModel` with our weights (in their dtype), for GPT-2-layout configurations.

    Raises a clear error for configurations GPT-2 cannot express.
    """
    from transformers import GPT2Config, GPT2LMHeadModel

    problems = gpt2_problems(model)
    if problems:
        raise ValueError("this model cannot be exported to GPT-2: " + "; ".join(problems))
    cfg = model.cfg
    hf_cfg = GPT2Config(
        vocab_size=cfg.d_vocab, n_positions=cfg.n_ctx, n_ctx=cfg.n_ctx, n_embd=cfg.d_model, n_layer=cfg.n_layers,
        n_head=cfg.n_heads, n_inner=cfg.d_mlp, activation_function=cfg.act_fn,
        layer_norm_epsilon=cfg.norm_eps, tie_word_embeddings=cfg.tie_embeddings,
        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
        bos_token_id=getattr(model.tokenizer, "bos_token_id", None) or 0,
        eos_token_id=getattr(model.tokenizer, "eos_token_id", None) or 0,
    )
    hf = GPT2LMHeadModel(hf_cfg).to(model.W_E.dtype).eval()  # the weights' dtype, whatever cfg says
    missing, unexpected = hf.load_state_dict(_gpt2_state_dict(model), strict=False)
    missing = [m for m in missing if not m.endswith("attn.bias") and not m.endswith("masked_bias")]
    if missing or unexpected:
        raise RuntimeError(f"to_hf: missing {missing}, unexpected {unexpected}")
    return hf


__all__ = ["to_hf", "gpt2_problems"]
