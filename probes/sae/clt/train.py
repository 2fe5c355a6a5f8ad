"""Training a cross-layer transcoder on every layer's (MLP input, MLP output) pairs.

    data = layer_pairs(model, clt, texts, max_tokens=60_000)     # one forward pass per batch, all layers
    record = train_clt(clt, data, steps=2000)                     # a probes.sae.TrainingRecord
    record = train_clt(clt, ActivationStore.open("acts", model=model), steps=2000)   # streamed from disk

Loss: the sum over output layers l' of the squared reconstruction error of MLP l' divided by
the variance of its output (each layer's normalised MSE, as `train_dictionary` uses for one),
plus
  - "relu": an L1 penalty on each feature's activation times the norm of its decoders (`l1`);
  - "topk" / "batchtopk": the auxiliary-k loss (Gao et al. 2024): per source layer the `aux_k`
    dead features with the largest pre-activations, decoded through all their decoders (no
    b_dec), fit what the CLT misses at every output layer (dead: no activation in the last
    `dead_after` training tokens).
Each feature's decoders are renormalised after every step. Deterministic given the CLT's seed
(its own generator; the global RNG is not touched).
"""

from __future__ import annotations

from typing import Optional, Sequence, Union

import torch

from interp.store import ActivationStore
from interp.tokens import cached_batches
from models.transformer import Transformer
from probes.sae.clt.model import CrossLayerTranscoder
from probes.sae.train import TrainingRecord, check_store, fit, store_moments, store_stream


def layer_pairs(model: Transformer, clt: CrossLayerTranscoder, texts: Sequence[str], *, batch_size: int = 256,
                max_tokens: Optional[int] = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(inputs [n, n_layers, d_model], targets [n, n_layers, d_model]) at every real token of
    `texts`: each layer's in_hook and out_hook activations from the same forward pass, in memory
    (at most `max_tokens` rows if given)."""
    if not isinstance(clt, CrossLayerTranscoder):
        raise TypeError(f"layer_pairs needs a CrossLayerTranscoder, got {type(clt).__name__}")
    if not texts:
        raise ValueError("no texts to collect activations from")
    names = list(dict.fromkeys(clt.in_hooks + clt.out_hooks))
    xs, ys = [], []
    count = 0
    for batch, cache in cached_batches(model, texts, names, batch_size):
        xs.append(torch.stack([cache[h][batch.real] for h in clt.in_hooks], dim=1))
        ys.append(torch.stack([cache[h][batch.real] for h in clt.out_hooks], dim=1))
        count += int(batch.real.sum())
        if max_tokens is not None and count >= max_tokens:
            break
    x, y = torch.cat(xs), torch.cat(ys)
    return (x, y) if max_tokens is None else (x[:max_tokens], y[:max_tokens])


def train_clt(clt: CrossLayerTranscoder, data: Union[tuple[torch.Tensor, torch.Tensor], ActivationStore], *,
              steps: int = 2000, batch_size: int = 1024, lr: float = 1e-3, l1: float = 1e-3, aux_k: int = 64,
              aux_coeff: float = 1 / 32, dead_after: int = 20_000, log_every: int = 100, progress: bool = True,
              buffer_shards: int = 4) -> TrainingRecord:
    """Fit `clt` to (inputs, targets) [n, n_layers, d_model] each (see the module docstring), or to
    batches streamed from an `interp.store.ActivationStore` holding every in_hook and out_hook
    (`buffer_shards` shards in memory at a time); returns the record (losses per step, dead share
    every `log_every` steps, seconds)."""
    if not isinstance(clt, CrossLayerTranscoder):
        raise TypeError(f"train_clt trains a CrossLayerTranscoder, got {type(clt).__name__}")
    if clt.cfg.activation == "jumprelu":
        raise ValueError("a jumprelu CLT is read from circuit-tracer's files, not trained here (its per-feature "
                         "thresholds are not learned): train relu, topk or batchtopk")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive int, got {steps!r}")
    cfg = clt.cfg
    dtype, device = clt.W_enc.dtype, clt.W_enc.device
    if isinstance(data, ActivationStore):
        check_store(data, [*clt.in_hooks, *clt.out_hooks], cfg.d_model, batch_size)
        x_mean, _ = store_moments(data, clt.in_hooks)
        y_mean, variance = store_moments(data, clt.out_hooks)  # [n_layers, d_model], [n_layers]
        x_mean, y_mean, variance = (t.to(device=device, dtype=dtype) for t in (x_mean, y_mean, variance))
        batches = store_stream(data, clt.in_hooks, clt.out_hooks, batch_size=batch_size, seed=cfg.seed,
                               device=device, dtype=dtype, buffer_shards=buffer_shards)
    else:
        x_all, y_all = data
        shape = (cfg.n_layers, cfg.d_model)
        if x_all.dim() != 3 or y_all.dim() != 3 or tuple(x_all.shape[1:]) != shape or tuple(y_all.shape[1:]) != shape:
            raise ValueError(f"inputs and targets must be [n, n_layers={cfg.n_layers}, d_model={cfg.d_model}], got "
                             f"{tuple(x_all.shape)} and {tuple(y_all.shape)}")
        if x_all.shape[0] != y_all.shape[0] or x_all.shape[0] < batch_size:
            raise ValueError(f"need at least batch_size={batch_size} paired rows, got {x_all.shape[0]} and "
                             f"{y_all.shape[0]}")
        x_all, y_all = x_all.to(dtype), y_all.to(dtype)
        x_mean, y_mean = x_all.mean(0), y_all.mean(0)
        variance = (y_all - y_mean).pow(2).sum(-1).mean(0)  # [n_layers]
        batches = (x_all, y_all)
    with torch.no_grad():  # biases start at the data's means
        clt.b_dec.copy_(y_mean)
        clt.b_pre.copy_(x_mean)

    def step_loss(x: torch.Tensor, y: torch.Tensor, mark_fired) -> torch.Tensor:
        pre = clt.pre_acts(x)  # [batch, layer, feature]
        f = clt.activate(pre, training=True)
        recon = clt.decode(f)
        loss = ((recon - y).pow(2).sum(-1).mean(0) / variance).sum()
        if cfg.activation == "relu":
            norms = torch.stack([W.pow(2).sum(dim=(0, 2)).sqrt() for W in clt.W_dec])  # [layer, feature]
            loss = loss + l1 * (f * norms).sum((-2, -1)).mean()
        dead = mark_fired((f > 0).any(0))  # [layer, feature]
        if cfg.activation != "relu" and dead.any():
            residual = (y - recon).detach()
            dead_pre = torch.relu(pre).masked_fill(~dead, 0.0)
            top = dead_pre.topk(min(aux_k, int(dead.sum(-1).max())), dim=-1)
            aux_f = torch.zeros_like(dead_pre).scatter(-1, top.indices, top.values)
            aux = clt.decode(aux_f) - clt.b_dec
            loss = loss + aux_coeff * ((aux - residual).pow(2).sum(-1).mean(0) / variance).sum()
        return loss

    return fit(clt, batches, step_loss, seed=cfg.seed, steps=steps, batch_size=batch_size, lr=lr,
               dead_after=dead_after, log_every=log_every, progress=progress, desc="training cross-layer transcoder")


__all__ = ["layer_pairs", "train_clt"]
