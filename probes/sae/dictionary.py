"""Sparse dictionaries: a sparse autoencoder (SAE) reconstructs an activation from a few
features; a transcoder maps an MLP's input to its output through a few features (a wide,
sparse key-value memory: encoder rows are keys, decoder rows are values).

    sae = SparseDictionary.sae(d_model, 2048, hook="blocks.1.hook_resid_pre", activation="topk", k=32)
    tc = SparseDictionary.transcoder(model, layer=1, n_features=2048, activation="topk", k=16)
    f = tc.encode(x)          # [..., n_features] feature activations
    y = tc.decode(f)          # [..., d_out]
    y = tc(x)                 # decode(encode(x)) (+ the skip connection x W_skip, if any)

Encoding: f = act((x - b_pre) W_enc + b_enc), with act one of
  "relu"      ReLU (trained with an L1 penalty on f times the decoder row norms),
  "topk"      the k largest pre-activations of each row kept (after a ReLU), the rest 0,
  "batchtopk" the k x batch largest of the whole batch kept while training; at inference a
              learned threshold (the running mean of the smallest kept value) replaces it,
  "jumprelu"  pre * (pre > threshold[f]), one threshold per feature (circuit-tracer's and
              GemmaScope's JumpReLU, read from their files; not trained here). No ReLU: a
              negative threshold lets negative pre-activations through, as there.
Decoding: y = f W_dec + b_dec (+ x W_skip). Decoder rows are kept at unit norm. For an SAE
b_pre is b_dec (the usual tied pre-encoder bias); a transcoder has its own b_pre.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Optional

import torch
from torch import nn

from interp import names as hook_names
from interp.checks import resolve_layer
from models import Transformer
from models.config import dtype_name

ACTIVATIONS = ("relu", "topk", "batchtopk")  # what can be trained
READ_ACTIVATIONS = ACTIVATIONS + ("jumprelu",)  # jumprelu: read from other formats only


@dataclass
class DictionaryConfig:
    d_in: int
    d_out: int
    n_features: int
    activation: str = "topk"
    k: int = 32
    skip: bool = False  # transcoders: a linear skip connection x W_skip
    in_hook: str = ""  # the hook the dictionary reads
    out_hook: str = ""  # the hook whose activation it reconstructs (== in_hook for an SAE)
    kind: str = "sae"  # "sae" or "transcoder"
    dtype: str = "float32"
    seed: int = 0

    def __post_init__(self) -> None:
        if self.activation not in READ_ACTIVATIONS:
            raise ValueError(f"activation must be one of {READ_ACTIVATIONS}, got {self.activation!r}")
        if self.kind not in ("sae", "transcoder"):
            raise ValueError(f"kind must be 'sae' or 'transcoder', got {self.kind!r}")
        if self.kind == "sae" and (self.d_in != self.d_out or self.skip):
            raise ValueError("an SAE reconstructs its input: d_in == d_out and no skip connection")
        if min(self.d_in, self.d_out, self.n_features) < 1 or (self.activation != "relu" and not
                                                               1 <= self.k <= self.n_features):
            raise ValueError(f"sizes must be positive and 1 <= k <= n_features, got {asdict(self)}")

    def to_dict(self) -> dict:
        return asdict(self)


def sparse_activation(pre: torch.Tensor, activation: str, k: int, threshold: torch.Tensor,
                      training: bool = False) -> torch.Tensor:
    """Feature activations [..., n_features] from pre-activations [..., n_features]: "relu",
    "topk" (the k largest after a ReLU) or "batchtopk" (see the module docstring). `threshold` is
    a 0-d tensor, batchtopk's inference threshold, updated in place while training (the running
    mean of the smallest kept value); "jumprelu" keeps pre where pre > threshold (a threshold
    per feature, [n_features]); others ignore it."""
    if activation == "jumprelu":
        if training:
            raise ValueError("jumprelu dictionaries are read from other formats (circuit-tracer, GemmaScope), not "
                             "trained here: their per-feature thresholds are not learned")
        return pre * (pre > threshold)
    acts = torch.relu(pre)
    if activation == "relu":
        return acts
    if activation == "topk":
        top = acts.topk(k, dim=-1)
        return torch.zeros_like(acts).scatter(-1, top.indices, top.values)
    if activation != "batchtopk":
        raise ValueError(f"activation must be one of {ACTIVATIONS}, got {activation!r}")
    if training:
        flat = acts.reshape(-1)
        n_keep = k * (flat.numel() // acts.shape[-1])
        top = flat.topk(n_keep)
        kept = torch.zeros_like(flat).scatter(0, top.indices, top.values).reshape(acts.shape)
        with torch.no_grad():  # the running threshold used at inference
            smallest = top.values[-1].detach()
            if threshold > 0:
                threshold.mul_(0.99).add_(0.01 * smallest)
            else:
                threshold.copy_(smallest)
        return kept
    return acts * (acts > threshold)


class SparseDictionary(nn.Module):
    def __init__(self, cfg: DictionaryConfig) -> None:
        super().__init__()
        self.cfg = cfg
        dtype = getattr(torch, cfg.dtype)
        # Made on the CPU from a CPU generator, so a seed gives the same weights whatever the device;
        # the constructors that know a model (`transcoder`) put them on its device.
        cpu = torch.device("cpu")
        g = torch.Generator(device=cpu).manual_seed(cfg.seed)
        W_dec = torch.randn(cfg.n_features, cfg.d_out, generator=g, dtype=torch.float64, device=cpu)
        W_dec = W_dec / W_dec.norm(dim=-1, keepdim=True)
        self.W_dec = nn.Parameter(W_dec.to(dtype))
        # The encoder starts as 0.1 x the decoder's transpose where the shapes allow (as is usual), else random.
        if cfg.d_in == cfg.d_out:
            W_enc = 0.1 * W_dec.T
        else:
            W_enc = torch.randn(cfg.d_in, cfg.n_features, generator=g, dtype=torch.float64, device=cpu)
            W_enc = W_enc / cfg.d_in ** 0.5
        self.W_enc = nn.Parameter(W_enc.to(dtype))
        self.b_enc = nn.Parameter(torch.zeros(cfg.n_features, dtype=dtype, device=cpu))
        self.b_dec = nn.Parameter(torch.zeros(cfg.d_out, dtype=dtype, device=cpu))
        self.b_pre = nn.Parameter(torch.zeros(cfg.d_in, dtype=dtype, device=cpu)) if cfg.kind == "transcoder" else None
        self.W_skip = nn.Parameter(torch.zeros(cfg.d_in, cfg.d_out, dtype=dtype, device=cpu)) if cfg.skip else None
        # batchtopk at inference: one threshold; jumprelu: one per feature
        shape = (cfg.n_features,) if cfg.activation == "jumprelu" else ()
        self.register_buffer("threshold", torch.zeros(shape, dtype=dtype, device=cpu))

    # ------------------------------------------------------------ constructors
    @classmethod
    def sae(cls, d: int, n_features: int, *, hook: str, **options: Any) -> "SparseDictionary":
        """An SAE of width `n_features` reconstructing the [..., d] activation at `hook`."""
        return cls(DictionaryConfig(d, d, n_features, in_hook=hook, out_hook=hook, kind="sae", **options))

    @classmethod
    def transcoder(cls, model: Transformer, layer: int, n_features: int, *, in_hook: Optional[str] = None,
                   **options: Any) -> "SparseDictionary":
        """A transcoder for MLP `layer` of `model`: from the MLP's normalised input
        (blocks.{layer}.ln2.hook_normalized, or `in_hook`) to blocks.{layer}.hook_mlp_out, in
        the dtype of the model's weights (unless `dtype=` is given), on the model's device."""
        layer = resolve_layer(layer, model.cfg.n_layers)
        in_hook = in_hook or hook_names.act_name("normalized", layer, "ln2")
        d = model.cfg.d_model
        options.setdefault("dtype", dtype_name(model.W_E.dtype))
        return cls(DictionaryConfig(d, d, n_features, in_hook=in_hook, out_hook=hook_names.act_name("mlp_out", layer),
                                    kind="transcoder", **options)).to(model.W_E.device)

    # ------------------------------------------------------------ the maps
    @property
    def pre_bias(self) -> torch.Tensor:
        return self.b_pre if self.b_pre is not None else self.b_dec

    def folded_b_enc(self) -> torch.Tensor:
        """[n_features] b_enc - pre_bias @ W_enc (computed in float64, in the weights' dtype): the
        encoder bias of formats without a pre-encoder bias, x @ W_enc + folded == pre_acts(x)."""
        W = self.W_enc.detach()
        return (self.b_enc.detach().double() - self.pre_bias.detach().double() @ W.double()).to(W.dtype)

    def pre_acts(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.pre_bias) @ self.W_enc + self.b_enc

    def activate(self, pre: torch.Tensor, training: bool = False) -> torch.Tensor:
        """Feature activations from pre-activations [..., n_features] (`sparse_activation`)."""
        return sparse_activation(pre, self.cfg.activation, self.cfg.k, self.threshold, training)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """x [..., d_in] -> feature activations [..., n_features]."""
        return self.activate(self.pre_acts(x.to(self.W_enc.dtype)))

    def decode(self, f: torch.Tensor, x: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Feature activations -> [..., d_out] (plus the skip path when `x` is given)."""
        y = f @ self.W_dec + self.b_dec
        if self.W_skip is not None:
            if x is None:
                raise ValueError("this transcoder has a skip connection: decode(f, x) needs its input x")
            y = y + x.to(self.W_skip.dtype) @ self.W_skip
        return y

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x), x)

    @torch.no_grad()
    def normalise_decoder(self) -> None:
        """Decoder rows back to unit norm (after an optimiser step)."""
        self.W_dec.div_(self.W_dec.norm(dim=-1, keepdim=True).clamp_min(1e-12))

    @property
    def in_hook(self) -> str:
        return self.cfg.in_hook

    @property
    def out_hook(self) -> str:
        return self.cfg.out_hook


__all__ = ["SparseDictionary", "DictionaryConfig", "ACTIVATIONS", "READ_ACTIVATIONS", "sparse_activation"]
