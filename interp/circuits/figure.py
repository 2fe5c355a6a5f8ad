"""A circuit as a figure: layers bottom to top (embed, then each layer's heads and MLP, then
logits), nodes as boxes, each head's query / key / value inputs as ports at the bottom of its
box, edges with width by |score| and colour by sign (blue: supports the clean behaviour, red: against it, as in the interactive view)."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence, Union

from matplotlib.figure import Figure
from matplotlib.patches import FancyBboxPatch

from interp.circuits.graph import Graph

PORTS = {"q": -0.25, "k": 0.0, "v": 0.25}


def _positions(graph: Graph) -> dict[str, tuple[float, float]]:
    """Centre (x, y) of every node box, by node name."""
    cfg = graph.cfg
    width = max(cfg.n_heads, 1)
    pos = {"embed": ((width - 1) / 2, 0.0), "logits": ((width - 1) / 2, 2.0 * cfg.n_layers + 1)}
    for l in range(cfg.n_layers):
        for h in range(cfg.n_heads):
            pos[f"L{l}H{h}"] = (float(h), 2.0 * l + 1)
        group = cfg.n_heads // cfg.n_kv_heads
        if group > 1:  # key-value heads of a grouped-query layer: under their query heads
            for g in range(cfg.n_kv_heads):
                pos[f"L{l}KV{g}"] = (g * group + (group - 1) / 2, 2.0 * l + 0.55)
        if not cfg.attn_only:
            pos[f"MLP{l}"] = (width - 0.5, 2.0 * l + 2)
    return pos


def plot_circuit(graph: Graph, edges: Sequence[tuple[str, str, float]], path: Union[str, Path], *,
                 title: str = "") -> list[Path]:
    """Draw the (upstream, downstream input, score) edges; write path.png and path.svg."""
    from interp import plot

    pos = _positions(graph)
    inputs = {i.name: i for i in graph.inputs}
    used = {u for u, _, _ in edges} | {inputs[d].node for _, d, _ in edges}
    biggest = max((abs(s) for _, _, s in edges), default=1.0) or 1.0
    cfg = graph.cfg
    fig = Figure(figsize=(max(6.0, 1.6 * cfg.n_heads + 2), 1.1 * (2 * cfg.n_layers + 2) + 1), layout="constrained")
    ax = fig.subplots()
    for name, (x, y) in pos.items():
        on = name in used
        ax.add_patch(FancyBboxPatch((x - 0.35, y - 0.18), 0.7, 0.36, boxstyle="round,pad=0.02",
                                    facecolor="#fde0c5" if on else "#f2f2f2", edgecolor="#444" if on else "#ccc",
                                    zorder=2))
        ax.text(x, y, name, ha="center", va="center", fontsize=8, color="black" if on else "#aaa", zorder=3)
    for upstream, downstream, score in sorted(edges, key=lambda e: abs(e[2])):
        target = inputs[downstream]
        x0, y0 = pos[upstream]
        x1, y1 = pos[target.node]
        x1 += PORTS.get(target.kind, 0.0)
        ax.annotate("", xy=(x1, y1 - 0.18), xytext=(x0, y0 + 0.18), zorder=1,
                    arrowprops={"arrowstyle": "-|>", "lw": 0.5 + 4.5 * abs(score) / biggest,
                                "color": "#2166ac" if score > 0 else "#b2182b", "alpha": 0.8,
                                "shrinkA": 0, "shrinkB": 0, "connectionstyle": "arc3,rad=0.08"})
        if target.kind in PORTS:
            ax.text(x1, y1 - 0.26, target.kind, ha="center", va="top", fontsize=6, color="#555", zorder=3)
    xs = [x for x, _ in pos.values()]
    ys = [y for _, y in pos.values()]
    ax.set_xlim(min(xs) - 0.8, max(xs) + 0.8)
    ax.set_ylim(min(ys) - 0.6, max(ys) + 0.6)
    ax.axis("off")
    ax.set_title(title or f"circuit: {len(edges)} edges (blue: supports the clean answer, width: |score|)", fontsize=9)
    return plot.save(fig, path)


__all__ = ["plot_circuit"]
