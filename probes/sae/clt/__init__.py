"""Cross-layer transcoders (Ameisen et al. 2025): one encoder per layer whose features write to
that MLP's output and every later one's. `model` (the CLT and the layered interface it shares
with per-layer transcoders), `train` (collecting every layer's pairs in one pass, training),
`evaluate` (splicing every layer at once; L0, variance explained, CE and KL), `io` (files),
`circuit_tracer` (circuit-tracer's CLT files).

    clt = CrossLayerTranscoder.for_model(model, n_features=512, activation="topk", k=32)
    record = train_clt(clt, layer_pairs(model, clt, texts, max_tokens=60_000), steps=2000)
    scores = evaluate_layers(model, clt, held_out_texts)       # also for a list of per-layer transcoders
    save_clt(clt, "clt/"); clt = load_clt("clt/")
"""

from probes.sae.clt.circuit_tracer import load_circuit_tracer_clt, save_circuit_tracer_clt
from probes.sae.clt.evaluate import LayersScores, evaluate_layers, splice_all_hooks
from probes.sae.clt.io import load_clt, save_clt, shipped_clt
from probes.sae.clt.model import CLTConfig, CrossLayerTranscoder, Layered, PerLayerTranscoders, as_cross_layer
from probes.sae.clt.train import layer_pairs, train_clt

__all__ = ["CLTConfig", "CrossLayerTranscoder", "Layered", "LayersScores", "PerLayerTranscoders", "as_cross_layer",
           "evaluate_layers", "layer_pairs", "load_circuit_tracer_clt", "load_clt", "save_circuit_tracer_clt", "save_clt",
           "shipped_clt", "splice_all_hooks", "train_clt"]
