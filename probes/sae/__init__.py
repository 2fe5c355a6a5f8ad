"""Sparse dictionaries for a model's activations: SAEs and transcoders (ReLU + L1, TopK,
BatchTopK; skip connections), trained on activations held in memory or streamed from an
activation store on disk (`interp.store`), spliced into the forward pass,
evaluated (L0, variance explained, CE loss recovered, KL, dead and dense features), saved and
loaded (SAELens' file layout); cross-layer transcoders (`probes.sae.clt`).

    tc = SparseDictionary.transcoder(model, layer=1, n_features=2048, activation="topk", k=16)
    record = train_dictionary(tc, activation_pairs(model, tc, texts), steps=2000)
    record = train_dictionary(tc, harvest(model, texts, [tc.in_hook, tc.out_hook], "acts"), steps=2000)  # streamed
    scores = evaluate_dictionary(model, tc, held_out_texts)
"""

from probes.sae.attach import attached
from probes.sae.dashboard import FeatureDashboard, feature_dashboard, feature_key_sources, feature_table, plot_dashboard
from probes.sae.dictionary import ACTIVATIONS, DictionaryConfig, SparseDictionary
from probes.sae.evaluate import DictionaryScores, evaluate_dictionary, splice_hooks
from probes.sae.io import load_dictionary, load_transcoders, save_dictionary
from probes.sae.saelens_format import load_saelens, save_saelens
from probes.sae.train import TrainingRecord, activation_pairs, train_dictionary
from probes.sae.clt import (  # after the per-layer pieces it builds on
    CLTConfig, CrossLayerTranscoder, LayersScores, PerLayerTranscoders, as_cross_layer, evaluate_layers, layer_pairs,
    load_clt, save_clt, splice_all_hooks, train_clt,
)

__all__ = ["load_saelens", "save_saelens", "attached", "SparseDictionary", "DictionaryConfig", "ACTIVATIONS", "splice_hooks", "evaluate_dictionary",
           "DictionaryScores", "save_dictionary", "load_dictionary", "load_transcoders", "activation_pairs", "train_dictionary",
           "TrainingRecord", "FeatureDashboard", "feature_dashboard", "feature_key_sources", "feature_table",
           "plot_dashboard", "CLTConfig", "CrossLayerTranscoder", "LayersScores", "PerLayerTranscoders", "as_cross_layer",
           "evaluate_layers", "layer_pairs", "load_clt", "save_clt", "splice_all_hooks", "train_clt"]
