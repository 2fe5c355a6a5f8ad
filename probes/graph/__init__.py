"""Attribution graphs over transcoders (Ameisen et al. 2025; circuit-tracer's conventions, so
numbers compare): nodes are active features per (layer, position), error nodes, token
embeddings and logit targets; edges are direct effects in the local replacement model.

    graph = attribution_graph(model, "Michael Jordan plays the sport of", load_transcoders("factworld"))
    pruned = graph.prune(node_threshold=0.8, edge_threshold=0.98)
    graph.scores()                          # {"replacement": ..., "completeness": ...}
    graph.show()                            # the graph browser (offline, inline in Jupyter)
    feature_intervention(model, prompt, transcoders, [zero(0, 2, 258)], mode="frozen")

Modules, one job each: `graph` (the AttributionGraph and its nodes), `replacement` (the frozen
local replacement model), `build` (edges by batched backward passes), `prune` (influence,
pruning, replacement and completeness scores), `supernodes` (suggested groups of features), `heads` (edges split by the head that carried them),
`qk` (which query-side x key-side components formed a head's attention score),
`intervene` (feature interventions, frozen or
free, and generation under them), `io` (our files and circuit-tracer's), `view` (the browser).
"""

from probes.graph.build import attribution_graph, logit_difference_target
from probes.graph.graph import AttributionGraph, Target
from probes.graph.heads import HeadSplit, edge_heads
from probes.graph.intervene import InterventionResult, feature_intervention, generate_with_intervention, scale, set_to, zero
from probes.graph.io import circuit_tracer_json, load_graph, save_graph, to_circuit_tracer_pt
from probes.graph.prune import PrunedGraph, graph_scores, node_influence, prune
from probes.graph.qk import EdgeQK, QKAttribution, edge_notes, edge_qk, qk_attribution
from probes.graph.supernodes import Supernode, suggest_supernodes

__all__ = ["AttributionGraph", "InterventionResult", "PrunedGraph", "Target", "attribution_graph",
           "circuit_tracer_json", "feature_intervention", "generate_with_intervention", "graph_scores",
           "load_graph", "logit_difference_target", "node_influence", "prune", "save_graph", "scale", "set_to",
           "Supernode", "suggest_supernodes", "HeadSplit", "edge_heads", "EdgeQK", "QKAttribution", "edge_notes",
           "edge_qk", "qk_attribution",
           "to_circuit_tracer_pt", "zero"]
