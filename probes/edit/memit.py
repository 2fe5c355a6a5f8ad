"""MEMIT (Meng et al. 2023): many facts at once, spread over several MLP layers.

For each request i, the residual at the top edit layer L and the subject's last token should
move by delta_i (`optimise_delta` at layer L; `target_residuals`). Then, layer by layer from the
lowest: with the keys K [n, d_mlp] of the requests at that layer (the model as edited so far)
and what is still missing at layer L, R [n, d_model], divided by the number of edit layers left,

    W_out <- W_out + (lambda C + K^T K)^-1 K^T R                  (W_out [d_mlp, d_model])

the least-squares update that maps each key to its share while keeping typical keys' outputs
(C = E[k k^T], weighted by lambda). AlphaEdit (`probes.edit.alphaedit`) is the same spread with
another solve (`spread(..., solve=)`).

    edit = memit(model, [("Michael Jordan plays the sport of", "Michael Jordan", "soccer"), ...])
    edit = memit(model, requests, layers=[0, 1], stats={0: C0, 1: C1})

Without `layers` the edit goes to the layer the requests' causal traces pick most often
(`traced_layers`); without `stats` each layer's key statistics come from `key_second_moment`
over `corpus` (default: the model's own corpus), cached on disk.
"""

from __future__ import annotations

import time
from typing import Callable, Optional, Sequence

import torch

from interp import names as hook_names
from interp.progress import progress_bar
from models.transformer import Transformer
from probes.edit.contexts import contexts, edit_prompts, mean_key, mean_state
from probes.edit.edit import Edit
from probes.edit.layers import traced_layers
from probes.edit.optimise import RELAX, relaxed_delta
from probes.edit.requests import EditRequest, RequestLike, as_requests, check_layer, check_request
from probes.edit.rome import check_stats
from probes.edit.stats import Corpus, key_second_moment

WEIGHT = 100.0  # lambda on C: the best of 1, 10, 100, 300, 1000 for 100 fact-world edits at once (issue 13)

# (layer, keys K [n, d_mlp], share R [n, d_model]) -> the update of that layer's W_out [d_mlp, d_model] (float64)
Solve = Callable[[int, torch.Tensor, torch.Tensor], torch.Tensor]


def layer_stats(model: Transformer, layers: list[int], stats: Optional[dict[int, torch.Tensor]],
                corpus: Optional[Corpus], progress: bool) -> dict[int, torch.Tensor]:
    """Each layer's key second moment: `stats` checked, or computed over `corpus`."""
    if stats is None:
        return {l: key_second_moment(model, l, corpus, progress=progress) for l in layers}
    for l in layers:
        if l not in stats:
            raise ValueError(f"stats must hold layer {l}'s key second moment [d_mlp, d_mlp] (it has layers "
                             f"{sorted(stats)})")
        check_stats(model, stats[l], f"layer {l}'s")
    return stats


def least_squares(stats: dict[int, torch.Tensor], weight: float) -> Solve:
    """MEMIT's solve: (weight C + K^T K)^-1 K^T R, with a tiny ridge for singular C."""
    def solve(layer: int, keys: torch.Tensor, share: torch.Tensor) -> torch.Tensor:
        lhs = weight * stats[layer].to(keys.device, torch.float64) + keys.T @ keys
        ridge = 1e-8 * float(lhs.diagonal().mean()) * torch.eye(lhs.shape[0], dtype=torch.float64, device=lhs.device)
        return torch.linalg.solve(lhs + ridge, keys.T @ share)

    return solve


def spread(model: Transformer, requests: list[EditRequest], texts: list[list[str]], layers: list[int],
           z: torch.Tensor, solve: Solve,
           method: str = "memit") -> tuple[dict[str, torch.Tensor], dict[int, torch.Tensor], dict[int, torch.Tensor]]:
    """(deltas, shares, keys): the per-layer updates `solve` gives (each applied while the next is
    computed, then all reverted), the residual share R [n, d_model] each layer was fitted to, and
    the keys K [n, d_mlp] it was fitted at. z [n, d_model]: the target residuals at the top layer."""
    top_name = hook_names.act_name("resid_post", layers[-1])
    applied: list[Edit] = []
    deltas: dict[str, torch.Tensor] = {}
    shares: dict[int, torch.Tensor] = {}
    all_keys: dict[int, torch.Tensor] = {}
    try:
        for i, layer in enumerate(layers):
            keys = torch.stack([mean_key(model, layer, tx, r.subject) for tx, r in zip(texts, requests)])  # [n, d_mlp]
            now = torch.stack([mean_state(model, top_name, tx, r.subject) for tx, r in zip(texts, requests)])
            share = (z - now) / (len(layers) - i)
            shares[layer], all_keys[layer] = share, keys
            name = hook_names.param_name("mlp.W_out", layer)
            step = Edit(method, {name: solve(layer, keys, share).to(model.get_parameter(name).dtype)})
            step.apply(model)
            applied.append(step)
            deltas[name] = step.deltas[name]
    finally:
        for step in reversed(applied):
            step.revert(model)
    return deltas, shares, all_keys


