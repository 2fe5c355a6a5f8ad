"""What an MLP neuron writes: its value projected through the unembedding, and its direct
contribution to an answer's logit, ranked over the whole model for one fact.

Contributions are direct effects on the logit at one position, read through the final
norm with its scale frozen from the run, exactly as in
`interp.attribution.direct_logit_attribution` (they are its `neurons`): contribution =
post x (W_out[n] . u), u the target's unembedding direction after the final norm's
centring, weight and frozen scale. Gated MLPs use post = act(gate) x up the same way.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Optional, Sequence, Union

import torch

from interp import names as hook_names
from interp.attribution import direct_logit_attribution
from interp.checks import resolve_pos
from interp.metrics import Tokens, answer_margin, token_ids
from interp.unembedding import Readout
from interp.sites import Neuron
from interp.tokens import prompt_tokens, str_tokens, token_text
from models import Transformer
from probes.ffn.keys import check_neurons, single_prompt

Prompt = Union[str, torch.Tensor]


@dataclass
class ValueProjection:
    """What a neuron's value W_out[n] does to the logits, per unit of activation: the value
    read through the final norm's centring and weight (scale 1) and the unembedding."""

    neuron: Neuron
    promoted: list[tuple[str, float]]
    suppressed: list[tuple[str, float]]


def direction_logits(model: Transformer, directions: torch.Tensor) -> torch.Tensor:
    """directions [..., d_model] written to the residual stream -> [..., d_vocab]: their logits
    through the final norm's centring and weight (scale 1) and the unembedding (`interp.unembedding`)."""
    with torch.no_grad():
        return Readout(model).logits(directions.detach().to(model.W_U.dtype))


def ranked_tokens(model: Transformer, logits: torch.Tensor, k: int) -> tuple[list[tuple[str, float]], list[tuple[str, float]]]:
    """The k highest and the k lowest entries of logits [d_vocab] as (token, value), most extreme first."""
    k = min(k, logits.numel())
    top, bottom = logits.topk(k), logits.topk(k, largest=False)
    return ([(token_text(model, i), float(v)) for v, i in zip(top.values, top.indices)],
            [(token_text(model, i), float(v)) for v, i in zip(bottom.values, bottom.indices)])


def value_logits(model: Transformer, neuron: Neuron) -> torch.Tensor:
    """[d_vocab]: logit change per unit activation of the neuron, final-norm scale 1."""
    (neuron,) = check_neurons(model, [neuron])
    return direction_logits(model, model.get_parameter(hook_names.param_name("mlp.W_out", neuron.layer))[neuron.index])


def value_projection(model: Transformer, neuron: Neuron, k: int = 10) -> ValueProjection:
    """The k tokens the neuron's value promotes most, and the k it suppresses most."""
    return ValueProjection(check_neurons(model, [neuron])[0], *ranked_tokens(model, value_logits(model, neuron), k))


@dataclass
class NeuronContribution:
    site: Neuron  # Neuron(layer, index, pos): the position read
    activation: float  # post non-linearity, at the position read
    pre_activation: float
    contribution: float  # direct effect on the target logit (minus the counterfactual's)
    value_score: float  # logit change per unit activation, with this run's final-norm scale
    top_tokens: list[str]  # what the value promotes most

    @property
    def layer(self) -> int:
        return self.site.layer

    @property
    def index(self) -> int:
        return self.site.index

    @property
    def label(self) -> str:
        return self.site.label

    def to_dict(self) -> dict:
        return {"label": self.label, "layer": self.layer, "index": self.index, "pos": self.site.pos,
                **{k: v for k, v in asdict(self).items() if k != "site"}}


class RankedNeurons(list):
    """`fact_neurons`' answer: a list of NeuronContribution, largest contribution first, that also
    knows the total direct contribution of all MLP neurons (`total`) and the share the listed
    ones explain (`explained`)."""

    def __init__(self, items: Sequence[NeuronContribution], total: float, target: str, prompt: str) -> None:
        super().__init__(items)
        self.total, self.target, self.prompt = total, target, prompt

    @property
    def explained(self) -> float:
        return sum(n.contribution for n in self) / self.total if self.total else float("nan")

    @property
    def sites(self) -> list[Neuron]:
        """The neurons as `Neuron(layer, index)` (every position: what interventions act on)."""
        return [Neuron(n.layer, n.index) for n in self]

    def to_dict(self) -> dict:
        return {"prompt": self.prompt, "target": self.target, "total_mlp_contribution": self.total,
                "explained": self.explained, "neurons": [n.to_dict() for n in self]}


def neuron_contributions(model: Transformer, prompt: Prompt, target: Tokens, counterfactual: Optional[Tokens] = None,
                         pos: int = -1) -> torch.Tensor:
    """[n_layers, d_mlp]: each neuron's direct contribution to logit(target) (- logit(counterfactual)),
    the mean over the prompts if several are given (as `direct_logit_attribution`)."""
    return direct_logit_attribution(model, prompt_tokens(model, prompt), target, counterfactual, pos).neurons


def fact_neurons(model: Transformer, prompt: Prompt, target: Tokens, k: int = 20, *,
                 counterfactual: Optional[Tokens] = None, pos: int = -1, n_tokens: int = 5) -> RankedNeurons:
    """The k neurons that contribute most to the target's logit at `pos`, largest first."""
    tokens = single_prompt(model, prompt, "fact_neurons")[None]
    pos = resolve_pos(pos, tokens.shape[1])
    dla = direct_logit_attribution(model, tokens, target, counterfactual, pos)
    contrib = dla.neurons
    order = contrib.flatten().argsort(descending=True)[:k]
    names = [hook_names.act_name(a, l) for l in range(model.cfg.n_layers) for a in ("pre", "post")]
    with torch.no_grad():
        _, cache = model.run_with_cache(tokens, names_filter=names + (["ln_final.hook_scale"] if model.cfg.final_norm
                                                                      else []), return_type=None)
    scale = float(cache["ln_final.hook_scale"][0, pos]) if model.cfg.final_norm else 1.0
    target_id = int(token_ids(target, model)[0])
    cf_id = int(token_ids(counterfactual, model)[0]) if counterfactual is not None else None
    out = []
    for flat in order.tolist():
        layer, index = divmod(flat, model.cfg.d_mlp)
        site = Neuron(layer, index, pos)
        logits = value_logits(model, site)
        per_unit = answer_margin(logits, target_id, cf_id)
        proj = value_projection(model, site, n_tokens)
        out.append(NeuronContribution(
            site, float(cache["post", layer][0, pos, index]), float(cache["pre", layer][0, pos, index]),
            float(contrib[layer, index]), float(per_unit) / scale, [w for w, _ in proj.promoted],
        ))
    what = dla.answer if dla.counterfactual is None else f"{dla.answer} - {dla.counterfactual}"
    text = prompt if isinstance(prompt, str) else " ".join(str_tokens(model, tokens))
    return RankedNeurons(out, float(contrib.sum()), what, text)


__all__ = ["ValueProjection", "value_logits", "value_projection", "NeuronContribution", "RankedNeurons",
           "neuron_contributions", "fact_neurons"]
