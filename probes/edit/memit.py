"""MEMIT (Meng et al. 2023): many facts at once, spread over several MLP layers.

For each request i, the residual at the top edit layer L and the subject's last token should
move by delta_i (`optimise_delta` at layer L). Then, layer by layer from the lowest: with the
keys K [n, d_mlp] of the requests at that layer (the model as edited so far) and what is still
missing at layer L, R [n, d_model], divided by the number of edit layers left,

    W_out <- W_out + (lambda C + K^T K)^-1 K^T R                  (W_out [d_mlp, d_model])

the least-squares update that maps each key to its share while keeping typical keys' outputs
(C = E[k k^T], weighted by lambda).

    edit = memit(model, [("Michael Jordan plays the sport of", "Michael Jordan", "soccer"), ...])
    edit = memit(model, requests, layers=[0, 1], stats={0: C0, 1: C1})

Without `layers` the edit goes to the layer the requests' causal traces pick most often
(`traced_layers`); without `stats` each layer's key statistics come from `key_second_moment`
over `corpus` (default: the model's own corpus), cached on disk.
"""

from __future__ import annotations

import time
from typing import Optional, Sequence

import torch

from interp import names as hook_names
from interp.progress import progress_bar
from models.transformer import Transformer
from probes.edit.contexts import DEFAULT_PREFIXES, contexts, mean_key, mean_state
from probes.edit.edit import Edit
from probes.edit.layers import traced_layers
from probes.edit.optimise import optimise_delta
from probes.edit.requests import RequestLike, as_requests, check_layer, check_request
from probes.edit.rome import check_stats
from probes.edit.stats import Corpus, key_second_moment


def _layer_stats(model: Transformer, layers: list[int], stats: Optional[dict[int, torch.Tensor]],
                 corpus: Optional[Corpus], progress: bool) -> dict[int, torch.Tensor]:
    if stats is None:
        return {l: key_second_moment(model, l, corpus, progress=progress) for l in layers}
    for l in layers:
        if l not in stats:
            raise ValueError(f"stats must hold layer {l}'s key second moment [d_mlp, d_mlp] (it has layers "
                             f"{sorted(stats)})")
        check_stats(model, stats[l], f"layer {l}'s")
    return stats


def _spread(model: Transformer, requests: list, texts: list, layers: list[int], z: torch.Tensor,
            stats: dict[int, torch.Tensor], weight: float) -> tuple[dict[str, torch.Tensor], dict[int, torch.Tensor]]:
    """The per-layer least-squares updates (each applied while the next is computed, then all
    reverted) and the residual share R each layer was fitted to."""
    top_name = hook_names.act_name("resid_post", layers[-1])
    applied: list[Edit] = []
    deltas: dict[str, torch.Tensor] = {}
    shares: dict[int, torch.Tensor] = {}
    try:
        for i, layer in enumerate(layers):
            keys = torch.stack([mean_key(model, layer, tx, r.subject) for tx, r in zip(texts, requests)])  # [n, d_mlp]
            now = torch.stack([mean_state(model, top_name, tx, r.subject) for tx, r in zip(texts, requests)])
            share = (z - now) / (len(layers) - i)
            shares[layer] = share
            lhs = weight * stats[layer].double() + keys.T @ keys
            ridge = 1e-8 * float(lhs.diagonal().mean()) * torch.eye(lhs.shape[0], dtype=torch.float64)
            update = torch.linalg.solve(lhs + ridge, keys.T @ share)
            name = hook_names.param_name("mlp.W_out", layer)
            step = Edit("memit", {name: update.to(model.get_parameter(name).dtype)})
            step.apply(model)
            applied.append(step)
            deltas[name] = step.deltas[name]
    finally:
        for step in reversed(applied):
            step.revert(model)
    return deltas, shares


def memit(model: Transformer, requests: Sequence[RequestLike], *, layers: Optional[Sequence[int]] = None,
          stats: Optional[dict[int, torch.Tensor]] = None, corpus: Optional[Corpus] = None,
          prefixes: Sequence[str] = DEFAULT_PREFIXES, rewrites: Optional[Sequence[Sequence[str]]] = None,
          keep: Optional[Sequence[Sequence[str]]] = None, weight: float = 10.0, steps: int = 40, lr: float = 0.5,
          kl_weight: float = 0.0625, decay: float = 0.5, seed: int = 0, progress: bool = True) -> Edit:
    """The MEMIT edit of all `requests` (EditRequests or (prompt, subject, new_target) tuples) over
    MLP `layers` (None: the traced layer, `traced_layers` with `seed`); `stats[l]` is layer l's key
    second moment (None: `key_second_moment` over `corpus`), `weight` the lambda on it; `keep[i]`:
    prompts whose predictions the optimisation of request i keeps. The model is unchanged
    afterwards (apply the returned Edit)."""
    start = time.perf_counter()
    requests = as_requests(requests)
    if not requests:
        raise ValueError("no edit requests given")
    if layers is not None:
        layers = sorted({check_layer(model, l) for l in layers})
        if not layers:
            raise ValueError("give at least one layer to edit")
        stats = _layer_stats(model, layers, stats, corpus, progress) if stats is not None else None
    subjects = [r.subject for r in requests]
    if len(set(subjects)) != len(subjects):
        raise ValueError("two requests edit the same subject: MEMIT edits one fact per subject key")
    checked = [check_request(model, r) for r in requests]
    why = "given"
    if layers is None:
        layers, why = traced_layers(model, requests, seed=seed, answers=[c for _, c in checked])
    stats = _layer_stats(model, layers, stats, corpus, progress)
    keep = keep or [()] * len(requests)
    rewrites = rewrites or [()] * len(requests)
    top_name = hook_names.act_name("resid_post", layers[-1])
    texts = [contexts(r, prefixes, rw) for r, rw in zip(requests, rewrites)]
    targets = []
    for r, (new_id, _), kp, rw, tx in progress_bar(list(zip(requests, checked, keep, rewrites, texts)),
                                                   progress=progress, desc="MEMIT target vectors"):
        delta = optimise_delta(model, layers[-1], r, new_id, prefixes, rewrites=rw, keep=kp, steps=steps, lr=lr,
                               kl_weight=kl_weight, decay=decay).delta
        targets.append(mean_state(model, top_name, tx, r.subject) + delta)
    deltas, shares = _spread(model, requests, texts, layers, torch.stack(targets), stats, weight)
    info = {"requests": len(requests), "layers": layers, "why_layers": why, "weight": weight,
            "prefixes": list(prefixes), "seconds": time.perf_counter() - start,
            "shares": {l: s.tolist() for l, s in shares.items()}}  # per layer: R [n, d_model] that layer was fitted to
    return Edit("memit", deltas, info)


__all__ = ["memit"]
