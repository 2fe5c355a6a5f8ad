"""MEMIT (Meng et al. 2023): many facts at once, spread over several MLP layers.

For each request i, the residual at the top edit layer L and the subject's last token should
move by delta_i (`optimise_delta` at layer L). Then, layer by layer from the lowest: with the
keys K [n, d_mlp] of the requests at that layer (the model as edited so far) and what is still
missing at layer L, R [n, d_model], divided by the number of edit layers left,

    W_out <- W_out + (lambda C + K^T K)^-1 K^T R                  (W_out [d_mlp, d_model])

the least-squares update that maps each key to its share while keeping typical keys' outputs
(C = E[k k^T], weighted by lambda).

    edit = memit(model, requests, layers=[0, 1], stats={0: C0, 1: C1})
"""

from __future__ import annotations

import time
from typing import Optional, Sequence

import torch
from tqdm.auto import tqdm

from interp import names as hook_names
from probes.edit.edit import Edit
from probes.edit.requests import EditRequest, check_layer, check_request, contexts, mean_key, mean_state, optimise_delta
from probes.edit.rome import DEFAULT_PREFIXES


def memit(model, requests: Sequence[EditRequest], *, layers: Sequence[int], stats: dict[int, torch.Tensor],
          prefixes: Sequence[str] = DEFAULT_PREFIXES, rewrites: Optional[Sequence[Sequence[str]]] = None,
          keep: Optional[Sequence[Sequence[str]]] = None,
          weight: float = 10.0, steps: int = 40, lr: float = 0.5, kl_weight: float = 0.0625, decay: float = 0.5,
          progress: bool = True) -> Edit:
    """The MEMIT edit of all `requests` over MLP `layers` (see the module docstring); `stats[l]` is
    layer l's key second moment, `weight` the lambda on it; `keep[i]`: prompts whose predictions the
    optimisation of request i keeps. The model is unchanged afterwards (apply the returned Edit)."""
    start = time.perf_counter()
    if not requests:
        raise ValueError("no edit requests given")
    layers = sorted({check_layer(model, l) for l in layers})
    if not layers:
        raise ValueError("give at least one layer to edit")
    for l in layers:
        if l not in stats or tuple(stats[l].shape) != (model.cfg.d_mlp, model.cfg.d_mlp):
            raise ValueError(f"stats must hold layer {l}'s key second moment [d_mlp, d_mlp]")
    subjects = [r.subject for r in requests]
    if len(set(subjects)) != len(subjects):
        raise ValueError("two requests edit the same subject: MEMIT edits one fact per subject key")
    keep = keep or [()] * len(requests)
    rewrites = rewrites or [()] * len(requests)
    ids = [check_request(model, r)[0] for r in requests]
    top = layers[-1]
    top_name = hook_names.act_name("resid_post", top)
    texts = [contexts(r, prefixes, rw) for r, rw in zip(requests, rewrites)]
    targets = []
    for r, t, kp, rw, tx in tqdm(list(zip(requests, ids, keep, rewrites, texts)), desc="MEMIT target vectors",
                                 disable=not progress):
        delta = optimise_delta(model, top, r, t, prefixes, rewrites=rw, keep=kp, steps=steps, lr=lr,
                               kl_weight=kl_weight, decay=decay).delta
        targets.append(mean_state(model, top_name, tx, r.subject) + delta)
    z = torch.stack(targets)  # [n, d_model]
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
            update = torch.linalg.solve(lhs + 1e-8 * float(lhs.diagonal().mean()) * torch.eye(lhs.shape[0], dtype=torch.float64),
                                        keys.T @ share)
            name = hook_names.param_name("mlp.W_out", layer)
            step = Edit("memit", {name: update.to(model.get_parameter(name).dtype)})
            step.apply(model)
            applied.append(step)
            deltas[name] = step.deltas[name]
    finally:
        for step in reversed(applied):
            step.revert(model)
    info = {"requests": len(requests), "layers": layers, "weight": weight, "prefixes": list(prefixes),
            "seconds": time.perf_counter() - start,
            "shares": {l: s.tolist() for l, s in shares.items()}}  # per layer: R [n, d_model] that layer was fitted to
    return Edit("memit", deltas, info)


__all__ = ["memit"]
