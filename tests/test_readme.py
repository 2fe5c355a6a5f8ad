"""The README's quick start runs as written."""

import re
from pathlib import Path


def test_readme_quick_start_runs():
    text = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    block = re.search(r"## Quick start\s+```python\n(.*?)```", text, re.S)
    assert block, "README has no quick-start python block"
    exec(compile(block.group(1), "README quick start", "exec"), {})


def test_readme_causal_analyses_examples_run():
    """The code blocks of "Causal analyses" and "FFN key-value probing" run in order, on the fact-world model."""
    text = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    section = text[text.index("## Causal analyses"):text.index("## Benchmarks")]
    blocks = re.findall(r"```python\n(.*?)```", section, re.S)
    assert len(blocks) == 4  # patching, attribution, causal tracing, FFN probing
    namespace: dict = {}
    for i, block in enumerate(blocks):
        exec(compile(block, f"README causal analyses block {i}", "exec"), namespace)
    assert namespace["result"].values.shape == (4, 7, 4)
    assert abs(namespace["dla"].total() - namespace["dla"].logit_diff) < 1e-4
    assert namespace["ranked"][0].label == "L3N494" and namespace["check"].interventions[0].p_after < 0.5
