"""The tutorial notebooks (docs/notebooks/) run top to bottom, show their views, and print the
numbers they claim.

Each notebook runs in its own Jupyter kernel of this Python (a kernel spec written for the test,
pointing at sys.executable), two at a time, with TQDM_DISABLE=1 and a temporary working
directory. The committed .ipynb files carry no outputs and equal what docs/notebooks/build.py
writes. The numbers a notebook prints are checked against the same quantities computed here
independently (plain forward passes, hand-written hooks and weight edits).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import copy
import importlib.util
import json
import os
import re
import sys
import time
from pathlib import Path

import nbformat
import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
NB_DIR = ROOT / "docs" / "notebooks"
CELL_TIMEOUT = 600  # seconds per cell: generous, for shared machines
PARALLEL = 2  # kernels at once


def load_build():
    """docs/notebooks/build.py as a module (without writing bytecode into the checkout)."""
    spec = importlib.util.spec_from_file_location("notebooks_build", NB_DIR / "build.py")
    module = importlib.util.module_from_spec(spec)
    dont_write = sys.dont_write_bytecode
    sys.dont_write_bytecode = True
    try:
        spec.loader.exec_module(module)
    finally:
        sys.dont_write_bytecode = dont_write
    return module


BUILD = load_build()
NAMES = list(BUILD.NOTEBOOKS)
# Run order: "editing" last, so that the key statistics michael_jordan's ROME edit computes (cached
# on disk under $INTERP_CACHE) are there for it rather than computed twice at the same time.
ORDER = sorted(NAMES, key=lambda name: name == "editing")


def checkout_state() -> dict[str, tuple[int, int]]:
    """(mtime, size) of every file where a run could leave something by default: the analyses'
    results/, the shipped model's folder, and docs/notebooks/ (bytecode caches left out)."""
    state = {}
    for folder in (ROOT / "results", ROOT / "models" / "factworld", NB_DIR):
        for path in folder.rglob("*"):
            if path.is_file() and "__pycache__" not in path.parts:
                st = path.stat()
                state[str(path.relative_to(ROOT))] = (st.st_mtime_ns, st.st_size)
    return state


def kernel_spec_manager(folder: Path):
    """A kernel spec manager whose "python3" kernel is this very interpreter (the venv's)."""
    from jupyter_client.kernelspec import KernelSpecManager

    spec_dir = folder / "kernels" / "python3"
    spec_dir.mkdir(parents=True)
    (spec_dir / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "Python 3 (interp test)", "language": "python"}))
    return KernelSpecManager(kernel_dirs=[str(folder / "kernels")], ensure_native_kernel=False)


async def _execute_all(folder: Path) -> dict[str, tuple[nbformat.NotebookNode, float]]:
    from jupyter_client.manager import AsyncKernelManager
    from nbclient import NotebookClient

    ksm = kernel_spec_manager(folder)
    env = {**os.environ, "TQDM_DISABLE": "1", "PYTHONDONTWRITEBYTECODE": "1"}
    gate = asyncio.Semaphore(PARALLEL)
    results: dict[str, tuple[nbformat.NotebookNode, float]] = {}

    async def one(name: str) -> None:
        async with gate:
            nb = nbformat.read(BUILD.path(name), as_version=4)
            cwd = folder / name
            cwd.mkdir()
            km = AsyncKernelManager(kernel_name="python3", kernel_spec_manager=ksm)
            client = NotebookClient(nb, km=km, timeout=CELL_TIMEOUT, allow_errors=True,
                                    resources={"metadata": {"path": str(cwd)}})
            start = time.perf_counter()
            await client.async_execute(env=env)
            results[name] = (nb, time.perf_counter() - start)

    await asyncio.gather(*(one(name) for name in ORDER))
    return results


