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

Speed: the ``steps`` scaled copies are rows of one batch (``batch_size`` rows per
forward pass), resumed from the cached residual stream entering layer ``l``
(``model(resid, start_at_layer=l)``), and only the last position is unembedded. One
backward pass per layer gives the gradient for every neuron of that layer. Parameters'
``.grad`` are never touched, and no hook stays attached, also when an error is raised.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Literal, Optional, Union

import torch
from einops import repeat
from tqdm.auto import tqdm

from interp.report import str_tokens, write_json, one_prompt
from models.transformer import Transformer

Prompt = Union[str, torch.Tensor]
Target = Union[str, int]
Output = Literal["prob", "logit"]
OUTPUTS = ("prob", "logit")
DEFAULT_BATCH_SIZE = 64
DEFAULT_THRESHOLD = 0.2  # Dai et al.: keep neurons above 0.2 x the largest attribution


# ============================================================ result
@dataclass
class KnowledgeNeuronResult:
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

    def top(self, k: int = 10) -> list[tuple[int, int, float]]:
        """The k neurons with the largest attribution: [(layer, neuron, score)], largest first."""
        flat = self.attributions.flatten()
        order = flat.argsort(descending=True, stable=True)[: max(int(k), 0)]
        d_mlp = self.attributions.shape[1]
        return [(self.layers[int(i) // d_mlp], int(i) % d_mlp, float(flat[i])) for i in order]

    def selected(self, threshold: Optional[float] = None) -> list[tuple[int, int, float]]:
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

    # ------------------------------------------------------------ io
    def to_dict(self) -> dict[str, Any]:
        return {
            "method": self.method, "prompt": self.prompt, "tokens": self.tokens, "target": self.target,
            "target_str": self.target_str, "pos": self.pos, "steps": self.steps, "output": self.output,
            "threshold": self.threshold, "full_output": self.full_output,
            "zeroed_outputs": None if self.zeroed_outputs is None else self.zeroed_outputs.tolist(),
            "layers": list(self.layers), "axes": list(self.axes), "labels": self.labels,
            "top": [list(t) for t in self.top(20)],
            "selected": [list(t) for t in self.selected()],
            "values": self.attributions.tolist(),
        }

    def save_json(self, path: Union[str, Path]) -> Path:
        return write_json(path, self.to_dict())


# ============================================================ helpers
def _target_id(model: Transformer, target: Target) -> tuple[int, str]:
    """(token id, text) of the target: a single-token word (as given, via
    `model.to_single_token`; with a BPE tokenizer pass " word") or a token id."""
    if isinstance(target, torch.Tensor):
        if target.numel() != 1:
            raise ValueError(f"target must be one token id, got a tensor of shape {tuple(target.shape)}")
        target = int(target)
    if isinstance(target, str):
        try:
            idx = model.to_single_token(target)
        except Exception as e:  # unknown word, several tokens, or no tokenizer
            raise ValueError(f"target word {target!r} is not a single token of this model: {e}") from e
        return int(idx), target
    if isinstance(target, bool) or not isinstance(target, int):
        raise TypeError(f"target must be a word or a token id, got {type(target).__name__}")
    if not 0 <= target < model.cfg.d_vocab:
        raise ValueError(f"target token id {target} is outside the vocabulary [0, {model.cfg.d_vocab})")
    text = model.tokenizer.token_str(target) if model.tokenizer is not None else str(target)
    return target, text


def _check_layers(model: Transformer, layers: Optional[Iterable[int]]) -> list[int]:
    n = model.cfg.n_layers
    if layers is None:
        return list(range(n))
    out = []
    for l in ([layers] if isinstance(layers, int) else list(layers)):
        l = int(l)
        if not -n <= l < n:
            raise ValueError(f"layer {l} is out of range for a model with {n} layers")
        l = l % n
        if l in out:
            raise ValueError(f"layer {l} is given twice in layers={list(layers)}")
        out.append(l)
    if not out:
        raise ValueError("layers is empty: give at least one layer")
    return out


def _output_at_last(model: Transformer, resid: torch.Tensor, target: int, output: str) -> torch.Tensor:
    """resid [rows, pos, d_model] after the last block -> output per row [rows]."""
    x = resid[:, -1]  # norms act per position, so only the last one is needed
    logits = model.unembed(model.ln_final(x) if model.cfg.final_norm else x)  # [rows, d_vocab]
    if output == "prob":
        return logits.softmax(-1)[:, target]
    return logits[:, target]


# ============================================================ main
def knowledge_neurons(
    model: Transformer,
    prompt: Prompt,
    target: Target,
    *,
    layers: Optional[Iterable[int]] = None,
    pos: int = -1,
    steps: int = 20,
    batch_size: int = DEFAULT_BATCH_SIZE,
    threshold: float = DEFAULT_THRESHOLD,
    output: Output = "prob",
    progress: bool = True,
) -> KnowledgeNeuronResult:
    """Integrated-gradients attribution of every MLP neuron to the target (Dai et al. 2022).

    prompt: text, or token ids [pos] / [1, pos].
    target: a single-token word (looked up as given with `model.to_single_token`) or a
        token id; its probability (``output="prob"``) or logit (``"logit"``) at the
        prompt's last position is the output being attributed.
    layers: the layers to attribute (default all); pos: the position whose MLP
        activations are scaled (default the last, -1).
    steps: Riemann steps of the path from 0 to the observed activation (paper: 20).
    batch_size: scaled copies per forward pass (rows); memory is about
        batch_size x (forward of the remaining layers).
    threshold: default for `KnowledgeNeuronResult.selected`.
    Returns a `KnowledgeNeuronResult` with attributions [n_layers_used, d_mlp] (float64).
    """
    if output not in OUTPUTS:
        raise ValueError(f"output must be one of {OUTPUTS}, got {output!r}")
    if int(steps) < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    if int(batch_size) < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    steps, batch_size = int(steps), int(batch_size)
    tokens = one_prompt(model, prompt)
    n_pos = tokens.shape[0]
    if not -n_pos <= pos < n_pos:
        raise ValueError(f"pos {pos} is out of range for a prompt of {n_pos} tokens")
    pos = pos % n_pos
    target_id, target_str = _target_id(model, target)
    layer_list = _check_layers(model, layers)
    prompt_text = prompt if isinstance(prompt, str) else (
        model.to_string(tokens) if model.tokenizer is not None else " ".join(str(int(t)) for t in tokens))

    names = [f"blocks.{l}.hook_resid_pre" for l in layer_list] + [f"blocks.{l}.mlp.hook_post" for l in layer_list]
    with torch.no_grad():
        logits, cache = model.run_with_cache(tokens[None], names_filter=names)
        last = logits[0, -1]
        full = float(last.softmax(-1)[target_id] if output == "prob" else last[target_id])

    # Rows: alpha = 1/steps .. 1 (the Riemann points), then alpha = 0 (the baseline, for completeness).
    alphas = torch.cat([torch.arange(1, steps + 1, dtype=torch.float64) / steps, torch.zeros(1, dtype=torch.float64)])
    attributions = torch.zeros(len(layer_list), model.cfg.d_mlp, dtype=torch.float64)
    zeroed = torch.zeros(len(layer_list), dtype=torch.float64)
    n_layers = model.cfg.n_layers

    for row, layer in enumerate(tqdm(layer_list, desc="knowledge neurons", disable=not progress)):
        resid = cache[f"blocks.{layer}.hook_resid_pre"]  # [1, pos, d_model]
        a = cache[f"blocks.{layer}.mlp.hook_post"][0, pos]  # [d_mlp]
        grad_sum = torch.zeros(model.cfg.d_mlp, dtype=torch.float64, device=a.device)
        for start in range(0, len(alphas), batch_size):
            alpha = alphas[start : start + batch_size].to(device=a.device, dtype=a.dtype)  # [rows]
            rows = alpha.shape[0]
            with torch.enable_grad():
                scaled = (alpha[:, None] * a[None]).requires_grad_(True)  # [rows, d_mlp]

                def put_scaled(x: torch.Tensor, hook: Any) -> torch.Tensor:
                    # x [rows, pos, d_mlp]: replace position `pos` by the scaled copies
                    x = x.clone()
                    x[:, pos] = scaled
                    return x

                with model.hooks(fwd=[(f"blocks.{layer}.mlp.hook_post", put_scaled)]):
                    out = model(repeat(resid, "1 p d -> r p d", r=rows), start_at_layer=layer,
                                stop_at_layer=n_layers)
                    y = _output_at_last(model, out, target_id, output)  # [rows]
                (grad,) = torch.autograd.grad(y.sum(), scaled)  # rows are independent
            is_path = alpha > 0  # the alpha = 0 row is the baseline, not a Riemann point
            grad_sum += grad[is_path].sum(0).double()
            if not bool(is_path.all()):
                zeroed[row] = float(y[~is_path][0].detach())
        attributions[row] = (a.double() * grad_sum / steps).cpu()

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
def _as_ranking(r: Any, k: int) -> list[tuple[int, int]]:
    """The first k distinct (layer, neuron) of a ranking.

    Accepts a `KnowledgeNeuronResult` (its `top(k)`), or a sequence, already in rank
    order, of (layer, neuron) / (layer, neuron, score, ...) tuples or objects with
    `layer` and `index` (or `neuron`) attributes (e.g. `probes.ffn.NeuronContribution`).
    """
    if isinstance(r, KnowledgeNeuronResult):
        r = r.top(k)
    out: list[tuple[int, int]] = []
    for item in r:
        if hasattr(item, "layer") and (hasattr(item, "index") or hasattr(item, "neuron")):
            key = (int(item.layer), int(getattr(item, "index", getattr(item, "neuron", None))))
        else:
            try:
                key = (int(item[0]), int(item[1]))
            except (TypeError, IndexError, ValueError) as e:
                raise TypeError(f"ranking entries must be (layer, neuron[, score]) tuples, got {item!r}") from e
        if key not in out:
            out.append(key)
        if len(out) == k:
            break
    return out


def ranking_overlap(a: Any, b: Any, k: int = 10) -> dict[str, Any]:
    """Compare the top-k of two neuron rankings.

    a, b: rankings in order, best first: lists of (layer, neuron) or (layer, neuron,
        score) tuples, objects with `layer` / `index`, or a `KnowledgeNeuronResult`.
    Returns {"k", "overlap" (number of neurons in both top-k), "jaccard" (overlap /
    size of the union), "shared" ([(layer, neuron)] in a's order)}.
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
