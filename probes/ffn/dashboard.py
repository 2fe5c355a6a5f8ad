"""An MLP neuron's dashboard, what Neuronpedia shows for a neuron, offline: where it fires over
some texts, what its value writes, what its key reads at the top context.

    dash = neuron_dashboard(model, 1, 7, texts, k=10)
    dash.label, dash.top_examples[0]     # "L1N7", Context(text, tokens, pos, activation, activations)
    dash.value_top, dash.value_bottom    # [(token, logit per unit activation), ...]
    dash.key_sources                     # {"Michael@1": .., "Jordan@2": .., "position": .., "mlp L0": .., "biases": ..}
    dash.show(); dash.save_html("L1N7.html")   # the interactive view; plot_dashboard(dash, path) a PNG

The same `FeatureDashboard` as a dictionary feature's (probes.sae.dashboard), with unit
"neuron": the activation is the neuron's `blocks.{l}.mlp.hook_post` (it fires where > 0), the
value's logits are `value_logits` (W_out[n] through the final norm's centring and weight with
scale 1, and W_U), the key's split by source is `key_by_source` at the top context (summing to
the pre-activation, `hook_pre` there). Generic: texts come from the caller.
"""

from __future__ import annotations

from typing import Iterator, Sequence, Union

import torch

from interp import names as hook_names
from interp.sites import Neuron
from interp.tokens import cached_batches, one_prompt
from models.transformer import Transformer
from probes.ffn.key_sources import key_by_source
from probes.ffn.keys import check_neurons
from probes.ffn.values import ranked_tokens, value_logits
from probes.sae.dashboard import FeatureDashboard, check_texts, unit_activations


def _check_counts(k: int, bins: int) -> None:
    for name, v in (("k", k), ("bins", bins)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{name} must be an int >= 1, got {v!r}")


def neuron_batches(model: Transformer, neuron: Neuron, texts: Sequence[str], *, batch_size: int = 512,
                   progress: bool = True) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """(tokens [batch, pos], real [batch, pos], activation [batch, pos]) of one neuron (layer
    resolved) over `texts`, one padded batch at a time; the forward pass stops after its block."""
    hook = hook_names.act_name("post", neuron.layer)
    for batch, cache in cached_batches(model, texts, [hook], batch_size, stop_at_layer=neuron.layer + 1,
                                       progress=progress, desc=f"neuron {neuron.label}"):
        yield batch.tokens, batch.real, cache[hook][..., neuron.index]


def _pre_activation(model: Transformer, neuron: Neuron, text: str, pos: int) -> float:
    """The neuron's pre-activation (hook_pre) at `pos` of one text, from its own run."""
    hook = hook_names.act_name("pre", neuron.layer)
    with torch.no_grad():
        _, cache = model.run_with_cache(one_prompt(model, text)[None], names_filter=[hook], return_type=None,
                                        stop_at_layer=neuron.layer + 1)
    return float(cache[hook][0, pos, neuron.index])


def neuron_dashboard(model: Transformer, layer: int, index: int, texts: Union[str, Sequence[str]], *, k: int = 10,
                     bins: int = 40, batch_size: int = 512, progress: bool = True) -> FeatureDashboard:
    """Neuron `index` of MLP `layer` (negative layers count from the end) over every token of
    `texts`: the k top contexts of its activation (hook_post), the k tokens its value promotes
    and suppresses most, its key by source at the top context, a histogram of its positive
    activations in `bins` bins, and how often it fires (> 0). Batches of `batch_size` texts,
    with a progress bar unless progress=False. Bad input raises before any forward pass."""
    (neuron,) = check_neurons(model, [Neuron(layer, index)])
    _check_counts(k, bins)
    texts = check_texts(texts)
    summary = unit_activations(model, texts, neuron_batches(model, neuron, texts, batch_size=batch_size,
                                                            progress=progress), k, bins)
    notes, key_sources, key_pre = [], None, None
    if summary.examples:
        top = summary.examples[0]
        key_pre = _pre_activation(model, neuron, top.text, top.pos)
        try:
            key_sources = key_by_source(model, top.text, neuron, top.pos)
        except ValueError as e:
            notes.append(f"no key sources: {e}")
    else:
        notes.append("the neuron never fires on these texts")
    value_top, value_bottom = ranked_tokens(model, value_logits(model, neuron), k)
    return FeatureDashboard(neuron.layer, neuron.index, hook_names.act_name("post", neuron.layer), summary.examples,
                            value_top, value_bottom, key_sources, key_pre, summary.histogram, summary.frequency,
                            summary.n_tokens, len(texts), notes, unit="neuron")


__all__ = ["neuron_batches", "neuron_dashboard"]
