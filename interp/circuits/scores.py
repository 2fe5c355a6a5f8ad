"""Edge scores: how much each edge u -> d carries the clean run's metric.

score(u -> d) = metric(clean) - metric(clean with only that edge patched to the corrupted
value of u) (`interp.circuits.run`: the norms' scales frozen at their clean values), so an
edge that supports the clean behaviour scores > 0. Methods:

  "exact"   that difference, one patched run per edge (rows batched);
  "eap"     edge attribution patching: (clean_u - corrupted_u) . d metric / d input_d in the
            clean run, every edge from one clean and one corrupted forward pass and one backward pass;
  "eap-ig"  the same with the gradient averaged over `steps` runs whose input embeddings go
            from the corrupted to the clean ones (k / steps of the way, k = 1..steps; EAP-IG).

    scores = attribute_edges(model, clean, corrupted, logit_diff(model, "basketball", "swimming"))
    scores.top(10)          # [(upstream, downstream, score), ...], largest |score| first
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Union

import torch

from interp.attribution.gradients import gradient_times_delta, riemann_alphas
from interp.circuits.graph import Graph
from interp.circuits.run import EdgeRun, Metric, row_metric
from interp.metrics import metric_name
from interp.tokens import paired_tokens
from models import Transformer

METHODS = ("eap", "eap-ig", "exact")


@dataclass
class EdgeScores:
    """scores [U, D] float64 (nan where there is no edge) over `graph`; `values` [n_edges] the
    edges' scores in `graph.edge_list()` order (so `interp.attribution.agreement` compares two)."""

    graph: Graph
    scores: torch.Tensor
    method: str
    metric_name: str
    clean_value: float
    corrupted_value: float
    seconds: float
    info: dict = field(default_factory=dict)

    @property
    def values(self) -> torch.Tensor:
        return self.scores[self.graph.edges]

    @property
    def effect(self) -> torch.Tensor:
        return self.values

    def score(self, upstream: str, downstream: str) -> float:
        return float(self.scores[self.graph.index(upstream, downstream)])

    def top(self, n: Optional[int] = None) -> list[tuple[str, str, float]]:
        """The n edges with the largest |score| (all if n is None): (upstream, downstream, score)."""
        edges, values = self.graph.edge_list(), self.values
        order = values.abs().argsort(descending=True, stable=True)[:n].tolist()
        return [(*edges[i], float(values[i])) for i in order]

    def to_dict(self) -> dict[str, Any]:
        return {"method": self.method, "metric": self.metric_name, "clean_value": self.clean_value,
                "corrupted_value": self.corrupted_value, "seconds": self.seconds, "n_edges": self.graph.n_edges,
                "edges": [{"upstream": u, "downstream": d, "score": s} for u, d, s in self.top()], **self.info}

    def save_json(self, path: Union[str, Path]) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(), indent=1) + "\n")
        return path


def _gradients(run: EdgeRun, metric: Metric, embed: Optional[torch.Tensor] = None, rows: int = 1) -> torch.Tensor:
    """d (sum over rows of the metric) / d (what each input reads): [D, batch, pos, d_model]."""
    out = run.outputs_corrupted
    extra = torch.zeros(len(run.graph.inputs), *out.shape[1:], dtype=out.dtype, device=out.device, requires_grad=True)
    with torch.enable_grad():
        logits = run.run(None, extra=extra, embed=embed, rows=rows)
        (grad,) = torch.autograd.grad(row_metric(metric, logits, rows).sum(), [extra])
    return grad


def _exact(run: EdgeRun, metric: Metric, clean_value: float, batch_size: int, progress: bool) -> torch.Tensor:
    g = run.graph
    edges = g.edges.nonzero().tolist()
    one_edge = []
    for u, d in edges:
        mask = torch.zeros_like(g.edges)
        mask[u, d] = True
        one_edge.append(mask)
    values = run.metrics(one_edge, metric, batch_size, progress=progress, desc="exact edge patching")
    scores = torch.full(g.edges.shape, float("nan"), dtype=torch.float64, device="cpu")  # filled from Python numbers
    for (u, d), v in zip(edges, values.tolist()):
        scores[u, d] = clean_value - v
    return scores


def attribute_edges(model: Transformer, clean, corrupted, metric: Metric, method: str = "eap", *, steps: int = 5,
                    batch_size: int = 256, progress: bool = True) -> EdgeScores:
    """Score every edge of `model`'s graph (see the module docstring).

    clean / corrupted: prompts (texts or token ids [batch, pos]) of equal length; metric:
    logits [batch, pos, d_vocab] -> scalar (e.g. `interp.metrics.logit_diff`); steps: EAP-IG's
    interpolation steps; batch_size: sequences per forward pass (patched runs x prompts; exact).
    """
    if method not in METHODS:
        raise ValueError(f"unknown edge attribution method {method!r}; choose from {', '.join(METHODS)}")
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    graph = Graph(model.cfg)
    clean_t, corrupted_t = paired_tokens(model, clean, corrupted)
    start = time.perf_counter()
    # EAP: the gradient run is the clean run (two passes in all); the others need the clean run first.
    run = EdgeRun(model, graph, clean_t, corrupted_t, clean_pass=method != "eap")
    grad = _gradients(run, metric) if method == "eap" else None
    with torch.no_grad():
        clean_value = float(row_metric(metric, run.clean_logits, 1)[0])
        corrupted_value = float(row_metric(metric, run.corrupted_logits, 1)[0])
    diff = (run.outputs_clean - run.outputs_corrupted).double()  # [U, batch, pos, d_model]
    if method == "exact":
        scores = _exact(run, metric, clean_value, batch_size, progress)
    else:
        if method == "eap-ig":
            e_clean, e_corr = run.outputs_clean[0], run.outputs_corrupted[0]
            alphas = riemann_alphas(steps, e_clean.dtype)
            embed = torch.cat([e_corr + a * (e_clean - e_corr) for a in alphas])
            grad = _gradients(run, metric, embed=embed, rows=steps) / steps
        scores = gradient_times_delta(grad.double(), diff, pairwise=True).cpu()
        scores = scores.masked_fill(~graph.edges, float("nan"))
    seconds = time.perf_counter() - start
    info = {"steps": steps} if method == "eap-ig" else {}
    return EdgeScores(graph, scores, method, metric_name(metric), clean_value, corrupted_value,
                      seconds, info)


__all__ = ["attribute_edges", "EdgeScores", "METHODS"]