@pytest.fixture(scope="module")
def executed(tmp_path_factory):
    """{name: (executed notebook, seconds)}: every notebook run once, PARALLEL kernels at a time."""
    before = checkout_state()
    start = time.perf_counter()
    # In a thread of its own: Playwright's sync API (the `browser` fixture) keeps an event loop
    # running in the main thread once it has started, and asyncio.run refuses to nest.
    folder = tmp_path_factory.mktemp("notebooks")
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        results = pool.submit(asyncio.run, _execute_all(folder)).result()
    total = time.perf_counter() - start
    print("notebook run times: " + ", ".join(f"{n} {s:.1f} s" for n, (_, s) in results.items()) + f"; all {total:.1f} s")
    after = checkout_state()
    changed = sorted(p for p in before.keys() | after.keys() if before.get(p) != after.get(p))
    assert changed == [], f"running the notebooks wrote into the checkout: {changed}"
    return results


def code_cells(nb) -> list:
    return [c for c in nb.cells if c.cell_type == "code"]


def stdout(nb) -> str:
    return "".join(o.get("text", "") for c in code_cells(nb) for o in c.outputs
                   if o.output_type == "stream" and o.name == "stdout")


def grab(pattern: str, text: str) -> tuple[str, ...]:
    found = re.search(pattern, text)
    assert found, f"the notebook did not print a line matching {pattern!r}:\n{text[:3000]}"
    return found.groups()


# ============================================================ the committed files
def test_committed_notebooks_are_what_build_writes():
    assert BUILD.stale() == [], "docs/notebooks/*.ipynb differ from build.py: run .venv/bin/python docs/notebooks/build.py"
    on_disk = sorted(p.stem for p in NB_DIR.glob("*.ipynb"))
    assert on_disk == sorted(NAMES), f"notebooks on disk {on_disk} against build.py's {sorted(NAMES)}"


@pytest.mark.parametrize("name", NAMES)
def test_committed_notebooks_carry_no_outputs(name):
    nb = nbformat.read(BUILD.path(name), as_version=4)
    nbformat.validate(nb)
    assert nb.metadata.kernelspec.name == "python3"
    cells = code_cells(nb)
    assert len(cells) >= 5 and sum(c.cell_type == "markdown" for c in nb.cells) >= 4
    for cell in cells:
        assert cell.outputs == [] and cell.execution_count is None, f"{name}: cell {cell.id} carries outputs"
    assert not [c.id for c in nb.cells if "execution" in c.metadata]


def test_build_check_flags_a_changed_notebook(tmp_path, monkeypatch):
    """`build.py --check` fails when a notebook differs from the source and passes once rewritten."""
    for name in NAMES:
        (tmp_path / f"{name}.ipynb").write_text(BUILD.render(name))
    monkeypatch.setattr(BUILD, "HERE", tmp_path)
    assert BUILD.main(["build.py", "--check"]) == 0
    path = tmp_path / f"{NAMES[0]}.ipynb"
    nb = json.loads(path.read_text())
    nb["cells"][1]["source"] = "print('edited by hand')"
    path.write_text(json.dumps(nb))
    assert BUILD.stale() == [NAMES[0]] and BUILD.main(["build.py", "--check"]) == 1
    assert BUILD.main(["build.py"]) == 0 and BUILD.stale() == []


# ============================================================ every notebook runs and shows views
@pytest.mark.parametrize("name", NAMES)
def test_notebook_runs_without_errors(executed, name):
    nb, seconds = executed[name]
    errors = [f"cell {c.id}: {o.ename}: {o.evalue}" for c in code_cells(nb) for o in c.outputs if o.output_type == "error"]
    assert errors == [], f"{name} ({seconds:.1f} s) failed:\n" + "\n".join(errors)
    assert all(c.execution_count is not None for c in code_cells(nb))


def view_outputs(nb) -> list[tuple[str, str]]:
    """(cell id, html) of every output that is an interp view."""
    return [(c.id, o.data["text/html"]) for c in code_cells(nb) for o in c.outputs
            if o.output_type in ("execute_result", "display_data") and 'class="interp-view"' in o.get("data", {}).get("text/html", "")]


@pytest.mark.parametrize("name", NAMES)
def test_notebook_shows_an_interactive_view(executed, name):
    views = view_outputs(executed[name][0])
    assert views, f"{name} shows no interp view"
    assert all("InterpViews.mount" in html for _, html in views)


