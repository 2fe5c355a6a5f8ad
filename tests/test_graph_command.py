"""`interp graph`: the attribution graph of Michael Jordan, pruned, saved, drawn and browsable."""

import json

import pytest
import torch

from analyses.cli import COMMANDS
from analyses.graph import graph_of
from probes.graph import load_graph


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    out = tmp_path_factory.mktemp("graph")
    return out, graph_of("factworld", dashboards=2, texts=["Michael Jordan plays the sport of",
                                                           "Michael Phelps plays the sport of"], out=out,
                         progress=False)


def test_files_and_numbers(written):
    out, result = written
    graph, pruned = result.results["graph"], result.results["pruned"]
    names = {p.relative_to(out).as_posix() for p in result.files}
    assert {"graph.pt", "graph.json", "graph.html", "graph.png", "graph.svg", "circuit-tracer/graph.pt",
            "circuit-tracer/graph.json", "circuit-tracer/graph-metadata.json"} <= names
    report = json.loads((out / "graph.json").read_text())
    # the report's counts are the graph's, counted here from its tensors
    assert report["counts"]["features"] == int((graph.activations != 0).sum()) == graph.features.shape[0]
    assert report["counts"]["errors"] == graph.n_layers * len(graph.tokens)
    assert report["targets"][0]["label"].strip() == "basketball"
    assert report["pruned"] == {"nodes": int(pruned.node_mask.sum()), "edges": int(pruned.edge_mask.sum())}
    # every reported edge weight is the adjacency entry it names
    label = {graph.node_label(i): i for i in range(graph.n_nodes)}
    for edge in report["edges"][:50]:
        assert edge["weight"] == pytest.approx(float(graph.adjacency[label[edge["target"]], label[edge["source"]]]))
    # the saved graph is the graph
    back = load_graph(out / "graph.pt")
    assert torch.equal(back.adjacency, graph.adjacency) and back.tokens == graph.tokens
    # circuit-tracer's frontend file holds the pruned graph's nodes (tokens and logits always)
    ct = json.loads((out / "circuit-tracer" / "graph.json").read_text())
    assert len(ct["nodes"]) <= int(pruned.node_mask.sum())
    assert sum(n["feature_type"] == "embedding" for n in ct["nodes"]) == len(graph.tokens)


def test_page_renders_with_dashboards(written, browser):
    out, result = written
    page = browser.open(out / "graph.html")
    assert browser.problems(page) == []
    pruned = result.results["pruned"]
    assert page.locator(".iv-attr-node").count() == int(pruned.node_mask.sum())
    page.context.close()


def test_graph_is_a_command():
    assert COMMANDS["graph"][0] == "analyses.graph"


def test_docs_page_runs_and_quotes_its_numbers(monkeypatch, tmp_path):
    """docs/graphs.md: its example runs, and the numbers it quotes are the ones the code returns."""
    import re
    from pathlib import Path

    text = (Path(__file__).resolve().parent.parent / "docs" / "graphs.md").read_text()
    block = re.search(r"```python\n(.*?)```", text, re.S).group(1).replace("graph.show()", "graph.to_view()")
    monkeypatch.setenv("TQDM_DISABLE", "1")
    ns: dict = {}
    exec(compile(block, "docs/graphs.md", "exec"), ns)
    graph, pruned = ns["graph"], ns["pruned"]
    counts = (graph.n_features, graph.n_errors, graph.n_pos, graph.n_targets)
    assert f"# {counts}: basketball, p = {graph.targets[0].prob:.4f}" in text
    scores = graph.scores()
    assert f'{{"replacement": {scores["replacement"]:.3f}, "completeness": {scores["completeness"]:.3f}}}' in text
    assert f"# {(pruned.n_nodes, pruned.n_edges)}" in text


def test_michael_jordan_agreement_quoted_in_the_docs():
    """docs/graphs.md's comparison with docs/michael_jordan_features.md, recomputed."""
    from pathlib import Path

    from models import load
    from probes.graph import attribution_graph
    from probes.sae import load_transcoders

    text = (Path(__file__).resolve().parent.parent / "docs" / "graphs.md").read_text()
    graph = attribution_graph(load("factworld"), "Michael Jordan plays the sport of", load_transcoders("factworld"),
                              progress=False)
    kept = {int(i) for i in graph.prune().nodes}
    order = graph.influence()[graph.feature_nodes].argsort(descending=True).tolist()
    rank = {node: r for r, node in enumerate(order)}

    def at(layer, index, pos):
        node = graph.feature_node(layer, pos, index)
        return node in kept, rank[node]

    localised = [at(0, 285, 6), at(3, 414, 6), at(0, 5, 6), at(0, 297, 6), at(0, 269, 6), at(1, 365, 6)]
    assert all(k for k, _ in localised)
    assert "ranks " + ", ".join(str(r + 1) for _, r in localised[:-1]) + f" and {localised[-1][1] + 1} of 757" in \
        text.replace("\n", " ")
    assert at(3, 424, 6) == (True, 5) and "is rank 6" in text
    jordan = [at(0, 189, 2), at(0, 19, 2), at(0, 413, 2), at(0, 258, 2)]
    assert all(k for k, _ in jordan)
    ranks = [r + 1 for _, r in jordan]
    assert f"(ranks {ranks[0]}, {ranks[1]}, {ranks[2]}), and so is F258 (rank {ranks[3]})" in text.replace("\n", " ")
    assert at(1, 134, 2)[0] is False and f"(rank {at(1, 134, 2)[1] + 1})" in text
    with pytest.raises(KeyError):
        graph.feature_node(2, 6, 215)


def test_interp_graph_passes_the_memory_bound_through(tmp_path, capsys):
    from analyses.graph import main

    with pytest.raises(ValueError, match=r"max_memory_mb=0.001 is too small for this prompt"):
        main(["--max-memory-mb", "0.001", "--out", str(tmp_path / "g"), "--quiet"])
    assert not (tmp_path / "g").exists() or not any((tmp_path / "g").iterdir())


def test_the_page_notes_the_head_and_the_query_key_pair_of_cross_position_edges(written):
    from probes.graph import edge_heads
    from probes.sae import load_transcoders
    from models import load

    _, result = written
    graph, page = result.results["graph"], result.results["page"]
    edges = page.data["edges"]
    notes = edges["note"]
    nodes = page.data["nodes"]
    # every shown edge between positions has a note, no edge within one position has one
    pairs = list(zip(edges["target"], edges["source"]))
    crossing = [nodes[t]["pos"] != nodes[s]["pos"] for t, s in pairs]
    assert any(crossing) and all((n is not None) == c for n, c in zip(notes, crossing))
    # the note names the head that carries most of the edge, as edge_heads splits it
    k = crossing.index(True)
    t, s = nodes[pairs[k][0]]["node"], nodes[pairs[k][1]]["node"]
    split = edge_heads(load("factworld"), graph, load_transcoders("factworld"), [(t, s)])
    layer, head = divmod(int(split.direct[0].abs().flatten().argmax()), split.n_heads)
    assert notes[k].startswith(f"via L{layer}H{head} ") and " x " in notes[k]
