"""What an MLP neuron reads: its key's weights, its bias and its activations on prompts; the
check that a site is a neuron of the model, and that an analysis of one prompt got one.

Gated MLPs (Llama / Qwen2 SwiGLU): a neuron's activation is post = act(gate) x up, with
gate = x . W_gate[:, n] (hook_pre) and up = x . W_in[:, n] + b_in[n] (hook_pre_linear): the
key is the product of two keys. "pre" activations use the gate (the non-linear part).
(The key split by residual component is in `probes.ffn.key_sources`, the AND test in
`probes.ffn.and_detection`, the prompts that trigger a neuron in `probes.ffn.triggers`.)
"""

from __future__ import annotations

from typing import Sequence, Union

import torch

from interp import names as hook_names
from interp.checks import IndexRangeError, resolve_index, resolve_layer, resolve_pos
from interp.sites import Neuron
from interp.tokens import one_prompt, prompt_tokens
from models.transformer import Transformer

Prompt = Union[str, torch.Tensor]


def check_neurons(model: Transformer, neurons: Sequence[Neuron]) -> list[Neuron]:
    """The neurons with their layers resolved (negatives count from the end); a clear error
    (IndexRangeError) for a neuron the model does not have, TypeError for anything not a `Neuron`."""
    out = []
    for n in neurons:
        if not isinstance(n, Neuron):
            raise TypeError(f"neurons are given as interp.Neuron(layer, index[, pos]), got {n!r}")
        try:
            layer = resolve_layer(n.layer, model.cfg.n_layers)
            resolve_index(n.index, model.cfg.d_mlp, "neuron")
        except IndexRangeError as e:
            raise IndexRangeError(f"neuron {n.label} does not exist: the model has {model.cfg.n_layers} layers "
                                  f"of {model.cfg.d_mlp} neurons ({e})") from None
        out.append(Neuron(layer, n.index, n.pos))
    return out


def single_prompt(model: Transformer, prompt: Union[Prompt, Sequence[str]], what: str) -> torch.Tensor:
    """Token ids [pos] of exactly one prompt (text, a list of one text, or ids [pos] / [1, pos]);
    a clear error for several, which `what` would not average."""
    if isinstance(prompt, (list, tuple)):
        if len(prompt) != 1:
            raise ValueError(f"{what} reads one prompt, got {len(prompt)}: call it once per prompt")
        prompt = prompt[0]
    if isinstance(prompt, torch.Tensor) and prompt.dim() == 2 and prompt.shape[0] != 1:
        raise ValueError(f"{what} reads one prompt, got a batch of {prompt.shape[0]}: call it once per prompt")
    return one_prompt(model, prompt)


def _keys(model: Transformer, layer: int, gate: bool) -> torch.Tensor:
    """The keys [d_model, d_mlp] a layer's (gate) pre-activations read: W_gate for a gated MLP's gate, else W_in."""
    return model.get_parameter(hook_names.param_name("mlp.W_gate" if gate else "mlp.W_in", layer)).detach()


def layer_biases(model: Transformer, layer: int, which: str = "gate") -> torch.Tensor:
    """[d_mlp]: the part of each neuron's pre-activation that does not depend on the input:
    b_in[n] plus ln2.b . key (LayerNorm has a bias, RMSNorm none). For a gated MLP's gate
    (which="gate") there is no b_in term. This is the one implementation of a key's bias."""
    gate = model.cfg.gated_mlp and which == "gate"
    keys = _keys(model, layer, gate)
    bias = torch.zeros(keys.shape[1], dtype=keys.dtype, device=keys.device)
    if model.cfg.norm == "layernorm":
        bias = bias + model.get_parameter(hook_names.param_name("ln2.b", layer)).detach() @ keys
    if not gate:
        bias = bias + model.get_parameter(hook_names.param_name("mlp.b_in", layer)).detach()
    return bias


def neuron_bias(model: Transformer, neuron: Neuron, which: str = "gate") -> float:
    """One neuron's `layer_biases` entry."""
    (neuron,) = check_neurons(model, [neuron])
    return float(layer_biases(model, neuron.layer, which)[neuron.index])


def neuron_activations(model: Transformer, prompts: Union[Prompt, Sequence[str]], neurons: Sequence[Neuron],
                       pos: int = -1, pre: bool = False) -> torch.Tensor:
    """Activations [n_prompts, n_neurons] at `pos` (post non-linearity, or pre with pre=True).
    A neuron's own `pos`, when set, overrides `pos`."""
    neurons = check_neurons(model, neurons)
    tokens = prompt_tokens(model, prompts)
    act = "pre" if pre else "post"
    names = sorted({hook_names.act_name(act, n.layer) for n in neurons})
    with torch.no_grad():
        _, cache = model.run_with_cache(tokens, names_filter=names, return_type=None)
    n_pos = tokens.shape[1]
    return torch.stack([cache[hook_names.act_name(act, n.layer)][:, resolve_pos(pos if n.pos is None else n.pos, n_pos),
                                                                   n.index] for n in neurons], dim=-1)


__all__ = ["check_neurons", "single_prompt", "layer_biases", "neuron_bias", "neuron_activations"]
