"""The README and the documentation pages run as written, and quote what the code returns.

The README's quick start runs; the method pages' python blocks (Causal analyses, FFN key-value
probing, Where facts live, The recall chain, Editing facts, Sparse dictionaries, Circuits: the
text the README held before it became a landing page) run in order in one namespace, and the
numbers they quote are checked against what they compute. Every command and number the README
shows is checked here too.
"""

import json
import re
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
# The pages whose examples continue one session, in the order of the site's menu (tests/test_docs.py
# checks that order against mkdocs.yml).
METHOD_PAGES = ["causal.md", "ffn.md", "localise.md", "recall.md", "editing.md", "sae.md", "circuits.md"]


def readme() -> str:
    return (ROOT / "README.md").read_text()


def prose(text: str) -> str:
    """The text without fenced code blocks, inline code, link targets and HTML comments."""
    text = re.sub(r"^```.*?^```", "", text, flags=re.S | re.M)
    text = re.sub(r"<!--.*?-->", "", text, flags=re.S)
    text = re.sub(r"`[^`]*`", "", text)
    return re.sub(r"\]\([^)]*\)", "]", text)


def test_readme_quick_start_runs():
    block = re.search(r"## Quick start\s+```python\n(.*?)```", readme(), re.S)
    assert block, "README has no quick-start python block"
    exec(compile(block.group(1), "README quick start", "exec"), {})


def test_docs_method_examples_run(tmp_path, monkeypatch):
    """The code blocks of the method pages run in order, on the fact-world model (in a temporary
    directory: what they save goes there, not into the checkout's results/)."""
    section = "\n".join((DOCS / page).read_text() for page in METHOD_PAGES)
    monkeypatch.chdir(tmp_path)
    blocks = re.findall(r"```python\n(.*?)```", section, re.S)
    assert len(blocks) == 10  # patching, attribution, causal tracing, FFN probing, localisation, recall chain, editing,
    #                            SAEs, feature dashboards, circuits
    namespace: dict = {}
    for i, block in enumerate(blocks):
        exec(compile(block, f"docs method pages block {i}", "exec"), namespace)
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
    # The localisation holds when checked with plain hooks, and the page quotes what the code returns.
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
    # The circuit block: the page quotes the top edges and the faithfulness the code returns.
    edge_scores = namespace["edge_scores"]
    top = [(u, d, round(v, 2)) for u, d, v in edge_scores.top(2)]
    assert f"edge_scores.top(2)      # {top}".replace("'", '"') in section
    faith = namespace["faithfulness"](model, namespace["clean"], namespace["corrupted"], namespace["metric"],
                                      namespace["top_edges"](edge_scores, 36)).value
    assert f"top_edges(edge_scores, 36)).value   # {faith:.2f}" in section
    assert min(n for n, f in namespace["faith_curve"] if f >= 0.9) == 36


def make_targets() -> dict[str, str]:
    """Makefile target -> its recipe."""
    targets, current = {}, None
    for line in (ROOT / "Makefile").read_text().splitlines():
        m = re.match(r"^([A-Za-z][\w-]*):", line)
        if m:
            current = m.group(1)
            targets[current] = ""
        elif line.startswith("\t") and current:
            targets[current] += line.strip() + "\n"
    return targets


def test_readme_commands_exist():
    """`make X` is a Makefile target that does what the README says; `interp X` is a sub-command."""
    from analyses.cli import COMMANDS

    text = readme()
    targets = make_targets()
    made = set(re.findall(r"\bmake (\w+)", text))
    assert made == {"demo", "test", "docs"}
    assert made <= set(targets)
    assert "interp demo" in targets["demo"]
    assert "pytest" in targets["test"] and "$(STAMP)" in (ROOT / "Makefile").read_text().split("\ntest:")[1].split("\n")[0]
    assert "mkdocs build --strict --site-dir site" in targets["docs"]
    for target in made:  # each creates .venv and installs the project first
        header = next(line for line in (ROOT / "Makefile").read_text().splitlines() if line.startswith(f"{target}:"))
        assert "$(STAMP)" in header
    used = set(re.findall(r"`interp ([a-z][a-z-]*)", text))
    assert used and used <= set(COMMANDS), used - set(COMMANDS)
    # The demo does what the README says: the top-5 next words of the three prompts, `interp probe` into
    # results/probe/, `interp verify` on the fact-world model.
    demo = (ROOT / "analyses" / "demo.py").read_text()
    for prompt in ("Michael Jordan plays the sport of", "Michael Phelps plays the sport of",
                   "Alexis Jordan plays the sport of"):
        assert prompt in text and prompt in demo
    import inspect
    from analyses.demo import demo as run_demo

    assert inspect.signature(run_demo).parameters["out"].default == "results"
    assert 'Path(out) / "probe"' in demo and "crosscheck" in demo


