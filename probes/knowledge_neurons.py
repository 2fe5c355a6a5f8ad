"""Knowledge neurons by integrated gradients (Dai et al. 2022, "Knowledge Neurons in
Pretrained Transformers").

Which MLP neurons express the fact "Michael Jordan plays the sport of -> basketball"?
Integrated gradients credits each neuron with its share of the output:

    res = knowledge_neurons(model, "Michael Jordan plays the sport of", "basketball")
    res.attributions          # [n_layers_used, d_mlp], float64
    res.top(10)               # [(layer, neuron, score), ...], largest first
    res.selected()            # the paper's adaptive threshold: score > 0.2 * max score
    completeness_gap(res, 2)  # sum over layer 2 - (out(full) - out(layer 2 zeroed))
    ranking_overlap(res, other_ranking, k=20)

Exactly what is computed. Let ``a`` [d_mlp] be the observed activation of layer ``l``'s
MLP (``blocks.{l}.mlp.hook_post``) at position ``pos`` (default: the last), and
``F(x)`` the output (``output="prob"``: the softmax probability of the target at the
prompt's last position, as in the paper; ``"logit"``: its logit) when that activation
vector is replaced by ``x`` (all other layers and positions untouched, everything after
it recomputed). Then, for every neuron ``n`` of layer ``l``::

    attribution[l, n] = a_n * (1 / steps) * sum_{k=1..steps} dF/dx_n (x = (k / steps) * a)

the right Riemann sum of the integrated-gradients path from the baseline 0 to ``a``.
The whole activation vector of the layer at that position is scaled at once, one layer
at a time (as in the paper). For a gated MLP (SwiGLU) ``hook_post`` is the product
``act(gate) * linear`` and is scaled the same way.

Completeness (IG's defining property): summed over ALL neurons of a layer, the
attributions approach ``F(a) - F(0)`` = output(full run) - output(layer's MLP
activation zeroed at ``pos``) as ``steps`` grows; the Riemann-sum error shrinks like
1 / steps. Both ends are recorded (``full_output``, ``zeroed_outputs``), so
`completeness_gap` needs no model.

Speed: the ``steps`` scaled copies are rows of `interp.engine.run_patched` (``batch_size``
rows per forward pass; `interp.attribution.integrated_gradients`), resumed from the cached
residual stream entering layer ``l`` at position ``pos``, and only the last position is unembedded. One backward pass per layer
gives the gradient for every neuron of that layer. Parameters' ``.grad`` are never
touched, and no hook stays attached, also when an error is raised.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Literal, Optional, Union

import torch

from interp import names as hook_names
from interp.attribution.gradients import integrated_gradients, riemann_alphas
from interp.checks import resolve_layer, resolve_pos
from interp.metrics import Logit, Probability
from interp.results import LabelledResult
from interp.sites import Neuron
from interp.tokens import answer_token, one_prompt, str_tokens, token_text
from models.transformer import Transformer

Prompt = Union[str, torch.Tensor]
Target = Union[str, int]
Output = Literal["prob", "logit"]
OUTPUTS = ("prob", "logit")
DEFAULT_THRESHOLD = 0.2  # Dai et al.: keep neurons above 0.2 x the largest attribution


# ============================================================ result
@dataclass
class KnowledgeNeuronResult(LabelledResult):
    """Integrated-gradients attribution of every MLP neuron at one position.

    attributions: [n_layers_used, d_mlp] float64; row i is layer ``layers[i]``.
    full_output: the output (probability or logit of the target) on the prompt.
    zeroed_outputs: [n_layers_used] the output with that layer's MLP activation at
        ``pos`` set to 0 (the IG baseline).
    """

    attributions: torch.Tensor
    layers: list[int]
    target: int
    prompt: str
    pos: int
    steps: int
    output: str = "prob"
    target_str: str = ""
    tokens: list[str] = field(default_factory=list)
    full_output: float = float("nan")
    zeroed_outputs: Optional[torch.Tensor] = None
    threshold: float = DEFAULT_THRESHOLD
    axes: tuple[str, ...] = ("layer", "neuron")
    method: str = "knowledge neurons (integrated gradients)"

    # ------------------------------------------------------------ plotting like PatchResult
    @property
    def values(self) -> torch.Tensor:
        """The attributions [layer, neuron] (the name `interp.plot.plot_result` reads)."""
        return self.attributions

    @property
    def labels(self) -> dict[str, list[str]]:
        return {"layer": [f"L{l}" for l in self.layers],
                "neuron": [f"N{n}" for n in range(self.attributions.shape[1])]}

    @property
    def metric_name(self) -> str:
        return f"IG attribution to {self.output}({self.target_str or self.target})"

    @property
    def title(self) -> str:
        return f"{self.method}: {self.prompt!r} -> {self.target_str or self.target}"

    # ------------------------------------------------------------ rankings
    def _row(self, layer: int) -> int:
        if layer not in self.layers:
            raise ValueError(f"layer {layer} was not attributed; this result has layers {self.layers}")
        return self.layers.index(layer)

    def top(self, k: int = 10) -> list[tuple[Neuron, float]]:
        """The k neurons with the largest attribution, largest first: [(Neuron(layer, index, pos), score)]."""
        flat = self.attributions.flatten()
        order = flat.argsort(descending=True, stable=True)[: max(int(k), 0)]
        d_mlp = self.attributions.shape[1]
        return [(Neuron(self.layers[int(i) // d_mlp], int(i) % d_mlp, self.pos), float(flat[i])) for i in order]

    def selected(self, threshold: Optional[float] = None) -> list[tuple[Neuron, float]]:
        """Neurons with attribution > threshold x the largest attribution (the paper's
        adaptive threshold; default ``self.threshold``, 0.2), largest first.

        Empty when no attribution is positive.
        """
        t = self.threshold if threshold is None else float(threshold)
        best = float(self.attributions.max())
        if best <= 0:
            return []
        n = int((self.attributions > t * best).sum())
        return self.top(n)

    def layer_total(self, layer: int) -> float:
        """Sum of the attributions over all neurons of `layer`."""
        return float(self.attributions[self._row(layer)].sum())

    def _extra_dict(self) -> dict[str, Any]:
        return {
            "prompt": self.prompt, "tokens": self.tokens, "target": self.target, "target_str": self.target_str,
            "pos": self.pos, "steps": self.steps, "output": self.output, "threshold": self.threshold,
            "full_output": self.full_output,
            "zeroed_outputs": None if self.zeroed_outputs is None else self.zeroed_outputs.tolist(),
            "layers": list(self.layers), "top": [[n.layer, n.index, s] for n, s in self.top(20)],
            "selected": [[n.layer, n.index, s] for n, s in self.selected()],
        }


# ============================================================ helpers
def _check_layers(model: Transformer, layers: Optional[Iterable[int]]) -> list[int]:
    n = model.cfg.n_layers
    if layers is None:
        return list(range(n))
    out: list[int] = []
    for l in ([layers] if isinstance(layers, int) else list(layers)):
        l = resolve_layer(l, n)
        if l in out:
            raise ValueError(f"layer {l} is given twice in layers={list(layers)}")
        out.append(l)
    if not out:
        raise ValueError("layers is empty: give at least one layer")
    return out


# ============================================================ main
def knowledge_neurons(
    model: Transformer,
    prompt: Prompt,
    target: Target,
    *,
    layers: Optional[Iterable[int]] = None,
    pos: int = -1,
    steps: int = 20,
    batch_size: Optional[int] = None,
    threshold: float = DEFAULT_THRESHOLD,
    output: Output = "prob",
    progress: bool = True,
) -> KnowledgeNeuronResult:
    """Integrated-gradients attribution of every MLP neuron to the target (Dai et al. 2022).

    prompt: text, or token ids [pos] / [1, pos].
    target: a single-token word (the answer-token policy of `interp.tokens.answer_token`)
        or a token id; its probability (``output="prob"``) or logit (``"logit"``) at the
        prompt's last position is the output being attributed.
    layers: the layers to attribute (default all); pos: the position whose MLP
        activations are scaled (default the last, -1).
    steps: Riemann steps of the path from 0 to the observed activation (paper: 20).
    batch_size: scaled copies per forward pass (rows); default: as many as fit in 512 MiB.
    threshold: default for `KnowledgeNeuronResult.selected`.
    Returns a `KnowledgeNeuronResult` with attributions [n_layers_used, d_mlp] (float64).
    """
    if output not in OUTPUTS:
        raise ValueError(f"output must be one of {OUTPUTS}, got {output!r}")
    steps = len(riemann_alphas(steps))  # checks steps >= 1
    if batch_size is not None and int(batch_size) < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if isinstance(prompt, (list, tuple)):
        raise ValueError(f"knowledge_neurons attributes one prompt, got {len(prompt)}: call it once per prompt")
    tokens = one_prompt(model, prompt)
    pos = resolve_pos(pos, tokens.shape[0], "pos")
    target_id = answer_token(model, target)
    target_str = target if isinstance(target, str) else token_text(model, target_id)
    layer_list = _check_layers(model, layers)
    prompt_text = prompt if isinstance(prompt, str) else (
        model.to_string(tokens) if model.tokenizer is not None else " ".join(str(int(t)) for t in tokens))

    metric = (Probability if output == "prob" else Logit)(-1, torch.tensor([target_id], device=model.device))
    names = [hook_names.act_name("post", l) for l in layer_list]
    with torch.no_grad():
        logits, cache = model.run_with_cache(tokens[None], names_filter=names)
        full = float(metric(logits))

    # Rows: the Riemann points, then alpha = 0 (the baseline, for completeness), for every layer:
    # one engine call, one backward pass (the rows are independent).
    sites = [(name, (pos,), cache[name][0, pos]) for name in names]  # activations [d_mlp]
    per_layer, y = integrated_gradients(model, tokens[None], sites, metric, steps, with_baseline=True,
                                        batch_size=batch_size, progress=progress, desc="knowledge neurons")
    attributions = torch.stack([a.cpu() for a in per_layer])
    zeroed = y[:, steps].double().cpu()

    return KnowledgeNeuronResult(
        attributions=attributions, layers=layer_list, target=target_id, prompt=prompt_text, pos=pos,
        steps=steps, output=output, target_str=target_str,
        tokens=str_tokens(model, tokens), full_output=full, zeroed_outputs=zeroed, threshold=float(threshold),
    )


def completeness_gap(result: KnowledgeNeuronResult, layer: int) -> float:
    """sum of `layer`'s attributions - (output(full) - output(layer zeroed at pos)).

    Integrated gradients' completeness: this goes to 0 as ``steps`` grows (the right
    Riemann sum's error is O(1 / steps)).
    """
    row = result._row(layer)
    if result.zeroed_outputs is None:
        raise ValueError("this result has no zeroed outputs (loaded without them?)")
    return result.layer_total(layer) - (result.full_output - float(result.zeroed_outputs[row]))


# ============================================================ comparing rankings
def _as_ranking(r: Any, k: int) -> list[Neuron]:
    """The first k distinct neurons of a ranking, as `Neuron`s.

    Accepts a `KnowledgeNeuronResult` (its `top(k)`), or a sequence in rank order of
    `Neuron`s, (Neuron, score) pairs, or objects with `layer` and `index` attributes
    (e.g. `probes.ffn.NeuronContribution`).
    """
    if isinstance(r, KnowledgeNeuronResult):
        r = r.top(k)
    out: list[Neuron] = []
    for item in r:
        if isinstance(item, tuple) and item and isinstance(item[0], Neuron):
            item = item[0]
        if not (hasattr(item, "layer") and hasattr(item, "index")):
            raise TypeError(f"ranking entries must be Neurons (or (Neuron, score) pairs), got {item!r}")
        neuron = Neuron(int(item.layer), int(item.index))  # rankings at one position: compare (layer, index)
        if neuron not in out:
            out.append(neuron)
        if len(out) == k:
            break
    return out


def ranking_overlap(a: Any, b: Any, k: int = 10) -> dict[str, Any]:
    """Compare the top-k of two neuron rankings (each at one position: neurons are compared
    by layer and index).

    a, b: rankings in order, best first: `Neuron`s, (Neuron, score) pairs, objects with
        `layer` / `index`, or a `KnowledgeNeuronResult`.
    Returns {"k", "overlap" (number of neurons in both top-k), "jaccard" (overlap /
    size of the union), "shared" ([Neuron] in a's order)}.
    """
    k = int(k)
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    top_a, top_b = _as_ranking(a, k), _as_ranking(b, k)
    set_b = set(top_b)
    shared = [n for n in top_a if n in set_b]
    union = len(set(top_a) | set_b)
    return {"k": k, "overlap": len(shared), "jaccard": len(shared) / union if union else 0.0, "shared": shared}


__all__ = ["KnowledgeNeuronResult", "knowledge_neurons", "completeness_gap", "ranking_overlap"]
