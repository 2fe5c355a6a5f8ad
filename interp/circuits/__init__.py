"""Circuits: the model as a graph of nodes and residual-stream edges, edge scores (EAP, EAP-IG,
exact path patching), circuit selection and faithfulness.

    from interp.circuits import attribute_edges, faithfulness, top_edges
    scores = attribute_edges(model, clean, corrupted, metric, method="eap")
    scores.top(10)                                   # [(upstream, downstream, score), ...]
    faithfulness(model, clean, corrupted, metric, top_edges(scores, 20)).value
    circuit_view(scores.graph, scores, top_edges(scores, 20)).save_html("circuit.html")  # interactive
"""

from interp.circuits.graph import Graph, Input, Node
from interp.circuits.run import EdgeRun
from interp.circuits.scores import METHODS, EdgeScores, attribute_edges
from interp.circuits.select import (
    Faithfulness, edges_above, faithfulness, faithfulness_curve, greedy_circuit, top_edges,
)
from interp.circuits.view import Circuit, circuit_view, head_node_views

__all__ = ["Graph", "Node", "Input", "EdgeRun", "attribute_edges", "EdgeScores", "METHODS", "top_edges", "edges_above",
           "faithfulness", "faithfulness_curve", "greedy_circuit", "Faithfulness",
           "Circuit", "circuit_view", "head_node_views"]