class Batch:
    """The checked requests of a many-fact edit, its layers, each request's contexts (prefixes,
    rewrites, kept prompts: given, or the model's own `edit_prompts`) and target residuals: what
    MEMIT and AlphaEdit share before their solves differ."""

    def __init__(self, model: Transformer, requests: Sequence[RequestLike], layers: Optional[Sequence[int]],
                 prefixes: Optional[Sequence[str]], rewrites: Optional[Sequence[Sequence[str]]],
                 keep: Optional[Sequence[Sequence[str]]], seed: int):
        self.requests = as_requests(requests)
        if not self.requests:
            raise ValueError("no edit requests given")
        if layers is not None:
            layers = sorted({check_layer(model, l) for l in layers})
            if not layers:
                raise ValueError("give at least one layer to edit")
        subjects = [r.subject for r in self.requests]
        if len(set(subjects)) != len(subjects):
            raise ValueError("two requests edit the same subject: MEMIT edits one fact per subject key")
        for what, given in (("rewrites", rewrites), ("keep", keep)):
            if given is not None and len(given) != len(self.requests):
                raise ValueError(f"{what} must hold one list of prompts per request ({len(self.requests)}), "
                                 f"got {len(given)}")
        self.checked = [check_request(model, r) for r in self.requests]
        self.why = "given"
        if layers is None:
            layers, self.why = traced_layers(model, self.requests, seed=seed, answers=[c for _, c in self.checked])
        self.layers: list[int] = list(layers)
        found = [edit_prompts(model, r, prefixes, None if rewrites is None else rewrites[i],
                              None if keep is None else keep[i]) for i, r in enumerate(self.requests)]
        self.prefixes = [f[0] for f in found]
        self.rewrites = [f[1] for f in found]
        self.keep = [f[2] for f in found]
        self.prompts_from = sorted({f[3] for f in found})
        self.texts = [contexts(r, p, rw) for r, p, rw in zip(self.requests, self.prefixes, self.rewrites)]

    def targets(self, model: Transformer, *, progress: bool, **settings) -> torch.Tensor:
        """[n, d_model]: each request's target residual at the top layer, the subject's last token
        (its residual now, plus the `relaxed_delta` vector; `settings` go to it)."""
        top, name = self.layers[-1], hook_names.act_name("resid_post", self.layers[-1])
        out = []
        for r, (new_id, _), p, kp, rw, tx in progress_bar(list(zip(self.requests, self.checked, self.prefixes, self.keep,
                                                                     self.rewrites, self.texts)),
                                                            progress=progress, desc="target vectors"):
            delta = relaxed_delta(model, top, r, new_id, p, rewrites=rw, keep=kp, **settings).delta
            out.append(mean_state(model, name, tx, r.subject) + delta)
        return torch.stack(out)


def memit(model: Transformer, requests: Sequence[RequestLike], *, layers: Optional[Sequence[int]] = None,
          stats: Optional[dict[int, torch.Tensor]] = None, corpus: Optional[Corpus] = None,
          prefixes: Optional[Sequence[str]] = None, rewrites: Optional[Sequence[Sequence[str]]] = None,
          keep: Optional[Sequence[Sequence[str]]] = None, weight: float = WEIGHT, steps: int = 40, lr: float = 0.5,
          kl_weight: float = 0.0625, relax: Sequence[tuple[float, float]] = RELAX, accept: float = 0.9,
          seed: int = 0, progress: bool = True) -> Edit:
    """The MEMIT edit of all `requests` (EditRequests or (prompt, subject, new_target) tuples) over
    MLP `layers` (None: the traced layer, `traced_layers` with `seed`); `stats[l]` is layer l's key
    second moment (None: `key_second_moment` over `corpus`), `weight` the lambda on it; `rewrites[i]`
    and `keep[i]`: request i's other prompts for the new target and prompts whose predictions its
    optimisation keeps (None: the model's own `edit_prompts`, as `rome`). The model is unchanged
    afterwards (apply the returned Edit)."""
    start = time.perf_counter()
    if layers is not None and stats is not None:  # bad stats fail before any trace or optimisation
        layer_stats(model, sorted({check_layer(model, l) for l in layers}), stats, corpus, progress)
    batch = Batch(model, requests, layers, prefixes, rewrites, keep, seed)
    stats = layer_stats(model, batch.layers, stats, corpus, progress)
    z = batch.targets(model, steps=steps, lr=lr, kl_weight=kl_weight, relax=relax, accept=accept, progress=progress)
    deltas, shares, keys = spread(model, batch.requests, batch.texts, batch.layers, z, least_squares(stats, weight))
    info = {"requests": len(batch.requests), "layers": batch.layers, "why_layers": batch.why, "weight": weight,
            "prompts_from": batch.prompts_from, "seconds": time.perf_counter() - start,
            "shares": {l: s.tolist() for l, s in shares.items()}}  # per layer: R [n, d_model] that layer was fitted to
    return Edit("memit", deltas, info, keys)


__all__ = ["memit", "spread", "least_squares", "layer_stats", "Batch", "Solve"]