def test_readme_example_call_is_the_documented_one():
    """The sweep the README names is the one the causal-analyses page runs, and its result has the views."""
    from interp.results import LabelledResult
    from interp.patching import PatchResult

    call = 'sweep(model, clean, corrupted, ld, site="head_z_by_pos")'
    assert call in readme()
    page_code = "".join(re.findall(r"```python\n(.*?)```", (DOCS / "causal.md").read_text(), re.S))
    assert call in page_code
    assert issubclass(PatchResult, LabelledResult)
    for method in ("show", "save_html", "_repr_html_"):
        assert callable(getattr(PatchResult, method))


def constraint(package: str) -> str:
    m = re.search(rf"^{re.escape(package)}==(\S+)$", (ROOT / "constraints.txt").read_text(), re.M)
    assert m, package
    return m.group(1)


def speedups(against: str) -> list[float]:
    record = json.loads((ROOT / "benchmarks" / "results" / "patching.json").read_text())
    return [site["speedup_vs"][against] for model in record["models"] for site in model["sites"].values()]



def _graph_cases() -> list[dict]:
    return list(json.loads((ROOT / "benchmarks" / "results" / "graph.json").read_text())["cases"].values())


def graph_speedups() -> list[float]:
    """circuit-tracer's median time over ours per case, each case's edges equal to 1e-5."""
    cases = _graph_cases()
    assert all(c["edges"]["max_abs_edge_diff"] < 1e-5 for c in cases)
    return [c["theirs_median"] / c["ours_median"] for c in cases]


def _python_floor():
    m = re.search(r'requires-python = ">=(\d+\.\d+)"', (ROOT / "pyproject.toml").read_text())
    return m.group(1) + "+"


# Every number in the README's prose, with what checks it (names with digits, such as GPT-2, are not numbers).
README_NAMES = {"GPT-2", "Qwen2"}
README_NUMBERS = {
    "3.10+": lambda: _python_floor(),
    "2.13.0": lambda: constraint("torch"),
    "4.3.0": lambda: constraint("transformer-lens"),
    "5.23.0": lambda: constraint("transformers"),
    "4": lambda: constraint("transformer-lens").split(".")[0],               # "TransformerLens 4"
    "2017": lambda: "2017" if hasattr(__import__("models").TransformerConfig, "transformer_2017") else None,
    "10-41x": lambda: f"{min(speedups('TransformerLens')):.0f}-{max(speedups('TransformerLens')):.0f}x",
    "1.6-4.9x": lambda: f"{min(speedups('nnsight')):.1f}-{max(speedups('nnsight')):.1f}x",
    "2.8-16x": lambda: f"{min(graph_speedups()):.1f}-{max(graph_speedups()):.0f}x",
    "0.5.0": lambda: {c["versions"]["circuit-tracer"] for c in _graph_cases()}.pop(),
    "top-5": lambda: "top-%d" % __import__("inspect").signature(
        __import__("analyses.demo", fromlist=["top_next_words"]).top_next_words).parameters["k"].default,
}


def readme_numbers() -> set[str]:
    """Every word of the README's prose that holds a digit, less the names."""
    return {w.rstrip(".") for w in re.findall(r"[\w.+-]*\d[\w.+-]*", prose(readme()))} - README_NAMES


def test_readme_numbers_are_checked():
    found = readme_numbers()
    assert found == set(README_NUMBERS), f"unchecked: {found - set(README_NUMBERS)}, gone: {set(README_NUMBERS) - found}"
    for number, check in README_NUMBERS.items():
        assert check() == number, (number, check())
    assert sys.version_info >= tuple(int(p) for p in _python_floor()[:-1].split("."))
