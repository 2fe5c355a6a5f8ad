"""A cross-layer transcoder (CLT; Ameisen et al. 2025): per layer l an encoder reading MLP l's
input, whose features write to MLP l's output and to every later MLP's output.

    clt = CrossLayerTranscoder.for_model(model, n_features=512, activation="topk", k=32)
    f = clt.encode(x)         # x [..., n_layers, d_model] (MLP inputs) -> [..., n_layers, n_features]
    y = clt.decode(f)         # [..., n_layers, d_model]: the reconstruction of every MLP's output
    clt.decoder(0, 2)         # [n_features, d_model] W_dec[0 -> 2]

Encoding, per layer l: f_l = act((x_l - b_pre[l]) W_enc[l] + b_enc[l]), act as for
`SparseDictionary` ("relu", "topk", "batchtopk", and "jumprelu" with a threshold per feature,
read from circuit-tracer's files only: `probes.sae.dictionary.sparse_activation`).
Decoding: MLP l' output = sum_{l <= l'} f_l W_dec[l -> l'] + b_dec[l']. The decoders of source
layer l are one tensor W_dec[l] [n_layers - l, n_features, d_model] (row t is the decoder to
layer l + t), so nothing is stored for the l' < l pairs. Each feature's decoders, concatenated
over its output layers, are kept at unit norm.

Per-layer transcoders are the special case whose decoders reach only their own layer:
`PerLayerTranscoders` gives a list of them the same layered interface (`pre_acts(x, layer)`,
`activate(pre, layer)`, `encoder(layer)`, `decoders(layer)`, `skip(layer, x)`, `output(layer,
acts, xs)`, `in_hooks`, `out_hooks`), and `as_cross_layer` turns either into that interface,
so splicing, evaluation and attribution graphs have one code path for both.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Mapping, Optional, Sequence, Union

import torch
from einops import einsum
from torch import nn

from interp import names as hook_names
from models import Transformer
from models.config import dtype_name
from probes.sae.dictionary import READ_ACTIVATIONS, SparseDictionary, sparse_activation


@dataclass
class CLTConfig:
    """n_layers source (and output) layers, d_model, n_features per layer; in_hooks / out_hooks
    per layer (default blocks.{l}.ln2.hook_normalized -> blocks.{l}.hook_mlp_out)."""

    n_layers: int
    d_model: int
    n_features: int
    activation: str = "topk"
    k: int = 32
    in_hooks: list[str] = field(default_factory=list)
    out_hooks: list[str] = field(default_factory=list)
    dtype: str = "float32"
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("n_layers", "d_model", "n_features", "k", "seed"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise TypeError(f"{name} must be an int, got {value!r}")
        if self.activation not in READ_ACTIVATIONS:
            raise ValueError(f"activation must be one of {READ_ACTIVATIONS}, got {self.activation!r}")
        if min(self.n_layers, self.d_model, self.n_features) < 1 or (
                self.activation != "relu" and not 1 <= self.k <= self.n_features):
            raise ValueError(f"sizes must be positive and 1 <= k <= n_features, got {asdict(self)}")
        if not self.in_hooks:
            self.in_hooks = [hook_names.act_name("normalized", l, "ln2") for l in range(self.n_layers)]
        if not self.out_hooks:
            self.out_hooks = [hook_names.act_name("mlp_out", l) for l in range(self.n_layers)]
        for name in ("in_hooks", "out_hooks"):
            hooks = getattr(self, name)
            if not isinstance(hooks, list) or len(hooks) != self.n_layers or not all(isinstance(h, str) for h in hooks):
                raise ValueError(f"{name} must be a list of {self.n_layers} hook names, one per layer; got {hooks!r}")
        if self.dtype not in ("float16", "bfloat16", "float32", "float64"):
            raise ValueError(f"dtype must be a floating dtype name, got {self.dtype!r}")

    def to_dict(self) -> dict:
        return asdict(self)


class CrossLayerTranscoder(nn.Module):
    """See the module docstring. Parameters: W_enc [n_layers, d_model, n_features], b_enc
    [n_layers, n_features], b_pre [n_layers, d_model], W_dec[l] [n_layers - l, n_features,
    d_model], b_dec [n_layers, d_model]; buffer threshold [n_layers] (batchtopk at inference; for
    jumprelu [n_layers, n_features], one per feature)."""

    def __init__(self, cfg: CLTConfig) -> None:
        super().__init__()
        self.cfg = cfg
        L, d, F = cfg.n_layers, cfg.d_model, cfg.n_features
        dtype = getattr(torch, cfg.dtype)
        cpu = torch.device("cpu")  # a CPU generator: the same weights for a seed on every device (for_model moves them)
        g = torch.Generator(device=cpu).manual_seed(cfg.seed)
        decoders = []
        for l in range(L):
            W = torch.randn(L - l, F, d, generator=g, dtype=torch.float64, device=cpu)
            decoders.append(W / _feature_norms(W)[None, :, None])
        self.W_dec = nn.ParameterList([nn.Parameter(W.to(dtype)) for W in decoders])
        # Each encoder starts as 0.1 x the transpose of the feature's decoder to its own layer.
        W_enc = torch.stack([0.1 * W[0].T / W[0].norm(dim=-1) for W in decoders])
        self.W_enc = nn.Parameter(W_enc.to(dtype))
        self.b_enc = nn.Parameter(torch.zeros(L, F, dtype=dtype, device=cpu))
        self.b_pre = nn.Parameter(torch.zeros(L, d, dtype=dtype, device=cpu))
        self.b_dec = nn.Parameter(torch.zeros(L, d, dtype=dtype, device=cpu))
        shape = (L, F) if cfg.activation == "jumprelu" else (L,)
        self.register_buffer("threshold", torch.zeros(shape, dtype=dtype, device=cpu))

    @classmethod
    def for_model(cls, model: Transformer, n_features: int, **options: Any) -> "CrossLayerTranscoder":
        """A CLT for every MLP of `model` (blocks.{l}.ln2.hook_normalized -> every
        blocks.{l'}.hook_mlp_out, l' >= l), in the dtype of the model's weights unless `dtype=`, on
        the model's device."""
        if model.cfg.attn_only:
            raise ValueError("the model is attention-only: it has no MLPs for a transcoder")
        options.setdefault("dtype", dtype_name(model.W_E.dtype))
        return cls(CLTConfig(model.cfg.n_layers, model.cfg.d_model, n_features, **options)).to(model.W_E.device)

    # ------------------------------------------------------------ sizes and names
    @property
    def n_layers(self) -> int:
        return self.cfg.n_layers

    @property
    def in_hooks(self) -> list[str]:
        return list(self.cfg.in_hooks)

    @property
    def out_hooks(self) -> list[str]:
        return list(self.cfg.out_hooks)

    @property
    def torch_modules(self) -> list[nn.Module]:
        """The modules holding the parameters (for `frozen_parameters`)."""
        return [self]

    def n_features(self, layer: int) -> int:
        self._check_layer(layer)
        return self.cfg.n_features

    def decoder(self, source: int, target: int) -> torch.Tensor:
        """[n_features, d_model] W_dec[source -> target] (target >= source)."""
        self._check_layer(source)
        self._check_layer(target)
        if target < source:
            raise ValueError(f"a feature of layer {source} writes only to layers {source}..{self.n_layers - 1}, "
                             f"not to layer {target}")
        return self.W_dec[source][target - source]

    def decoders(self, layer: int) -> torch.Tensor:
        """[n_layers - layer, n_features, d_model] the decoders of `layer`'s features to layers
        layer, layer + 1, ... (the layered interface; a per-layer transcoder has one row)."""
        self._check_layer(layer)
        return self.W_dec[layer]

    def encoder(self, layer: int) -> torch.Tensor:
        """[d_model, n_features] the encoder of `layer`."""
        self._check_layer(layer)
        return self.W_enc[layer]

    def describe(self) -> list[str]:
        """One line per source layer: "blocks.0.ln2.hook_normalized -> blocks.0..3 mlp_out (512 topk k=32, cross-layer)"."""
        c = self.cfg
        kind = c.activation + (f" k={c.k}" if c.activation != "relu" else "")
        return [f"{c.in_hooks[l]} -> {c.out_hooks[l]} .. {c.out_hooks[-1]} ({c.n_features} {kind}, cross-layer)"
                for l in range(c.n_layers)]

    # ------------------------------------------------------------ the layered interface
    def pre_acts(self, x: torch.Tensor, layer: Optional[int] = None) -> torch.Tensor:
        """Pre-activations: x [..., d_model] of `layer` -> [..., n_features]; without a layer,
        x [..., n_layers, d_model] -> [..., n_layers, n_features]."""
        x = x.to(self.W_enc.dtype)
        if layer is not None:
            self._check_layer(layer)
            return (x - self.b_pre[layer]) @ self.W_enc[layer] + self.b_enc[layer]
        self._check_stacked(x, "x")
        return einsum(x - self.b_pre, self.W_enc, "... l d, l d f -> ... l f") + self.b_enc

    def activate(self, pre: torch.Tensor, layer: Optional[int] = None, training: bool = False) -> torch.Tensor:
        """Feature activations from pre-activations ([..., n_features] of `layer`, or [...,
        n_layers, n_features] without a layer); TopK keeps k per layer and token."""
        c = self.cfg
        if layer is not None:
            self._check_layer(layer)
            return sparse_activation(pre, c.activation, c.k, self.threshold[layer], training)
        if pre.dim() < 2 or pre.shape[-2] != c.n_layers:
            raise ValueError(f"pre-activations must be [..., n_layers={c.n_layers}, n_features], got {tuple(pre.shape)}")
        return torch.stack([sparse_activation(pre[..., l, :], c.activation, c.k, self.threshold[l], training)
                            for l in range(c.n_layers)], dim=-2)

    def skip(self, layer: int, x: torch.Tensor) -> Optional[torch.Tensor]:
        """A CLT has no skip connection: None."""
        return None

    def output(self, layer: int, acts: Union[Sequence[torch.Tensor], Mapping[int, torch.Tensor]],
               xs: Optional[Any] = None) -> torch.Tensor:
        """[..., d_model] the reconstruction of MLP `layer`'s output, sum_{l <= layer} acts[l]
        W_dec[l -> layer] + b_dec[layer], from the feature activations `acts[l]` `[..., n_features]`
        of every layer up to `layer` (a list or {layer: tensor}); xs (the inputs) is unused."""
        self._check_layer(layer)
        out = self.b_dec[layer]
        for l in range(layer + 1):
            out = out + acts[l].to(self.W_enc.dtype) @ self.W_dec[l][layer - l]
        return out

    # ------------------------------------------------------------ the stacked maps
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """x [..., n_layers, d_model] -> feature activations [..., n_layers, n_features]."""
        return self.activate(self.pre_acts(x))

    def decode(self, f: torch.Tensor) -> torch.Tensor:
        """f [..., n_layers, n_features] -> [..., n_layers, d_model], every MLP output's reconstruction."""
        self._check_stacked(f, "f", self.cfg.n_features)
        f = f.to(self.W_enc.dtype)
        outs = [self.b_dec.expand(*f.shape[:-1], -1)]
        for l in range(self.n_layers):
            written = einsum(f[..., l, :], self.W_dec[l], "... f, t f d -> ... t d")  # to layers l..
            outs.append(nn.functional.pad(written, (0, 0, l, 0)))  # zero rows for the layers before l
        return torch.stack(outs).sum(0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x))

    @torch.no_grad()
    def normalise_decoder(self) -> None:
        """Each feature's decoders (over its output layers) back to unit norm (after an optimiser step)."""
        for W in self.W_dec:
            W.div_(_feature_norms(W).clamp_min(1e-12)[None, :, None])

    # ------------------------------------------------------------ checks
    def _check_layer(self, layer: int) -> None:
        if isinstance(layer, bool) or not isinstance(layer, int) or not 0 <= layer < self.n_layers:
            raise IndexError(f"layer must be an int in [0, {self.n_layers}), got {layer!r}")

    def _check_stacked(self, t: torch.Tensor, name: str, last: Optional[int] = None) -> None:
        last = self.cfg.d_model if last is None else last
        if t.dim() < 2 or tuple(t.shape[-2:]) != (self.n_layers, last):
            raise ValueError(f"{name} must be [..., n_layers={self.n_layers}, {last}], got {tuple(t.shape)}")


