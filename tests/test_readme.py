"""The README's quick start runs as written."""

import re
from pathlib import Path


def test_readme_quick_start_runs():
    text = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    block = re.search(r"## Quick start\s+```python\n(.*?)```", text, re.S)
    assert block, "README has no quick-start python block"
    exec(compile(block.group(1), "README quick start", "exec"), {})
