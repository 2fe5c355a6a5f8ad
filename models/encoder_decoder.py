"""The encoder-decoder Transformer of "Attention Is All You Need" (Vaswani et al. 2017), hooked.

Built from the decoder-only model's components (`Embed`, `SinusoidalPosEmbed`,
`LayerNorm`, `Attention`, `MLP`, `TransformerBlock`, `Unembed` of
models/transformer.py), with the same weight names and shapes:

    encoder.embed.W_E [d_vocab_src, d_model]       decoder.embed.W_E [d_vocab_tgt, d_model]
    encoder.blocks.{l}.attn.W_Q [n_heads, d_model, d_head] ...   (ln1: attention, ln2: MLP)
    decoder.blocks.{l}.attn.W_Q ...          masked self-attention   (ln1)
    decoder.blocks.{l}.cross_attn.W_Q ...    queries from the decoder, keys/values from the encoder (ln2)
    decoder.blocks.{l}.mlp.W_in [d_model, d_mlp] ...                                              (ln3)
    encoder.ln_final, decoder.ln_final       (only with final_norm)
    unembed.W_U [d_model, d_vocab_tgt], unembed.b_U

Hook points are the decoder-only model's, under `encoder.` / `decoder.`, plus the
cross-attention's: `decoder.blocks.{l}.cross_attn.hook_q / hook_k / hook_v /
hook_attn_scores / hook_pattern / hook_z`, `decoder.blocks.{l}.hook_cross_attn_out`
and `decoder.blocks.{l}.hook_resid_mid_cross` (the residual after it). The
cross-attention pattern is [batch, head, tgt_pos, src_pos].

`EncDecHead` / `EncDecNeuron` address one head or neuron (like `interp.Head` /
`interp.Neuron`, whose names have no stack prefix).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Optional, Sequence, Union

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from interp.hooks import HookedModule, HookPoint
from interp.sites import Head, Neuron
from models.config import DTYPES, NORM_POSITIONS, JsonConfig, TransformerConfig
from models.transformer import (
    MLP,
    Attention,
    Embed,
    KVCache,
    LayerNorm,
    SinusoidalPosEmbed,
    TransformerBlock,
    Unembed,
    check_sampling,
    next_token,
)


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
            self.dtype = str(self.dtype).removeprefix("torch.")
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
    ) -> torch.Tensor:
        # [batch, tgt_pos, d_model] -> [batch, tgt_pos, d_model]
        for block in self.blocks:
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


# ============================================================ sites
ATTENTION_MODULES = ("encoder.attn", "decoder.attn", "decoder.cross_attn")


@dataclass(frozen=True)
class EncDecHead(Head):
    """One head of an EncoderDecoder; `attn` is "encoder.attn", "decoder.attn" or
    "decoder.cross_attn" (default). Reads and writes like `interp.Head`:

        EncDecHead(1, 3).hook_name("pattern") == "decoder.blocks.1.cross_attn.hook_pattern"
    """

    attn: str = "decoder.cross_attn"

    def __post_init__(self) -> None:
        if self.attn not in ATTENTION_MODULES:
            raise ValueError(f"attn={self.attn!r} is not one of {ATTENTION_MODULES}")

    def hook_name(self, act: Optional[str] = "z") -> str:
        stack, module = self.attn.split(".")
        return f"{stack}.blocks.{self.layer}.{module}.hook_{self._check_act(act or 'z')}"

    @property
    def label(self) -> str:
        prefix = {"encoder.attn": "enc", "decoder.attn": "dec", "decoder.cross_attn": "cross"}[self.attn]
        return f"{prefix}.{super().label}"


@dataclass(frozen=True)
class EncDecNeuron(Neuron):
    """One MLP neuron of an EncoderDecoder; `stack` is "encoder" or "decoder" (default).

        EncDecNeuron(0, 7, stack="encoder").hook_name() == "encoder.blocks.0.mlp.hook_post"
    """

    stack: str = "decoder"

    def __post_init__(self) -> None:
        if self.stack not in ("encoder", "decoder"):
            raise ValueError(f"stack={self.stack!r} is not 'encoder' or 'decoder'")

    def hook_name(self, act: Optional[str] = "post") -> str:
        return f"{self.stack}.{super().hook_name(act)}"

    @property
    def label(self) -> str:
        return f"{self.stack[:3]}.{super().label}"


# ============================================================ the model
class EncoderDecoder(HookedModule):
    """Encoder-decoder Transformer; see `EncoderDecoderConfig` for the choices.

    `model(src_tokens [batch, src_pos], tgt_tokens [batch, tgt_pos], src_mask)`
    returns logits [batch, tgt_pos, d_vocab_tgt]; logits[:, t] predicts target
    token t + 1 (the target starts with BOS). src_mask [batch, src_pos] is 1 /
    True for real source tokens and 0 for padding (the opposite of torch's
    src_key_padding_mask); padded source positions are hidden from the encoder's
    self-attention and from the cross-attention.
    """

    def __init__(self, cfg: EncoderDecoderConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.use_attn_result = False
        self.encoder = Encoder(cfg)
        self.decoder = Decoder(cfg, self.encoder.embed if cfg.share_embeddings else None)
        self.unembed = Unembed(cfg.layer_config(cfg.d_vocab_tgt), self.decoder.embed if cfg.tie_embeddings else None)
        self.init_weights(cfg.seed)
        self.setup_hooks()

    # ------------------------------------------------------------ set-up
    def init_weights(self, seed: Optional[int] = None) -> None:
        """Token embeddings N(0, 1/d_model) (so that W_E * sqrt(d_model) has unit variance),
        other matrices Xavier-uniform (as torch.nn.Transformer), biases 0, norm weights 1."""
        gen = torch.Generator().manual_seed(seed) if seed is not None else None
        with torch.no_grad():
            for name, p in self.named_parameters():
                last = name.split(".")[-1]
                if last == "w":
                    p.fill_(1.0)
                elif last == "b" or last.startswith("b_"):
                    p.zero_()
                elif last == "W_E":
                    p.copy_(torch.randn(p.shape, generator=gen, dtype=torch.float64) / math.sqrt(self.cfg.d_model))
                else:
                    fan_in, fan_out = _fans(last, p.shape)
                    bound = math.sqrt(6.0 / (fan_in + fan_out))
                    p.copy_((torch.rand(p.shape, generator=gen, dtype=torch.float64) * 2 - 1) * bound)

    def _is_opt_in(self, name: str) -> bool:
        return name.endswith("attn.hook_result")

    def _opt_in_enabled(self, name: str) -> bool:
        return self.use_attn_result

    def set_use_attn_result(self, use: bool) -> None:
        """Compute per-head results (hook_result [batch, pos, head, d_model]) on every forward."""
        self.use_attn_result = use
        for module in self.modules():
            if isinstance(module, Attention):
                module.use_attn_result = use

    @property
    def device(self) -> torch.device:
        return self.decoder.embed.W_E.device

    @property
    def W_U(self) -> torch.Tensor:
        return self.unembed.W_U

    # ------------------------------------------------------------ input checks
    def _check_tokens(self, tokens: torch.Tensor, d_vocab: int, what: str) -> torch.Tensor:
        if not isinstance(tokens, torch.Tensor):
            raise TypeError(f"{what} must be a tensor of token ids [batch, pos], got {type(tokens).__name__}")
        tokens = tokens[None] if tokens.dim() == 1 else tokens
        if tokens.dim() != 2 or tokens.dtype not in (torch.long, torch.int32, torch.int64):
            raise ValueError(f"{what} must be an integer tensor [batch, pos], got {tuple(tokens.shape)} {tokens.dtype}")
        if tokens.shape[1] == 0:
            raise ValueError(f"{what} has no positions")
        if tokens.min() < 0 or tokens.max() >= d_vocab:
            raise ValueError(f"{what} ids must be in [0, {d_vocab}); got range [{int(tokens.min())}, {int(tokens.max())}]")
        return tokens.to(self.device).long()

    def _check_src_mask(self, src_mask: Optional[torch.Tensor], shape: tuple[int, int]) -> Optional[torch.Tensor]:
        if src_mask is None:
            return None
        src_mask = src_mask[None] if src_mask.dim() == 1 else src_mask
        if tuple(src_mask.shape) != tuple(shape):
            raise ValueError(f"src_mask has shape {tuple(src_mask.shape)}, the source is {tuple(shape)} [batch, src_pos]")
        src_mask = src_mask.to(self.device).bool()
        empty = (~src_mask.any(dim=1)).nonzero().flatten().tolist()
        if empty:
            raise ValueError(f"src_mask hides every source position of batch rows {empty}")
        return src_mask

    # ------------------------------------------------------------ forward
    def encode(self, src_tokens: torch.Tensor, src_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Source tokens [batch, src_pos] -> memory (the encoder output) [batch, src_pos, d_model]."""
        src_tokens = self._check_tokens(src_tokens, self.cfg.d_vocab_src, "src_tokens")
        return self.encoder(src_tokens, self._check_src_mask(src_mask, src_tokens.shape))

    def decode(
        self,
        tgt_tokens: torch.Tensor,
        memory: torch.Tensor,
        src_mask: Optional[torch.Tensor] = None,
        kv_cache: Optional[KVCache] = None,
    ) -> torch.Tensor:
        """Target tokens [batch, tgt_pos] and memory [batch, src_pos, d_model] -> logits [batch, tgt_pos, d_vocab_tgt].

        kv_cache: a `KVCache` of the decoder's self-attention (for generation);
        the new target tokens are appended to it.
        """
        tgt_tokens = self._check_tokens(tgt_tokens, self.cfg.d_vocab_tgt, "tgt_tokens")
        if memory.dim() != 3 or memory.shape[0] != tgt_tokens.shape[0] or memory.shape[2] != self.cfg.d_model:
            raise ValueError(
                f"memory must be [batch={tgt_tokens.shape[0]}, src_pos, d_model={self.cfg.d_model}], "
                f"got {tuple(memory.shape)}"
            )
        src_mask = self._check_src_mask(src_mask, memory.shape[:2])
        return self.unembed(self.decoder(tgt_tokens, memory, src_mask, kv_cache))

    def forward(
        self, src_tokens: torch.Tensor, tgt_tokens: torch.Tensor, src_mask: Optional[torch.Tensor] = None
    ) -> torch.Tensor:
        """src_tokens [batch, src_pos], tgt_tokens [batch, tgt_pos], src_mask [batch, src_pos]
        (1 = real token) -> logits [batch, tgt_pos, d_vocab_tgt]."""
        return self.decode(tgt_tokens, self.encode(src_tokens, src_mask), src_mask)

    def core_forward(
        self, src_emb: torch.Tensor, tgt_emb: torch.Tensor, src_mask: Optional[torch.Tensor] = None
    ) -> torch.Tensor:
        """The two stacks only, on embedded inputs (no embedding scale, positions or output layer).

        src_emb [batch, src_pos, d_model], tgt_emb [batch, tgt_pos, d_model] ->
        decoder output [batch, tgt_pos, d_model]; the same as torch.nn.Transformer's
        `core(src_emb, tgt_emb, tgt_mask=causal_mask, src_key_padding_mask=~src_mask,
        memory_key_padding_mask=~src_mask)` (batch_first=True).
        """
        for what, x in (("src_emb", src_emb), ("tgt_emb", tgt_emb)):
            if x.dim() != 3 or x.shape[2] != self.cfg.d_model:
                raise ValueError(f"{what} must be [batch, pos, d_model={self.cfg.d_model}], got {tuple(x.shape)}")
        if src_emb.shape[0] != tgt_emb.shape[0]:
            raise ValueError(f"src_emb and tgt_emb disagree on batch: {src_emb.shape[0]} vs {tgt_emb.shape[0]}")
        src_mask = self._check_src_mask(src_mask, src_emb.shape[:2])
        memory = self.encoder.run_blocks(src_emb, src_mask)
        return self.decoder.run_blocks(tgt_emb, memory, src_mask)

    def loss(
        self,
        src_tokens: torch.Tensor,
        tgt_tokens: torch.Tensor,
        src_mask: Optional[torch.Tensor] = None,
        pad_id: Optional[int] = None,
        per_token: bool = False,
    ) -> torch.Tensor:
        """Teacher-forced cross-entropy of tgt_tokens[:, 1:] given tgt_tokens[:, :-1] (which
        start with BOS); targets equal to pad_id are ignored. Mean, or [batch, tgt_pos - 1]."""
        tgt_tokens = self._check_tokens(tgt_tokens, self.cfg.d_vocab_tgt, "tgt_tokens")
        if tgt_tokens.shape[1] < 2:
            raise ValueError("tgt_tokens needs at least 2 positions (BOS and one target)")
        logits = self(src_tokens, tgt_tokens[:, :-1], src_mask)
        targets = tgt_tokens[:, 1:]
        if pad_id is not None:
            targets = targets.masked_fill(targets == pad_id, -100)
        loss = F.cross_entropy(
            rearrange(logits, "b p v -> (b p) v"), rearrange(targets, "b p -> (b p)"),
            reduction="none" if per_token else "mean", ignore_index=-100,
        )
        return rearrange(loss, "(b p) -> b p", b=tgt_tokens.shape[0]) if per_token else loss

    # ------------------------------------------------------------ generation
    @torch.no_grad()
    def generate(
        self,
        src_tokens: torch.Tensor,
        max_new_tokens: int,
        bos_id: int,
        eos_id: Optional[int] = None,
        temperature: float = 0.0,
        top_k: Optional[int] = None,
        seed: Optional[int] = None,
        src_mask: Optional[torch.Tensor] = None,
        use_kv_cache: bool = True,
    ) -> torch.Tensor:
        """Decode a target for each source, one token at a time: tokens [batch, 1 + new], starting with bos_id.

        temperature=0: greedy (the most likely next token); otherwise sample from
        softmax(logits / temperature), restricted to the top_k tokens if given,
        with a generator seeded by `seed`. After eos_id a row continues with
        eos_id; generation stops when every row has produced it. use_kv_cache
        reuses the decoder's self-attention keys and values (same tokens as
        re-running the whole target each step).
        """
        check_sampling(temperature, top_k)
        if max_new_tokens < 0 or max_new_tokens + 1 > self.cfg.n_ctx:
            raise ValueError(f"max_new_tokens={max_new_tokens} must be in [0, n_ctx - 1 = {self.cfg.n_ctx - 1}]")
        for what, tok in (("bos_id", bos_id), ("eos_id", eos_id)):
            if tok is not None and not 0 <= tok < self.cfg.d_vocab_tgt:
                raise ValueError(f"{what}={tok} is not a target token id (d_vocab_tgt={self.cfg.d_vocab_tgt})")
        src_tokens = self._check_tokens(src_tokens, self.cfg.d_vocab_src, "src_tokens")
        src_mask = self._check_src_mask(src_mask, src_tokens.shape)
        memory = self.encode(src_tokens, src_mask)
        gen = torch.Generator(device=self.device).manual_seed(seed) if seed is not None else None
        batch = src_tokens.shape[0]
        tokens = torch.full((batch, 1), bos_id, dtype=torch.long, device=self.device)  # [batch, 1 + new]
        cache = KVCache.empty(self.cfg.n_layers_dec) if use_kv_cache else None
        finished = torch.zeros(batch, dtype=torch.bool, device=self.device)
        for _ in range(max_new_tokens):
            logits = self.decode(tokens[:, -1:] if use_kv_cache else tokens, memory, src_mask, cache)[:, -1]
            next_tok = next_token(logits, temperature, top_k, gen)  # [batch]
            if eos_id is not None:
                next_tok = torch.where(finished, torch.full_like(next_tok, eos_id), next_tok)
                finished |= next_tok == eos_id
            tokens = torch.cat([tokens, next_tok[:, None]], dim=1)
            if eos_id is not None and bool(finished.all()):
                break
        return tokens

    # ------------------------------------------------------------ from torch.nn.Transformer
    @classmethod
    def from_torch(
        cls,
        core: nn.Transformer,
        d_vocab_src: int,
        d_vocab_tgt: Optional[int] = None,
        embeddings: Union[None, nn.Embedding, torch.Tensor, Sequence[Union[nn.Embedding, torch.Tensor]]] = None,
        output: Union[None, nn.Linear, torch.Tensor] = None,
        n_ctx: int = 512,
        seed: Optional[int] = None,
    ) -> "EncoderDecoder":
        """An EncoderDecoder with the weights of `core` (a torch.nn.Transformer, ReLU, in either norm position).

        `core_forward(src_emb, tgt_emb)` then equals `core(src_emb, tgt_emb, tgt_mask=causal)`
        (batch_first=True; with batch_first=False transpose the [pos, batch, d_model] inputs).
        Dropout is not copied: compare with `core.eval()`.

        embeddings: None (random init), one nn.Embedding / [d_vocab, d_model] tensor
            shared by source and target, or a pair (source, target). Our model
            multiplies them by sqrt(d_model) and adds sinusoidal positions.
        output: None (random init), an nn.Linear(d_model, d_vocab_tgt) or its
            weight [d_vocab_tgt, d_model]. A Linear whose weight is the target
            embedding's gives tied embeddings.
        """
        if not isinstance(core, nn.Transformer):
            raise TypeError(f"core must be a torch.nn.Transformer, got {type(core).__name__}")
        enc_layers, dec_layers = list(core.encoder.layers), list(core.decoder.layers)
        layers = enc_layers + dec_layers
        norm_first = {bool(layer.norm_first) for layer in layers}
        if len(norm_first) != 1:
            raise ValueError("core mixes norm_first=True and False layers")
        for i, layer in enumerate(layers):
            act = layer.activation
            if not (act is F.relu or isinstance(act, nn.ReLU)):
                raise ValueError(f"only ReLU is supported; layer {i} of core has activation {act!r}")
        if (core.encoder.norm is None) != (core.decoder.norm is None):
            raise ValueError("core has a final norm on one stack only")
        norms = [m for m in core.modules() if isinstance(m, nn.LayerNorm)]
        eps = {m.eps for m in norms}
        if len(eps) > 1:
            raise ValueError(f"core's LayerNorms have different eps: {sorted(eps)}")
        d_vocab_tgt = d_vocab_src if d_vocab_tgt is None else d_vocab_tgt

        src_emb, tgt_emb = _split_embeddings(embeddings)
        share = src_emb is not None and src_emb is tgt_emb
        tie = output is not None and tgt_emb is not None and _weight(output) is _weight(tgt_emb)
        cfg = EncoderDecoderConfig(
            d_vocab_src=d_vocab_src, d_vocab_tgt=d_vocab_tgt, d_model=core.d_model, n_heads=core.nhead,
            n_layers_enc=len(enc_layers), n_layers_dec=len(dec_layers), d_mlp=enc_layers[0].linear1.out_features,
            n_ctx=n_ctx, norm_position="pre" if norm_first.pop() else "post", final_norm=core.encoder.norm is not None,
            share_embeddings=share, tie_embeddings=tie, norm_eps=eps.pop() if eps else 1e-5,
            dtype=str(next(core.parameters()).dtype).removeprefix("torch."), seed=seed,
        )
        model = cls(cfg).to(next(core.parameters()).device)
        with torch.no_grad():
            for ours, theirs in zip(model.encoder.blocks, enc_layers):
                _copy_attention(ours.attn, theirs.self_attn)
                _copy_mlp(ours.mlp, theirs)
                _copy_norm(ours.ln1, theirs.norm1)
                _copy_norm(ours.ln2, theirs.norm2)
            for ours, theirs in zip(model.decoder.blocks, dec_layers):
                _copy_attention(ours.attn, theirs.self_attn)
                _copy_attention(ours.cross_attn, theirs.multihead_attn)
                _copy_mlp(ours.mlp, theirs)
                _copy_norm(ours.ln1, theirs.norm1)
                _copy_norm(ours.ln2, theirs.norm2)
                _copy_norm(ours.ln3, theirs.norm3)
            if cfg.final_norm:
                _copy_norm(model.encoder.ln_final, core.encoder.norm)
                _copy_norm(model.decoder.ln_final, core.decoder.norm)
            for ours, theirs, d_vocab, what in ((model.encoder.embed, src_emb, d_vocab_src, "source"),
                                                (model.decoder.embed, tgt_emb, d_vocab_tgt, "target")):
                if theirs is not None:
                    _copy(ours.W_E, _weight(theirs), f"{what} embedding [d_vocab={d_vocab}, d_model]")
            if output is not None and not tie:
                _copy(model.unembed.W_U, _weight(output).T, "output weight, transposed [d_model, d_vocab_tgt]")
            if isinstance(output, nn.Linear) and output.bias is not None:
                _copy(model.unembed.b_U, output.bias, "output bias [d_vocab_tgt]")
        return model


