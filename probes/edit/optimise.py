"""The vector an edit writes: the change to an MLP layer's output at the subject's last token
that makes the model give the new target (ROME's v*, MEMIT's target residuals).

    vector = optimise_delta(model, layer, request, new_target_id, prefixes)
    vector.delta                                  # [d_model], float64

The optimisation starts from zero and takes Adam steps: it draws nothing at random, so its
result depends only on its inputs, and it never touches the global random state.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import torch

from interp import names as hook_names
from models.transformer import Transformer
from probes.edit.contexts import batch, contexts, subject_ends
from probes.edit.requests import EditRequest
from probes.subjects import last_subject_pos


@dataclass
class TargetVector:
    delta: torch.Tensor  # [d_model]: added to the layer's output at the subject's last token
    p_new_target: float  # mean P(new target) over the contexts with delta added
    steps: int
    loss: float
    attempts: int = 1  # (keep_weight, decay) pairs tried by `relaxed_delta`


def _subject_sites(model: Transformer, texts: Sequence[str], kl_texts: Sequence[str],
                   subject: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(rows, positions): the subject's last token in every context and in every KL prompt that
    holds the subject (where the additive delta goes)."""
    n = len(texts)
    at = [(i, int(e)) for i, e in enumerate(subject_ends(model, texts, subject))]
    for i, text in enumerate(kl_texts):
        try:
            at.append((n + i, last_subject_pos(model, text, subject)))
        except ValueError:
            pass  # a prompt without the subject: the additive delta cannot reach it
    return (torch.tensor([r for r, _ in at], device=model.device), torch.tensor([e for _, e in at], device=model.device))


def _delta_hooks(layer: int, hook: str, delta: torch.Tensor, rows: torch.Tensor, ends: torch.Tensor,
                 through: Optional[torch.Tensor]) -> list:
    """Forward hooks adding delta at (rows, ends), or (key . through) delta everywhere."""
    name = hook_names.act_name(hook, layer)
    if through is None:
        def add(x: torch.Tensor, hook) -> torch.Tensor:
            x = x.clone()
            x[rows, ends] = x[rows, ends] + delta
            return x

        return [(name, add)]
    seen: dict[str, torch.Tensor] = {}

    def keep_key(x: torch.Tensor, hook) -> None:
        seen["key"] = x

    def add_through(x: torch.Tensor, hook) -> torch.Tensor:
        return x + (seen["key"] @ through.to(x.dtype))[..., None] * delta

    return [(hook_names.act_name("post", layer), keep_key), (name, add_through)]


