"""A decoder-only Transformer with a hook point at every activation.

One class per component, weights named and shaped as in TransformerLens
(`blocks.3.attn.W_Q` is [n_heads, d_model, d_head]), so a neuron's key is
`blocks.l.mlp.W_in[:, n]` and its value `blocks.l.mlp.W_out[n, :]`.

Speed: with no hook on the attention scores or pattern, attention runs through
PyTorch's fused `scaled_dot_product_attention`, and LayerNorm through its fused
kernel when its scale is not hooked; hooking those sites switches the component
to the explicit computation, which is what the hooks then see. The projection
weights are stored d_model-major so each projection is one matrix multiply.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Optional, Sequence, Union

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from interp.hooks import HookedModule, HookPoint
from models.config import TransformerConfig
from models.tokenizer import Tokenizer

Input = Union[str, Sequence[str], torch.Tensor]


def _param(*shape: int, dtype: torch.dtype, order: Optional[tuple[int, ...]] = None) -> nn.Parameter:
    """A parameter of `shape`, optionally stored in another memory order.

    order gives the storage layout as a permutation of shape's axes, e.g. a
    [n_heads, d_model, d_head] weight stored as [d_model, n_heads, d_head]
    (order=(1, 0, 2)) so that reshaping it to [d_model, n_heads * d_head] is free.
    """
    if order is None:
        return nn.Parameter(torch.zeros(*shape, dtype=dtype))
    stored = torch.zeros(*[shape[i] for i in order], dtype=dtype)
    inverse = [order.index(i) for i in range(len(shape))]
    return nn.Parameter(stored.permute(*inverse))


ACTIVATIONS = {
    "relu": F.relu,
    "gelu": F.gelu,
    "gelu_new": lambda x: F.gelu(x, approximate="tanh"),
    "silu": F.silu,
}


# ============================================================ embeddings
class Embed(nn.Module):
    def __init__(self, cfg: TransformerConfig) -> None:
        super().__init__()
        self.W_E = _param(cfg.d_vocab, cfg.d_model, dtype=cfg.torch_dtype)
        self.scale = math.sqrt(cfg.d_model) if cfg.scale_embeddings else 1.0

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        # tokens [batch, pos] -> [batch, pos, d_model]
        embed = F.embedding(tokens, self.W_E)
        return embed * self.scale if self.scale != 1.0 else embed


class PosEmbed(nn.Module):
    """Learned absolute positions."""

    def __init__(self, cfg: TransformerConfig) -> None:
        super().__init__()
        self.W_pos = _param(cfg.n_ctx, cfg.d_model, dtype=cfg.torch_dtype)

    def forward(self, batch: int, n_pos: int, offset: int = 0) -> torch.Tensor:
        # -> [batch, pos, d_model]
        return self.W_pos[offset : offset + n_pos].unsqueeze(0).expand(batch, -1, -1)


class SinusoidalPosEmbed(nn.Module):
    """Fixed positions of Vaswani et al.: PE[p, 2i] = sin(p / 10000^(2i/d)), PE[p, 2i+1] = cos(...)."""

    def __init__(self, cfg: TransformerConfig) -> None:
        super().__init__()
        pos = torch.arange(cfg.n_ctx, dtype=torch.float64)[:, None]
        freq = 10000.0 ** (-torch.arange(0, cfg.d_model, 2, dtype=torch.float64) / cfg.d_model)
        pe = torch.zeros(cfg.n_ctx, cfg.d_model, dtype=torch.float64)
        pe[:, 0::2] = torch.sin(pos * freq)
        pe[:, 1::2] = torch.cos(pos * freq)[:, : cfg.d_model // 2]
        self.register_buffer("W_pos", pe.to(cfg.torch_dtype), persistent=False)

    forward = PosEmbed.forward


# ============================================================ norms
class LayerNorm(nn.Module):
    """LayerNorm with hooks on its scale [batch, pos, 1] and on the normalised input
    (x - mean) / scale [batch, pos, d_model], before the weight w and bias b (as in
    TransformerLens 4's bridge)."""

    def __init__(self, cfg: TransformerConfig, d: int) -> None:
        super().__init__()
        self.eps = cfg.norm_eps
        self.w = nn.Parameter(torch.ones(d, dtype=cfg.torch_dtype))
        self.b = nn.Parameter(torch.zeros(d, dtype=cfg.torch_dtype))
        self.hook_scale = HookPoint()
        self.hook_normalized = HookPoint()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.hook_scale.has_hooks or self.hook_normalized.has_hooks):
            return F.layer_norm(x, x.shape[-1:], self.w, self.b, self.eps)  # fused kernel, same numbers
        x = x - x.mean(-1, keepdim=True)
        scale = self.hook_scale((x.pow(2).mean(-1, keepdim=True) + self.eps).sqrt())
        return self.hook_normalized(x / scale) * self.w + self.b


