"""The two gradient estimates every attribution method here is built from.

- `gradient_times_delta(grad, delta)`: the first-order estimate of how a metric changes when an
  activation moves by `delta`, from the metric's gradient at it (attribution patching, edge
  attribution patching, the "attribution" and "mean" neuron rankings).
- `integrated_gradients(model, tokens, sites, metric, steps)`: Sundararajan et al.'s integrated
  gradients from the baseline 0, as a right Riemann sum over `riemann_alphas(steps)` (knowledge
  neurons, the "ig" neuron ranking; EAP-IG interpolates its inputs on the same points).
"""

from __future__ import annotations

from typing import Any, Callable, Optional, Sequence

import torch

from interp.engine import Patch, run_patched
from models import Transformer

Metric = Callable[[torch.Tensor], torch.Tensor]
Site = tuple[str, Any, torch.Tensor]  # (hook name, index into the activation without its batch axis, activation)


def riemann_alphas(steps: int, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """k / steps for k = 1..steps: the right Riemann points of the path from the baseline (0) to the input (1)."""
    if isinstance(steps, bool) or int(steps) != steps or steps < 1:
        raise ValueError(f"steps must be an integer >= 1, got {steps!r}")
    steps = int(steps)
    return torch.arange(1, steps + 1, dtype=dtype, device="cpu") / steps  # moved to each activation's device


def gradient_times_delta(grad: torch.Tensor, delta: torch.Tensor, *, pairwise: bool = False) -> torch.Tensor:
    """First-order change of a metric whose gradient at an activation is `grad` when the activation
    moves by `delta`: elementwise `delta * grad` (sum it over the elements a site covers).

    pairwise: `delta` [U, ...] (what U upstream sites change) against `grad` [D, ...] (the
    gradients at D downstream inputs, same trailing shape) -> [U, D], each pair summed over the
    trailing axes (edge attribution patching).
    """
    if not pairwise:
        return delta * grad
    if delta.shape[1:] != grad.shape[1:]:
        raise ValueError(f"pairwise deltas {tuple(delta.shape)} and gradients {tuple(grad.shape)} must agree after "
                         "their first axis")
    rest = "abcdefghijklmnopqrst"[:delta.dim() - 1]
    return torch.einsum(f"u{rest},d{rest}->ud", delta, grad)


def integrated_gradients(model: Transformer, tokens: torch.Tensor, sites: Sequence[Site], metric: Metric, steps: int,
                         *, with_baseline: bool = False, batch_size: Optional[int] = None, progress: bool = False,
                         desc: str = "integrated gradients") -> tuple[list[torch.Tensor], torch.Tensor]:
    """Integrated gradients of `metric` for each site's activation a, one site at a time:

        attribution = a * (1 / steps) * sum_{k=1..steps} dF/dx (x = (k / steps) * a)

    where F(x) is the metric of the run on `tokens` [B, pos] with that site's activation
    replaced by x (everything else as in the run, everything after it recomputed): the right
    Riemann sum of the path from 0 to a, whose total over a site's elements approaches
    F(a) - F(0) as steps grows.

    sites: (hook name, index into the activation without its batch axis, e.g. (pos,) or (),
    activation a) each. The scaled copies are rows of `interp.engine.run_patched` (`batch_size`
    rows per pass); one backward pass for all of them.
    Returns (attributions: float64, one per site, shaped like its a; outputs [n_sites, steps]:
    F at each point, then F(0) as a last column with_baseline).
    """
    alphas = riemann_alphas(steps)
    if with_baseline:
        alphas = torch.cat([alphas, torch.zeros(1, dtype=torch.float64, device="cpu")])
    n_rows, acts = len(alphas), [a for _, _, a in sites]
    with torch.enable_grad():  # also the scaling: under no_grad the rows would lose their graph
        scaled = [(alphas.to(device=a.device, dtype=a.dtype).reshape(-1, *[1] * a.dim()) * a[None]).requires_grad_(True)
                  for a in acts]
        rows = [[Patch(name, index, s[i])] for (name, index, _), s in zip(sites, scaled) for i in range(n_rows)]
        y = run_patched(model, tokens, rows, metric, batch_size=batch_size, grad=True, progress=progress,
                        desc=desc).values.reshape(len(sites), n_rows)
        grads = torch.autograd.grad(y[:, :steps].sum(), scaled)
    return [a.double() * g[:steps].double().sum(0) / steps for a, g in zip(acts, grads)], y.detach()


__all__ = ["riemann_alphas", "gradient_times_delta", "integrated_gradients"]
