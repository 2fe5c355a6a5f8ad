"""AlphaEdit (Fang et al., ICLR 2025): MEMIT's update projected onto the null space of the keys
the edit must preserve, so that their outputs do not move at all.

With C = E[k k^T] over a corpus (the preserved keys' statistics) and P the projector onto the
eigenvectors of C whose eigenvalues are below `threshold` (1e-3) times the largest (the directions
typical keys do not use), each edit layer's update is

    W_out <- W_out + (P (K_p^T K_p + K^T K) + alpha I)^-1 P K^T R     (W_out [d_mlp, d_model])

with K [n, d_mlp] the requests' keys, R [n, d_model] the residual share of that layer (as in
MEMIT, `probes.edit.memit.spread`), K_p^T K_p the keys of earlier edits (`preserved`: sequential
editing keeps them), and alpha = `l2` times the mean of C's diagonal. The solution lies in the
range of P (it equals P (P K^T R - P (...) x) / alpha), so any key k with P k = 0 (in the span
of C's kept eigenvectors) gets exactly the output it had: k (W_out + update) = k W_out.

    edit = alphaedit(model, [("Michael Jordan plays the sport of", "Michael Jordan", "soccer"), ...])
    P = null_space_projector(C, threshold=1e-2)
"""

from __future__ import annotations

import time
from typing import Optional, Sequence

import torch

from models.transformer import Transformer
from probes.edit.edit import Edit
from probes.edit.optimise import RELAX
from probes.edit.memit import Batch, Solve, layer_stats, spread
from probes.edit.requests import RequestLike, check_layer
from probes.edit.stats import Corpus

# Eigenvalues of C below THRESHOLD times the largest span the null space; alpha = L2 * mean(diag C).
# Chosen on 100 edits at once of tuning seed 10 (th 1e-3 / 1e-2 / 5e-2 x l2 0.01 / 0.1 / 1).
THRESHOLD = 1e-3
L2 = 1.0


def null_space_projector(stats: torch.Tensor, threshold: float = THRESHOLD) -> torch.Tensor:
    """[d_mlp, d_mlp] float64: the orthogonal projector onto the eigenvectors of the key second
    moment `stats` whose eigenvalues are below `threshold` times the largest."""
    if not 0 <= threshold < 1:
        raise ValueError(f"threshold must be in [0, 1): a share of the largest eigenvalue, got {threshold}")
    values, vectors = torch.linalg.eigh(stats.double())
    null = vectors[:, values < threshold * float(values.max())]  # [d_mlp, k]
    return null @ null.T


def projected_solve(stats: dict[int, torch.Tensor], projectors: dict[int, torch.Tensor], l2: float,
                    preserved: Optional[dict[int, torch.Tensor]] = None) -> Solve:
    """AlphaEdit's solve (see the module docstring) per layer."""
    def solve(layer: int, keys: torch.Tensor, share: torch.Tensor) -> torch.Tensor:
        P = projectors[layer].to(keys.device)
        kept = keys.T @ keys
        if preserved is not None and layer in preserved:
            kept = kept + preserved[layer].to(keys.device, torch.float64)
        alpha = l2 * float(stats[layer].diagonal().mean())
        lhs = P @ kept + alpha * torch.eye(P.shape[0], dtype=torch.float64, device=P.device)
        return torch.linalg.solve(lhs, P @ keys.T @ share)

    return solve


def alphaedit(model: Transformer, requests: Sequence[RequestLike], *, layers: Optional[Sequence[int]] = None,
              stats: Optional[dict[int, torch.Tensor]] = None, corpus: Optional[Corpus] = None,
              preserved: Optional[dict[int, torch.Tensor]] = None, threshold: float = THRESHOLD, l2: float = L2,
              prefixes: Optional[Sequence[str]] = None, rewrites: Optional[Sequence[Sequence[str]]] = None,
              keep: Optional[Sequence[Sequence[str]]] = None, steps: int = 40, lr: float = 0.5,
              kl_weight: float = 0.0625, relax: Sequence[tuple[float, float]] = RELAX, accept: float = 0.9,
              seed: int = 0, progress: bool = True) -> Edit:
    """The AlphaEdit edit of `requests` over MLP `layers` (None: the traced layer); `stats[l]`
    layer l's key second moment (None: over `corpus`), whose null space the update stays in;
    `preserved[l]`: K_p^T K_p [d_mlp, d_mlp] of keys from earlier edits to keep (sequential
    editing: add each earlier edit's `K.T @ K` for K in `edit.keys`). Other arguments as `memit`. The model
    is unchanged afterwards (apply the returned Edit)."""
    start = time.perf_counter()
    if l2 <= 0:
        raise ValueError(f"l2 must be positive (the update's regularisation), got {l2}")
    if layers is not None and stats is not None:
        layer_stats(model, sorted({check_layer(model, l) for l in layers}), stats, corpus, progress)
    if preserved is not None:
        for l, kp in preserved.items():
            if tuple(kp.shape) != (model.cfg.d_mlp, model.cfg.d_mlp):
                raise ValueError(f"preserved[{l}] must be K_p^T K_p [d_mlp, d_mlp] = {[model.cfg.d_mlp] * 2}, "
                                 f"got {list(kp.shape)}")
    batch = Batch(model, requests, layers, prefixes, rewrites, keep, seed)
    stats = layer_stats(model, batch.layers, stats, corpus, progress)
    projectors = {l: null_space_projector(stats[l], threshold) for l in batch.layers}
    z = batch.targets(model, steps=steps, lr=lr, kl_weight=kl_weight, relax=relax, accept=accept, progress=progress)
    deltas, shares, keys = spread(model, batch.requests, batch.texts, batch.layers, z,
                                  projected_solve(stats, projectors, l2, preserved), method="alphaedit")
    info = {"requests": len(batch.requests), "layers": batch.layers, "why_layers": batch.why, "threshold": threshold,
            "l2": l2, "null_space_dims": {l: int(round(float(P.trace()))) for l, P in projectors.items()},
            "prompts_from": batch.prompts_from, "seconds": time.perf_counter() - start,
            "shares": {l: s.tolist() for l, s in shares.items()}}
    return Edit("alphaedit", deltas, info, keys)


__all__ = ["alphaedit", "null_space_projector", "projected_solve", "THRESHOLD", "L2"]