class RMSNorm(nn.Module):
    """RMSNorm (no centring, no bias): x / sqrt(mean(x^2) + eps) * w, hooks as in LayerNorm."""

    def __init__(self, cfg: TransformerConfig, d: int) -> None:
        super().__init__()
        self.eps = cfg.norm_eps
        self.w = nn.Parameter(torch.ones(d, dtype=cfg.torch_dtype))
        self.hook_scale = HookPoint()
        self.hook_normalized = HookPoint()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = self.hook_scale((x.pow(2).mean(-1, keepdim=True) + self.eps).sqrt())
        return self.hook_normalized(x / scale) * self.w


def make_norm(cfg: TransformerConfig) -> nn.Module:
    return LayerNorm(cfg, cfg.d_model) if cfg.norm == "layernorm" else RMSNorm(cfg, cfg.d_model)


# ============================================================ attention
@dataclass
class KVCache:
    """Keys and values of the positions seen so far, per layer ([batch, pos, n_kv_heads, d_head])."""

    keys: list[Optional[torch.Tensor]] = field(default_factory=list)
    values: list[Optional[torch.Tensor]] = field(default_factory=list)

    @classmethod
    def empty(cls, n_layers: int) -> "KVCache":
        return cls([None] * n_layers, [None] * n_layers)

    @property
    def n_pos(self) -> int:
        return next((k.shape[1] for k in self.keys if k is not None), 0)

    def extend(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.keys[layer] is not None:
            k = torch.cat([self.keys[layer], k], dim=1)
            v = torch.cat([self.values[layer], v], dim=1)
        self.keys[layer], self.values[layer] = k, v
        return k, v


def rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, rotary_dim: int) -> torch.Tensor:
    """Rotary embedding on the first rotary_dim dims of each head, GPT-NeoX / Llama layout.

    x [batch, pos, head, d_head]; cos, sin [pos, rotary_dim].
    """
    x_rot, x_pass = x[..., :rotary_dim], x[..., rotary_dim:]
    x1, x2 = x_rot.chunk(2, dim=-1)
    rotated = torch.cat([-x2, x1], dim=-1)
    cos, sin = cos[:, None, :], sin[:, None, :]  # broadcast over heads
    return torch.cat([x_rot * cos + rotated * sin, x_pass], dim=-1)