@pytest.mark.parametrize("name", NAMES)
def test_notebook_views_render_together_in_a_browser(executed, name, browser, tmp_path):
    """Every view of the notebook, one after the other on one page as in Jupyter's output area,
    renders without an error or a network request."""
    views = view_outputs(executed[name][0])
    body = "\n".join(f'<div class="output" data-cell="{cell}">{html}</div>' for cell, html in views)
    page_path = tmp_path / f"{name}.html"
    page_path.write_text(f'<!DOCTYPE html><html><head><meta charset="utf-8"></head><body>{body}</body></html>')
    page = browser.open(page_path)
    try:
        page.wait_for_function(
            "n => document.querySelectorAll('.interp-view[data-rendered]').length >= n", arg=len(views), timeout=30_000)
        assert page.locator(".interp-view").count() >= len(views)
        assert browser.problems(page) == []
    finally:
        page.context.close()


# ============================================================ the numbers they print
@pytest.fixture(scope="module")
def model():
    import models

    return models.load("factworld").eval()


PROMPT, OTHER = "Michael Jordan plays the sport of", "Michael Phelps plays the sport of"


def last_logits(model, text: str) -> torch.Tensor:
    with torch.no_grad():
        return model(text)[0, -1]


def logit_diff(model, logits: torch.Tensor, a: str = "basketball", b: str = "swimming") -> float:
    return float(logits[model.to_single_token(a)] - logits[model.to_single_token(b)])


def with_activation(model, text: str, hook: str, pos: int, value: torch.Tensor) -> torch.Tensor:
    """Last-position logits of `text` with `hook`'s activation at `pos` replaced by `value` (a hand-written hook)."""
    def put(x, hook):
        x = x.clone()
        x[:, pos] = value
        return x

    with torch.no_grad():
        return model.run_with_hooks(text, fwd_hooks=[(hook, put)])[0, -1]


def activation(model, text: str, hook: str) -> torch.Tensor:
    seen = {}

    def keep(x, hook):
        seen["x"] = x.detach().clone()

    with torch.no_grad():
        model.run_with_hooks(text, fwd_hooks=[(hook, keep)])
    return seen["x"]


def restored(model, hook: str, pos: int) -> float:
    """Normalised restoration of the logit difference when the clean `hook` at `pos` is put into the corrupted run."""
    clean, corrupted = logit_diff(model, last_logits(model, PROMPT)), logit_diff(model, last_logits(model, OTHER))
    patched = logit_diff(model, with_activation(model, OTHER, hook, pos, activation(model, PROMPT, hook)[:, pos]))
    return (patched - corrupted) / (clean - corrupted)


def test_michael_jordan_numbers(executed, model):
    text = stdout(executed["michael_jordan"][0])
    for subject in ["Michael Jordan", "Michael Phelps", "Alexis Jordan"]:
        word, p = grab(rf"{subject} -> (\S+) \(p = ([0-9.]+)\)", text)
        probs = last_logits(model, f"{subject} plays the sport of").softmax(-1)
        assert word == model.to_string(int(probs.argmax())) and float(p) == pytest.approx(float(probs.max()), abs=6e-4)
    assert grab(r"Michael Jordan -> (\S+)", text) == ("basketball",)
    (mlp0,) = grab(r"MLP 0 at 'Jordan' restores ([0-9.]+)", text)
    assert float(mlp0) == pytest.approx(restored(model, "blocks.0.hook_mlp_out", 2), abs=6e-3)
    # The localised sites, zeroed with plain hooks, move basketball off the top.
    (sites,) = grab(r"localised with \d+ sites: \[(.*)\]", text)
    labels = re.findall(r"L(\d+)N(\d+)@(\d+)", sites)
    assert 1 <= len(labels) <= 20

    def zero(index, pos):
        def fn(x, hook):
            x = x.clone()
            x[:, pos, index] = 0.0
            return x
        return fn

    with torch.no_grad():
        ablated = model.run_with_hooks(PROMPT, fwd_hooks=[(f"blocks.{l}.mlp.hook_post", zero(int(n), int(p)))
                                                          for l, n, p in labels])[0, -1]
    assert model.to_string(int(ablated.argmax())) != "basketball"
    assert grab(r"after the edit: (\S+)", text) == ("soccer",)
    assert grab(r"after the revert: (\S+)", text) == ("basketball",)
    assert grab(r"weights bit-identical: (\S+)", text) == ("True",)


