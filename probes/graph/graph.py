"""The attribution graph of one prompt over transcoders: the one object every part of
`probes.graph` reads and writes.

Nodes, in this order (circuit-tracer's, so matrices compare row for row):
    features   active transcoder features, sorted by (layer, position, index)   [n_features]
    errors     one per (layer, position): index layer * n_pos + pos              [n_layers * n_pos]
    tokens     one per position (the token embedding)                            [n_pos]
    targets    logit targets (a demeaned unembedding column, or a custom direction) [n_targets]
`adjacency[t, s]` is the direct effect of source s on target t's value in the local
replacement model (attention patterns and every norm scale frozen at the run's values, the
MLPs replaced by their transcoders' features plus error): for a feature, its pre-activation;
for a target, its direction applied to the final residual stream at the last position.
Error and token rows are zero (they have no inputs). `values[t]` is each feature's and
target's value in the run; `constants = values - adjacency.sum(1)` is the part no node
explains (biases, position embeddings, the zeroed positions' outputs).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Optional

import torch

from interp.views.page import View, Viewable

if TYPE_CHECKING:
    from probes.graph.prune import PrunedGraph

NODE_KINDS = ("feature", "error", "token", "target")


@dataclass
class Target:
    """A logit target: `label` ("basketball", or a custom name), `token` (vocab id; None for a
    custom direction), `prob` (the model's probability of the token; for a custom direction the
    weight it gets in influence and pruning, which need at least one target with prob > 0),
    `vector` [d_model]: the direction read off the final residual stream after ln_final
    (W_U[:, token] minus its mean over the vocabulary, as circuit-tracer demeans logits)."""

    label: str
    token: Optional[int]
    prob: float
    vector: torch.Tensor


@dataclass
class AttributionGraph(Viewable):
    """See the module docstring. Shapes: token_ids [n_pos]; features [n_features, 3] (layer, pos,
    index); activations [n_features]; adjacency [n_nodes, n_nodes]; values [n_nodes] (NaN for
    errors and tokens)."""

    prompt: str
    token_ids: torch.Tensor
    tokens: list[str]
    n_layers: int
    features: torch.Tensor
    activations: torch.Tensor
    targets: list[Target]
    adjacency: torch.Tensor
    values: torch.Tensor
    zero_positions: int = 1  # the first positions (BOS) have no feature nodes and zero error vectors
    transcoders: list[str] = field(default_factory=list)
    settings: dict[str, Any] = field(default_factory=dict)

    # ------------------------------------------------------------ sizes and node ranges
    @property
    def n_pos(self) -> int:
        return int(self.token_ids.shape[0])

    @property
    def n_features(self) -> int:
        return int(self.features.shape[0])

    @property
    def n_errors(self) -> int:
        return self.n_layers * self.n_pos

    @property
    def n_targets(self) -> int:
        return len(self.targets)

    @property
    def n_nodes(self) -> int:
        return self.n_features + self.n_errors + self.n_pos + self.n_targets

    @property
    def feature_nodes(self) -> slice:
        return slice(0, self.n_features)

    @property
    def error_nodes(self) -> slice:
        return slice(self.n_features, self.n_features + self.n_errors)

    @property
    def token_nodes(self) -> slice:
        start = self.n_features + self.n_errors
        return slice(start, start + self.n_pos)

    @property
    def target_nodes(self) -> slice:
        start = self.n_features + self.n_errors + self.n_pos
        return slice(start, start + self.n_targets)

    def error_node(self, layer: int, pos: int) -> int:
        return self.n_features + layer * self.n_pos + pos

    def token_node(self, pos: int) -> int:
        return self.n_features + self.n_errors + pos

    def target_node(self, i: int) -> int:
        return self.n_features + self.n_errors + self.n_pos + i

    def feature_node(self, layer: int, pos: int, index: int) -> int:
        """The node of active feature (layer, pos, index); KeyError if it is not in the graph."""
        hit = ((self.features[:, 0] == layer) & (self.features[:, 1] == pos) & (self.features[:, 2] == index))
        found = hit.nonzero().flatten()
        if found.numel() == 0:
            raise KeyError(f"feature L{layer}F{index} at position {pos} is not an active feature of this graph")
        return int(found[0])

    # ------------------------------------------------------------ what a node is
    def node_kind(self, i: int) -> str:
        self._check_node(i)
        for kind, span in zip(NODE_KINDS, (self.feature_nodes, self.error_nodes, self.token_nodes, self.target_nodes)):
            if span.start <= i < span.stop:
                return kind
        raise AssertionError(i)

    def node_site(self, i: int) -> tuple[str, Optional[int], Optional[int], Optional[int]]:
        """(kind, layer, pos, index): index is the feature, the token id or the target's token;
        layer is None for tokens, n_layers for targets (above the last layer)."""
        kind = self.node_kind(i)
        if kind == "feature":
            layer, pos, index = (int(v) for v in self.features[i])
            return kind, layer, pos, index
        if kind == "error":
            layer, pos = divmod(i - self.error_nodes.start, self.n_pos)
            return kind, layer, pos, None
        if kind == "token":
            pos = i - self.token_nodes.start
            return kind, None, pos, int(self.token_ids[pos])
        target = self.targets[i - self.target_nodes.start]
        return kind, self.n_layers, self.n_pos - 1, target.token

    def node_label(self, i: int) -> str:
        """"L0F258 @ Jordan (2)", "error L1 @ of (6)", "Jordan (2)", "logit basketball"."""
        kind, layer, pos, index = self.node_site(i)
        at = f"{self.tokens[pos]} ({pos})"
        if kind == "feature":
            return f"L{layer}F{index} @ {at}"
        if kind == "error":
            return f"error L{layer} @ {at}"
        if kind == "token":
            return at
        return f"logit {self.targets[i - self.target_nodes.start].label}"

    def _check_node(self, i: int) -> None:
        if not 0 <= i < self.n_nodes:
            raise IndexError(f"node {i} out of range: the graph has {self.n_nodes} nodes")

    # ------------------------------------------------------------ derived numbers
    @property
    def constants(self) -> torch.Tensor:
        """[n_nodes] values - the sum of the edges into each node: the part no node explains."""
        return self.values - self.adjacency.sum(1)

    @property
    def target_probs(self) -> torch.Tensor:
        """[n_targets] the targets' probabilities (the weights of influence)."""
        return torch.tensor([t.prob for t in self.targets], dtype=self.adjacency.dtype)

    def influence(self) -> torch.Tensor:
        """[n_nodes] each node's influence on the targets through all paths (probes.graph.prune)."""
        from probes.graph.prune import node_influence

        return node_influence(self)

    def prune(self, node_threshold: float = 0.8, edge_threshold: float = 0.98) -> "PrunedGraph":
        """The nodes and edges kept at these cumulative-influence thresholds (probes.graph.prune)."""
        from probes.graph.prune import prune

        return prune(self, node_threshold=node_threshold, edge_threshold=edge_threshold)

    def scores(self) -> dict[str, float]:
        """{"replacement": ..., "completeness": ...} (probes.graph.prune.graph_scores)."""
        from probes.graph.prune import graph_scores

        return graph_scores(self)

    # ------------------------------------------------------------ the view (files: probes.graph.io.save_graph / load_graph)
    def to_view(self, **kwargs: Any) -> View:
        """The graph browser (kind "attribution"); probes.graph.view."""
        from probes.graph.view import graph_view

        return graph_view(self, **kwargs)


__all__ = ["AttributionGraph", "NODE_KINDS", "Target"]