def optimise_delta(model: Transformer, layer: int, request: EditRequest, new_target: int, prefixes: Sequence[str], *,
                   rewrites: Sequence[str] = (), keep: Sequence[str] = (), hook: str = "mlp_out", steps: int = 40,
                   lr: float = 0.5, kl_weight: float = 0.0625, keep_weight: Optional[float] = None, decay: float = 0.5,
                   stop_at: float = 0.99, through: Optional[torch.Tensor] = None,
                   init: Optional[torch.Tensor] = None) -> TargetVector:
    """The vector delta that, added to `hook` (blocks.{layer}.hook_{hook}) at the subject's last
    token of every context (the prompt after each prefix, and each of `rewrites`), maximises
    log P(new_target) (a token id) at the prompt's end (ROME's v* step), with a KL term keeping
    the model's next-token distributions after the subject alone (what it says about the
    subject in general, weighted by `kl_weight`) and after each prompt of `keep` (prompts whose
    answers must not change, e.g. the subject's other relations; their mean KL weighted by
    `keep_weight`, None: `kl_weight`), and a penalty `decay` |delta|^2 / |output|^2. Adam from
    zero (or from `init`), at most `steps` steps, stopping once the mean P(new_target) exceeds
    `stop_at`. The model's weights are not touched.

    through: a vector u [d_mlp] (hook must be "mlp_out"): instead of adding delta at the subject's
    token only, add (key . u) delta at every position, where key is the layer's hook_post there.
    That is exactly the model with W_out + u delta^T, so delta is optimised through the rank-one
    update itself (every context, and the KL prompts, see the edit as it will be applied)."""
    if through is not None and hook != "mlp_out":
        raise ValueError("through= optimises a rank-one update of W_out: it needs hook='mlp_out'")
    texts = contexts(request, prefixes, rewrites)
    kl_texts = [request.subject] + list(keep)
    tokens, mask, last = batch(model, texts + kl_texts)
    n, kl_rows = len(texts), torch.arange(len(texts), len(texts) + len(kl_texts), device=model.device)
    text_rows = torch.arange(n, device=model.device)
    rows, ends = _subject_sites(model, texts, kl_texts, request.subject)
    name = hook_names.act_name(hook, layer)
    with torch.no_grad():
        logits, cache = model.run_with_cache(tokens, attention_mask=mask, names_filter=[name])
        base_kl = logits[kl_rows, last[n:]].log_softmax(-1)
        scale = cache[name][rows[:n], ends[:n]].double().norm(dim=-1).mean()
    keep_weight = kl_weight if keep_weight is None else keep_weight
    like = cache[name]
    start = torch.zeros(model.cfg.d_model, device=like.device, dtype=like.dtype) if init is None else init.detach()
    delta = start.to(device=like.device, dtype=like.dtype).clone().requires_grad_(True)
    opt = torch.optim.Adam([delta], lr=lr)
    hooks = _delta_hooks(layer, hook, delta, rows, ends, through)
    p_new, loss_value, step = 0.0, float("nan"), 0
    with torch.enable_grad(), model.hooks(fwd_hooks=hooks):
        for step in range(1, steps + 1):
            logits = model(tokens, attention_mask=mask)
            logp = logits[text_rows, last[:n]].log_softmax(-1)[:, new_target]
            new_kl = logits[kl_rows, last[n:]].log_softmax(-1)
            kl = torch.nn.functional.kl_div(new_kl, base_kl, log_target=True, reduction="none").sum(-1)  # [1 + n_keep]
            kept = kl[1:].mean() if len(keep) else kl.new_zeros(())
            loss = -logp.mean() + kl_weight * kl[0] + keep_weight * kept + decay * delta.double().pow(2).sum() / scale ** 2
            p_new = float(logp.detach().exp().mean())
            loss_value = float(loss.detach())
            if p_new > stop_at:
                break
            (delta.grad,) = torch.autograd.grad(loss, [delta])  # the model's parameters get no .grad
            opt.step()
    return TargetVector(delta.detach().double(), p_new, step, loss_value)


# Constraints relaxed in turn until the edit takes (`relaxed_delta`): (keep_weight, decay) per attempt.
RELAX = ((16.0, 0.5), (4.0, 0.25), (1.0, 0.1), (0.25, 0.02))


def relaxed_delta(model: Transformer, layer: int, request: EditRequest, new_target: int, prefixes: Sequence[str], *,
                  relax: Sequence[tuple[float, float]] = RELAX, accept: float = 0.9, **settings) -> TargetVector:
    """`optimise_delta` under the first (keep_weight, decay) of `relax`; while the mean P(new_target)
    stays below `accept`, go on from the vector found under the next, looser pair (the edit first,
    then as much specificity as it allows). `.attempts` says how many pairs were used."""
    if not relax:
        raise ValueError("relax needs at least one (keep_weight, decay) pair")
    vector, used = None, 0
    for keep_weight, decay in relax:
        used += 1
        vector = optimise_delta(model, layer, request, new_target, prefixes, keep_weight=keep_weight, decay=decay,
                                init=None if vector is None else vector.delta, **settings)
        if vector.p_new_target >= accept:
            break
    vector.attempts = used
    return vector


__all__ = ["TargetVector", "optimise_delta", "relaxed_delta", "RELAX"]
