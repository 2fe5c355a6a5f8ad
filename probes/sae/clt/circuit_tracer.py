"""A cross-layer transcoder in circuit-tracer's CLT files (what its `load_clt` reads).

    save_circuit_tracer_clt(clt, "ct_clt")          # a ReLU or BatchTopK CLT
    clt = load_circuit_tracer_clt("ct_clt")         # back into a CrossLayerTranscoder

The folder holds, per source layer i, W_enc_{i}.safetensors (W_enc_{i} [n_features, d_model],
used as x @ W_enc.T + b_enc; b_enc_{i} [n_features]; b_dec_{i} [d_model]; threshold_{i}
[n_features] for JumpReLU) and W_dec_{i}.safetensors (W_dec_{i} [n_features, n_layers - i,
d_model]: feature-major, where ours is [n_layers - i, n_features, d_model]). There is no config
file: circuit-tracer's `load_clt(path, feature_input_hook=..., feature_output_hook=...)` is told
the hooks (ours: "ln2.hook_normalized" and "hook_mlp_out").

How ours map: b_pre is folded into the encoder bias (b_enc - b_pre @ W_enc, in float64), so the
pre-activations agree to rounding. "relu" -> ReLU. "batchtopk" (at inference one threshold t per
layer on the ReLU'd pre-activations) -> JumpReLU with threshold max(t, 0) for every feature of
the layer, which gives the same activations for every input. "jumprelu" -> JumpReLU with its
thresholds. circuit-tracer's CLT has no TopK, so a TopK CLT is refused (no exact export).
Loading: no threshold -> relu; a threshold that is the same non-negative number for every
feature of each layer -> batchtopk; other thresholds -> jumprelu (one per feature, negative
ones included, as circuit-tracer applies them: pre * (pre > threshold)).
"""

from __future__ import annotations

from pathlib import Path
from typing import Union

import torch
from einops import rearrange

from models.checkpoint import check_empty_dir, check_not_shipped, check_not_shipped_dictionaries
from models.config import dtype_name
from probes.sae.clt.model import CLTConfig, CrossLayerTranscoder

PathLike = Union[str, Path]


def save_circuit_tracer_clt(clt: CrossLayerTranscoder, path: PathLike, *, overwrite: bool = False) -> Path:
    """Write `clt` into directory `path` in circuit-tracer's CLT layout (module docstring); a
    non-empty directory is refused unless `overwrite`, a TopK CLT always (checks before writing)."""
    from safetensors.torch import save_file

    if not isinstance(clt, CrossLayerTranscoder):
        raise TypeError(f"save_circuit_tracer_clt saves a CrossLayerTranscoder, got {type(clt).__name__}")
    if clt.cfg.activation == "topk":
        raise ValueError("circuit-tracer's cross-layer transcoder has ReLU and JumpReLU activations only: a TopK CLT "
                         "has no exact export (train one with activation='relu' or 'batchtopk')")
    check_not_shipped(path)
    check_not_shipped_dictionaries(path)
    path = check_empty_dir(path, overwrite)
    path.mkdir(parents=True, exist_ok=True)
    dtype = clt.W_enc.dtype
    for i in range(clt.n_layers):
        W_enc = clt.W_enc[i].detach()
        b_enc = clt.b_enc[i].detach().double() - clt.b_pre[i].detach().double() @ W_enc.double()
        enc = {f"W_enc_{i}": rearrange(W_enc, "d f -> f d").contiguous().cpu(),
               f"b_enc_{i}": b_enc.to(dtype).cpu(), f"b_dec_{i}": clt.b_dec[i].detach().contiguous().cpu()}
        if clt.cfg.activation == "batchtopk":
            t = clt.threshold[i].detach().clamp_min(0)
            enc[f"threshold_{i}"] = t.expand(clt.cfg.n_features).contiguous().cpu()
        elif clt.cfg.activation == "jumprelu":
            enc[f"threshold_{i}"] = clt.threshold[i].detach().contiguous().cpu()
        save_file(enc, str(path / f"W_enc_{i}.safetensors"))
        dec = rearrange(clt.W_dec[i].detach(), "out f d -> f out d").contiguous().cpu()
        save_file({f"W_dec_{i}": dec}, str(path / f"W_dec_{i}.safetensors"))
    return path


def load_circuit_tracer_clt(path: PathLike) -> CrossLayerTranscoder:
    """The CrossLayerTranscoder (eval mode, reading blocks.{l}.ln2.hook_normalized) in a folder of
    circuit-tracer's CLT files (module docstring)."""
    from safetensors.torch import load_file

    path = Path(path)
    n_layers = len(list(path.glob("W_enc_*.safetensors")))
    if n_layers == 0:
        raise FileNotFoundError(f"{path} holds no circuit-tracer CLT: expected W_enc_0.safetensors, W_dec_0.safetensors, ...")
    enc = [load_file(str(path / f"W_enc_{i}.safetensors")) for i in range(n_layers)]
    dec = [load_file(str(path / f"W_dec_{i}.safetensors"))[f"W_dec_{i}"] for i in range(n_layers)]
    n_features, d_model = enc[0]["W_enc_0"].shape
    thresholds = [e.get(f"threshold_{i}") for i, e in enumerate(enc)]
    activation = "relu"
    if any(t is not None for t in thresholds):
        if not all(t is not None and tuple(t.shape) == (n_features,) for t in thresholds):
            raise ValueError(f"{path}: every W_enc_{{i}}.safetensors needs threshold_{{i}} [{n_features}] when one has")
        same = all(bool((t == t[0]).all()) and float(t[0]) >= 0 for t in thresholds)
        activation = "batchtopk" if same else "jumprelu"
    for i, W in enumerate(dec):
        if tuple(W.shape) != (n_features, n_layers - i, d_model):
            raise ValueError(f"{path}/W_dec_{i}.safetensors holds W_dec_{i} of shape {tuple(W.shape)}; expected "
                             f"{(n_features, n_layers - i, d_model)}")
    cfg = CLTConfig(n_layers, d_model, n_features, activation=activation, k=min(32, n_features),
                    dtype=dtype_name(enc[0]["W_enc_0"].dtype))
    clt = CrossLayerTranscoder(cfg)
    with torch.no_grad():
        for i, e in enumerate(enc):
            clt.W_enc[i].copy_(rearrange(e[f"W_enc_{i}"], "f d -> d f"))
            clt.b_enc[i].copy_(e[f"b_enc_{i}"])
            clt.b_dec[i].copy_(e[f"b_dec_{i}"])
            clt.b_pre[i].zero_()
            clt.W_dec[i].copy_(rearrange(dec[i], "f out d -> out f d"))
            if activation == "batchtopk":
                clt.threshold[i] = thresholds[i][0]
            elif activation == "jumprelu":
                clt.threshold[i].copy_(thresholds[i])
    return clt.eval()


__all__ = ["save_circuit_tracer_clt", "load_circuit_tracer_clt"]
