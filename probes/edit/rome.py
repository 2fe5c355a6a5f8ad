"""ROME (Meng et al. 2022): a rank-one update of one MLP layer's W_out that makes the subject's
key map to a new value.

With the layer's key at the subject's last token k* (hook_post, averaged over context
prefixes), the key statistics C = E[k k^T] and the change r that the MLP's output at that
token needs (`optimise_delta`: maximise log P(target), keep the subject's other predictions),

    W_out <- W_out + (C^-1 k*) r^T / (k*^T C^-1 k*)          (W_out [d_mlp, d_model])

so that k* W_out gains exactly r, while keys that C says are typical (uncorrelated with k*)
change least. Gated MLPs edit their down projection (W_out) the same way.

By default (`through_update=True`) r is optimised through the update itself: every context
and every KL prompt sees the model with W_out + u r^T (u = C^-1 k* / k*^T C^-1 k*), each at its
own keys, rather than r added at the subject's token alone as in the original ROME
(`through_update=False`). The update formula is the same.

    edit = rome(model, EditRequest("Michael Jordan plays the sport of", "Michael Jordan", "soccer"),
                layer=0, stats=C)
    with edit.applied(model): ...
"""

from __future__ import annotations

import time
from typing import Optional, Sequence

import torch

from interp import names as hook_names
from probes.edit.edit import Edit
from probes.edit.requests import EditRequest, check_layer, check_request, contexts, mean_key, optimise_delta

DEFAULT_PREFIXES = ("",)


def solve_ridge(C: torch.Tensor, k: torch.Tensor, ridge: float = 1e-6) -> torch.Tensor:
    """(C + ridge * mean(diag C) * I)^-1 k: C^-1 k, kept finite where C is singular (dead neurons)."""
    eye = torch.eye(C.shape[0], dtype=torch.float64)
    return torch.linalg.solve(C.double() + ridge * float(C.diagonal().mean()) * eye, k.double())


def rome(model, request: EditRequest, *, layer: int, stats: torch.Tensor, prefixes: Sequence[str] = DEFAULT_PREFIXES,
         rewrites: Sequence[str] = (), keep: Sequence[str] = (), steps: int = 40, lr: float = 0.5, kl_weight: float = 0.0625, decay: float = 0.5,
         stop_at: float = 0.99, through_update: bool = True, why_layer: Optional[str] = None) -> Edit:
    """The ROME edit of `request` at MLP `layer` (see the module docstring); `stats` is the layer's
    key second moment (`key_second_moment`); `rewrites`: more prompts about the subject that should
    give the target (the key is averaged over them too); `keep`: prompts about the subject whose
    predictions the optimisation keeps (KL). The model is not changed: apply the returned Edit."""
    start = time.perf_counter()
    layer = check_layer(model, layer)
    target, current = check_request(model, request)
    if tuple(stats.shape) != (model.cfg.d_mlp, model.cfg.d_mlp):
        raise ValueError(f"stats must be the layer's key second moment [d_mlp, d_mlp] = {[model.cfg.d_mlp] * 2}, "
                         f"got {list(stats.shape)}")
    texts = contexts(request, prefixes, rewrites)
    key = mean_key(model, layer, texts, request.subject)
    c_inv_k = solve_ridge(stats, key)
    u = c_inv_k / float(key @ c_inv_k)  # W_out + u r^T adds exactly r at the key k*
    vector = optimise_delta(model, layer, request, target, prefixes, rewrites=rewrites, keep=keep, steps=steps, lr=lr,
                            kl_weight=kl_weight, decay=decay, stop_at=stop_at, through=u if through_update else None)
    update = torch.outer(u, vector.delta)
    name = hook_names.param_name("mlp.W_out", layer)
    info = {"request": request.to_dict(), "layer": layer, "why_layer": why_layer or "given",
            "through_update": through_update, "p_target_optimised": vector.p_target, "steps": vector.steps, "delta_norm": float(vector.delta.norm()),
            "key_norm": float(key.norm()), "prefixes": list(prefixes), "rewrites": list(rewrites), "keep": list(keep), "seconds": time.perf_counter() - start,
            "old_answer_id": current, "target_id": target}
    return Edit("rome", {name: update.to(model.get_parameter(name).dtype)}, info)





def choose_layer(model, prompt: str, subject: str, answer: str, *, seed: int = 0) -> tuple[int, str]:
    """(layer, why): the MLP layer whose output at the subject's last token restores the most of
    the answer's probability in a causal trace (ROME's choice; window 1, 10 noise samples)."""
    from probes.causal_trace import trace

    result = trace(model, prompt, subject, answer, kind="mlp", window=1, seed=seed, progress=False)
    at = result.subject_span[1] - 1
    column = result.scores[:, at]
    layer = int(column.argmax())
    return layer, (f"causal trace: restoring MLP {layer}'s output at the last subject token gives P({answer}) "
                   f"{float(column[layer]):.3f} (corrupted {result.corrupted_prob:.3f}, clean {result.clean_prob:.3f})")
__all__ = ["rome", "solve_ridge", "choose_layer", "DEFAULT_PREFIXES"]
