"""What to edit, and the shared steps of every editing method: checking a request, the keys at
the subject's last token (averaged over context prefixes), and the optimisation of the vector
that, added to an MLP layer's output at that token, makes the model say the new target.

    request = EditRequest("Michael Jordan plays the sport of", "Michael Jordan", "soccer")
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import torch

from interp import names as hook_names
from models.transformer import last_positions
from interp.tokens import answer_token
from probes.subjects import last_subject_pos, subject_span


@dataclass(frozen=True)
class EditRequest:
    prompt: str  # ends right before the answer
    subject: str  # text inside the prompt
    target: str  # the new answer (one token)

    def to_dict(self) -> dict:
        return {"prompt": self.prompt, "subject": self.subject, "target": self.target}


def check_request(model, request: EditRequest) -> tuple[int, int]:
    """(target id, current answer id); clear errors for a subject not in the prompt, a target
    that is not one known token, or a target the model already gives."""
    if not isinstance(request, EditRequest):
        raise TypeError(f"expected an EditRequest(prompt, subject, target), got {request!r}")
    subject_span(model, request.prompt, request.subject)  # raises, naming the prompt's tokens
    try:
        target = answer_token(model, request.target)
    except (ValueError, KeyError) as e:
        raise ValueError(f"the edit target {request.target!r} is not a single known token: {e}") from e
    with torch.no_grad():
        current = int(model(request.prompt)[0, -1].argmax())
    if current == target:
        raise ValueError(f"the model already answers {request.target!r} to {request.prompt!r}: nothing to edit")
    return target, current


def check_layer(model, layer: int) -> int:
    n = model.cfg.n_layers
    if not isinstance(layer, int) or not -n <= layer < n:
        raise ValueError(f"layer {layer!r} is out of range for a model with {n} layers")
    if model.cfg.attn_only:
        raise ValueError("the model has no MLPs (attn_only): there is no key-value memory to edit")
    return layer % n


def contexts(request: EditRequest, prefixes: Sequence[str], rewrites: Sequence[str] = ()) -> list[str]:
    """The prompt after each context prefix ("" keeps it as it is), then the `rewrites` (other
    prompts about the subject that should give the new answer too)."""
    return [f"{p} {request.prompt}" if p else request.prompt for p in prefixes] + list(rewrites)


def batch(model, texts: Sequence[str]):
    """(tokens [n, pos] right-padded, mask or None, last positions [n]) of texts."""
    tokens, mask = model._tokenize(list(texts))
    last = last_positions(tokens, mask)
    return tokens, mask, last


def subject_ends(model, texts: Sequence[str], subject: str) -> torch.Tensor:
    """[n]: the position of the subject's last token in each text."""
    return torch.tensor([last_subject_pos(model, t, subject) for t in texts])


def mean_state(model, name: str, texts: Sequence[str], subject: str) -> torch.Tensor:
    """Activation `name` at the subject's last token, averaged over `texts` (float64)."""
    tokens, mask, _ = batch(model, texts)
    with torch.no_grad():
        _, cache = model.run_with_cache(tokens, attention_mask=mask, names_filter=[name], return_type=None)
    return cache[name][torch.arange(len(texts)), subject_ends(model, texts, subject)].double().mean(0)


def mean_key(model, layer: int, texts: Sequence[str], subject: str) -> torch.Tensor:
    """[d_mlp]: the layer's key (hook_post) at the subject's last token, averaged over `texts`."""
    return mean_state(model, hook_names.act_name("post", layer), texts, subject)


@dataclass
class TargetVector:
    delta: torch.Tensor  # [d_model]: added to the layer's output at the subject's last token
    p_target: float  # mean P(target) over the contexts with delta added
    steps: int
    loss: float


