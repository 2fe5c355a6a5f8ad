"""Direct logit attribution: the logit difference at one position split into what every head,
neuron and bias writes to the residual stream, read through the final norm with its scale
frozen from the run (`interp.unembedding`). Nothing needs folding: the parts plus the bias terms add
up to the true logit difference.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import torch

from interp import names as hook_names
from interp.checks import require_pre_norm, resolve_pos
from interp.metrics import Tokens, answer_margin, token_ids
from interp.patching import Prompts, axis_labels
from interp.unembedding import Readout, final_norm, final_scale, unembed_directions
from interp.results import LabelledResult
from interp.tokens import prompt_tokens, str_tokens, token_text
from models import Transformer


@dataclass
class Attribution(LabelledResult):
    """A labelled tensor of direct attributions (the values are effects: no baseline)."""

    values: torch.Tensor
    axes: tuple[str, ...]
    labels: dict[str, list[str]]
    title: str = ""
    metric_name: str = "direct logit attribution"
    method: str = "direct logit attribution"


class ToAnswer:
    """Names a direct attribution by its answer (and counterfactual)."""

    answer: str
    counterfactual: Optional[str]

    @property
    def metric_name(self) -> str:
        what = self.answer if self.counterfactual is None else f"{self.answer} - {self.counterfactual}"
        return f"direct logit attribution to {what}"

    @property
    def title(self) -> str:
        return self.metric_name


def top_indices(x: torch.Tensor, k: int) -> list[tuple[int, int]]:
    flat = x.flatten().abs().argsort(descending=True)[:k]
    return [tuple(int(i) for i in torch.unravel_index(j, x.shape)) for j in flat]


@dataclass
class DirectLogitAttribution(ToAnswer, LabelledResult):
    """What each component writes to logit[answer] - logit[counterfactual] at one position,
    through the final norm with its scale frozen from the run (mean over the prompts).

    heads [n_layers, n_heads], neurons [n_layers, d_mlp], attn_bias / mlp_bias
    [n_layers] (b_O, b_out), embed / pos_embed / final_bias (ln_final.b and b_U)
    floats; `total()` of all of them equals `logit_diff`. As a labelled result its
    values are the heads ([layer, head]).
    """

    heads: torch.Tensor
    neurons: torch.Tensor
    attn_bias: torch.Tensor
    mlp_bias: torch.Tensor
    embed: float
    pos_embed: float
    final_bias: float
    logit_diff: float
    tokens: list[str]
    answer: str
    counterfactual: Optional[str]
    method: str = "direct logit attribution"
    axes: tuple[str, ...] = ("layer", "head")

    @property
    def values(self) -> torch.Tensor:
        return self.heads

    @property
    def labels(self) -> dict[str, list[str]]:
        n_layers, n_heads = self.heads.shape
        return axis_labels(("layer", "head"), range(n_layers), [], n_heads, self.tokens)

    @property
    def attn(self) -> torch.Tensor:
        """Per layer: all heads plus b_O, [n_layers]."""
        return self.heads.sum(-1) + self.attn_bias

    @property
    def mlp(self) -> torch.Tensor:
        """Per layer: all neurons plus b_out, [n_layers]."""
        return self.neurons.sum(-1) + self.mlp_bias

    def total(self) -> float:
        return float(self.attn.sum() + self.mlp.sum()) + self.embed + self.pos_embed + self.final_bias

    def head_result(self) -> Attribution:
        """The heads as a labelled [layer, head] result (plots like a patching result; `top`
        ranks the largest attributions, as they are effects already)."""
        return Attribution(self.heads, self.axes, self.labels, self.title, self.metric_name)

    def _extra_dict(self) -> dict[str, Any]:
        return {
            "answer": self.answer, "counterfactual": self.counterfactual, "logit_diff": self.logit_diff,
            "sum_of_parts": self.total(), "tokens": self.tokens, "heads": self.heads.tolist(),
            "attn_bias": self.attn_bias.tolist(), "mlp": self.mlp.tolist(), "attn": self.attn.tolist(),
            "mlp_bias": self.mlp_bias.tolist(), "embed": self.embed, "pos_embed": self.pos_embed,
            "final_bias": self.final_bias,
            "top_neurons": [
                {"layer": l, "neuron": n, "attribution": float(self.neurons[l, n])}
                for l, n in top_indices(self.neurons, 20)
            ],
        }


class AnswerReadout:
    """What a residual-stream component written at position `pos` adds to logit[answer] -
    logit[counterfactual], through the final norm with its scale frozen from one run of the
    prompts (answer / counterfactual: a word or id, or one per prompt)."""

    def __init__(self, model: Transformer, prompts: Prompts, answer: Tokens, counterfactual: Optional[Tokens],
                 pos: int, names_filter: Any = None) -> None:
        require_pre_norm(model.cfg, "direct logit attribution")
        self.tokens = tokens = prompt_tokens(model, prompts)
        batch = tokens.shape[0]
        self.pos, self.batch = resolve_pos(pos, tokens.shape[1]), batch

        def per_prompt(ids: torch.Tensor, what: str) -> torch.Tensor:
            if ids.numel() not in (1, batch):
                raise ValueError(f"{ids.numel()} {what} tokens for {batch} prompts: give one, or one per prompt")
            return ids.expand(batch)

        self.a_ids = per_prompt(token_ids(answer, model), "answer")
        self.c_ids = per_prompt(token_ids(counterfactual, model), "counterfactual") if counterfactual is not None else None
        self.direction = unembed_directions(model, self.a_ids, self.c_ids)  # [batch, d_model]
        with torch.no_grad():
            self.logits, self.cache = model.run_with_cache(tokens, names_filter=names_filter)
        self.readout = Readout(model, final_scale(model, self.cache, self.pos))  # scale [batch, 1]
        self.unit_norms = [final_norm(model, final_scale(model, self.cache, self.pos, b)) for b in range(batch)]

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """x [..., batch, d_model] written at position pos -> its direct attribution [..., batch]."""
        return self.readout.logit(x, self.direction)

    def per_unit(self, acts: torch.Tensor, W: torch.Tensor) -> torch.Tensor:
        """Units that write acts[b, u] * W[u] (neurons: hook_post and W_out; features: their
        activations and W_dec): acts [batch, units], W [units, d_model] -> [batch, units]."""
        return torch.stack([  # one prompt at a time, to bound memory
            acts[b] * (self.unit_norms[b](W) @ self.direction[b]) for b in range(self.batch)])

    def logit_diff(self) -> float:
        picked = answer_margin(self.logits[torch.arange(self.batch, device=self.logits.device), self.pos], self.a_ids,
                               self.c_ids)
        return float(picked.double().mean())

    def names(self, model: Transformer) -> tuple[str, Optional[str]]:
        """The answer's and the counterfactual's token text (of the first prompt)."""
        return (token_text(model, self.a_ids[0]),
                token_text(model, self.c_ids[0]) if self.c_ids is not None else None)


def _bias(model: Transformer, name: str, layer: int, batch: int) -> torch.Tensor:
    return model.get_parameter(hook_names.param_name(name, layer)).detach().expand(batch, -1)


def direct_logit_attribution(
    model: Transformer,
    prompts: Prompts,
    answer: Tokens,
    counterfactual: Optional[Tokens] = None,
    pos: int = -1,
) -> DirectLogitAttribution:
    """Direct logit attribution of every head, neuron and bias to logit[answer] (minus
    logit[counterfactual]) at position `pos`, mean over the prompts.

    answer / counterfactual: a word or id, or one per prompt. Needs a pre-norm model
    (in a post-norm model the residual is renormalised after every block).
    """
    readout = AnswerReadout(model, prompts, answer, counterfactual, pos)
    cache, batch, pos = readout.cache, readout.batch, readout.pos
    with torch.no_grad():
        heads, neurons, attn_bias, mlp_bias = [], [], [], []
        for l in range(model.cfg.n_layers):
            heads.append(readout(cache.head_results(l)[:, pos].transpose(0, 1)).mean(-1))  # [head, batch] -> [head]
            attn_bias.append(readout(_bias(model, "attn.b_O", l, batch)).mean(-1))
            W_out = model.get_parameter(hook_names.param_name("mlp.W_out", l)).detach()
            neurons.append(readout.per_unit(cache[hook_names.act_name("post", l)][:, pos], W_out).mean(0))
            mlp_bias.append(readout(_bias(model, "mlp.b_out", l, batch)).mean(-1))
        embed = float(readout(cache["hook_embed"][:, pos]).mean())
        pos_embed = float(readout(cache["hook_pos_embed"][:, pos]).mean()) if "hook_pos_embed" in cache else 0.0
        final_bias = float(cache.logit_bias(readout.a_ids, readout.c_ids).double().mean())
    return DirectLogitAttribution(
        torch.stack(heads).double(), torch.stack(neurons).double(), torch.stack(attn_bias).double(),
        torch.stack(mlp_bias).double(), embed, pos_embed, final_bias, readout.logit_diff(),
        str_tokens(model, readout.tokens), *readout.names(model),
    )


__all__ = ["Attribution", "DirectLogitAttribution", "direct_logit_attribution", "AnswerReadout"]
