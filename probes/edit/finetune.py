"""The fine-tuning baseline of ROME's tables, FT-L: train one MLP layer's W_out on the new
answers (negative log-likelihood over the prompts in their contexts), with every entry of the
change kept within +- `max_change` (an L-infinity constraint). The model's parameters are never
touched during training: the change is a separate tensor added through hooks.

    edit = fine_tune(model, [("Michael Jordan plays the sport of", "Michael Jordan", "soccer")], layer=0)

Without `layer` it trains the layer the requests' causal traces pick most often (`traced_layers`).
"""

from __future__ import annotations

import time
from typing import Optional, Sequence

import torch

from interp import names as hook_names
from models.transformer import Transformer
from probes.edit.contexts import DEFAULT_PREFIXES, batch, contexts
from probes.edit.edit import Edit
from probes.edit.layers import traced_layers
from probes.edit.requests import RequestLike, as_requests, check_layer, check_request


def fine_tune(model: Transformer, requests: Sequence[RequestLike], *, layer: Optional[int] = None,
              prefixes: Sequence[str] = DEFAULT_PREFIXES, rewrites: Optional[Sequence[Sequence[str]]] = None,
              steps: int = 25, lr: float = 5e-3, max_change: float = 5e-3, seed: int = 0) -> Edit:
    """FT-L on `requests` (EditRequests or (prompt, subject, new_target) tuples) at MLP `layer`
    (None: the traced layer, `traced_layers` with `seed`); see the module docstring."""
    start = time.perf_counter()
    requests = as_requests(requests)
    if not requests:
        raise ValueError("no edit requests given")
    if layer is not None:
        layer = check_layer(model, layer)
    checked = [check_request(model, r) for r in requests]
    ids = [new_id for new_id, _ in checked]
    if layer is None:
        layer = traced_layers(model, requests, seed=seed, answers=[c for _, c in checked])[0][0]
    texts, new_ids = [], []
    for r, t, rw in zip(requests, ids, rewrites or [()] * len(requests)):
        for text in contexts(r, prefixes, rw):
            texts.append(text)
            new_ids.append(t)
    tokens, mask, last = batch(model, texts)
    new_ids_t = torch.tensor(new_ids, device=model.device)
    rows = torch.arange(len(texts), device=model.device)
    name = hook_names.param_name("mlp.W_out", layer)
    weight = model.get_parameter(name)
    change = torch.zeros_like(weight, requires_grad=True)
    opt = torch.optim.Adam([change], lr=lr)
    seen: dict[str, torch.Tensor] = {}

    def keep_post(x: torch.Tensor, hook) -> None:
        seen["post"] = x

    def add_change(x: torch.Tensor, hook) -> torch.Tensor:
        return x + seen["post"] @ change

    hooks = [(hook_names.act_name("post", layer), keep_post), (hook_names.act_name("mlp_out", layer), add_change)]
    loss_value = float("nan")
    with torch.enable_grad(), model.hooks(fwd_hooks=hooks):
        for _ in range(steps):
            logits = model(tokens, attention_mask=mask)
            loss = -logits[rows, last].log_softmax(-1)[rows, new_ids_t].mean()
            loss_value = float(loss.detach())
            (change.grad,) = torch.autograd.grad(loss, [change])
            opt.step()
            with torch.no_grad():
                change.clamp_(-max_change, max_change)
    info = {"requests": len(requests), "layer": layer, "steps": steps, "lr": lr, "max_change": max_change,
            "final_loss": loss_value, "seconds": time.perf_counter() - start}
    return Edit("ft", {name: change.detach().clone()}, info)


__all__ = ["fine_tune"]