# ============================================================ helpers
def _fans(name: str, shape: torch.Size) -> tuple[int, int]:
    """(fan_in, fan_out) of a weight in our layout, as for the equivalent nn.Linear."""
    if name in ("W_Q", "W_K", "W_V"):  # [n_heads, d_model, d_head]
        return shape[1], shape[0] * shape[2]
    if name == "W_O":  # [n_heads, d_head, d_model]
        return shape[0] * shape[1], shape[2]
    return shape[0], shape[1]  # [in, out]: W_in, W_out, W_U


def _weight(x: Union[nn.Module, torch.Tensor]) -> torch.Tensor:
    return x.weight if isinstance(x, nn.Module) else x


def _split_embeddings(embeddings: Any) -> tuple[Any, Any]:
    if embeddings is None or isinstance(embeddings, (nn.Module, torch.Tensor)):
        return embeddings, embeddings
    if len(embeddings) != 2:
        raise ValueError("embeddings must be one embedding (shared) or a pair (source, target)")
    return embeddings[0], embeddings[1]


def _copy(ours: torch.Tensor, theirs: torch.Tensor, what: str) -> None:
    if tuple(ours.shape) != tuple(theirs.shape):
        raise ValueError(f"{what}: expected shape {tuple(ours.shape)}, got {tuple(theirs.shape)}")
    ours.copy_(theirs)


