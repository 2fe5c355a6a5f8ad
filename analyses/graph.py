"""The attribution graph of one prompt over transcoders (`probes.graph`), pruned, saved and drawn.

    interp graph                                         # Michael Jordan plays the sport of -> the top logits
    interp graph "PROMPT" [--target WORD ...] [--transcoders factworld|DIR] [--out results/graph]
    interp graph "A LONG PROMPT" --max-memory-mb 2000   # fewer copies per pass, then fewer feature nodes

Builds `probes.graph.attribution_graph` (active features, error nodes, tokens and logit targets;
edges are direct effects with attention patterns and norm scales frozen), prunes it by
influence (--node-threshold, --edge-threshold: circuit-tracer's 0.8 / 0.98), and writes
  OUT/graph.pt            the whole graph (probes.graph.load_graph)
  OUT/graph.json          its numbers: node counts, replacement and completeness scores, the
                          pruned graph's nodes (label, influence) and edges, the time taken
  OUT/graph.html          the graph browser (offline; dashboards of the --dashboards most
                          influential features, computed here from the model's own corpus)
  OUT/graph.png / .svg    the pruned graph as a figure
  OUT/circuit-tracer/     the graph in circuit-tracer's files (its .pt and its frontend's JSON)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Optional, Sequence, Union

from analyses.common import CLEAN, AnalysisResult, ModelArg, Outputs, add_model_arguments, add_out_argument, as_model, main_for


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("prompt", nargs="?", default=CLEAN)
    p.add_argument("--target", action="append", default=None, metavar="WORD",
                   help="a logit target (repeatable; default: the top logits up to 95%% probability)")
    p.add_argument("--transcoders", default="factworld", help="'factworld' (shipped) or a folder of L0, L1, ...")
    p.add_argument("--node-threshold", type=float, default=0.8)
    p.add_argument("--edge-threshold", type=float, default=0.98)
    p.add_argument("--max-feature-nodes", type=int, default=None)
    p.add_argument("--max-memory-mb", type=float, default=None,
                   help="bound on what building the graph allocates (fewer copies per pass, then fewer feature nodes)")
    p.add_argument("--dashboards", type=int, default=12, help="feature dashboards in the page (most influential first)")
    add_model_arguments(p)
    add_out_argument(p, "results/graph")


def graph_of(model: ModelArg = "factworld", prompt: str = CLEAN, *, targets: Optional[Sequence[str]] = None,
             transcoders: Union[str, Path, Sequence] = "factworld", node_threshold: float = 0.8,
             edge_threshold: float = 0.98, max_feature_nodes: Optional[int] = None,
             max_memory_mb: Optional[float] = None, dashboards: int = 12, texts: Optional[Sequence[str]] = None,
             out: Optional[Union[str, Path]] = None, progress: bool = True, dtype: Optional[str] = None) -> AnalysisResult:
    """Build, prune and (with `out`) write the graph; `results`: the AttributionGraph ("graph"), the
    PrunedGraph ("pruned") and, with `out`, the browser page's View ("page"). `texts`: the corpus
    for the dashboards (default: the fact world's)."""
    from probes.graph import attribution_graph
    from probes.sae import load_transcoders

    model = as_model(model, dtype)
    dictionaries = (load_transcoders(transcoders, device=model.device) if isinstance(transcoders, (str, Path))
                    else list(transcoders))
    graph = attribution_graph(model, prompt, dictionaries, targets=targets, max_feature_nodes=max_feature_nodes,
                              max_memory_mb=max_memory_mb, progress=progress)
    pruned = graph.prune(node_threshold=node_threshold, edge_threshold=edge_threshold)
    report = _report(graph, pruned)
    outputs = Outputs(out)
    results = {"graph": graph, "pruned": pruned}
    if outputs.folder is not None:
        from probes.graph.io import circuit_tracer_json, save_graph, to_circuit_tracer_pt

        outputs.files.append(save_graph(graph, outputs.folder / "graph.pt", overwrite=True))
        outputs.json("graph.json", report)
        results["page"] = graph_page(model, graph, pruned, dictionaries, dashboards, texts)
        outputs.view("graph", results["page"])
        outputs.figure(graph_figure(graph, pruned), "graph")
        ct = outputs.folder / "circuit-tracer"
        outputs.files.append(to_circuit_tracer_pt(graph, ct / "graph.pt", vocab_size=model.cfg.d_vocab, overwrite=True))
        outputs.files += [circuit_tracer_json(graph, ct, "graph", node_threshold=node_threshold,
                                              edge_threshold=edge_threshold, pruned=pruned,
                                              vocab_size=model.cfg.d_vocab, overwrite=True),
                          ct / "graph-metadata.json"]
    _print(report, out)
    return AnalysisResult("graph", report, outputs.files, results)


def _report(graph, pruned) -> dict:
    influence = graph.influence()
    kept = [int(i) for i in pruned.nodes]
    nodes = sorted(({"node": i, "label": graph.node_label(i), "kind": graph.node_kind(i),
                     "influence": float(influence[i])} for i in kept), key=lambda r: -r["influence"])
    edges = [{"source": graph.node_label(int(s)), "target": graph.node_label(int(t)),
              "weight": float(graph.adjacency[t, s])} for t, s in pruned.edges()]
    edges.sort(key=lambda e: -abs(e["weight"]))
    return {"prompt": graph.prompt, "tokens": graph.tokens,
            "targets": [{"label": t.label, "token": t.token, "prob": t.prob} for t in graph.targets],
            "counts": {"features": graph.n_features, "errors": graph.n_errors, "tokens": graph.n_pos,
                       "targets": graph.n_targets, "nodes": graph.n_nodes,
                       "active_features": graph.settings.get("n_active_features")},
            "scores": graph.scores(), "pruned": {"nodes": len(kept), "edges": len(edges)},
            "seconds": graph.settings.get("seconds"), "nodes": nodes, "edges": edges}


def graph_page(model, graph, pruned, dictionaries, dashboards: int = 12, texts: Optional[Sequence[str]] = None):
    """The graph browser's View, with the dashboards of the `dashboards` most influential kept
    features computed from `texts` (default: the fact world's corpus), and the suggested
    supernodes (`probes.graph.suggest_supernodes`, grouped by edge profile) as editable groups."""
    from probes.graph import suggest_supernodes

    groups = suggest_supernodes(graph, pruned, dictionaries, model, same_top_token=False)
    return graph.to_view(pruned=pruned, dashboards=_dashboards(model, graph, pruned, dictionaries, dashboards, texts),
                         supernodes=groups, edge_notes=_edge_notes(model, graph, pruned, dictionaries))


def _edge_notes(model, graph, pruned, dictionaries) -> Optional[dict]:
    """Each kept cross-position edge's note for the browser's hover: the head that carried most
    of it and the query-key pair that formed that head's match (probes.graph.edge_heads,
    edge_notes), per-layer or cross-layer transcoders."""
    from probes.graph import edge_heads, edge_notes

    cross = [(int(t), int(s)) for t, s in pruned.edges()
             if graph.node_site(int(t))[2] != graph.node_site(int(s))[2]]
    if not cross:
        return None
    return edge_notes(model, graph, dictionaries, edge_heads(model, graph, dictionaries, cross))


def _dashboards(model, graph, pruned, dictionaries, n: int, texts) -> dict:
    """Feature dashboards of the n most influential kept features (node -> View)."""
    if n <= 0:
        return {}
    from analyses.features import corpus
    from probes.sae import feature_dashboard

    texts = list(texts) if texts is not None else corpus(limit=60)
    influence = graph.influence()
    feature_nodes = [int(i) for i in pruned.nodes if graph.node_kind(int(i)) == "feature"]
    feature_nodes.sort(key=lambda i: -float(influence[i]))
    views = {}
    for i in feature_nodes[:n]:
        _, layer, _, index = graph.node_site(i)
        views[i] = feature_dashboard(model, dictionaries[layer], index, texts, k=6, progress=False).to_view()
    return views


def graph_figure(graph, pruned):
    """The pruned graph: x = position, y = layer (tokens below, targets above); nodes sized by
    influence, edges blue (positive) / red (negative) by weight."""
    import numpy as np
    from matplotlib.figure import Figure

    influence = graph.influence()
    kept = [int(i) for i in pruned.nodes]
    y_of = {"token": -1.0, "target": float(graph.n_layers)}
    colour = {"feature": "#f4a261", "error": "#9e9e9e", "token": "#6baed6", "target": "#2a9d8f"}
    cells: dict[tuple, list[int]] = {}  # (pos, row) -> its nodes, most influential first
    for i in sorted(kept, key=lambda i: -float(influence[i])):
        kind, layer, pos, _ = graph.node_site(i)
        row = y_of[kind] if kind in y_of else float(layer) + (0.3 if kind == "error" else 0.0)
        cells.setdefault((pos, row), []).append(i)
    xy = {}
    for (pos, row), members in cells.items():  # spread side by side within 0.8 of a column
        step = min(0.12, 0.8 / len(members))
        for k, i in enumerate(members):
            xy[i] = (pos + (k - (len(members) - 1) / 2) * step, row)
    fig = Figure(figsize=(max(6, 1.3 * graph.n_pos), 1.2 * graph.n_layers + 3), layout="constrained")
    ax = fig.add_subplot()
    weights = [float(graph.adjacency[t, s]) for t, s in pruned.edges()]
    top = max((abs(w) for w in weights), default=1.0) or 1.0
    for (t, s), w in zip(pruned.edges(), weights):
        (x0, y0), (x1, y1) = xy[int(s)], xy[int(t)]
        ax.plot([x0, x1], [y0, y1], color="#2166ac" if w > 0 else "#b2182b", alpha=0.2 + 0.6 * abs(w) / top,
                linewidth=0.3 + 2.5 * abs(w) / top, zorder=1)
    inf = np.array([max(float(influence[i]), 0.0) for i in kept])
    sizes = 20 + 300 * inf / (inf.max() or 1.0)
    for i, size in zip(kept, sizes):
        kind = graph.node_kind(i)
        ax.scatter(*xy[i], s=size, color=colour[kind], edgecolor="#333", linewidth=0.5, zorder=2,
                   marker={"error": "D", "token": "s", "target": "^"}.get(kind, "o"))
    ax.set_xticks(range(graph.n_pos), [f"{t} ({p})" for p, t in enumerate(graph.tokens)], rotation=30, ha="right")
    ax.set_yticks(range(-1, graph.n_layers + 1), ["emb"] + [f"L{l}" for l in range(graph.n_layers)] + ["logit"])
    ax.set_title(f"attribution graph of {graph.prompt!r}: {len(kept)} nodes, {len(weights)} edges kept "
                 f"(blue: positive, red: negative)", fontsize=9)
    return fig


def _print(report: dict, out) -> None:
    c, s = report["counts"], report["scores"]
    targets = ", ".join(f"{t['label']} ({t['prob']:.3f})" for t in report["targets"])
    print(f"{report['prompt']!r} -> {targets}")
    print(f"{c['features']} features, {c['errors']} error nodes, {c['tokens']} tokens, {c['targets']} targets; "
          f"replacement score {s['replacement']:.3f}, completeness {s['completeness']:.3f}; "
          f"built in {report['seconds']:.2f} s")
    print(f"pruned: {report['pruned']['nodes']} nodes, {report['pruned']['edges']} edges; most influential:")
    for row in report["nodes"][:10]:
        print(f"  {row['label']:32s} {row['influence']:.4f}")
    if out is not None:
        print(f"Graph, page (graph.html), figure and JSON in {out}/")


def run(args: argparse.Namespace) -> int:
    graph_of(args.model, args.prompt, targets=args.target, transcoders=args.transcoders,
             node_threshold=args.node_threshold, edge_threshold=args.edge_threshold,
             max_feature_nodes=args.max_feature_nodes, max_memory_mb=args.max_memory_mb, dashboards=args.dashboards,
             out=args.out, progress=not args.quiet, dtype=args.dtype)
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    return main_for("analyses.graph", __doc__, add_arguments, run, argv)


if __name__ == "__main__":
    sys.exit(main())
