"""analyses.graph_study on two facts: the numbers it reports are the graph's and the localisation's."""

import pytest
import torch

from analyses.graph_study import athlete_facts, graph_study
from probes.graph import attribution_graph
from probes.sae import load_transcoders


def test_athlete_facts_are_the_225_people_with_a_sport():
    facts = athlete_facts()
    assert len(facts) == 225 and all(sport != "none" for _, _, sport in facts)
    assert ("Michael Jordan", "Michael Jordan plays the sport of", "basketball") in facts


def test_study_rows_match_a_direct_graph(tmp_path):
    from models import load

    model = load("factworld")
    result = graph_study(model, limit=2, localise_n=1, out=tmp_path, progress=False)
    assert (tmp_path / "study.json").exists() and (tmp_path / "scores.png").exists()
    first = result.report["facts"][0]
    subject, prompt, sport = athlete_facts()[0]
    graph = attribution_graph(model, prompt, load_transcoders("factworld"), targets=[sport], progress=False)
    pruned = graph.prune()
    assert first["replacement"] == pytest.approx(graph.scores()["replacement"], abs=1e-6)
    assert first["kept_nodes"] == pruned.n_nodes and first["features"] == graph.n_features
    kept = {int(n) for n in pruned.nodes}
    assert first["localisation"]["sites"]
    for site in first["localisation"]["sites"]:
        active = bool(((graph.features == torch.tensor([site["layer"], site["pos"], site["index"]])).all(1)).any())
        assert site["in_graph"] == active
        if active:
            assert site["kept"] == (graph.feature_node(site["layer"], site["pos"], site["index"]) in kept)
    assert "localisation" not in result.report["facts"][1]