def _feature_norms(W: torch.Tensor) -> torch.Tensor:
    """[n_features] the norm of each feature's decoders W [n_out, n_features, d_model] over
    (output layer, d_model)."""
    return W.pow(2).sum(dim=(0, 2)).sqrt()


class PerLayerTranscoders:
    """Per-layer transcoders (one SparseDictionary per layer, in layer order) seen through the
    CLT's layered interface: the decoders of layer l reach only layer l (`decoders(l)` is
    W_dec[None]), and a transcoder's skip connection is its `skip`."""

    def __init__(self, transcoders: Sequence[SparseDictionary]) -> None:
        self.transcoders = list(transcoders)

    def __len__(self) -> int:
        return len(self.transcoders)

    @property
    def n_layers(self) -> int:
        return len(self.transcoders)

    @property
    def in_hooks(self) -> list[str]:
        return [tc.in_hook for tc in self.transcoders]

    @property
    def out_hooks(self) -> list[str]:
        return [tc.out_hook for tc in self.transcoders]

    @property
    def torch_modules(self) -> list[nn.Module]:
        return list(self.transcoders)

    def n_features(self, layer: int) -> int:
        return self.transcoders[layer].cfg.n_features

    def encoder(self, layer: int) -> torch.Tensor:
        return self.transcoders[layer].W_enc

    def decoders(self, layer: int) -> torch.Tensor:
        """[1, n_features, d_model]: only to its own layer."""
        return self.transcoders[layer].W_dec[None]

    def describe(self) -> list[str]:
        """"blocks.0.ln2.hook_normalized -> blocks.0.hook_mlp_out (512 topk k=32)" per layer."""
        out = []
        for tc in self.transcoders:
            c = tc.cfg
            kind = c.activation + (f" k={c.k}" if c.activation != "relu" else "") + (" skip" if tc.W_skip is not None else "")
            out.append(f"{tc.in_hook} -> {tc.out_hook} ({c.n_features} {kind})")
        return out

    def pre_acts(self, x: torch.Tensor, layer: int) -> torch.Tensor:
        tc = self.transcoders[layer]
        return tc.pre_acts(x.to(tc.W_enc.dtype))

    def activate(self, pre: torch.Tensor, layer: int, training: bool = False) -> torch.Tensor:
        return self.transcoders[layer].activate(pre, training)

    def skip(self, layer: int, x: torch.Tensor) -> Optional[torch.Tensor]:
        """[..., d_model] x W_skip of transcoder `layer`, or None without a skip connection."""
        tc = self.transcoders[layer]
        return None if tc.W_skip is None else x.to(tc.W_skip.dtype) @ tc.W_skip

    def output(self, layer: int, acts: Union[Sequence[torch.Tensor], Mapping[int, torch.Tensor]],
               xs: Union[Sequence[torch.Tensor], Mapping[int, torch.Tensor]]) -> torch.Tensor:
        """[..., d_model] transcoder `layer`'s output: decode(acts[layer], xs[layer])."""
        tc = self.transcoders[layer]
        return tc.decode(acts[layer].to(tc.W_dec.dtype), xs[layer] if tc.W_skip is not None else None)


