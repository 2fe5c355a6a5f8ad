"""The encoder-decoder's configuration and components: encoder and decoder blocks and stacks,
built from the decoder-only model's components (`models.components`) with the same weight
names and shapes. The model itself is `models.encoder_decoder.EncoderDecoder`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
from torch import nn

from interp.hooks import HookPoint
from models.components import MLP, Attention, Embed, KVCache, LayerNorm, SinusoidalPosEmbed, TransformerBlock
from models.config import DTYPES, NORM_POSITIONS, JsonConfig, TransformerConfig, dtype_name


# ============================================================ config
@dataclass
class EncoderDecoderConfig(JsonConfig):
    """Shape and choices of an encoder-decoder Transformer. Defaults: the paper's base model.

    d_vocab_tgt defaults to d_vocab_src, d_head to d_model // n_heads, d_mlp to
    4 d_model. norm_position "post": x = LayerNorm(x + sublayer(x)) (the paper);
    "pre": x = x + sublayer(LayerNorm(x)). final_norm (default: True for pre-norm,
    False for post-norm) adds a LayerNorm at the end of each stack, as
    torch.nn.Transformer always does. share_embeddings: one W_E for source and
    target (needs equal vocabularies); tie_embeddings: W_U = target W_E^T.
    """

    d_vocab_src: int
    d_vocab_tgt: Optional[int] = None
    d_model: int = 512
    n_heads: int = 8
    d_head: Optional[int] = None
    n_layers_enc: int = 6
    n_layers_dec: int = 6
    d_mlp: Optional[int] = None
    n_ctx: int = 512
    norm_position: str = "post"
    final_norm: Optional[bool] = None
    share_embeddings: bool = False
    tie_embeddings: bool = False
    norm_eps: float = 1e-5
    dtype: str = "float32"
    seed: Optional[int] = None  # for the random initialisation

    def __post_init__(self) -> None:
        if isinstance(self.dtype, torch.dtype):
            self.dtype = dtype_name(self.dtype)
        if self.d_vocab_tgt is None:
            self.d_vocab_tgt = self.d_vocab_src
        if self.d_head is None:
            if self.d_model % self.n_heads:
                raise ValueError(
                    f"d_model={self.d_model} is not divisible by n_heads={self.n_heads}: give d_head explicitly"
                )
            self.d_head = self.d_model // self.n_heads
        if self.d_mlp is None:
            self.d_mlp = 4 * self.d_model
        if self.final_norm is None:
            self.final_norm = self.norm_position == "pre"
        if self.norm_position not in NORM_POSITIONS:
            raise ValueError(f"norm_position={self.norm_position!r} is not one of {NORM_POSITIONS}")
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype={self.dtype!r} is not one of {tuple(DTYPES)}")
        for name in ("d_vocab_src", "d_vocab_tgt", "d_model", "n_heads", "d_head", "n_layers_enc",
                     "n_layers_dec", "d_mlp", "n_ctx"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if self.share_embeddings and self.d_vocab_src != self.d_vocab_tgt:
            raise ValueError(
                f"share_embeddings needs one vocabulary, got d_vocab_src={self.d_vocab_src} "
                f"and d_vocab_tgt={self.d_vocab_tgt}"
            )

    @property
    def torch_dtype(self) -> torch.dtype:
        return DTYPES[self.dtype]

    def layer_config(self, d_vocab: int) -> TransformerConfig:
        """The TransformerConfig the shared components are built from (one per vocabulary)."""
        return TransformerConfig.transformer_2017(
            d_vocab=d_vocab, n_layers=max(self.n_layers_enc, self.n_layers_dec), d_model=self.d_model,
            n_heads=self.n_heads, n_ctx=self.n_ctx, d_head=self.d_head, d_mlp=self.d_mlp,
            norm_position=self.norm_position, tie_embeddings=False, norm_eps=self.norm_eps, dtype=self.dtype,
        )


# ============================================================ components
class NonCausalAttention(Attention):
    """Attention with no causal mask; keys and values from `context` when given.

    Encoder self-attention: attn(x, key_mask=src_mask). Cross-attention:
    attn(x, key_mask=src_mask, context=memory), queries from the decoder stream
    x [batch, q_pos, d_model], keys and values from the encoder output
    [batch, k_pos, d_model]. Weights and hook points as in `Attention`; the
    pattern is [batch, head, q_pos, k_pos]. Takes `Attention.forward`'s
    arguments so that `TransformerBlock` can call it; it keeps no KV cache.
    """

    def forward(
        self,
        x: torch.Tensor,
        pos_offset: int = 0,
        kv_cache: Optional[KVCache] = None,
        key_mask: Optional[torch.Tensor] = None,
        context: Optional[torch.Tensor] = None,
    ) -> torch.Tensor:
        """x [batch, q_pos, d_model], context [batch, k_pos, d_model] (default x),
        key_mask [batch, k_pos] (True = real token) -> [batch, q_pos, d_model]."""
        if kv_cache is not None:
            raise ValueError("NonCausalAttention keeps no KV cache")
        context = x if context is None else context
        q = self.hook_q(self._project(x, self.W_Q, self.b_Q))  # [batch, q_pos, head, d_head]
        k = self.hook_k(self._project(context, self.W_K, self.b_K))  # [batch, k_pos, head, d_head]
        v = self.hook_v(self._project(context, self.W_V, self.b_V))  # [batch, k_pos, head, d_head]
        allowed = None if key_mask is None else key_mask.bool()[:, None, :]  # [batch, 1, k_pos]
        return self._output(self._attend(q, k, v, allowed, causal=False))


class EncoderBlock(TransformerBlock):
    """The decoder-only block (attention then MLP, pre- or post-norm) with non-causal self-attention.

    forward(resid_pre [batch, src_pos, d_model], key_mask=src_mask) -> [batch, src_pos, d_model].
    """

    def __init__(self, cfg: TransformerConfig, layer: int) -> None:
        super().__init__(cfg, layer)
        self.attn = NonCausalAttention(cfg, layer)  # replaces the causal one, same place in the module order

    def forward(self, resid_pre: torch.Tensor, key_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        return super().forward(resid_pre, key_mask=key_mask)


class DecoderBlock(nn.Module):
    """Masked self-attention, cross-attention to the encoder output, ReLU MLP; each
    a residual sublayer with LayerNorm after (post-norm) or before (pre-norm) it."""

    def __init__(self, cfg: TransformerConfig, layer: int) -> None:
        super().__init__()
        self.cfg = cfg
        # Registered in the order a (pre-norm) forward pass visits them.
        self.hook_resid_pre = HookPoint()  # [batch, tgt_pos, d_model]
        self.ln1 = LayerNorm(cfg, cfg.d_model)
        self.attn = Attention(cfg, layer)  # causal
        self.hook_attn_out = HookPoint()  # [batch, tgt_pos, d_model]
        self.hook_resid_mid = HookPoint()  # [batch, tgt_pos, d_model]
        self.ln2 = LayerNorm(cfg, cfg.d_model)
        self.cross_attn = NonCausalAttention(cfg, layer)
        self.hook_cross_attn_out = HookPoint()  # [batch, tgt_pos, d_model]
        self.hook_resid_mid_cross = HookPoint()  # [batch, tgt_pos, d_model]
        self.ln3 = LayerNorm(cfg, cfg.d_model)
        self.mlp = MLP(cfg)
        self.hook_mlp_out = HookPoint()  # [batch, tgt_pos, d_model]
        self.hook_resid_post = HookPoint()  # [batch, tgt_pos, d_model]

    def forward(
        self,
        resid_pre: torch.Tensor,
        memory: torch.Tensor,
        src_mask: Optional[torch.Tensor] = None,
        pos_offset: int = 0,
        kv_cache: Optional[KVCache] = None,
    ) -> torch.Tensor:
        """resid_pre [batch, tgt_pos, d_model], memory [batch, src_pos, d_model] -> [batch, tgt_pos, d_model]."""
        resid_pre = self.hook_resid_pre(resid_pre)
        if self.cfg.norm_position == "post":  # x = norm(x + sublayer(x))
            attn_out = self.hook_attn_out(self.attn(resid_pre, pos_offset, kv_cache))
            resid_mid = self.hook_resid_mid(self.ln1(resid_pre + attn_out))
            cross_out = self.hook_cross_attn_out(self.cross_attn(resid_mid, key_mask=src_mask, context=memory))
            resid_mid_cross = self.hook_resid_mid_cross(self.ln2(resid_mid + cross_out))
            mlp_out = self.hook_mlp_out(self.mlp(resid_mid_cross))
            return self.hook_resid_post(self.ln3(resid_mid_cross + mlp_out))
        # pre-norm: x = x + sublayer(norm(x)); the memory is used as it is
        attn_out = self.hook_attn_out(self.attn(self.ln1(resid_pre), pos_offset, kv_cache))
        resid_mid = self.hook_resid_mid(resid_pre + attn_out)
        cross_out = self.hook_cross_attn_out(self.cross_attn(self.ln2(resid_mid), key_mask=src_mask, context=memory))
        resid_mid_cross = self.hook_resid_mid_cross(resid_mid + cross_out)
        mlp_out = self.hook_mlp_out(self.mlp(self.ln3(resid_mid_cross)))
        return self.hook_resid_post(resid_mid_cross + mlp_out)


def _embed_with_positions(stack: nn.Module, tokens: torch.Tensor, pos_offset: int = 0) -> torch.Tensor:
    """Token embedding * sqrt(d_model) + sinusoidal positions: [batch, pos] -> [batch, pos, d_model]."""
    batch, n_pos = tokens.shape
    n_ctx = stack.pos_embed.W_pos.shape[0]
    if pos_offset + n_pos > n_ctx:
        raise ValueError(f"{pos_offset + n_pos} positions exceed the model's n_ctx={n_ctx}")
    resid = stack.hook_embed(stack.embed(tokens))
    pos = stack.pos_embed(batch, n_pos, pos_offset)
    return resid + stack.hook_pos_embed(pos.clone() if stack.hook_pos_embed.has_hooks else pos)


class Encoder(nn.Module):
    """Source tokens [batch, src_pos] -> memory [batch, src_pos, d_model]."""

    def __init__(self, cfg: EncoderDecoderConfig) -> None:
        super().__init__()
        lcfg = cfg.layer_config(cfg.d_vocab_src)
        self.embed = Embed(lcfg)
        self.hook_embed = HookPoint()  # [batch, src_pos, d_model], scaled by sqrt(d_model)
        self.pos_embed = SinusoidalPosEmbed(lcfg)
        self.hook_pos_embed = HookPoint()  # [batch, src_pos, d_model]
        self.blocks = nn.ModuleList([EncoderBlock(lcfg, layer) for layer in range(cfg.n_layers_enc)])
        if cfg.final_norm:
            self.ln_final = LayerNorm(lcfg, cfg.d_model)

    def run_blocks(self, resid: torch.Tensor, src_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        # [batch, src_pos, d_model] -> [batch, src_pos, d_model]
        for block in self.blocks:
            resid = block(resid, key_mask=src_mask)
        return self.ln_final(resid) if hasattr(self, "ln_final") else resid

    def forward(self, tokens: torch.Tensor, src_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        return self.run_blocks(_embed_with_positions(self, tokens), src_mask)


class Decoder(nn.Module):
    """Target tokens [batch, tgt_pos] and memory [batch, src_pos, d_model] -> [batch, tgt_pos, d_model]."""

    def __init__(self, cfg: EncoderDecoderConfig, embed: Optional[Embed] = None) -> None:
        super().__init__()
        lcfg = cfg.layer_config(cfg.d_vocab_tgt)
        self.embed = embed if embed is not None else Embed(lcfg)  # the encoder's with share_embeddings
        self.hook_embed = HookPoint()  # [batch, tgt_pos, d_model], scaled by sqrt(d_model)
        self.pos_embed = SinusoidalPosEmbed(lcfg)
        self.hook_pos_embed = HookPoint()  # [batch, tgt_pos, d_model]
        self.blocks = nn.ModuleList([DecoderBlock(lcfg, layer) for layer in range(cfg.n_layers_dec)])
        if cfg.final_norm:
            self.ln_final = LayerNorm(lcfg, cfg.d_model)

    def run_blocks(
        self,
        resid: torch.Tensor,
        memory: torch.Tensor,
        src_mask: Optional[torch.Tensor] = None,
        pos_offset: int = 0,
        kv_cache: Optional[KVCache] = None,
        start_at_layer: int = 0,
    ) -> torch.Tensor:
        """[batch, tgt_pos, d_model] entering block `start_at_layer` -> [batch, tgt_pos, d_model]."""
        for block in self.blocks[start_at_layer:]:
            resid = block(resid, memory, src_mask, pos_offset, kv_cache)
        return self.ln_final(resid) if hasattr(self, "ln_final") else resid

    def forward(
        self,
        tokens: torch.Tensor,
        memory: torch.Tensor,
        src_mask: Optional[torch.Tensor] = None,
        kv_cache: Optional[KVCache] = None,
    ) -> torch.Tensor:
        pos_offset = kv_cache.n_pos if kv_cache is not None else 0
        return self.run_blocks(_embed_with_positions(self, tokens, pos_offset), memory, src_mask, pos_offset, kv_cache)
