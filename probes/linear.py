"""Linear probes on residual states: does the residual at a position, after a layer, linearly
encode the answer (a relation's object)?

    states = residual_states(model, prompts, positions)           # [point, n, d_model]
    probe = train_probe(states[2], labels)                        # softmax regression, L2-regularised
    probe.accuracy(test_states[2], test_labels)
    curve = probe_curve(model, train, test, role="last subject token")   # accuracy per residual point

Points are the residual stream entering each layer and after the last ("embed", "L0", ...,
the same points as `probes.recall.logit_lens`). Features are standardised with the training
set's mean and standard deviation; the probe is fitted by full-batch L-BFGS (deterministic).
Labels never seen in training count as errors at test time.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple, Sequence

import torch

from interp import names as hook_names
from interp.checks import resolve_pos
from interp.tokens import cached_batches
from models.transformer import Transformer
from probes.subjects import last_subject_pos

ROLES = ("last subject token", "last token")


class Example(NamedTuple):
    prompt: str
    subject: str
    label: str


@dataclass
class LinearProbe:
    weight: torch.Tensor  # [n_classes, d]
    bias: torch.Tensor  # [n_classes]
    mean: torch.Tensor  # [d]
    std: torch.Tensor  # [d]
    classes: list[str]

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """x [n, d] -> [n, n_classes]."""
        return ((x.double() - self.mean) / self.std) @ self.weight.T + self.bias

    def predict(self, x: torch.Tensor) -> list[str]:
        return [self.classes[i] for i in self.logits(x).argmax(-1).tolist()]

    def accuracy(self, x: torch.Tensor, labels: Sequence[str]) -> float:
        if len(labels) != x.shape[0]:
            raise ValueError(f"{x.shape[0]} states but {len(labels)} labels")
        return sum(p == t for p, t in zip(self.predict(x), labels)) / max(1, len(labels))


def train_probe(x: torch.Tensor, labels: Sequence[str], *, l2: float = 1e-2, steps: int = 100) -> LinearProbe:
    """Multinomial logistic regression on states x [n, d] with the given labels."""
    if x.dim() != 2 or x.shape[0] != len(labels) or not len(labels):
        raise ValueError(f"need states [n, d] and n labels, got {list(x.shape)} and {len(labels)} labels")
    classes = sorted(set(labels))
    y = torch.tensor([classes.index(t) for t in labels], device=x.device)
    x = x.double()
    mean, std = x.mean(0), x.std(0).clamp_min(1e-6)
    z = (x - mean) / std
    weight = torch.zeros(len(classes), x.shape[1], dtype=torch.float64, device=x.device, requires_grad=True)
    bias = torch.zeros(len(classes), dtype=torch.float64, device=x.device, requires_grad=True)
    opt = torch.optim.LBFGS([weight, bias], max_iter=steps, line_search_fn="strong_wolfe")

    def loss() -> torch.Tensor:
        opt.zero_grad()
        value = torch.nn.functional.cross_entropy(z @ weight.T + bias, y) + l2 * weight.pow(2).sum() / 2
        value.backward()
        return value

    with torch.enable_grad():
        opt.step(loss)
    return LinearProbe(weight.detach(), bias.detach(), mean, std, classes)


def residual_states(model: Transformer, prompts: Sequence[str], positions: Sequence[int], batch_size: int = 512) -> torch.Tensor:
    """[n_points, n, d_model]: the residual stream of each prompt at its position (within the prompt's
    own tokens; negatives count from its end), entering each layer and after the last (n_points = n_layers + 1)."""
    if len(prompts) != len(positions):
        raise ValueError(f"{len(prompts)} prompts but {len(positions)} positions")
    n = model.cfg.n_layers
    names = [hook_names.act_name("resid_pre", l) for l in range(n)] + [hook_names.act_name("resid_post", n - 1)]
    out = []
    for batch, cache in cached_batches(model, prompts, names, batch_size):
        rows = torch.arange(len(batch.texts), device=model.device)
        pos = torch.tensor([resolve_pos(p, int(n)) for p, n in
                            zip(positions[batch.start: batch.start + len(rows)], batch.lengths)], device=model.device)
        out.append(torch.stack([cache[name][rows, pos] for name in names]))
    return torch.cat(out, dim=1)


def role_positions(model: Transformer, examples: Sequence[Example], role: str) -> list[int]:
    """Each example's position of `role` ("last subject token" or "last token")."""
    if role not in ROLES:
        raise ValueError(f"role must be one of {ROLES}, got {role!r}")
    if role == "last token":
        return [len(model.to_str_tokens(e.prompt)) - 1 for e in examples]
    return [last_subject_pos(model, e.prompt, e.subject) for e in examples]


@dataclass
class ProbeCurve:
    role: str
    points: list[str]
    train_accuracy: list[float]
    test_accuracy: list[float]
    chance: float  # the most frequent training label's share of the test set
    n_train: int
    n_test: int

    def to_dict(self) -> dict:
        return dict(vars(self))


def probe_curve(model: Transformer, train: Sequence[Example], test: Sequence[Example], role: str = "last subject token", *,
                l2: float = 1e-2) -> ProbeCurve:
    """Train one probe per residual point on `train`, test on `test` (states at `role`)."""
    if not train or not test:
        raise ValueError("probe_curve needs training and test examples")
    xs = residual_states(model, [e.prompt for e in train], role_positions(model, train, role))
    xt = residual_states(model, [e.prompt for e in test], role_positions(model, test, role))
    y, yt = [e.label for e in train], [e.label for e in test]
    probes = [train_probe(xs[i], y, l2=l2) for i in range(xs.shape[0])]
    common = max(set(y), key=y.count)
    points = ["embed"] + [f"L{l}" for l in range(model.cfg.n_layers)]
    return ProbeCurve(role, points, [p.accuracy(xs[i], y) for i, p in enumerate(probes)],
                      [p.accuracy(xt[i], yt) for i, p in enumerate(probes)], yt.count(common) / len(yt),
                      len(train), len(test))


__all__ = ["Example", "LinearProbe", "train_probe", "residual_states", "role_positions", "ProbeCurve", "probe_curve",
           "ROLES"]
