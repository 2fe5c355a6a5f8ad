"""Train the fact-world model's cross-layer transcoder (CLT) and ship it.

    interp train-clt --out DIR [--model M] [--features 512] [--k 32] [--steps 3000] [--tokens 100000]
    interp train-clt --force [...]          # replace the shipped one in models/factworld/clt/
    interp train-clt --out DIR --store acts/mlp   # streamed from an activation store on disk

One TopK CLT: per layer an encoder reading blocks.{l}.ln2.hook_normalized, whose features write
to blocks.{l'}.hook_mlp_out for every l' >= l (`probes.sae.clt`). Trained on --tokens tokens of
20,000 training sentences, every layer's (MLP input, MLP output) collected in one pass, and
evaluated on the 300 held-out-template sentences the per-layer transcoders are
(`probes.sae.evaluate_layers`, the object token as the focus). Written to OUT (cfg.json with
the training record and the scores, clt_weights.safetensors) with the loss curve
OUT/training.png.

With --store DIR the pairs are streamed from an activation store (`interp.store`), the same one
`interp train-transcoders --store` uses (every layer's MLP input and output), harvested into
DIR (whole shards up to --tokens) where DIR holds none, else reused after checking it.

Nothing is overwritten unless asked: OUT must be a new or empty directory (or `--force`).
Without `--out`, `--force` replaces the shipped CLT, for the fact-world model only. The checks
run before the model is loaded.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Optional, Sequence

from matplotlib.figure import Figure

from analyses.common import add_model_arguments, load_model, main_for

DATA = "{tokens:,} tokens of 20,000 fact-world training sentences (seed 0)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--features", type=int, default=512, help="features per layer")
    p.add_argument("--k", type=int, default=32, help="TopK: active features per layer and token")
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--tokens", type=int, default=100_000, help="training tokens held in memory")
    p.add_argument("--out", type=Path, default=None, help="output directory, new or empty (required unless --force)")
    p.add_argument("--force", action="store_true",
                   help="replace what is there; without --out, the fact-world model's shipped CLT")
    p.add_argument("--store", type=Path, default=None,
                   help="an activation store folder to train from (harvested there first if it holds none)")
    add_model_arguments(p)


def output_dir(out: Optional[Path], model: str = "factworld", force: bool = False) -> tuple[Path, bool]:
    """(where `interp train-clt` writes, whether that is the shipped CLT folder); a clear error,
    before any work, for a target the rules above refuse."""
    from analyses.train_transcoders import _is_factworld
    from models.checkpoint import check_empty_dir
    from probes.sae.clt.io import shipped_clt

    shipped = shipped_clt()
    out = shipped if out is None and force else out
    if out is None:
        raise ValueError(f"give --out DIR (a new or empty directory) for the CLT, or --force to replace the fact-world "
                         f"model's shipped CLT in {shipped}")
    into_shipped = shipped.resolve() in (out.resolve(), *out.resolve().parents)
    if into_shipped and not _is_factworld(model):
        raise ValueError(f"{shipped} holds the fact-world model's CLT; give --out DIR for --model {model}")
    if into_shipped and not force:
        raise ValueError(f"{out} is the shipped CLT folder: pass --force to replace it")
    return check_empty_dir(out, overwrite=force), into_shipped


def train_factworld_clt(model, *, features: int = 512, k: int = 32, steps: int = 3000, tokens: int = 100_000,
                        seed: int = 0, progress: bool = True, store: Optional[Path] = None):
    """(clt, training record) of a TopK CLT trained on the fact world's training sentences (in
    memory, or streamed from the activation store in folder `store`, harvested there if absent)."""
    from analyses.factworld_edits import stats_texts
    from probes.sae.clt import CrossLayerTranscoder, layer_pairs, train_clt
    from probes.sae.train import training_dtype

    clt = CrossLayerTranscoder.for_model(model, features, activation="topk", k=k, seed=seed, dtype=training_dtype(model))
    if store is not None:
        from interp.store import store_for

        hooks = [h for pair in zip(clt.in_hooks, clt.out_hooks) for h in pair]
        data = store_for(model, stats_texts(20_000), hooks, store, max_tokens=tokens, progress=progress)
    else:
        data = layer_pairs(model, clt, stats_texts(20_000), max_tokens=tokens)
    record = train_clt(clt, data, steps=steps, batch_size=1024, lr=1e-3, dead_after=5000, aux_coeff=0.125,
                       progress=progress)
    return clt.eval(), record


def run(args: argparse.Namespace) -> int:
    from analyses.train_transcoders import held_out
    from interp import plot
    from probes.sae.clt import evaluate_layers, save_clt

    out, shipped = output_dir(args.out, args.model, args.force)  # before any work
    model = load_model(args)
    from interp.store import StaleStoreError

    try:
        clt, record = train_factworld_clt(model, features=args.features, k=args.k, steps=args.steps,
                                          tokens=args.tokens, progress=not args.quiet, store=args.store)
    except (StaleStoreError, FileExistsError, NotADirectoryError) as e:
        raise SystemExit(f"interp train-clt: {e}") from None
    test, focus = held_out(model)
    scores = evaluate_layers(model, clt, test, focus=focus)
    extra = {"training": record.to_dict() | {"losses": record.losses[::50]}, "scores": scores.to_dict(),
             "data": DATA.format(tokens=args.tokens)}
    save_clt(clt, out, extra=extra, overwrite=args.force, allow_shipped=shipped)
    fig = Figure(figsize=(8, 4), layout="constrained")
    ax = fig.subplots()
    ax.plot(range(0, args.steps, 50), record.losses[::50])
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("loss (sum over layers of normalised MSE + aux)")
    plot.save(fig, out / "training")
    for l, s in enumerate(scores.layers):
        print(f"layer {l}: L0 {s['l0']:.1f}, variance explained {s['variance_explained']:.4f}, dead {s['dead']:.3f}")
    print(f"all layers spliced: KL {scores.kl:.4f}, CE {scores.ce_spliced:.3f} (clean {scores.ce_clean:.3f}); "
          f"{record.seconds:.0f} s of training; CLT in {out}/")
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    return main_for("analyses.train_clt", __doc__, add_arguments, run, argv)


if __name__ == "__main__":
    sys.exit(main())