class Attention(nn.Module):
    def __init__(self, cfg: TransformerConfig, layer: int) -> None:
        super().__init__()
        self.cfg, self.layer = cfg, layer
        h, kv, d, dh, dt = cfg.n_heads, cfg.n_kv_heads, cfg.d_model, cfg.d_head, cfg.torch_dtype
        self.W_Q = _param(h, d, dh, dtype=dt, order=(1, 0, 2))  # [n_heads, d_model, d_head]
        self.W_K = _param(kv, d, dh, dtype=dt, order=(1, 0, 2))  # [n_kv_heads, d_model, d_head]
        self.W_V = _param(kv, d, dh, dtype=dt, order=(1, 0, 2))
        self.W_O = _param(h, dh, d, dtype=dt)  # [n_heads, d_head, d_model]
        self.b_Q = _param(h, dh, dtype=dt)
        self.b_K = _param(kv, dh, dtype=dt)
        self.b_V = _param(kv, dh, dtype=dt)
        self.b_O = _param(d, dtype=dt)
        self.hook_q, self.hook_k, self.hook_v = HookPoint(), HookPoint(), HookPoint()  # [batch, pos, head, d_head]
        if cfg.positional == "rotary":
            self.hook_rot_q, self.hook_rot_k = HookPoint(), HookPoint()  # after the rotation
            inv_freq = cfg.rotary_base ** (-torch.arange(0, cfg.rotary_dim, 2, dtype=torch.float64) / cfg.rotary_dim)
            angles = torch.arange(cfg.n_ctx, dtype=torch.float64)[:, None] * inv_freq  # [n_ctx, rotary_dim/2]
            angles = torch.cat([angles, angles], dim=-1)
            self.register_buffer("rotary_cos", angles.cos().to(dt), persistent=False)
            self.register_buffer("rotary_sin", angles.sin().to(dt), persistent=False)
        self.hook_attn_scores = HookPoint()  # [batch, head, q_pos, k_pos], scaled, masked with -inf
        self.hook_pattern = HookPoint()  # [batch, head, q_pos, k_pos]
        self.hook_z = HookPoint()  # [batch, pos, head, d_head]
        self.hook_result = HookPoint()  # [batch, pos, head, d_model], opt-in
        self.use_attn_result = False

    def _project(self, x: torch.Tensor, W: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        # x [batch, pos, d_model], W [head, d_model, d_head] -> [batch, pos, head, d_head]
        flat = F.linear(x, rearrange(W, "h d k -> (h k) d"), rearrange(b, "h k -> (h k)"))
        return rearrange(flat, "b p (h k) -> b p h k", h=W.shape[0])

    def forward(
        self,
        x: torch.Tensor,
        pos_offset: int = 0,
        kv_cache: Optional[KVCache] = None,
        key_mask: Optional[torch.Tensor] = None,
    ) -> torch.Tensor:
        """x [batch, pos, d_model] -> attention output [batch, pos, d_model].

        key_mask [batch, k_pos] (True = real token) masks padding keys.
        """
        cfg = self.cfg
        n_q = x.shape[1]
        q = self.hook_q(self._project(x, self.W_Q, self.b_Q))
        k = self.hook_k(self._project(x, self.W_K, self.b_K))
        v = self.hook_v(self._project(x, self.W_V, self.b_V))
        if cfg.positional == "rotary":
            cos = self.rotary_cos[pos_offset : pos_offset + n_q]
            sin = self.rotary_sin[pos_offset : pos_offset + n_q]
            q = self.hook_rot_q(rotate(q, cos, sin, cfg.rotary_dim))
            k = self.hook_rot_k(rotate(k, cos, sin, cfg.rotary_dim))
        if kv_cache is not None:
            k, v = kv_cache.extend(self.layer, k, v)
        n_k = k.shape[1]

        # allowed[b, q, k]: causal (key position <= query position) and not padding.
        allowed = None
        if key_mask is not None or n_q != n_k:
            q_pos = torch.arange(n_k - n_q, n_k, device=x.device)
            allowed = torch.arange(n_k, device=x.device)[None, :] <= q_pos[:, None]  # [q, k]
            if key_mask is not None:
                # A padding query may see no real key; let every query see itself so no row is empty.
                allowed = (allowed & key_mask[:, None, :].bool()) | (
                    torch.arange(n_k, device=x.device)[None, :] == q_pos[:, None]
                )
            allowed = allowed if allowed.dim() == 3 else allowed[None]

        return self._output(self._attend(q, k, v, allowed, causal=True))

    def _attend(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, allowed: Optional[torch.Tensor], causal: bool
    ) -> torch.Tensor:
        """q [batch, q_pos, head, d_head], k / v [batch, k_pos, kv_head, d_head] -> z [batch, q_pos, head, d_head].

        allowed [batch or 1, q_pos or 1, k_pos] (True = may attend), or None: causal
        attention if `causal`, else every key.
        """
        group = q.shape[2] // k.shape[2]
        if not (self.hook_attn_scores.has_hooks or self.hook_pattern.has_hooks):
            z = F.scaled_dot_product_attention(
                rearrange(q, "b p h k -> b h p k"),
                rearrange(k, "b p h k -> b h p k"),
                rearrange(v, "b p h k -> b h p k"),
                attn_mask=None if allowed is None else allowed[:, None],
                is_causal=causal and allowed is None,
                enable_gqa=group > 1,
            )
            return self.hook_z(rearrange(z, "b h p k -> b p h k"))
        if group > 1:  # query head i reads key/value head i // group
            k = torch.repeat_interleave(k, group, dim=2)
            v = torch.repeat_interleave(v, group, dim=2)
        scores = torch.einsum("bqhd,bkhd->bhqk", q, k) / math.sqrt(self.cfg.d_head)
        if allowed is None and causal:
            allowed = torch.ones(q.shape[1], k.shape[1], dtype=torch.bool, device=q.device).tril()[None]
        if allowed is not None:
            scores = scores.masked_fill(~allowed[:, None], float("-inf"))
        scores = self.hook_attn_scores(scores)  # [batch, head, q_pos, k_pos]
        pattern = self.hook_pattern(scores.softmax(dim=-1))
        return self.hook_z(torch.einsum("bhqk,bkhd->bqhd", pattern, v))

    def _output(self, z: torch.Tensor) -> torch.Tensor:
        """z [batch, pos, head, d_head] -> attention output [batch, pos, d_model] (hook_result when used)."""
        if self.use_attn_result or self.hook_result.has_hooks:
            result = self.hook_result(torch.einsum("bphk,hkd->bphd", z, self.W_O))
            return result.sum(dim=2) + self.b_O
        return F.linear(rearrange(z, "b p h k -> b p (h k)"), rearrange(self.W_O, "h k d -> d (h k)"), self.b_O)


# ============================================================ MLP
class MLP(nn.Module):
    """Key-value memory: neuron n has key W_in[:, n] (+ b_in[n]) and value W_out[n, :].

    Gated (SwiGLU): post = act(x W_gate) * (x W_in + b_in); hook_pre is the gate's
    pre-activation and hook_pre_linear the W_in projection, as in TransformerLens.
    """

    def __init__(self, cfg: TransformerConfig) -> None:
        super().__init__()
        d, m, dt = cfg.d_model, cfg.d_mlp, cfg.torch_dtype
        self.gated = cfg.gated_mlp
        self.act = ACTIVATIONS[cfg.act_fn]
        self.W_in = _param(d, m, dtype=dt, order=(1, 0))  # [d_model, d_mlp], stored as its transpose
        self.b_in = _param(m, dtype=dt)
        if self.gated:
            self.W_gate = _param(d, m, dtype=dt, order=(1, 0))
        self.W_out = _param(m, d, dtype=dt, order=(1, 0))  # [d_mlp, d_model]
        self.b_out = _param(d, dtype=dt)
        self.hook_pre = HookPoint()  # [batch, pos, d_mlp]
        if self.gated:
            self.hook_pre_linear = HookPoint()  # [batch, pos, d_mlp]
        self.hook_post = HookPoint()  # [batch, pos, d_mlp]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x [batch, pos, d_model] -> [batch, pos, d_model]; F.linear(x, W.T, b) is x @ W + b
        if self.gated:
            pre = self.hook_pre(F.linear(x, self.W_gate.T))
            pre_linear = self.hook_pre_linear(F.linear(x, self.W_in.T, self.b_in))
            post = self.hook_post(self.act(pre) * pre_linear)
        else:
            pre = self.hook_pre(F.linear(x, self.W_in.T, self.b_in))
            post = self.hook_post(self.act(pre))
        return F.linear(post, self.W_out.T, self.b_out)


# ============================================================ block
class TransformerBlock(nn.Module):
    def __init__(self, cfg: TransformerConfig, layer: int) -> None:
        super().__init__()
        self.cfg = cfg
        # Registered in the order a (pre-norm) forward pass visits them.
        self.hook_resid_pre = HookPoint()  # [batch, pos, d_model]
        self.ln1 = make_norm(cfg)
        self.attn = Attention(cfg, layer)
        self.hook_attn_out = HookPoint()  # [batch, pos, d_model]
        if not cfg.parallel_attn_mlp:
            self.hook_resid_mid = HookPoint()  # [batch, pos, d_model]
        self.ln2 = make_norm(cfg)
        self.mlp = MLP(cfg)
        self.hook_mlp_out = HookPoint()  # [batch, pos, d_model]
        self.hook_resid_post = HookPoint()  # [batch, pos, d_model]

    def forward(
        self,
        resid_pre: torch.Tensor,
        pos_offset: int = 0,
        kv_cache: Optional[KVCache] = None,
        key_mask: Optional[torch.Tensor] = None,
    ) -> torch.Tensor:
        resid_pre = self.hook_resid_pre(resid_pre)
        if self.cfg.norm_position == "post":  # 2017: x = norm(x + sublayer(x))
            attn_out = self.hook_attn_out(self.attn(resid_pre, pos_offset, kv_cache, key_mask))
            resid_mid = self.hook_resid_mid(self.ln1(resid_pre + attn_out))
            mlp_out = self.hook_mlp_out(self.mlp(resid_mid))
            return self.hook_resid_post(self.ln2(resid_mid + mlp_out))
        attn_out = self.hook_attn_out(self.attn(self.ln1(resid_pre), pos_offset, kv_cache, key_mask))
        if self.cfg.parallel_attn_mlp:  # GPT-NeoX: both read resid_pre
            mlp_out = self.hook_mlp_out(self.mlp(self.ln2(resid_pre)))
            return self.hook_resid_post(resid_pre + attn_out + mlp_out)
        resid_mid = self.hook_resid_mid(resid_pre + attn_out)
        mlp_out = self.hook_mlp_out(self.mlp(self.ln2(resid_mid)))
        return self.hook_resid_post(resid_mid + mlp_out)


# ============================================================ unembedding
class Unembed(nn.Module):
    """W_U [d_model, d_vocab] and b_U [d_vocab]. Tied: W_U is W_E^T, read through the
    embedding rather than stored twice."""

    def __init__(self, cfg: TransformerConfig, embed: Optional[Embed] = None) -> None:
        super().__init__()
        self._tied_to = [embed] if embed is not None else None  # a list hides it from nn.Module
        if embed is None:
            self.W_U = _param(cfg.d_model, cfg.d_vocab, dtype=cfg.torch_dtype, order=(1, 0))
        self.b_U = _param(cfg.d_vocab, dtype=cfg.torch_dtype)

    def __getattr__(self, name: str):
        if name == "W_U" and self.__dict__.get("_tied_to"):
            return self._tied_to[0].W_E.T
        return super().__getattr__(name)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # [batch, pos, d_model] -> [batch, pos, d_vocab]
        return F.linear(x, self.W_U.T, self.b_U)


# ============================================================ decoding
def check_sampling(temperature: float, top_k: Optional[int]) -> None:
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0, got {temperature}")
    if top_k is not None and top_k < 1:
        raise ValueError(f"top_k must be >= 1, got {top_k}")


def next_token(logits: torch.Tensor, temperature: float = 0.0, top_k: Optional[int] = None,
               generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """logits [batch, d_vocab] -> next token ids [batch]: the argmax when temperature is 0,
    else a sample from softmax(logits / temperature), restricted to the top_k tokens if given."""
    if temperature == 0:
        return logits.argmax(dim=-1)
    logits = logits / temperature
    if top_k is not None:
        kth = logits.topk(min(top_k, logits.shape[-1]), dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    return torch.multinomial(logits.softmax(dim=-1), 1, generator=generator)[:, 0]


# ============================================================ the model
class Transformer(HookedModule):
    """Decoder-only Transformer; see `TransformerConfig` for the choices.

    `model(input)` takes token ids [batch, pos] (or [pos]), a string or a list
    of strings, and returns logits [batch, pos, d_vocab].
    """

    def __init__(self, cfg: TransformerConfig, tokenizer: Optional[Tokenizer] = None) -> None:
        super().__init__()
        self.cfg = cfg
        self.tokenizer = tokenizer
        self.default_prepend_bos = True
        self.embed = Embed(cfg)
        self.hook_embed = HookPoint()  # [batch, pos, d_model]
        if cfg.positional == "learned":
            self.pos_embed = PosEmbed(cfg)
        elif cfg.positional == "sinusoidal":
            self.pos_embed = SinusoidalPosEmbed(cfg)
        if cfg.positional != "rotary":
            self.hook_pos_embed = HookPoint()  # [batch, pos, d_model]
        self.blocks = nn.ModuleList([TransformerBlock(cfg, layer) for layer in range(cfg.n_layers)])
        if cfg.final_norm:
            self.ln_final = make_norm(cfg)
        self.unembed = Unembed(cfg, self.embed if cfg.tie_embeddings else None)
        self.init_weights(cfg.seed)
        self.setup_hooks()

    # ------------------------------------------------------------ set-up
    def init_weights(self, seed: Optional[int] = None) -> None:
        """GPT-2's initialisation: N(0, 0.02), output projections scaled by 1/sqrt(2 n_layers).

        Norm weights are set to 1 and biases to 0.
        """
        gen = torch.Generator().manual_seed(seed) if seed is not None else None
        std = 0.02
        with torch.no_grad():
            for name, p in self.named_parameters():
                if name.endswith((".w",)):
                    p.fill_(1.0)
                elif name.split(".")[-1].startswith("b_") or name.endswith(".b"):
                    p.zero_()
                else:
                    s = std / math.sqrt(2 * self.cfg.n_layers) if name.endswith(("W_O", "W_out")) else std
                    p.copy_(torch.randn(p.shape, generator=gen, dtype=torch.float64).to(p.dtype) * s)

    def _is_opt_in(self, name: str) -> bool:
        return name.endswith("attn.hook_result")

    def _opt_in_enabled(self, name: str) -> bool:
        return self.blocks[0].attn.use_attn_result

    def set_use_attn_result(self, use: bool) -> None:
        """Compute per-head results (hook_result [batch, pos, head, d_model]) on every forward."""
        for block in self.blocks:
            block.attn.use_attn_result = use

    @property
    def device(self) -> torch.device:
        return self.embed.W_E.device

    @property
    def W_U(self) -> torch.Tensor:
        return self.unembed.W_U

    # ------------------------------------------------------------ tokens
    def _need_tokenizer(self) -> Tokenizer:
        if self.tokenizer is None:
            raise ValueError("this model has no tokenizer: pass token ids (a LongTensor [batch, pos]) instead of text")
        return self.tokenizer

    def to_tokens(self, input: Union[str, Sequence[str]], prepend_bos: Optional[bool] = None) -> torch.Tensor:
        """Text -> token ids [batch, pos]. Lists of texts of different lengths are padded on the right."""
        return self._tokenize(input, prepend_bos)[0]

    def _tokenize(
        self, input: Union[str, Sequence[str]], prepend_bos: Optional[bool] = None
    ) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        tok = self._need_tokenizer()
        texts = [input] if isinstance(input, str) else list(input)
        if not texts:
            raise ValueError("no text given")
        prepend_bos = self.default_prepend_bos if prepend_bos is None else prepend_bos
        bos = tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id
        if prepend_bos and bos is None:
            raise ValueError("prepend_bos=True but the tokenizer has no BOS (or EOS) token")
        ids = [([bos] if prepend_bos else []) + tok.encode(t) for t in texts]
        n = max(len(i) for i in ids)
        if n > self.cfg.n_ctx and self.cfg.positional != "rotary":
            raise ValueError(f"input has {n} tokens, more than the model's n_ctx={self.cfg.n_ctx}")
        pad = tok.pad_token_id if tok.pad_token_id is not None else 0
        tokens = torch.tensor([i + [pad] * (n - len(i)) for i in ids], dtype=torch.long, device=self.device)
        if all(len(i) == n for i in ids):
            return tokens, None
        mask = torch.tensor([[1] * len(i) + [0] * (n - len(i)) for i in ids], dtype=torch.long, device=self.device)
        return tokens, mask

    def to_str_tokens(self, input: Input, prepend_bos: Optional[bool] = None) -> Union[list[str], list[list[str]]]:
        """Each token as text: a list for one text or 1-D ids, a list of lists for a batch."""
        tok = self._need_tokenizer()
        if isinstance(input, str):
            input = self.to_tokens(input, prepend_bos)[0]
        elif not isinstance(input, torch.Tensor):
            return [self.to_str_tokens(t, prepend_bos) for t in input]
        if input.dim() == 2:
            return [[tok.token_str(int(t)) for t in row] for row in input]
        return [tok.token_str(int(t)) for t in input]

    def to_string(self, tokens: Union[torch.Tensor, Sequence[int]]) -> Union[str, list[str]]:
        tok = self._need_tokenizer()
        tokens = torch.as_tensor(tokens)
        if tokens.dim() == 2:
            return [tok.decode(row.tolist()) for row in tokens]
        return tok.decode(tokens.tolist())

    def to_single_token(self, word: str) -> int:
        """The id of `word` if it is exactly one token; a clear error otherwise."""
        ids = self._need_tokenizer().encode(word)
        if len(ids) != 1:
            pieces = [self.tokenizer.token_str(i) for i in ids]
            raise ValueError(f"{word!r} is not a single token: it splits into {len(ids)} tokens {pieces}")
        return ids[0]

    # ------------------------------------------------------------ forward
    def _as_tokens(
        self, input: Input, attention_mask: Optional[torch.Tensor]
    ) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        if isinstance(input, torch.Tensor):
            tokens = input[None] if input.dim() == 1 else input
            if tokens.dim() != 2 or tokens.dtype not in (torch.long, torch.int32, torch.int64):
                raise ValueError(f"token input must be an integer tensor [batch, pos], got {tuple(input.shape)} {input.dtype}")
            if tokens.numel() and (tokens.min() < 0 or tokens.max() >= self.cfg.d_vocab):
                raise ValueError(f"token ids must be in [0, {self.cfg.d_vocab}); got range [{int(tokens.min())}, {int(tokens.max())}]")
            return tokens.to(self.device), attention_mask
        tokens, mask = self._tokenize(input)
        return tokens, attention_mask if attention_mask is not None else mask

    def forward(
        self,
        input: Input,
        return_type: Optional[str] = "logits",
        attention_mask: Optional[torch.Tensor] = None,
        kv_cache: Optional[KVCache] = None,
        start_at_layer: Optional[int] = None,
        stop_at_layer: Optional[int] = None,
    ) -> Optional[torch.Tensor]:
        """Run the model.

        input: token ids [batch, pos], text, or a list of texts; with start_at_layer,
            the residual stream [batch, pos, d_model] entering that block.
        return_type: "logits" [batch, pos, d_vocab], "loss" (mean next-token loss),
            "both" (logits, loss) or None.
        attention_mask: [batch, pos], 1 for real tokens, 0 for padding keys.
        kv_cache: a `KVCache`; the new tokens are appended to it (for generation).
        stop_at_layer: return the residual stream entering that block instead.
        """
        if return_type not in ("logits", "loss", "both", None):
            raise ValueError(f"return_type must be 'logits', 'loss', 'both' or None, got {return_type!r}")
        pos_offset = kv_cache.n_pos if kv_cache is not None else 0
        if start_at_layer is None:
            tokens, attention_mask = self._as_tokens(input, attention_mask)
            batch, n_pos = tokens.shape
            if self.cfg.positional != "rotary" and pos_offset + n_pos > self.cfg.n_ctx:
                raise ValueError(f"{pos_offset + n_pos} positions exceed the model's n_ctx={self.cfg.n_ctx}")
            resid = self.hook_embed(self.embed(tokens))
            if self.cfg.positional != "rotary":
                pos = self.pos_embed(batch, n_pos, pos_offset)
                resid = resid + self.hook_pos_embed(pos.clone() if self.hook_pos_embed.has_hooks else pos)
        else:
            if return_type in ("loss", "both"):
                raise ValueError("return_type='loss' needs tokens, not a residual (start_at_layer)")
            tokens, resid = None, input
        if attention_mask is not None and kv_cache is not None:
            raise ValueError("attention_mask with a kv_cache is not supported: generate from unpadded prompts")
        key_mask = attention_mask.bool() if attention_mask is not None else None
        for block in self.blocks[start_at_layer or 0 : stop_at_layer]:
            resid = block(resid, pos_offset, kv_cache, key_mask)
        if stop_at_layer is not None:
            return resid
        if self.cfg.final_norm:
            resid = self.ln_final(resid)
        logits = self.unembed(resid)
        if return_type == "logits":
            return logits
        if return_type is None:
            return None
        loss = self._next_token_loss(logits, tokens, attention_mask)
        return loss if return_type == "loss" else (logits, loss)

    @staticmethod
    def _next_token_loss(
        logits: torch.Tensor, tokens: torch.Tensor, attention_mask: Optional[torch.Tensor], per_token: bool = False
    ) -> torch.Tensor:
        # Predict token t+1 from position t; padded targets are ignored.
        targets = tokens[:, 1:].clone()
        if attention_mask is not None:
            targets[attention_mask[:, 1:] == 0] = -100
        loss = F.cross_entropy(
            rearrange(logits[:, :-1], "b p v -> (b p) v"), rearrange(targets, "b p -> (b p)"),
            reduction="none" if per_token else "mean", ignore_index=-100,
        )
        return rearrange(loss, "(b p) -> b p", b=tokens.shape[0]) if per_token else loss

    def loss(self, input: Input, per_token: bool = False, attention_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Mean next-token cross-entropy (or per token, [batch, pos - 1])."""
        tokens, attention_mask = self._as_tokens(input, attention_mask)
        logits = self(tokens, attention_mask=attention_mask)
        return self._next_token_loss(logits, tokens, attention_mask, per_token)

    # ------------------------------------------------------------ generation
    @torch.no_grad()
    def generate(
        self,
        input: Input,
        max_new_tokens: int = 20,
        temperature: float = 0.0,
        top_k: Optional[int] = None,
        use_kv_cache: bool = True,
        stop_at_eos: bool = False,
        seed: Optional[int] = None,
    ) -> Union[str, list[str], torch.Tensor]:
        """Continue the input. temperature=0 is greedy; otherwise sample from
        softmax(logits / temperature), restricted to the top_k tokens if given.

        Returns text if given text, else tokens [batch, pos + new]. With
        use_kv_cache the keys and values of earlier positions are reused, which
        gives the same tokens as recomputing the whole prefix each step.
        """
        check_sampling(temperature, top_k)
        tokens, mask = self._as_tokens(input, None)
        if mask is not None:
            raise ValueError("generate() needs prompts of equal token length (no padding); generate them one by one")
        gen = torch.Generator(device=self.device).manual_seed(seed) if seed is not None else None
        eos = self.tokenizer.eos_token_id if self.tokenizer is not None else None
        cache = KVCache.empty(self.cfg.n_layers) if use_kv_cache else None
        finished = torch.zeros(tokens.shape[0], dtype=torch.bool, device=self.device)
        new_input = tokens
        for _ in range(max_new_tokens):
            logits = self(new_input if use_kv_cache else tokens, kv_cache=cache)[:, -1]
            next_tok = next_token(logits, temperature, top_k, gen)
            if stop_at_eos and eos is not None:
                next_tok = torch.where(finished, torch.full_like(next_tok, eos), next_tok)
                finished |= next_tok == eos
            tokens = torch.cat([tokens, next_tok[:, None]], dim=1)
            new_input = next_tok[:, None]
            if stop_at_eos and bool(finished.all()):
                break
        if isinstance(input, torch.Tensor):
            return tokens
        # Text in, text out: without the BOS token that tokenisation prepended.
        start = 1 if self.default_prepend_bos else 0
        texts = self.to_string(tokens[:, start:])
        return texts[0] if isinstance(input, str) else texts
