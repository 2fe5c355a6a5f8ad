"""How fast the result views render and hover in headless Chromium (the system one, offline).

    python -m benchmarks.views          # prints a table, writes benchmarks/results/views.json

Cases: a GPT-2-small-sized (layer, pos, neuron) sweep, 12 x 10 x 3072 = 368,640 cells
(synthetic values, one layer's 3072 x 10 slice drawn at a time), the fact-world model's
(layer, pos, neuron) sweep (4 x 7 x 512, all neurons as rows) and its resid_pre sweep (4 x 7).

- first render: navigation start to the moment the view's element gets `data-rendered`
  (seen by a MutationObserver installed before the page's own scripts; includes parsing the
  self-contained page, decoding the float32 data and drawing the canvas), median of 3 loads;
- hover: ~50 synthetic pointer moves to random cells, each timed in the page with
  performance.now() from dispatching the `mousemove` to the status element showing that
  cell (the handler is synchronous); also with a forced layout of the status afterwards, and
  (as performance.now() is clamped to 0.1 ms) the mean of 50 moves timed together;
- layout switch (3-D results): choosing another slice in the selector until it is redrawn.
"""

from __future__ import annotations

import platform
import statistics
import tempfile
from pathlib import Path

import torch

from benchmarks.common import write_report

OUT = Path(__file__).parent / "results" / "views.json"
CLEAN, CORRUPTED = "Michael Jordan plays the sport of", "Michael Phelps plays the sport of"
LOADS, MOVES = 3, 50

TIMER = """<script>(function () {
  new MutationObserver(function (records, obs) {
    if (document.querySelector(".interp-view[data-rendered]")) { window.__ivRendered = performance.now(); obs.disconnect(); }
  }).observe(document, { subtree: true, childList: true, attributes: true, attributeFilter: ["data-rendered"] });
})();</script>"""

HOVER = """(n) => {
  const canvas = document.querySelector("canvas.iv-heatmap-cells"), status = document.querySelector(".iv-heatmap-status");
  const rows = +canvas.dataset.rows, cols = +canvas.dataset.cols, cw = +canvas.dataset.cellWidth, ch = +canvas.dataset.cellHeight;
  let seed = 12345; const rand = (m) => { seed = (seed * 1103515245 + 12345) % 2147483648; return seed % m; };
  const plain = [], laid = [];
  for (let i = 0; i < n; i++) {
    const r = rand(rows), c = rand(cols), box = canvas.getBoundingClientRect();
    const ev = new MouseEvent("mousemove", {clientX: box.left + (c + 0.5) * cw, clientY: box.top + (r + 0.5) * ch, bubbles: true});
    const t0 = performance.now();
    canvas.dispatchEvent(ev);
    if (+status.dataset.row !== r || +status.dataset.col !== c) throw new Error("status shows the wrong cell");
    const t1 = performance.now();
    status.getBoundingClientRect();
    const t2 = performance.now();
    plain.push(t1 - t0); laid.push(t2 - t0);
  }
  const batch0 = performance.now();  // performance.now() is clamped to 0.1 ms: also time all n moves at once
  for (let i = 0; i < n; i++) {
    const r = rand(rows), c = rand(cols), box = canvas.getBoundingClientRect();
    canvas.dispatchEvent(new MouseEvent("mousemove", {clientX: box.left + (c + 0.5) * cw, clientY: box.top + (r + 0.5) * ch, bubbles: true}));
  }
  return {plain, laid, mean: (performance.now() - batch0) / n};
}"""

SWITCH = """(value) => {
  const sel = document.querySelector("select.iv-heatmap-mode");
  const t0 = performance.now();
  sel.value = value; sel.dispatchEvent(new Event("change"));
  document.querySelector("canvas.iv-heatmap-cells").getBoundingClientRect();
  return performance.now() - t0;
}"""