def _copy_attention(ours: Attention, mha: nn.MultiheadAttention) -> None:
    """nn.MultiheadAttention -> W_Q / W_K / W_V [n_heads, d_model, d_head], W_O [n_heads, d_head, d_model]."""
    h = ours.W_Q.shape[0]
    if mha._qkv_same_embed_dim:
        w_q, w_k, w_v = mha.in_proj_weight.chunk(3, dim=0)  # each [n_heads * d_head, d_model]
    else:
        w_q, w_k, w_v = mha.q_proj_weight, mha.k_proj_weight, mha.v_proj_weight
    for W, w in ((ours.W_Q, w_q), (ours.W_K, w_k), (ours.W_V, w_v)):
        W.copy_(rearrange(w, "(h k) d -> h d k", h=h))
    if mha.in_proj_bias is not None:
        for b, bias in zip((ours.b_Q, ours.b_K, ours.b_V), mha.in_proj_bias.chunk(3)):
            b.copy_(rearrange(bias, "(h k) -> h k", h=h))
    ours.W_O.copy_(rearrange(mha.out_proj.weight, "d (h k) -> h k d", h=h))
    if mha.out_proj.bias is not None:
        ours.b_O.copy_(mha.out_proj.bias)


def _copy_mlp(ours: MLP, layer: nn.Module) -> None:
    """linear1 [d_mlp, d_model] -> W_in [d_model, d_mlp]; linear2 [d_model, d_mlp] -> W_out [d_mlp, d_model]."""
    ours.W_in.copy_(layer.linear1.weight.T)
    ours.W_out.copy_(layer.linear2.weight.T)
    if layer.linear1.bias is not None:
        ours.b_in.copy_(layer.linear1.bias)
    if layer.linear2.bias is not None:
        ours.b_out.copy_(layer.linear2.bias)


def _copy_norm(ours: LayerNorm, norm: nn.LayerNorm) -> None:
    if norm.weight is not None:
        ours.w.copy_(norm.weight)
    if norm.bias is not None:
        ours.b.copy_(norm.bias)
