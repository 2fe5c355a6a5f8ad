"""The demo: what the shipped fact-world model predicts, and the cross-check of its weights.

    python -m analyses.demo        (what `make demo` runs)

Top-5 next words for three prompts, the anatomy and FFN probe of Michael Jordan ->
basketball (`interp probe`: AND keys at the subject, the heads that move it, the
writers, the position-aware localisation, the chain figure), then the cross-check
against HF and TransformerLens, and last one ROME edit (Michael Jordan -> soccer, checked
on held-out paraphrases and neighbours) and its revert (`interp edit`).
"""

from __future__ import annotations

import argparse
import sys

import torch

PROMPTS = [
    "Michael Jordan plays the sport of",
    "Michael Phelps plays the sport of",
    "Alexis Jordan plays the sport of",
]


def top_next_words(model, prompt: str, k: int = 5) -> list[tuple[str, float]]:
    """The k most likely next words after `prompt`, with probabilities."""
    with torch.no_grad():
        probs = model(prompt)[0, -1].softmax(-1)
    p, ids = probs.topk(k)
    return [(model.tokenizer.token_str(i), float(q)) for q, i in zip(p.tolist(), ids.tolist())]


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The demo has no options."""


def run(args: argparse.Namespace) -> int:
    return main()


def main() -> int:
    from interp.crosscheck import crosscheck_model
    from models import load

    model = load("factworld")
    cfg = model.cfg
    print(f"fact-world model: {cfg.n_layers} layers, d_model {cfg.d_model}, {cfg.n_heads} heads, "
          f"d_mlp {cfg.d_mlp} (ReLU), vocabulary {cfg.d_vocab} words\n")
    for prompt in PROMPTS:
        print(prompt)
        for word, p in top_next_words(model, prompt):
            print(f"    {word:14s} {p:6.3f}")
    print("\nThe recall chain of Michael Jordan -> basketball, then the FFN key-value details "
          "(interp probe; the chain figure, plots and JSON in results/probe/)\n")
    from analyses.probe import main as probe_main

    probe_main(["--target", "basketball", "--quiet", "--out", "results/probe"])
    print("\nCross-check of the fact-world weights: ours vs HF GPT2LMHeadModel vs TransformerLens bridge")
    tokens = model.to_tokens(PROMPTS)
    report = crosscheck_model(model, tokens)
    print(report.table(by_family=True))
    print("\nRewriting the fact: ROME edit of Michael Jordan -> soccer, measured on held-out paraphrases and "
          "neighbours, then reverted (interp edit; results/edit/)\n")
    from analyses.edit import main as edit_main

    edited = edit_main(["Michael Jordan plays the sport of", "soccer", "--quiet", "--out", "results/edit"])
    return 0 if report.passed and edited == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
