"""The README's quick start runs as written."""

import re

import pytest
import torch
from pathlib import Path


def test_readme_quick_start_runs():
    text = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    block = re.search(r"## Quick start\s+```python\n(.*?)```", text, re.S)
    assert block, "README has no quick-start python block"
    exec(compile(block.group(1), "README quick start", "exec"), {})


def test_readme_causal_analyses_examples_run(tmp_path, monkeypatch):
    """The code blocks of "Causal analyses" and "FFN key-value probing" run in order, on the fact-world model
    (in a temporary directory: what they save goes there, not into the checkout's results/)."""
    text = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    monkeypatch.chdir(tmp_path)
    section = text[text.index("## Causal analyses"):text.index("## Benchmarks")]
    blocks = re.findall(r"```python\n(.*?)```", section, re.S)
    assert len(blocks) == 10  # patching, attribution, causal tracing, FFN probing, localisation, recall chain, editing,
    #                            SAEs, feature dashboards, circuits
    namespace: dict = {}
    for i, block in enumerate(blocks):
        exec(compile(block, f"README causal analyses block {i}", "exec"), namespace)
    assert namespace["result"].values.shape == (4, 7, 4)
    assert abs(namespace["dla"].total() - namespace["dla"].logit_diff) < 1e-4
    # The top neuron's contribution, recomputed by hand: activation x (centred value . ln_final.w / scale) . W_U[:, answer].
    model, top = namespace["model"], namespace["ranked"][0]
    _, cache = model.run_with_cache(namespace["prompt"])
    value = model.blocks[top.layer].mlp.W_out[top.index].detach()
    direction = (value - value.mean()) * model.ln_final.w.detach() / cache["ln_final.hook_scale"][0, -1]
    by_hand = cache["post", top.layer][0, -1, top.index] * direction @ model.W_U.detach()[:, model.to_single_token("basketball")]
    assert float(by_hand) == pytest.approx(top.contribution, rel=1e-4)
    assert namespace["check"].interventions[0].p_after < 0.5
    # The localisation holds when checked with plain hooks, and the README quotes what the code returns.
    loc, at_subject = namespace["loc"], namespace["at_subject"]
    with torch.no_grad():
        ablated = model.run_with_hooks(namespace["prompt"], fwd_hooks=[s.zero() for s in loc.sites])[0, -1]
    assert model.tokenizer.token_str(int(ablated.argmax())) != "basketball"
    assert f"{loc.k}, {[s.label for s in loc.sites]}" in section
    assert at_subject.k is not None and {s.pos for s in at_subject.sites} <= {1, 2}  # "Michael", "Jordan"
    assert f"# k = {at_subject.k}" in section
    ext = namespace["ext"]
    assert f"L1H3: {float(ext.attention[1, 3]):.2f}, {float(ext.from_subject[1, 3]):+.2f}" in section
    assert namespace["moved"].shape == (4, 7, 512) and namespace["curve"].test_accuracy[-1] > 0.9
    assert namespace["layer"] == 0 and namespace["scores"].efficacy_top1 == 1.0
    assert namespace["scores"].paraphrase_top1 == 1.0 and namespace["scores"].attribute_top1 == 1.0
    tc_scores = namespace["tc_scores"]
    assert tc_scores.l0 == pytest.approx(32, abs=0.5) and tc_scores.variance_explained > 0.8
    assert namespace["feature_cache"]["blocks.1.transcoder.hook_feature_acts"].shape == (1, 7, 512)
    dash, keys = namespace["dash"], namespace["keys"]
    assert dash.index == 258 and len(dash.top_examples) == 10 and 0 < dash.frequency < 1
    assert sum(keys.values()) == pytest.approx(float(namespace["layer0"].pre_acts(cache["blocks.0.ln2.hook_normalized"])[0, 2, 258]),
                                               abs=1e-4)
    # The circuit block: the README quotes the top edges and the faithfulness the code returns.
    edge_scores = namespace["edge_scores"]
    top = [(u, d, round(v, 2)) for u, d, v in edge_scores.top(2)]
    assert f"edge_scores.top(2)      # {top}".replace("'", '"') in section
    faith = namespace["faithfulness"](model, namespace["clean"], namespace["corrupted"], namespace["metric"],
                                      namespace["top_edges"](edge_scores, 36)).value
    assert f"top_edges(edge_scores, 36)).value   # {faith:.2f}" in section
    assert min(n for n, f in namespace["faith_curve"] if f >= 0.9) == 36
