"""A gallery of every kind of view on the shipped fact-world model: one self-contained HTML
page per view and, with a browser, a screenshot of each (what `make demo` writes under
results/views/ and the README shows).

    interp views [--out results/views] [--no-screenshots]
    python -m analyses.views --out /tmp/views

Each page opens offline (no network request); the screenshots come from the system's
headless Chromium (interp.views.browser). OUT/views.json lists every view with its file
sizes and the time the browser took to load and draw it.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Callable, Optional, Sequence, Union

from analyses.common import (
    ANSWER, CLEAN, CORRUPTED, COUNTERFACTUAL, AnalysisResult, ModelArg, Outputs, add_model_arguments, as_model,
    main_for,
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", default="results/views", help="output folder (default results/views)")
    p.add_argument("--no-screenshots", action="store_true", help="write the pages only (no browser needed)")
    p.add_argument("--only", action="append", default=None, metavar="NAME", help="build only this view (repeatable)")
    add_model_arguments(p)


def _builders(model, progress: bool) -> dict[str, Callable[[], object]]:
    """name -> a function returning something with to_view() (or a View), each on Michael Jordan."""
    from interp import metrics
    from interp.attribution import direct_logit_attribution
    from interp.patching import sweep
    from probes.causal_trace import trace

    metric = metrics.logit_diff(model, ANSWER, COUNTERFACTUAL)

    def patching():  # the README's picture
        return sweep(model, CLEAN, CORRUPTED, metric, "head_z_by_pos", progress=progress).normalized()

    def resid_patching():
        return sweep(model, CLEAN, CORRUPTED, metric, "resid_pre", progress=progress).normalized()

    def causal_trace():
        return trace(model, CLEAN, "Michael Jordan", ANSWER, kind="mlp", progress=progress)

    def dla_heads():
        return direct_logit_attribution(model, CLEAN, ANSWER, COUNTERFACTUAL)

    def attention():
        from interp.views.attention import attention_patterns

        return attention_patterns(model, CLEAN)

    def logit_lens():
        from probes.logit_lens import logit_lens

        return logit_lens(model, CLEAN)

    def feature_dashboard():
        from analyses.features import corpus
        from probes.sae import feature_dashboard, load_transcoders

        return feature_dashboard(model, load_transcoders("factworld")[0], 258, corpus(limit=100), k=8,
                                 progress=progress)

    def neuron_dashboard():
        import torch

        from analyses.features import corpus
        from probes.ffn import neuron_dashboard

        with torch.no_grad():  # the layer-0 neuron that fires most at "Jordan"
            _, cache = model.run_with_cache(CLEAN, names_filter="blocks.0.mlp.hook_post")
        index = int(cache["blocks.0.mlp.hook_post"][0, 2].argmax())
        return neuron_dashboard(model, 0, index, corpus(limit=100), k=8, progress=progress)

    def recall_chain():
        from analyses.anatomy import chain_view
        from analyses.probe import probe_fact

        probe = probe_fact(model, target=ANSWER, progress=False, out=None)
        return chain_view(probe.report["anatomy"], ANSWER, model.cfg.n_layers)

    def edit():
        from analyses.edit import edit_fact

        return edit_fact(model, CLEAN, "soccer", progress=progress).results["comparison"]

    def circuit():
        from interp.circuits import attribute_edges, circuit_view, head_node_views, top_edges

        scores = attribute_edges(model, CLEAN, CORRUPTED, metric, method="eap-ig", progress=progress)
        return circuit_view(scores.graph, scores, top_edges(scores, 36),
                            node_views=head_node_views(model, model.to_tokens(CLEAN)),
                            title="Michael Jordan vs Michael Phelps: edge attribution (EAP-IG)")

    def attribution_graph():
        from analyses.graph import graph_page
        from probes.graph import attribution_graph as build
        from probes.sae import load_transcoders

        transcoders = load_transcoders("factworld")
        graph = build(model, CLEAN, transcoders, progress=progress)
        return graph_page(model, graph, graph.prune(), transcoders, dashboards=6)

    builders = {"patching": patching, "resid_patching": resid_patching, "causal_trace": causal_trace,
                "direct_logit_attribution": dla_heads, "attention": attention, "logit_lens": logit_lens,
                "feature_dashboard": feature_dashboard, "neuron_dashboard": neuron_dashboard,
                "recall_chain": recall_chain, "edit": edit, "circuit": circuit,
                "attribution_graph": attribution_graph}
    return builders


def view_gallery(model: ModelArg = "factworld", *, out: Union[str, Path] = "results/views", screenshots: bool = True,
                 only: Optional[Sequence[str]] = None, given: Optional[dict] = None, progress: bool = True,
                 browser=None, dtype: Optional[str] = None) -> AnalysisResult:
    """Write OUT/NAME.html (and OUT/NAME.png with `screenshots`) for every view; `results` maps a
    name to its View. `given`: name -> a result or View already computed (the demo passes its
    recall chain and edit), used instead of computing that view again. `browser`: an open
    `interp.views.browser.Browser` to take the screenshots with (default: one of its own)."""
    model = as_model(model, dtype)
    outputs = Outputs(out)
    builders = _builders(model, progress)
    for name, made in (given or {}).items():
        if name not in builders:
            raise ValueError(f"unknown view {name!r}; the gallery has {sorted(builders)}")
        builders[name] = (lambda m: (lambda: m))(made)
    if only:
        unknown = sorted(set(only) - set(builders))
        if unknown:
            raise ValueError(f"unknown view(s) {unknown}; the gallery has {sorted(builders)}")
        builders = {k: v for k, v in builders.items() if k in only}
    views, report = {}, {}
    for name, build in builders.items():
        made = build()
        view = made.to_view() if hasattr(made, "to_view") else made
        views[name] = view
        path = outputs.view(name, view)
        report[name] = {"kind": view.kind, "title": view.title, "html": str(path), "html_bytes": path.stat().st_size}
    if screenshots:
        _screenshots(outputs, report, browser)
    outputs.json("views.json", report)
    for name, row in report.items():
        shot = f", drawn in {row['load_ms']:.0f} ms" if "load_ms" in row else ""
        print(f"{name:26s} {row['kind']:10s} {row['html_bytes'] / 1024:7.0f} KiB{shot}")
    return AnalysisResult("views", report, outputs.files, views)


def _screenshots(outputs: Outputs, report: dict, browser=None) -> None:
    from contextlib import nullcontext

    from interp.views.browser import Browser

    with (nullcontext(browser) if browser is not None else Browser()) as browser:
        for name, row in report.items():
            start = time.perf_counter()
            page = browser.open(row["html"])
            row["load_ms"] = 1000 * (time.perf_counter() - start)
            png = Path(row["html"]).with_suffix(".png")
            page.locator(".interp-view").first.screenshot(path=str(png))
            problems = browser.problems(page)
            page.context.close()
            if problems:
                raise RuntimeError(f"view {name}: " + "; ".join(problems))
            row["png"] = str(png)
            outputs.files.append(png)


def run(args: argparse.Namespace) -> int:
    view_gallery(args.model, out=args.out, screenshots=not args.no_screenshots, only=args.only,
                 progress=not args.quiet, dtype=args.dtype)
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    return main_for("analyses.views", __doc__, add_arguments, run, argv)


if __name__ == "__main__":
    sys.exit(main())