def _cases() -> dict:
    from interp import metrics
    from interp.patching import PatchResult, sweep
    from models import load

    model = load("factworld")
    ld = metrics.logit_diff(model, "basketball", "swimming")
    n_layers, n_pos, d_mlp = 12, 10, 3072
    labels = {"layer": [f"L{l}" for l in range(n_layers)], "pos": [f"tok{i} ({i})" for i in range(n_pos)],
              "neuron": [f"N{n}" for n in range(d_mlp)]}
    big = PatchResult(torch.randn(n_layers, n_pos, d_mlp, generator=torch.Generator().manual_seed(0)),
                      ("layer", "pos", "neuron"), labels, "neuron_post_by_pos", "denoise", "logit diff", 3.0, -1.0)
    return {
        "gpt2_size_neuron_sweep (12x10x3072)": (big, "row:5"),
        "factworld_neuron_post_by_pos (4x7x512)": (sweep(model, CLEAN, CORRUPTED, ld, "neuron_post_by_pos"), "row:2"),
        "factworld_resid_pre (4x7)": (sweep(model, CLEAN, CORRUPTED, ld, "resid_pre"), None),
    }


def _measure(browser, result, switch_to, folder: Path, name: str) -> dict:
    html = result.to_view().html().replace("<head>", "<head>" + TIMER, 1)
    path = folder / f"case{len(list(folder.iterdir()))}.html"
    path.write_text(html, encoding="utf-8")
    renders, hover, laid, switch, drawn, mean = [], [], [], None, None, None
    for i in range(LOADS):
        page = browser.open(path)
        problems = browser.problems(page)
        if problems:
            raise RuntimeError(f"{name}: {problems}")
        renders.append(page.evaluate("() => window.__ivRendered"))
        if i == LOADS - 1:
            drawn = page.evaluate("() => { const c = document.querySelector('canvas.iv-heatmap-cells');"
                                  " return +c.dataset.rows * +c.dataset.cols; }")
            moves = page.evaluate(HOVER, MOVES)
            hover, laid, mean = moves["plain"], moves["laid"], moves["mean"]
            if switch_to:
                switch = page.evaluate(SWITCH, switch_to)
        page.context.close()
    return {
        "cells": result.values.numel(), "html_bytes": len(html.encode()),
        "first_render_ms": statistics.median(renders), "first_render_ms_all": renders,
        "hover_median_ms": statistics.median(hover), "hover_max_ms": max(hover), "hover_mean_ms_batched": mean,
        "hover_with_layout_median_ms": statistics.median(laid), "hover_moves": len(hover),
        "layout_switch_ms": switch, "cells_drawn": drawn,
    }


def main() -> None:
    from interp.views.browser import Browser, chromium_path

    cases = _cases()
    report = {"machine": platform.platform(), "chromium": chromium_path(), "loads": LOADS, "moves": MOVES, "cases": {}}
    with tempfile.TemporaryDirectory(prefix="bench-views-") as tmp, Browser() as browser:
        report["chromium_version"] = browser._browser.version
        for name, (result, switch_to) in cases.items():
            report["cases"][name] = _measure(browser, result, switch_to, Path(tmp), name)
    head = (f"{'case':42s} {'cells':>8s} {'html MB':>8s} {'render ms':>10s} {'hover ms':>9s} {'+layout':>8s} "
            f"{'mean ms':>8s} {'switch ms':>10s}")
    print(head)
    print("-" * len(head))
    for name, r in report["cases"].items():
        switch = f"{r['layout_switch_ms']:.1f}" if r["layout_switch_ms"] is not None else "-"
        print(f"{name:42s} {r['cells']:8d} {r['html_bytes'] / 1e6:8.2f} {r['first_render_ms']:10.1f} "
              f"{r['hover_median_ms']:9.3f} {r['hover_with_layout_median_ms']:8.3f} {r['hover_mean_ms_batched']:8.4f} "
              f"{switch:>10s}")
    write_report(report, OUT)


if __name__ == "__main__":
    main()
