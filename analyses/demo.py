"""The demo: what the shipped fact-world model predicts, and the cross-check of its weights.

    python -m analyses.demo        (what `make demo` runs)

Top-5 next words for three prompts, the anatomy and FFN probe of Michael Jordan ->
basketball (`interp probe`: AND keys at the subject, the heads that move it, the
writers, the position-aware localisation, the chain figure), then the cross-check
against HF and TransformerLens, and last one ROME edit (Michael Jordan -> soccer, checked
on held-out paraphrases and neighbours) and its revert (`interp edit`), the attribution graph
of Michael Jordan over the shipped transcoders (`interp graph`: results/graph/), and last the gallery
of interactive views (`interp views`: one offline page and one screenshot per kind of view,
under results/views/).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Optional, Union

import torch

from analyses.common import AnalysisResult

if TYPE_CHECKING:
    from models import Transformer

PROMPTS = [
    "Michael Jordan plays the sport of",
    "Michael Phelps plays the sport of",
    "Alexis Jordan plays the sport of",
]


def top_next_words(model: Transformer, prompt: str, k: int = 5) -> list[tuple[str, float]]:
    """The k most likely next words after `prompt`, with probabilities."""
    from interp.words import token_text

    with torch.no_grad():
        probs = model(prompt)[0, -1].softmax(-1)
    p, ids = probs.topk(k)
    return [(token_text(model, i), float(q)) for q, i in zip(p.tolist(), ids.tolist())]


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The demo has no options."""


def demo(*, out: Optional[Union[str, Path]] = "results") -> AnalysisResult:
    """Everything above, printed; the probe's and the edit's files under OUT/probe and OUT/edit
    (None: the probe writes nothing; the edit command always writes). `passed`: the cross-check
    passed and the edit succeeded."""
    from analyses.probe import probe_fact
    from interp.crosscheck import crosscheck_model
    from models import load

    model = load("factworld")
    cfg = model.cfg
    print(f"fact-world model: {cfg.n_layers} layers, d_model {cfg.d_model}, {cfg.n_heads} heads, "
          f"d_mlp {cfg.d_mlp} (ReLU), vocabulary {cfg.d_vocab} words\n")
    predictions = {}
    for prompt in PROMPTS:
        print(prompt)
        predictions[prompt] = top_next_words(model, prompt)
        for word, p in predictions[prompt]:
            print(f"    {word:14s} {p:6.3f}")
    print("\nThe recall chain of Michael Jordan -> basketball, then the FFN key-value details "
          f"(interp probe; the chain figure, plots and JSON in {Path(out) / 'probe' if out else 'no folder'})\n")
    probe = probe_fact(model, target="basketball", progress=False, out=Path(out) / "probe" if out else None)
    print("\nCross-check of the fact-world weights: ours vs HF GPT2LMHeadModel vs TransformerLens bridge")
    report = crosscheck_model(model, model.to_tokens(PROMPTS))
    print(report.table(by_family=True))
    print("\nRewriting the fact: ROME edit of Michael Jordan -> soccer, measured on held-out paraphrases and "
          "neighbours, then reverted (interp edit; results/edit/)\n")
    from analyses.anatomy import chain_view
    from analyses.edit import _print_edit, edit_fact
    from analyses.views import view_gallery

    edit_out = Path(out or "results") / "edit"
    edited = edit_fact(model, "Michael Jordan plays the sport of", "soccer", progress=False, out=edit_out)
    _print_edit(edited)
    print(f"Plot, page (edit.html) and JSON in {edit_out}/")
    from analyses.graph import graph_of

    graph_out = Path(out or "results") / "graph"
    print("\nThe attribution graph of Michael Jordan -> basketball over the shipped transcoders (interp graph; "
          f"{graph_out}/)\n")
    graph = graph_of(model, progress=False, out=graph_out)
    views_out = Path(out or "results") / "views"
    print(f"\nThe interactive views (one offline HTML page each, and a screenshot): {views_out}/\n")
    gallery = view_gallery(model, out=views_out, progress=False,
                           given={"recall_chain": chain_view(probe.report["anatomy"], "basketball", cfg.n_layers),
                                  "edit": edited.results["comparison"],
                                  "attribution_graph": graph.results["page"]})
    return AnalysisResult("demo", {"predictions": predictions, "crosscheck": report.to_dict(), "edit_rc": edited.rc,
                                   "views": gallery.report},
                          probe.files + edited.files + graph.files + gallery.files,
                          {"probe": probe, "crosscheck": report, "edit": edited, "graph": graph, "views": gallery},
                          passed=report.passed and edited.passed)


def run(args: argparse.Namespace) -> int:
    return demo().rc


def main() -> int:
    return demo().rc


if __name__ == "__main__":
    sys.exit(main())

