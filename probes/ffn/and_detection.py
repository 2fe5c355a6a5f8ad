"""AND detection: which MLP neurons fire for a full subject ("Michael Jordan") but not for
prompts sharing only one of its parts ("Michael Phelps", "Alexis Jordan"), and whether the
key's (negative) bias is what silences the parts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Sequence, Union

from interp.sites import Neuron
from interp.tokens import prompt_tokens
from models.transformer import Transformer
from probes.ffn.keys import check_neurons, layer_biases, neuron_activations


@dataclass
class AndRow:
    """One neuron's key on the full subject and on prompts sharing only one of its parts.

    full / first_only / last_only: activation after the non-linearity (partials: mean over
    the prompts given); pre_*: before it; bias: `neuron_bias`, the part of the
    pre-activation that does not depend on the input. is_and: fires for the full subject
    and at most `ratio` x as much for either part. bias_gates: the bias is negative and
    decides it: without the bias each part alone would fire, with it neither does.
    silenced_by_bias: the parts for which that holds on their own."""

    neuron: Neuron
    full: float
    first_only: float
    last_only: float
    pre_full: float
    pre_first_only: float
    pre_last_only: float
    bias: float
    is_and: bool
    bias_gates: bool
    silenced_by_bias: list[str] = field(default_factory=list)  # parts ("first", "last") that fire only without the bias

    @property
    def label(self) -> str:
        return self.neuron.label

    @property
    def and_score(self) -> float:
        return self.full - max(self.first_only, self.last_only)

    def to_dict(self) -> dict:
        return {"neuron": self.label, "layer": self.neuron.layer, "index": self.neuron.index,
                **{k: v for k, v in vars(self).items() if k != "neuron"}}


def and_detection(model: Transformer, full: str, first_only: Union[str, Sequence[str]], last_only: Union[str, Sequence[str]],
                  neurons: Optional[Sequence[Neuron]] = None, pos: int = -1, ratio: float = 0.25,
                  k: int = 20) -> list[AndRow]:
    """Which neurons fire for the full subject but not for its parts alone, at `pos`.

    full: a prompt with the full subject ("Michael Jordan plays the sport of");
    first_only / last_only: prompts (or lists) sharing only the first / last part
    ("Michael Phelps ...", "Alexis Jordan ..."), with the same number of tokens.
    neurons: the ones to report, in that order; default: the k neurons with the
    largest AND score (full minus the larger partial) over the whole model.
    """
    groups = {"full": [full], "first": [first_only] if isinstance(first_only, str) else list(first_only),
              "last": [last_only] if isinstance(last_only, str) else list(last_only)}
    all_prompts = [p for g in groups.values() for p in g]
    prompt_tokens(model, all_prompts, "prompts of the AND test")  # same lengths, or a clear error
    candidates = check_neurons(model, neurons) if neurons is not None else [
        Neuron(l, n) for l in range(model.cfg.n_layers) for n in range(model.cfg.d_mlp)]
    post = neuron_activations(model, all_prompts, candidates, pos)
    pre = neuron_activations(model, all_prompts, candidates, pos, pre=True)
    i_first = slice(1, 1 + len(groups["first"]))
    i_last = slice(1 + len(groups["first"]), None)
    biases = _biases(model, candidates)
    rows = []
    for j, neuron in enumerate(candidates):
        f, a, b = float(post[0, j]), float(post[i_first, j].mean()), float(post[i_last, j].mean())
        pf, pa, pb = float(pre[0, j]), float(pre[i_first, j].mean()), float(pre[i_last, j].mean())
        bias = biases[j]
        is_and = f > 0 and max(a, b) <= ratio * f
        gates = bias < 0 and pf > 0 and pa <= 0 and pb <= 0 and pa - bias > 0 and pb - bias > 0
        silenced = [part for part, p in (("first", pa), ("last", pb)) if p <= 0 < p - bias]
        rows.append(AndRow(neuron, f, a, b, pf, pa, pb, bias, is_and, gates, silenced))
    if neurons is None:
        rows = sorted(rows, key=lambda r: -r.and_score)[:k]
    return rows


def _biases(model: Transformer, neurons: list[Neuron]) -> list[float]:
    """`neuron_bias` of many neurons (one `layer_biases` per layer)."""
    per_layer = {layer: layer_biases(model, layer).tolist() for layer in {n.layer for n in neurons}}
    return [per_layer[n.layer][n.index] for n in neurons]


def related_subjects(subject: str, subjects: Sequence[str]) -> tuple[list[str], list[str]]:
    """For a two-word subject: the subjects sharing only its first word, and only its last word."""
    parts = subject.split()
    if len(parts) != 2:
        raise ValueError(f"the AND test needs a two-word subject, got {subject!r}")
    first, last = parts
    first_only = [s for s in subjects if s.split()[0] == first and s.split()[-1] != last]
    last_only = [s for s in subjects if s.split()[-1] == last and s.split()[0] != first]
    return first_only, last_only


__all__ = ["AndRow", "and_detection", "related_subjects"]
