"""The Transformer's components, one class each, with a hook point at every activation.

Weights are named and shaped as in TransformerLens (`attn.W_Q` is [n_heads,
d_model, d_head], `mlp.W_in` [d_model, d_mlp]), so a neuron's key is
`mlp.W_in[:, n]` and its value `mlp.W_out[n, :]`. They are ordinary contiguous
tensors, except five that are stored in the layout their matrix multiply is fastest
in, and read through a transposing view: W_Q, W_K and W_V (stored [d_model, n_heads,
d_head], so one multiply projects every head) and W_in and W_gate (stored [d_mlp,
d_model], nn.Linear's layout: 1.5x faster than [d_model, d_mlp] for a few tokens on
a CPU). For those five `.reshape` and `.contiguous()` work, `.view` raises, and
in-place writes change the model. (Measured: W_O, W_out and W_U are as fast
contiguous as transposed.)

Speed: with no hook on the attention scores or pattern, attention runs through
PyTorch's fused `scaled_dot_product_attention`, and LayerNorm through its fused
kernel when its scale is not hooked; hooking those sites switches the component
to the explicit computation, which is what the hooks then see. Reshapes in the
forward passes are torch view operations (with the einops pattern they perform
in a comment): they run on every call, where einops' parsing would cost a third
of a small model's forward.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from interp.hooks import HookPoint
from models.config import TransformerConfig


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
    """Multi-head (or grouped-query) attention with hooks on q, k, v, scores, pattern, z and
    per-head results. Causal by default; `NonCausalAttention` (encoder, cross-attention)
    shares everything but the mask."""

    def __init__(self, cfg: TransformerConfig, layer: int) -> None:
        super().__init__()
        self.cfg, self.layer = cfg, layer
        h, kv, d, dh, dt = cfg.n_heads, cfg.n_kv_heads, cfg.d_model, cfg.d_head, cfg.torch_dtype
        self.W_Q = _param(h, d, dh, dtype=dt, order=(1, 0, 2))  # [n_heads, d_model, d_head], a view (see above)
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
        # Key/value hooks tell a site writing them how many query heads share each of their heads.
        for hook in (self.hook_k, self.hook_v) + ((self.hook_rot_k,) if cfg.positional == "rotary" else ()):
            hook.heads_per_kv = h // kv
        self.hook_attn_scores = HookPoint()  # [batch, head, q_pos, k_pos], scaled, masked with -inf
        self.hook_pattern = HookPoint()  # [batch, head, q_pos, k_pos]
        self.hook_z = HookPoint()  # [batch, pos, head, d_head]
        self.hook_result = HookPoint()  # [batch, pos, head, d_model], opt-in
        self.use_attn_result = False

    @staticmethod
    def _project(x: torch.Tensor, W: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """x [batch, pos, d_model], W [head, d_model, d_head] -> [batch, pos, head, d_head]."""
        h, d, k = W.shape
        flat = F.linear(x, W.permute(0, 2, 1).reshape(h * k, d), b.reshape(h * k))  # W: "h d k -> (h k) d"
        return flat.unflatten(-1, (h, k))  # "b p (h k) -> b p h k"

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
                q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),  # "b p h k -> b h p k"
                attn_mask=None if allowed is None else allowed[:, None],
                is_causal=causal and allowed is None,
                enable_gqa=group > 1,
            )
            return self.hook_z(z.transpose(1, 2))  # "b h p k -> b p h k"
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
        h, k, d = self.W_O.shape
        # z: "b p h k -> b p (h k)"; W_O: "h k d -> (h k) d"
        return F.linear(z.reshape(*z.shape[:2], h * k), self.W_O.reshape(h * k, d).T, self.b_O)


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
        self.W_in = _param(d, m, dtype=dt, order=(1, 0))  # [d_model, d_mlp], a view of [d_mlp, d_model] storage
        self.b_in = _param(m, dtype=dt)
        if self.gated:
            self.W_gate = _param(d, m, dtype=dt, order=(1, 0))
        self.W_out = _param(m, d, dtype=dt)  # [d_mlp, d_model]
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
        if not cfg.attn_only:
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
        if self.cfg.attn_only:
            return self.hook_resid_post(resid_pre + attn_out)
        if self.cfg.parallel_attn_mlp:  # GPT-NeoX: both read resid_pre
            mlp_out = self.hook_mlp_out(self.mlp(self.ln2(resid_pre)))
            return self.hook_resid_post(resid_pre + attn_out + mlp_out)
        resid_mid = self.hook_resid_mid(resid_pre + attn_out)
        mlp_out = self.hook_mlp_out(self.mlp(self.ln2(resid_mid)))
        return self.hook_resid_post(resid_mid + mlp_out)


# ============================================================ unembedding
class Unembed(nn.Module):
    """W_U [d_model, d_vocab] and b_U [d_vocab]. Tied: W_U is W_E^T, read through the
    embedding rather than stored twice (so a tied W_U is a transposed view of W_E)."""

    def __init__(self, cfg: TransformerConfig, embed: Optional[Embed] = None) -> None:
        super().__init__()
        self._tied_to = [embed] if embed is not None else None  # a list hides it from nn.Module
        if embed is None:
            self.W_U = _param(cfg.d_model, cfg.d_vocab, dtype=cfg.torch_dtype)
        self.b_U = _param(cfg.d_vocab, dtype=cfg.torch_dtype)

    def __getattr__(self, name: str):
        if name == "W_U" and self.__dict__.get("_tied_to"):
            return self._tied_to[0].W_E.T
        return super().__getattr__(name)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # [batch, pos, d_model] -> [batch, pos, d_vocab]
        return F.linear(x, self.W_U.T, self.b_U)


__all__ = ["Embed", "PosEmbed", "SinusoidalPosEmbed", "LayerNorm", "RMSNorm", "make_norm", "KVCache", "rotate",
           "Attention", "MLP", "TransformerBlock", "Unembed", "ACTIVATIONS"]