Layered = Union[CrossLayerTranscoder, PerLayerTranscoders]


def as_cross_layer(transcoders: Union[CrossLayerTranscoder, PerLayerTranscoders, Sequence[SparseDictionary]]) -> Layered:
    """A CLT as it is, or a list of per-layer transcoders (one per layer, in layer order: a clear
    error otherwise) as `PerLayerTranscoders`."""
    if isinstance(transcoders, (CrossLayerTranscoder, PerLayerTranscoders)):
        return transcoders
    if isinstance(transcoders, SparseDictionary) or not isinstance(transcoders, (list, tuple)):
        raise TypeError("expected a CrossLayerTranscoder or a list of SparseDictionary transcoders, one per layer; "
                        f"got {type(transcoders).__name__}")
    for i, tc in enumerate(transcoders):
        if not isinstance(tc, SparseDictionary):
            raise TypeError(f"transcoders[{i}] is a {type(tc).__name__}, not a SparseDictionary")
        _, layer, tail = hook_names.split(tc.out_hook)
        if tc.cfg.kind != "transcoder" or layer != i or tail != "hook_mlp_out":
            raise ValueError(f"transcoders[{i}] is a {tc.cfg.kind} writing {tc.out_hook!r}: give one transcoder per layer, "
                             f"in layer order (transcoders[{i}] writing blocks.{i}.hook_mlp_out)")
    return PerLayerTranscoders(transcoders)


__all__ = ["CLTConfig", "CrossLayerTranscoder", "PerLayerTranscoders", "Layered", "as_cross_layer"]
