"""ROME (Meng et al. 2022): a rank-one update of one MLP layer's W_out that makes the subject's
key map to a new value.

With the layer's key at the subject's last token k* (hook_post, averaged over context
prefixes), the key statistics C = E[k k^T] and the change r that the MLP's output at that
token needs (`optimise_delta`: maximise log P(new target), keep the subject's other predictions),

    W_out <- W_out + (C^-1 k*) r^T / (k*^T C^-1 k*)          (W_out [d_mlp, d_model])

so that k* W_out gains exactly r, while keys that C says are typical (uncorrelated with k*)
change least. Gated MLPs edit their down projection (W_out) the same way.

By default (`through_update=True`) r is optimised through the update itself: every context
and every KL prompt sees the model with W_out + u r^T (u = C^-1 k* / k*^T C^-1 k*), each at its
own keys, rather than r added at the subject's token alone as in the original ROME
(`through_update=False`). The update formula is the same.

    edit = rome(model, "Michael Jordan plays the sport of", "Michael Jordan", "soccer")
    with edit.applied(model): ...

Without `layer` the edit goes where a causal trace puts the fact (`choose_layer`); without
`stats` the key statistics come from `key_second_moment` over `corpus` (default: the model's
own corpus, which the shipped fact-world model has), cached on disk.
"""

from __future__ import annotations

import time
from typing import Optional, Sequence, Union

import torch

from interp import names as hook_names
from models.transformer import Transformer
from probes.edit.contexts import DEFAULT_PREFIXES, contexts, edit_prompts, mean_key
from probes.edit.edit import Edit
from probes.edit.layers import choose_layer
from probes.edit.optimise import RELAX, relaxed_delta
from probes.edit.requests import RequestLike, as_request, check_layer, check_request
from probes.edit.stats import Corpus, key_second_moment


def solve_ridge(C: torch.Tensor, k: torch.Tensor, ridge: float = 1e-6) -> torch.Tensor:
    """(C + ridge * mean(diag C) * I)^-1 k: C^-1 k, kept finite where C is singular (dead neurons)."""
    eye = torch.eye(C.shape[0], dtype=torch.float64, device=C.device)
    return torch.linalg.solve(C.double() + ridge * float(C.diagonal().mean()) * eye, k.double().to(C.device))


def check_stats(model: Transformer, stats: torch.Tensor, what: str = "the layer's") -> None:
    """A clear error unless `stats` has the shape of a key second moment [d_mlp, d_mlp]."""
    if not isinstance(stats, torch.Tensor) or tuple(stats.shape) != (model.cfg.d_mlp, model.cfg.d_mlp):
        shape = list(stats.shape) if isinstance(stats, torch.Tensor) else type(stats).__name__
        raise ValueError(f"stats must be {what} key second moment [d_mlp, d_mlp] = {[model.cfg.d_mlp] * 2}, "
                         f"got {shape}")


def rome(model: Transformer, request: Union[RequestLike, str], subject: Optional[str] = None,
         new_target: Optional[str] = None, *, layer: Optional[int] = None, stats: Optional[torch.Tensor] = None,
         corpus: Optional[Corpus] = None, prefixes: Optional[Sequence[str]] = None,
         rewrites: Optional[Sequence[str]] = None, keep: Optional[Sequence[str]] = None, steps: int = 40,
         lr: float = 0.5, kl_weight: float = 0.0625, relax: Sequence[tuple[float, float]] = RELAX,
         accept: float = 0.9, stop_at: float = 0.99, through_update: bool = True, why_layer: Optional[str] = None,
         seed: int = 0, progress: bool = True) -> Edit:
    """The ROME edit of `request` (an EditRequest, or prompt, subject, new_target) at MLP `layer`
    (None: the traced layer, `choose_layer` with `seed`); `stats` is the layer's key second
    moment (None: `key_second_moment(model, layer, corpus)`); `prefixes`: contexts the prompt is
    optimised in; `rewrites`: more prompts about the subject that should give the new target (the
    key is averaged over them too); `keep`: prompts about the subject whose predictions the
    optimisation keeps (KL). None takes the model's own (`model.edit_prompts`: the shipped
    fact-world model's openers, training templates and other relations), else the prompt alone.
    `relax`: (keep_weight, decay) pairs tried in turn until the mean P(new target) reaches
    `accept` (`relaxed_delta`); `kl_weight` holds the distribution after the subject alone. The
    model is not changed: apply the returned Edit."""
    start = time.perf_counter()
    request = as_request(request, subject, new_target)
    if layer is not None:
        layer = check_layer(model, layer)
    if stats is not None:
        check_stats(model, stats)
    new_id, current = check_request(model, request)
    prefixes, rewrites, keep, prompts_from = edit_prompts(model, request, prefixes, rewrites, keep)
    if layer is None:
        layer, why_layer = choose_layer(model, request.prompt, request.subject, current, seed=seed)
        layer = check_layer(model, layer)
    if stats is None:
        stats = key_second_moment(model, layer, corpus, progress=progress)
    texts = contexts(request, prefixes, rewrites)
    key = mean_key(model, layer, texts, request.subject)
    c_inv_k = solve_ridge(stats.to(key.device), key)
    u = c_inv_k / float(key @ c_inv_k)  # W_out + u r^T adds exactly r at the key k*
    vector = relaxed_delta(model, layer, request, new_id, prefixes, relax=relax, accept=accept, rewrites=rewrites,
                           keep=keep, steps=steps, lr=lr, kl_weight=kl_weight, stop_at=stop_at,
                           through=u if through_update else None)
    update = torch.outer(u, vector.delta)
    name = hook_names.param_name("mlp.W_out", layer)
    info = {"request": request.to_dict(), "layer": layer, "why_layer": why_layer or "given",
            "through_update": through_update, "p_new_target_optimised": vector.p_new_target, "steps": vector.steps,
            "relax_attempts": vector.attempts, "delta_norm": float(vector.delta.norm()), "key_norm": float(key.norm()),
            "prompts_from": prompts_from, "prefixes": prefixes, "rewrites": rewrites, "keep": keep,
            "seconds": time.perf_counter() - start, "old_answer_id": current, "new_target_id": new_id}
    return Edit("rome", {name: update.to(model.get_parameter(name).dtype)}, info, {layer: key[None]})


__all__ = ["rome", "solve_ridge", "check_stats", "DEFAULT_PREFIXES"]
