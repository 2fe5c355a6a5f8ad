"""TransformerConfig: every architectural choice of the decoder-only Transformer."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import torch

ACT_FNS = ("relu", "gelu", "gelu_new", "silu")
NORMS = ("layernorm", "rmsnorm")
NORM_POSITIONS = ("pre", "post")
POSITIONALS = ("learned", "sinusoidal", "rotary")
DTYPES = {"float32": torch.float32, "float64": torch.float64, "float16": torch.float16, "bfloat16": torch.bfloat16}


def dtype_name(dtype) -> str:
    """'float32' for torch.float32 or 'float32': how configs and checkpoints spell a dtype."""
    return str(dtype).removeprefix("torch.")


class JsonConfig:
    """to_dict / from_dict / save / load for configuration dataclasses (unknown fields are an error)."""

    runtime_fields: tuple[str, ...] = ()  # describe the live object, not the saved configuration

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        for name in self.runtime_fields:
            d.pop(name, None)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]):
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown {cls.__name__} fields: {unknown}")
        return cls(**d)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def load(cls, path: str | Path):
        return cls.from_dict(json.loads(Path(path).read_text()))


@dataclass
class TransformerConfig(JsonConfig):
    """Shape and choices of a decoder-only Transformer.

    Defaults describe a GPT-2-style model (learned positions, pre-LayerNorm,
    GELU MLP with d_mlp = 4 d_model, tied embeddings). `d_head` defaults to
    d_model // n_heads, `d_mlp` to 4 d_model, `n_kv_heads` to n_heads,
    `rotary_dim` to d_head.

    `Transformer(cfg)` keeps its own copy (`model.cfg`): building, moving or converting a
    model never changes the object you passed, and two models never share one.
    """

    n_layers: int
    d_model: int
    n_heads: int
    d_vocab: int
    n_ctx: int = 1024
    d_head: Optional[int] = None
    n_kv_heads: Optional[int] = None  # < n_heads: grouped-query attention
    d_mlp: Optional[int] = None
    act_fn: str = "gelu_new"
    gated_mlp: bool = False  # Llama's SwiGLU: act(x W_gate) * (x W_in)
    norm: str = "layernorm"
    norm_position: str = "pre"  # "post": norm after each residual add (2017)
    final_norm: bool = True  # ln_final before the unembedding
    positional: str = "learned"
    rotary_dim: Optional[int] = None  # rotary on the first rotary_dim dims of each head
    rotary_base: float = 10000.0
    parallel_attn_mlp: bool = False  # GPT-NeoX / GPT-J: attn and MLP both read resid_pre
    attn_only: bool = False  # blocks without MLPs: resid_post = resid_pre + attn_out
    tie_embeddings: bool = True  # W_U = W_E^T
    scale_embeddings: bool = False  # multiply token embeddings by sqrt(d_model) (2017)
    norm_eps: float = 1e-5
    dtype: str = "float32"  # a model's own copy follows its weights (.double(), .to(torch.bfloat16), ...)
    seed: Optional[int] = None  # for the random initialisation (a local generator)
    device: Optional[str] = None  # where the weights go; a model's own copy follows them (not saved)

    runtime_fields = ("device",)

    def __post_init__(self) -> None:
        if isinstance(self.dtype, torch.dtype):
            self.dtype = dtype_name(self.dtype)
        if self.d_head is None:
            if self.d_model % self.n_heads:
                raise ValueError(
                    f"d_model={self.d_model} is not divisible by n_heads={self.n_heads}: give d_head explicitly"
                )
            self.d_head = self.d_model // self.n_heads
        if self.n_kv_heads is None:
            self.n_kv_heads = self.n_heads
        if self.d_mlp is None:
            self.d_mlp = 4 * self.d_model
        if self.rotary_dim is None and self.positional == "rotary":
            self.rotary_dim = self.d_head
        for field, value, allowed in [
            ("act_fn", self.act_fn, ACT_FNS),
            ("norm", self.norm, NORMS),
            ("norm_position", self.norm_position, NORM_POSITIONS),
            ("positional", self.positional, POSITIONALS),
            ("dtype", self.dtype, tuple(DTYPES)),
        ]:
            if value not in allowed:
                raise ValueError(f"{field}={value!r} is not one of {allowed}")
        for field in ("n_layers", "d_model", "n_heads", "d_vocab", "n_ctx", "d_head", "n_kv_heads", "d_mlp"):
            if getattr(self, field) <= 0:
                raise ValueError(f"{field} must be positive, got {getattr(self, field)}")
        if self.n_heads % self.n_kv_heads:
            raise ValueError(f"n_heads={self.n_heads} must be a multiple of n_kv_heads={self.n_kv_heads}")
        if self.positional == "rotary" and (self.rotary_dim % 2 or not 0 < self.rotary_dim <= self.d_head):
            raise ValueError(f"rotary_dim={self.rotary_dim} must be even and in (0, d_head={self.d_head}]")
        if self.attn_only and (self.parallel_attn_mlp or self.norm_position == "post"):
            raise ValueError("attn_only blocks are pre-norm and sequential (no parallel_attn_mlp, no post-norm)")
        if self.parallel_attn_mlp and self.norm_position == "post":
            raise ValueError("parallel_attn_mlp is only defined for pre-norm blocks")

    @property
    def torch_dtype(self) -> torch.dtype:
        return DTYPES[self.dtype]

    # ------------------------------------------------------------ presets
    @classmethod
    def transformer_2017(cls, d_vocab: int, n_layers: int = 6, d_model: int = 512, n_heads: int = 8,
                         n_ctx: int = 512, **overrides: Any) -> "TransformerConfig":
        """The decoder of "Attention Is All You Need" (Vaswani et al. 2017), as a language model.

        Sinusoidal positions, embeddings scaled by sqrt(d_model), scaled
        dot-product attention with a causal mask, ReLU FFN with d_ff = 4 d_model,
        residual + LayerNorm after each sub-layer (post-norm, no final norm).
        """
        kw: dict[str, Any] = dict(
            n_layers=n_layers, d_model=d_model, n_heads=n_heads, d_vocab=d_vocab, n_ctx=n_ctx,
            d_mlp=4 * d_model, act_fn="relu", norm="layernorm", norm_position="post", final_norm=False,
            positional="sinusoidal", scale_embeddings=True, tie_embeddings=True, norm_eps=1e-5,
        )
        kw.update(overrides)
        return cls(**kw)