def test_from_transformerlens_numbers(executed, model):
    text = stdout(executed["from_transformerlens"][0])
    tokens = model.to_tokens(PROMPT)
    with torch.no_grad():
        logits = model(tokens)
    loss = torch.nn.functional.cross_entropy(logits[0, :-1], tokens[0, 1:])
    assert float(grab(r"loss: ([0-9.]+)", text)[0]) == pytest.approx(float(loss), abs=1e-4)
    full, ablated = grab(r"logit difference basketball - swimming: ([-0-9.]+), with L1H3's values zeroed: ([-0-9.]+)", text)
    assert float(full) == pytest.approx(logit_diff(model, logits[0, -1]), abs=1e-3)
    # Head 3 of layer 1 with its value weights and bias zeroed: its values are 0 at every position.
    edited = copy.deepcopy(model)
    with torch.no_grad():
        edited.blocks[1].attn.W_V[3].zero_()
        edited.blocks[1].attn.b_V[3].zero_()
    assert float(ablated) == pytest.approx(logit_diff(model, last_logits(edited, PROMPT)), abs=1e-3)
    assert float(ablated) != pytest.approx(float(full), abs=0.1)
    mean_diff = (logit_diff(model, logits[0, -1]) + logit_diff(model, last_logits(model, OTHER), "swimming", "basketball")) / 2
    assert float(grab(r"average logit difference: ([-0-9.]+)", text)[0]) == pytest.approx(mean_diff, abs=1e-3)
    assert float(grab(r"sum of the parts \+ bias: ([-0-9.]+)", text)[0]) == pytest.approx(mean_diff, abs=1e-3)


def test_patching_numbers(executed, model):
    text = stdout(executed["patching"][0])
    clean, corrupted = grab(r"clean ([-+0-9.]+), corrupted ([-+0-9.]+)", text)
    assert float(clean) == pytest.approx(logit_diff(model, last_logits(model, PROMPT)), abs=6e-3)
    assert float(corrupted) == pytest.approx(logit_diff(model, last_logits(model, OTHER)), abs=6e-3)
    assert float(grab(r"mlp_out L0 at 'Jordan': ([0-9.]+)", text)[0]) == pytest.approx(
        restored(model, "blocks.0.hook_mlp_out", 2), abs=6e-4)
    assert float(grab(r"attn_out L1 at 'of': ([0-9.]+)", text)[0]) == pytest.approx(
        restored(model, "blocks.1.hook_attn_out", 6), abs=6e-4)
    # Noising: the corrupted MLP 0 output at "Jordan" put into the clean run.
    noised = with_activation(model, PROMPT, "blocks.0.hook_mlp_out", 2, activation(model, OTHER, "blocks.0.hook_mlp_out")[:, 2])
    (value,) = grab(r"noising MLP 0 at 'Jordan' takes the logit difference from \S+ to ([-+0-9.]+)", text)
    assert float(value) == pytest.approx(logit_diff(model, noised), abs=6e-3)


def test_editing_numbers(executed, model):
    text = stdout(executed["editing"][0])
    before = text.split("layer ")[0]  # the predictions printed before any edit
    for prompt in [PROMPT, "the sport played by Michael Jordan is", OTHER, "Michael Jordan was born in the country of"]:
        word, p = grab(re.escape(repr(prompt)) + r"\s+-> (\S+) \(([0-9.]+)\)", before)
        probs = last_logits(model, prompt).softmax(-1)
        assert word == model.to_string(int(probs.argmax())) and float(p) == pytest.approx(float(probs.max()), abs=6e-4)
    word, p = grab(r"applied: (\S+) \(([0-9.]+)\)", text)
    assert word == "soccer" and float(p) > 0.5
    assert grab(r"reverted: (\S+)", text) == ("basketball",)
    assert grab(r"weights bit-identical: (\S+)", text) == ("True",)
    scores = re.findall(r"efficacy top-1 ([0-9.]+), paraphrase top-1 ([0-9.]+), neighbourhood top-1 ([0-9.]+), "
                        r"attributes top-1 ([0-9.]+)", text)
    assert len(scores) == 2
    default, bare = [[float(x) for x in row] for row in scores]
    assert default[:2] == [1.0, 1.0] and default[3] == 1.0  # the simple call, with the model's own edit prompts
    assert bare[1] < default[1] and bare[3] < default[3]  # the prompt alone leaks into paraphrases and attributes
    for asked, got in [("soccer", None), ("golf", None), ("tennis", None)]:
        got = re.search(rf"-> (\S+) \([0-9.]+\) \(asked for {asked}\)", text)
        assert got and got.group(1) == asked


