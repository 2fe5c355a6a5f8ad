"""The model as a graph: nodes that write to the residual stream, inputs that read it, and an
edge from every writer to every later reader.

Writers (upstream nodes): `embed` (token and position embeddings: blocks.0.hook_resid_pre),
each head `L{l}H{h}` (its result z_h W_O[h]) and each MLP `MLP{l}` (hook_mlp_out).
Readers (inputs of downstream nodes): each head's query, key and value inputs `L{l}H{h}.q`,
`.k`, `.v`, each MLP's input `MLP{l}` and the unembedding's `logits`. With grouped-query
attention a key / value input belongs to a key-value head, shared by the query heads of its
group: it is named `L{l}KV{g}.k` / `.v` (query head h reads key-value head h // group).

A head of layer l reads what embed, the heads and MLPs of the layers before l wrote; MLP l
also reads the heads of its own layer (not with parallel attention and MLP); logits read
every writer. Attention and MLP output biases are constants, not nodes (they are the same in
every run, so patching them changes nothing).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

from interp.checks import require_pre_norm
from models import TransformerConfig


@dataclass(frozen=True)
class Node:
    """A writer: `name` ("embed", "L1H3", "MLP2"), kind ("embed" | "head" | "mlp"), layer (-1 for embed)."""

    name: str
    kind: str
    layer: int
    head: Optional[int] = None


@dataclass(frozen=True)
class Input:
    """A reader: `name` ("L1H3.q", "L1KV0.k", "MLP2", "logits"), the node it feeds (`node`:
    "L1H3", "L1KV0", "MLP2", "logits"), kind ("q" | "k" | "v" | "mlp" | "logits"), its layer
    (n_layers for logits) and its head in its hook's head axis (None for MLPs and logits)."""

    name: str
    node: str
    kind: str
    layer: int
    head: Optional[int] = None


class Graph:
    """Writers, readers and edges of a pre-norm decoder-only Transformer (a `models.Transformer`).

    upstream [U] Nodes, inputs [D] Inputs, edges [U, D] bool: which writer a reader reads.
    """

    def __init__(self, cfg: TransformerConfig) -> None:
        require_pre_norm(cfg, "a circuit graph")
        self.cfg = cfg
        L, H, KV = cfg.n_layers, cfg.n_heads, cfg.n_kv_heads
        mlps = not cfg.attn_only
        self.upstream: list[Node] = [Node("embed", "embed", -1)]
        self.inputs: list[Input] = []
        for l in range(L):
            self.upstream += [Node(f"L{l}H{h}", "head", l, h) for h in range(H)]
            if mlps:
                self.upstream.append(Node(f"MLP{l}", "mlp", l))
            self.inputs += [Input(f"L{l}H{h}.q", f"L{l}H{h}", "q", l, h) for h in range(H)]
            for kind in ("k", "v"):
                if KV == H:
                    self.inputs += [Input(f"L{l}H{h}.{kind}", f"L{l}H{h}", kind, l, h) for h in range(H)]
                else:
                    self.inputs += [Input(f"L{l}KV{g}.{kind}", f"L{l}KV{g}", kind, l, g) for g in range(KV)]
            if mlps:
                self.inputs.append(Input(f"MLP{l}", f"MLP{l}", "mlp", l))
        self.inputs.append(Input("logits", "logits", "logits", L))
        # the edge mask is the graph's structure (no model tensor): built and kept on the CPU
        writer_layer = torch.tensor([n.layer for n in self.upstream], device="cpu")[:, None]
        reader_layer = torch.tensor([i.layer for i in self.inputs], device="cpu")[None, :]
        head_writer = torch.tensor([n.kind == "head" for n in self.upstream], device="cpu")[:, None]
        mlp_reader = torch.tensor([i.kind == "mlp" for i in self.inputs], device="cpu")[None, :]
        same_layer = (writer_layer == reader_layer) & head_writer & mlp_reader & (not cfg.parallel_attn_mlp)
        self.edges = (writer_layer < reader_layer) | same_layer  # [U, D]
        self._u = {n.name: i for i, n in enumerate(self.upstream)}
        self._d = {n.name: i for i, n in enumerate(self.inputs)}

    @property
    def n_edges(self) -> int:
        return int(self.edges.sum())

    def edge_list(self) -> list[tuple[str, str]]:
        """Every edge as (upstream, downstream input), in the order of `edges.nonzero()`."""
        return [(self.upstream[u].name, self.inputs[d].name) for u, d in self.edges.nonzero().tolist()]

    def index(self, upstream: str, downstream: str) -> tuple[int, int]:
        """(u, d) of an edge; a clear error for an unknown node or a pair that is not an edge."""
        if upstream not in self._u:
            raise KeyError(f"unknown upstream node {upstream!r}; nodes: embed, L{{l}}H{{h}}, MLP{{l}} "
                           f"(e.g. {', '.join(list(self._u)[:4])})")
        if downstream not in self._d:
            kv = "L{l}H{h}.k/.v" if self.cfg.n_kv_heads == self.cfg.n_heads else "L{l}KV{g}.k/.v (key-value heads)"
            raise KeyError(f"unknown downstream input {downstream!r}; inputs: L{{l}}H{{h}}.q, {kv}, MLP{{l}}, logits "
                           f"(e.g. {', '.join(list(self._d)[:4])})")
        u, d = self._u[upstream], self._d[downstream]
        if not self.edges[u, d]:
            raise ValueError(f"{upstream} -> {downstream} is not an edge: {downstream} does not read what "
                             f"{upstream} writes (it comes before or in parallel)")
        return u, d

    def mask(self, edges) -> torch.Tensor:
        """[U, D] bool with the given (upstream, downstream) edges set."""
        out = torch.zeros_like(self.edges)
        for upstream, downstream in edges:
            out[self.index(upstream, downstream)] = True
        return out

    def __repr__(self) -> str:
        return f"Graph({len(self.upstream)} writers, {len(self.inputs)} inputs, {self.n_edges} edges)"


__all__ = ["Graph", "Node", "Input"]
