"""The same timings on two revisions of this repository, alternating, in one run.

    python -m benchmarks.revisions --old 6486a6c            # this tree against that commit
    python -m benchmarks.revisions --old 6486a6c --repeats 3 --quick

The old revision is checked out into a temporary git worktree; each repeat runs the timing
script (`python -m benchmarks.revisions --measure`) once in each tree, in a fresh process,
old and new taking turns so that machine-wide slowdowns hit both alike. Reported: the
median per measurement and the ratio old / new (> 1: the new revision is faster).

Measurements (all with the library's defaults): patching sweeps on the fact-world model
and on the GPT-2-small shape (12 layers, 16 tokens, every head at every position);
causal traces, attention knockout, the average trace over every athlete -> sport fact and
knowledge neurons on the fact-world model; the forward pass of the GPT-2-small shape.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _timed(fn, repeats: int = 3) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def measure(quick: bool) -> dict[str, float]:
    """Run in the tree under test (its packages first on sys.path); API differences between
    revisions are bridged here."""
    import torch

    from interp import metrics
    from interp.crosscheck import random_gpt2
    from interp.patching import sweep
    from models import factworld, from_hf, load

    out: dict[str, float] = {}
    fw = load("factworld")
    mj, mp = "Michael Jordan plays the sport of", "Michael Phelps plays the sport of"
    ld = metrics.logit_diff(fw, "basketball", "swimming")
    for site in ("resid_pre", "head_z_by_pos", "neuron_post_by_pos"):
        out[f"factworld sweep {site}"] = _timed(lambda: sweep(fw, mj, mp, ld, site, progress=False))

    from probes.causal_trace import trace
    try:
        from probes.knockout import attention_knockout_all
        from probes.trace_average import average_trace
        new_api = True
    except ImportError:  # before the split of probes.causal_trace
        from probes.causal_trace import attention_knockout_all, average_trace
        new_api = False
    for kind in ("resid", "mlp", "attn"):
        out[f"factworld trace {kind}"] = _timed(lambda: trace(fw, mj, "Michael Jordan", "basketball", kind=kind,
                                                             window=1, progress=False))
    out["factworld knockout (3 source sets)"] = _timed(
        lambda: attention_knockout_all(fw, mj, "Michael Jordan", "basketball", window=1, progress=False))
    facts = [f for f in factworld.facts("sport") if f.object != "none"][: 40 if quick else None]
    template = "{subject} plays the sport of"
    if new_api:
        run_avg = lambda: average_trace(fw, [(template.format(subject=f.subject), f.subject, f.object)  # noqa: E731
                                             for f in facts], window=1, progress=False)
    else:
        run_avg = lambda: average_trace(fw, facts, template, window=1, progress=False)  # noqa: E731
    out[f"factworld average trace ({len(facts)} facts)"] = _timed(run_avg, repeats=1)
    from probes.knowledge_neurons import knowledge_neurons
    out["factworld knowledge neurons"] = _timed(lambda: knowledge_neurons(fw, mj, "basketball", progress=False))

    out.update(_measure_newer(fw, mj, mp, ld, quick))

    layers = 2 if quick else 12
    model = from_hf(random_gpt2(n_layers=layers, d_model=768, n_heads=12, d_vocab=50257, n_ctx=1024, d_mlp=3072))
    gen = torch.Generator().manual_seed(0)
    clean = torch.randint(0, 50257, (1, 16), generator=gen)
    corrupted = clean.clone()
    corrupted[0, 2:4] = torch.randint(0, 50257, (2,), generator=gen)
    metric = metrics.logit_diff(model, 11, 12)
    out[f"gpt2-shape ({layers} layers) sweep head_z_by_pos"] = _timed(
        lambda: sweep(model, clean, corrupted, metric, "head_z_by_pos", progress=False), repeats=1)
    out[f"gpt2-shape ({layers} layers) sweep resid_pre"] = _timed(
        lambda: sweep(model, clean, corrupted, metric, "resid_pre", progress=False), repeats=1)
    with torch.no_grad():
        for batch, seq in ((1, 16), (4, 128)):
            tokens = torch.randint(0, 50257, (batch, seq), generator=gen)
            out[f"gpt2-shape ({layers} layers) forward [{batch}, {seq}]"] = _timed(lambda: model(tokens), repeats=5)
    answer, other = 11, 12
    plain = lambda logits: (logits[:, -1, answer] - logits[:, -1, other]).mean()  # noqa: E731  a TransformerLens-style metric
    out[f"gpt2-shape ({layers} layers) sweep resid_pre, plain-function metric"] = _timed(
        lambda: sweep(model, clean, corrupted, plain, "resid_pre", progress=False), repeats=1)
    return out


def _measure_newer(fw, mj: str, mp: str, ld, quick: bool) -> dict[str, float]:
    """Attribution patching, circuits, localisation and a ROME edit on the fact-world model
    (each with explicit arguments that both revisions accept)."""
    import torch

    from interp.attribution import attribution_patch
    from interp.circuits import attribute_edges
    from probes.edit import key_second_moment, rome
    from probes.ffn import localise

    out: dict[str, float] = {}
    out["factworld attribution_patch head_z_by_pos"] = _timed(lambda: attribution_patch(fw, mj, mp, ld, "head_z_by_pos"))
    for method in ("eap", "exact"):
        out[f"factworld circuit edges ({method})"] = _timed(
            lambda: attribute_edges(fw, mj, mp, ld, method=method, progress=False), repeats=1)
    out["factworld localise (greedy)"] = _timed(lambda: localise(fw, mj, "basketball", method="greedy"), repeats=1)
    texts = [f"{s} plays the sport of" for s in ("Michael Jordan", "Serena Williams", "Tiger Woods")] * 20
    stats = key_second_moment(fw, 1, texts, cache=False, progress=False)
    try:
        from probes.edit import EditRequest
        fields = EditRequest.__dataclass_fields__
        request = EditRequest(mj, "Michael Jordan", "soccer") if len(fields) == 3 else None
    except ImportError:
        request = None
    out["factworld rome (layer 1, given stats)"] = _timed(
        lambda: rome(fw, request, layer=1, stats=stats, progress=False) if _takes_progress(rome)
        else rome(fw, request, layer=1, stats=stats), repeats=1)
    torch.manual_seed(0)  # this timing script is not a library call
    return out


def _takes_progress(fn) -> bool:
    import inspect
    return "progress" in inspect.signature(fn).parameters


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--old", default=None, help="the revision to compare with (a commit)")
    parser.add_argument("--repeats", type=int, default=2, help="runs per tree, alternating")
    parser.add_argument("--quick", action="store_true", help="a 2-layer GPT-2 shape and 40 facts")
    parser.add_argument("--measure", action="store_true", help="(internal) time a tree and print JSON")
    parser.add_argument("--tree", default=None, help="(internal) the tree whose packages --measure times")
    parser.add_argument("--out", default="benchmarks/results/revisions.json")
    args = parser.parse_args(argv)
    if args.measure:
        sys.path.insert(0, args.tree or str(ROOT))  # that tree's interp, models, probes first
        print("RESULT " + json.dumps(measure(args.quick)))
        return {}
    if args.old is None:
        parser.error("--old COMMIT is required")
    with tempfile.TemporaryDirectory() as tmp:
        old_tree = Path(tmp) / "old"
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(old_tree), args.old], check=True,
                       capture_output=True)
        try:
            runs: dict[str, list[dict]] = {"old": [], "new": []}
            for i in range(args.repeats):
                for name, tree in (("old", old_tree), ("new", ROOT)):
                    cmd = [sys.executable, str(Path(__file__).resolve()), "--measure", "--tree", str(tree)]
                    cmd += ["--quick"] if args.quick else []
                    done = subprocess.run(cmd, cwd=tree, capture_output=True, text=True,
                                          env={**os.environ, "HF_HUB_OFFLINE": "1"})
                    line = [l for l in done.stdout.splitlines() if l.startswith("RESULT ")]
                    if done.returncode or not line:
                        raise RuntimeError(f"{name} tree failed:\n{done.stderr[-3000:]}")
                    runs[name].append(json.loads(line[0][len("RESULT "):]))
                    print(f"repeat {i + 1}/{args.repeats}: {name} done", flush=True)
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(old_tree)], capture_output=True)
    report = {"old": args.old, "repeats": args.repeats, "measurements": {}}
    print(f"\n{'measurement':52s} {'old (s)':>9s} {'new (s)':>9s} {'old/new':>8s}")
    for key in runs["new"][0]:
        old = statistics.median(r[key] for r in runs["old"]) if key in runs["old"][0] else float("nan")
        new = statistics.median(r[key] for r in runs["new"])
        report["measurements"][key] = {"old_s": old, "new_s": new, "old_over_new": old / new}
        print(f"{key:52s} {old:9.4f} {new:9.4f} {old / new:8.2f}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1))
    print(f"wrote {out}")
    return report


if __name__ == "__main__":
    main()
