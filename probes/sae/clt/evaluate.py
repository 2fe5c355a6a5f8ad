"""Splicing every layer's transcoder into the forward pass at once, and how good that is: one
code path for a cross-layer transcoder and for per-layer transcoders (`as_cross_layer`).

    with model.hooks(fwd_hooks=splice_all_hooks(clt)):          # every MLP output replaced
        logits = model(tokens)
    scores = evaluate_layers(model, clt, texts, focus=[...])      # or a list of per-layer transcoders

`evaluate_layers` reports, over the real tokens of `texts`:
  per layer (`layers[l]`, from the clean run's inputs, as `evaluate_dictionary` does for one):
    l0                 mean number of active features of source layer l per token;
    variance_explained 1 - sum |y - y_hat|^2 / sum |y - mean(y)|^2 of MLP l's output;
    dead / dense       share of layer l's features never active / active on more than 10% of tokens;
  with every MLP spliced at once (later layers read the spliced residual stream):
    ce_clean / ce_spliced / ce_zero  next-token loss of the model, spliced, every MLP output zeroed;
    ce_recovered       (ce_zero - ce_spliced) / (ce_zero - ce_clean);
    kl                 mean KL(clean || spliced) of the next-token distributions;
  and the losses at the `focus` positions (one token index per text, e.g. a fact's object).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Sequence

import torch

from interp.tokens import padded_batches
from models.transformer import Transformer
from probes.sae.clt.model import Layered, as_cross_layer
from probes.sae.evaluate import LossScores, LossTally


def splice_all_hooks(transcoders, *, keep_error: bool = False, store: Optional[dict] = None) -> list:
    """Hooks that replace every layer's out_hook activation by the reconstruction from the
    features of all layers up to it (each encoded from its in_hook activation in the same pass);
    keep_error adds back what the reconstruction misses, so the pass is exact. `transcoders`: a
    CrossLayerTranscoder or per-layer transcoders (one per layer). `store`, if given, receives
    per layer "features" {l: [batch, pos, n_features]} and "errors" {l: [batch, pos, d_model]}."""
    layers = as_cross_layer(transcoders)
    xs: dict[int, torch.Tensor] = {}
    acts: dict[int, torch.Tensor] = {}
    if store is not None:
        store["features"], store["errors"] = acts, {}

    def read(layer: int):
        def fn(x: torch.Tensor, hook) -> None:
            xs[layer] = x
            acts[layer] = layers.activate(layers.pre_acts(x, layer), layer)
        return fn

    def write(layer: int):
        def fn(y: torch.Tensor, hook) -> torch.Tensor:
            missing = [l for l in range(layer + 1) if l not in acts]
            if missing:
                raise RuntimeError(f"{hook.name}: the inputs of layer(s) {missing} were not read before this output")
            recon = layers.output(layer, acts, xs).to(y.dtype)
            if store is not None:
                store["errors"][layer] = y - recon
            return recon + (y - recon) if keep_error else recon
        return fn

    return ([(h, read(l)) for l, h in enumerate(layers.in_hooks)]
            + [(h, write(l)) for l, h in enumerate(layers.out_hooks)])


@dataclass
class LayersScores(LossScores):
    layers: list[dict] = field(default_factory=list)  # per layer: l0, variance_explained, dead, dense


def evaluate_layers(model: Transformer, transcoders, texts: Sequence[str], *, focus: Optional[Sequence[int]] = None,
                    batch_size: int = 256) -> LayersScores:
    """See the module docstring. focus: per text, the index of one target token."""
    layers: Layered = as_cross_layer(transcoders)
    if layers.n_layers != model.cfg.n_layers:
        raise ValueError(f"{layers.n_layers} layers of transcoders for a {model.cfg.n_layers}-layer model")
    if focus is not None and len(focus) != len(texts):
        raise ValueError(f"{len(texts)} texts but {len(focus)} focus positions")
    n = layers.n_layers
    tally = LossTally(focus)
    sq_err, ys, fired = [0.0] * n, [[] for _ in range(n)], [[] for _ in range(n)]

    def zero(y: torch.Tensor, hook) -> torch.Tensor:
        return torch.zeros_like(y)

    names = list(dict.fromkeys(layers.in_hooks + layers.out_hooks))
    for batch in padded_batches(model, texts, batch_size):
        tokens, mask, real = batch.tokens, batch.mask, batch.real
        with torch.no_grad():
            clean, cache = model.run_with_cache(tokens, attention_mask=mask, names_filter=names)
            with model.hooks(fwd_hooks=splice_all_hooks(layers)):
                spliced = model(tokens, attention_mask=mask)
            with model.hooks(fwd_hooks=[(h, zero) for h in layers.out_hooks]):
                zeroed = model(tokens, attention_mask=mask)
            # Per layer, from the clean inputs.
            xs = {l: cache[h][real] for l, h in enumerate(layers.in_hooks)}
            acts = {l: layers.activate(layers.pre_acts(xs[l], l), l) for l in range(n)}
            for l, h in enumerate(layers.out_hooks):
                y = cache[h][real].double()
                sq_err[l] += float((y - layers.output(l, acts, xs).double()).pow(2).sum())
                ys[l].append(y)
                fired[l].append(acts[l] > 0)
        tally.add(model, batch, clean, spliced, zeroed)
    per_layer = []
    for l in range(n):
        y_all, on = torch.cat(ys[l]), torch.cat(fired[l])
        share = on.double().mean(0)
        per_layer.append({"l0": float(on.sum(-1).double().mean()),
                          "variance_explained": 1 - sq_err[l] / float((y_all - y_all.mean(0)).pow(2).sum()),
                          "dead": float((share == 0).double().mean()), "dense": float((share > 0.1).double().mean())})
    return LayersScores(layers=per_layer, **tally.scores())


__all__ = ["splice_all_hooks", "evaluate_layers", "LayersScores"]
