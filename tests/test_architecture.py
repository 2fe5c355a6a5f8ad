"""The layers import one way only, there is no import circle between files, and the CLI starts light.

Layers, lowest first: the hook base (interp.names, interp.hooks, interp.cache, interp.factored, interp.checks,
interp.words, interp.progress, interp.unembedding) < models <
the rest of interp < probes < analyses. Every import between our files (type-only imports
included) must go to the same layer or a lower one. `make test` also runs import-linter's
contracts (.importlinter); this test is the exhaustive version: every module is placed by rule.
"""

import subprocess
import sys
from pathlib import Path

import grimp
import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("interp", "models", "probes", "analyses")
BASE = {"interp", "interp.names", "interp.hooks", "interp.cache", "interp.factored", "interp.checks", "interp.words",
        "interp.progress", "interp.exports", "interp.unembedding"}
LAYERS = ("hook base", "models", "interp", "probes", "analyses")


def layer_of(module: str) -> int:
    if module in BASE:
        return 0
    return LAYERS.index(module.split(".")[0])


def upward_imports(edges) -> list[tuple[str, str]]:
    """(importer, imported) pairs that go to a higher layer."""
    return sorted((a, b) for a, b in edges if layer_of(b) > layer_of(a))


def circles(edges) -> list[list[str]]:
    """Strongly connected groups of more than one module (Tarjan)."""
    graph: dict[str, set[str]] = {}
    for a, b in edges:
        graph.setdefault(a, set()).add(b)
        graph.setdefault(b, set())
    index, low, stack, on_stack, out = {}, {}, [], set(), []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                out.append(sorted(group))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


@pytest.fixture(scope="module")
def edges():
    sys.path.insert(0, str(ROOT))
    graph = grimp.build_graph(*PACKAGES, exclude_type_checking_imports=False, cache_dir=None)
    return [(a, b) for a in graph.modules for b in graph.find_modules_directly_imported_by(a)]


def test_every_import_goes_down(edges):
    assert len(edges) > 50  # the graph really was built
    assert upward_imports(edges) == []


def test_no_import_circles(edges):
    assert circles(edges) == []


def test_the_checks_can_fail():
    """The two checks on made-up graphs: an upward import and a circle are found."""
    assert upward_imports([("models.transformer", "interp.cache"), ("interp.cache", "interp.names")]) == []
    assert upward_imports([("interp.hooks", "interp.patching")]) == [("interp.hooks", "interp.patching")]
    assert upward_imports([("probes.ffn.keys", "analyses.common")]) == [("probes.ffn.keys", "analyses.common")]
    assert circles([("a", "b"), ("b", "c"), ("c", "a"), ("c", "d")]) == [["a", "b", "c"]]


def test_generic_probes_know_no_knowledge_base(edges):
    """Only analyses (and models.factworld itself) read the fact world's data."""
    readers = sorted({a for a, b in edges if b.startswith("models.factworld") and a.startswith(("interp", "probes"))})
    assert readers == []


def test_cli_help_imports_no_torch():
    code = ("import sys\nfrom analyses.cli import main\ntry:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
            "assert 'torch' not in sys.modules, 'interp --help imported torch'\nprint('ok')")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0 and "ok" in out.stdout, out.stderr


def test_no_large_files():
    """No non-test source file over 600 lines."""
    sizes = {str(p.relative_to(ROOT)): len(p.read_text().splitlines())
             for pkg in PACKAGES + ("benchmarks",) for p in (ROOT / pkg).rglob("*.py")}
    assert {f: n for f, n in sizes.items() if n > 600} == {}