def test_features_numbers(executed, model):
    from probes.sae import load_transcoders

    text = stdout(executed["features"][0])
    tc = load_transcoders("factworld")[0]
    x = activation(model, PROMPT, tc.in_hook)[0, 2].double()  # ln2's normalised input at "Jordan"
    with torch.no_grad():
        pre = (x - tc.pre_bias.double()) @ tc.W_enc.double() + tc.b_enc.double()  # by hand: ReLU, then the top 3
    top = pre.clamp(min=0).topk(3)
    (printed,) = grab(r"top layer-0 features at 'Jordan': \[(.*)\]", text)
    pairs = re.findall(r"F(\d+) ([0-9.]+)", printed)
    assert [int(i) for i, _ in pairs] == top.indices.tolist()
    assert [float(v) for _, v in pairs] == pytest.approx(top.values.tolist(), abs=6e-3)
    attached, plain = grab(r"with the transcoders attached: ([-0-9.]+) \(without: ([-0-9.]+)\)", text)
    assert float(plain) == pytest.approx(logit_diff(model, last_logits(model, PROMPT)), abs=1e-3)
    assert float(attached) == pytest.approx(float(plain), abs=2e-3)


def test_circuits_numbers(executed, model):
    text = stdout(executed["circuits"][0])
    cfg = model.cfg
    # Every writer feeds every later reader: a head's q / k / v read the embedding and every earlier
    # head and MLP; MLP l also reads its own layer's heads; the logits read every writer.
    heads = sum(3 * cfg.n_heads * (1 + (cfg.n_heads + 1) * l) for l in range(cfg.n_layers))
    mlps = sum(1 + cfg.n_heads * (l + 1) + l for l in range(cfg.n_layers))
    writers = 1 + cfg.n_layers * (cfg.n_heads + 1)
    assert int(grab(r"(\d+) edges", text)[0]) == heads + mlps + writers == 479
    clean, corrupted = grab(r"metric: clean ([-+0-9.]+), corrupted ([-+0-9.]+)", text)
    assert float(clean) == pytest.approx(logit_diff(model, last_logits(model, PROMPT)), abs=6e-3)
    assert float(corrupted) == pytest.approx(logit_diff(model, last_logits(model, OTHER)), abs=6e-3)
    # The MLP3 -> logits edge by hand: the final residual stream with MLP 3's output taken from the
    # corrupted run, read through ln_final with the clean run's scale, minus the clean metric.
    n = cfg.n_layers - 1
    resid = activation(model, PROMPT, f"blocks.{n}.hook_resid_post")[0, -1].double()
    delta = (activation(model, OTHER, f"blocks.{n}.hook_mlp_out") - activation(model, PROMPT, f"blocks.{n}.hook_mlp_out"))[0, -1]
    scale = activation(model, PROMPT, "ln_final.hook_scale")[0, -1].double()

    def read(x):
        normed = (x - x.mean()) / scale * model.ln_final.w.double() + model.ln_final.b.double()
        return normed @ model.unembed.W_U.double() + model.unembed.b_U.double()

    with torch.no_grad():
        score = logit_diff(model, read(resid)) - logit_diff(model, read(resid + delta.double()))
    (printed,) = grab(r"MLP3 -> logits\s+exact ([-+0-9.]+)", text)
    assert float(printed) == pytest.approx(score, abs=6e-3)
    faith = {int(k): float(v) for k, v in re.findall(r"top\s+(\d+): ([0-9.]+)", text)}
    (needed,) = grab(r"the top (\d+) exact edges reach faithfulness 0.9", text)
    assert faith[int(needed)] >= 0.895 and faith[8] < 0.9