def optimise_delta(model, layer: int, request: EditRequest, target: int, prefixes: Sequence[str], *,
                   rewrites: Sequence[str] = (), keep: Sequence[str] = (), hook: str = "mlp_out", steps: int = 40,
                   lr: float = 0.5, kl_weight: float = 0.0625, decay: float = 0.5, stop_at: float = 0.99,
                   seed: int = 0, through: Optional[torch.Tensor] = None) -> TargetVector:
    """The vector delta that, added to `hook` (blocks.{layer}.hook_{hook}) at the subject's last
    token of every context (the prompt after each prefix, and each of `rewrites`), maximises
    log P(target) at the prompt's end (ROME's v* step), with a
    KL term keeping the model's next-token distributions after the subject alone (what it says
    about the subject in general) and after each prompt of `keep` (prompts whose answers must
    not change, e.g. the subject's other relations), and a penalty on
    |delta|^2 / |output|^2. Adam, at most `steps` steps, stopping once the mean P(target) exceeds
    `stop_at`. The model's weights are not touched.

    through: a vector u [d_mlp] (hook must be "mlp_out"): instead of adding delta at the subject's
    token only, add (key . u) delta at every position, where key is the layer's hook_post there.
    That is exactly the model with W_out + u delta^T, so delta is optimised through the rank-one
    update itself (every context, and the KL prompts, see the edit as it will be applied)."""
    texts = contexts(request, prefixes, rewrites)
    kl_texts = [request.subject] + list(keep)
    tokens, mask, last = batch(model, texts + kl_texts)
    n = len(texts)
    # Where delta goes without `through`: the subject's last token of every prompt that holds it.
    at = [(i, int(e)) for i, e in enumerate(subject_ends(model, texts, request.subject))]
    for i, text in enumerate(kl_texts):
        try:
            at.append((n + i, last_subject_pos(model, text, request.subject)))
        except ValueError:
            pass  # a prompt without the subject: the additive delta cannot reach it
    rows, ends = torch.tensor([r for r, _ in at]), torch.tensor([e for _, e in at])
    name = hook_names.act_name(hook, layer)
    with torch.no_grad():
        logits, cache = model.run_with_cache(tokens, attention_mask=mask, names_filter=[name])
        base_kl = logits[torch.arange(n, n + len(kl_texts)), last[n:]].log_softmax(-1)
        scale = cache[name][rows[:n], ends[:n]].double().norm(dim=-1).mean()
    dtype = cache[name].dtype
    torch.manual_seed(seed)
    delta = torch.zeros(model.cfg.d_model, dtype=dtype, requires_grad=True)
    opt = torch.optim.Adam([delta], lr=lr)

    def add(x: torch.Tensor, hook) -> torch.Tensor:
        x = x.clone()
        x[rows, ends] = x[rows, ends] + delta
        return x

    seen: dict[str, torch.Tensor] = {}

    def keep_key(x: torch.Tensor, hook) -> None:
        seen["key"] = x

    def add_through(x: torch.Tensor, hook) -> torch.Tensor:
        return x + (seen["key"] @ through.to(x.dtype))[..., None] * delta

    if through is not None:
        if hook != "mlp_out":
            raise ValueError("through= optimises a rank-one update of W_out: it needs hook='mlp_out'")
        hooks = [(hook_names.act_name("post", layer), keep_key), (name, add_through)]
    else:
        hooks = [(name, add)]
    p_target, loss_value, step = 0.0, float("nan"), 0
    with torch.enable_grad(), model.hooks(fwd_hooks=hooks):
        for step in range(1, steps + 1):
            logits = model(tokens, attention_mask=mask)
            logp = logits[torch.arange(n), last[:n]].log_softmax(-1)[:, target]
            new_kl = logits[torch.arange(n, n + len(kl_texts)), last[n:]].log_softmax(-1)
            kl = torch.nn.functional.kl_div(new_kl, base_kl, log_target=True, reduction="batchmean")
            loss = -logp.mean() + kl_weight * kl + decay * delta.double().pow(2).sum() / scale ** 2
            p_target = float(logp.detach().exp().mean())
            loss_value = float(loss.detach())
            if p_target > stop_at:
                break
            (delta.grad,) = torch.autograd.grad(loss, [delta])  # the model's parameters get no .grad
            opt.step()
    return TargetVector(delta.detach().double(), p_target, step, loss_value)


__all__ = ["EditRequest", "check_request", "check_layer", "contexts", "subject_ends", "mean_key", "mean_state",
           "TargetVector", "optimise_delta", "batch"]
