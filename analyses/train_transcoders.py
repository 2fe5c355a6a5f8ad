"""Train the fact-world model's transcoders, one per MLP layer, and ship them.

    interp train-transcoders --out DIR [--model M] [--features 512] [--k 32] [--steps 3000]
                             [--activation topk|batchtopk|relu] [--skip] [--l1 1e-3]
    interp train-transcoders --force [--features 512] ...   # replace the shipped ones
    interp train-transcoders --out DIR --store acts/mlp     # streamed from an activation store on disk

Each is a TopK transcoder (by default; `--activation`, `--skip`: BatchTopK or ReLU + L1,
with a linear skip connection) from blocks.{l}.ln2.hook_normalized to blocks.{l}.hook_mlp_out,
trained on 150,000 tokens of 20,000 training sentences (seeded) and evaluated on 300
held-out-template sentences (`probes.sae.evaluate_dictionary`, with the object token as the
focus). Written to OUT/L{l}/ (cfg.json with the training record and the scores,
sae_weights.safetensors), with a summary OUT/training.json and loss curves OUT/training.png.

With --store DIR the training pairs are not held in memory: every layer's MLP input and output
are harvested once into DIR (an activation store, `interp.store`; whole shards up to 150,000
tokens), or a complete store already there is reused after checking it holds this model's
(same weights) hooks in its dtype, and each transcoder streams shuffled batches from it.

Nothing is overwritten unless asked: OUT must be a new or empty directory (or `--force`).
Without `--out`, `--force` replaces the shipped transcoders in models/factworld/transcoders/,
for the fact-world model only: another `--model`'s transcoders never go there. The checks run
before the model is loaded.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Optional, Sequence, Union

import torch
from matplotlib.figure import Figure

from analyses.common import add_model_arguments, load_model, main_for, write_json

if TYPE_CHECKING:
    from interp.store import ActivationStore
    from models import Transformer
    from probes.sae import SparseDictionary
    from probes.sae.train import TrainingRecord


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--features", type=int, default=512)
    p.add_argument("--k", type=int, default=32)
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--activation", choices=("topk", "batchtopk", "relu"), default="topk",
                   help="TopK (the shipped ones), BatchTopK, or ReLU with an L1 penalty (--l1)")
    p.add_argument("--skip", action="store_true", help="add a linear skip connection x W_skip")
    p.add_argument("--l1", type=float, default=1e-3, help="the L1 coefficient of --activation relu")
    p.add_argument("--out", type=Path, default=None,
                   help="output directory, new or empty (required unless --force)")
    p.add_argument("--force", action="store_true",
                   help="replace what is there; without --out, the fact-world model's shipped transcoders")
    p.add_argument("--store", type=Path, default=None,
                   help="an activation store folder to train from (harvested there first if it holds none)")
    add_model_arguments(p)


def _is_factworld(model: str) -> bool:
    from models.factworld import checkpoint_dir

    return str(model) == "factworld" or Path(model).resolve() == checkpoint_dir().resolve()


def output_dir(out: Optional[Path], model: str = "factworld", force: bool = False) -> tuple[Path, bool]:
    """(where `interp train-transcoders` writes, whether that is the shipped transcoder folder);
    a clear error, before any work, for a target that the rules above refuse."""
    from models.checkpoint import check_empty_dir, shipped_dictionaries

    shipped = shipped_dictionaries("factworld")
    out = shipped if out is None and force else out
    if out is None:
        raise ValueError("give --out DIR (a new or empty directory) for the transcoders, or --force to replace the "
                         f"fact-world model's shipped transcoders in {shipped}")
    into_shipped = shipped.resolve() in (out.resolve(), *out.resolve().parents)
    if into_shipped and not _is_factworld(model):
        raise ValueError(f"{shipped} holds the fact-world model's transcoders; give --out DIR for --model {model}")
    if into_shipped and not force:
        raise ValueError(f"{out} is the shipped transcoder folder: pass --force to replace it")
    return check_empty_dir(out, overwrite=force), into_shipped


def held_out(model: Transformer, n: int = 300) -> tuple[list[str], list[int]]:
    """Held-out-template fact sentences and the position of each one's object token."""
    from analyses.factworld_edits import fluency_texts

    texts = fluency_texts(n)
    return texts, [len(model.to_str_tokens(t)) - 2 for t in texts]


TRAINING_TOKENS = 150_000


def training_pairs(model: Transformer, layer: int, texts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """(MLP inputs [n, d_model], MLP outputs [n, d_model]) of `layer` at the first 150,000 real
    tokens of `texts`: what every transcoder of that layer is trained on."""
    from probes.sae import SparseDictionary, activation_pairs

    probe = SparseDictionary.transcoder(model, layer, 1, k=1)  # only its hook names are read
    return activation_pairs(model, probe, texts, max_tokens=TRAINING_TOKENS)


def layer_hooks(model: Transformer) -> list[str]:
    """Every layer's transcoder hooks (MLP input, MLP output), in layer order: what a store for
    `interp train-transcoders --store` holds."""
    from probes.sae import SparseDictionary

    probes = [SparseDictionary.transcoder(model, layer, 1, k=1) for layer in range(model.cfg.n_layers)]
    return [h for tc in probes for h in (tc.in_hook, tc.out_hook)]


def training_store(model: Transformer, texts: Sequence[str], directory: Path, progress: bool = True) -> ActivationStore:
    """The activation store in `directory` holding every layer's transcoder pairs (harvested from
    the first 150,000 real tokens of `texts`, in whole shards, where it holds none)."""
    from interp.store import store_for

    return store_for(model, texts, layer_hooks(model), directory, max_tokens=TRAINING_TOKENS, progress=progress)


def train_layer(model: Transformer, layer: int, data: Union[tuple[torch.Tensor, torch.Tensor], ActivationStore], *,
                features: int = 512, k: int = 32, activation: str = "topk", skip: bool = False, steps: int = 3000, l1: float = 1e-3,
                progress: bool = True) -> tuple[SparseDictionary, TrainingRecord]:
    """(the transcoder of MLP `layer`, in eval mode, its training record), trained on `data`
    (in-memory pairs, or an activation store holding the layer's hooks) as the shipped ones are
    (batches of 1024, lr 1e-3, aux-k revival after 5000 silent tokens, seed = layer)
    with the given width, activation, k, skip connection and steps."""
    from probes.sae import SparseDictionary, train_dictionary
    from probes.sae.train import training_dtype

    tc = SparseDictionary.transcoder(model, layer, features, activation=activation, k=k, skip=skip, seed=layer,
                                     dtype=training_dtype(model))
    record = train_dictionary(tc, data, steps=steps, batch_size=1024, lr=1e-3, l1=l1, dead_after=5000,
                              aux_coeff=0.125, progress=progress)
    return tc.eval(), record


def run(args: argparse.Namespace) -> int:
    from analyses.factworld_edits import stats_texts
    from interp import plot
    from interp.store import StaleStoreError
    from probes.sae import evaluate_dictionary, save_dictionary

    out, shipped = output_dir(args.out, args.model, args.force)  # before any work
    model = load_model(args)
    texts = stats_texts(20_000)
    test, focus = held_out(model)
    try:
        store = None if args.store is None else training_store(model, texts, args.store, progress=not args.quiet)
    except (StaleStoreError, FileExistsError, NotADirectoryError) as e:
        raise SystemExit(f"interp train-transcoders: {e}") from None
    summary = {}
    fig = Figure(figsize=(8, 4), layout="constrained")
    ax = fig.subplots()
    for layer in range(model.cfg.n_layers):
        data = store if store is not None else training_pairs(model, layer, texts)
        tc, record = train_layer(model, layer, data, features=args.features, k=args.k,
                                 activation=args.activation, skip=args.skip, steps=args.steps, l1=args.l1,
                                 progress=not args.quiet)
        scores = evaluate_dictionary(model, tc, test, focus=focus)
        extra = {"training": record.to_dict() | {"losses": record.losses[::50]}, "scores": scores.to_dict(),
                 "data": "150,000 tokens of 20,000 fact-world training sentences (seed 0)" if store is None else
                 f"{store.tokens:,} tokens of 20,000 fact-world training sentences (seed 0), streamed from "
                 f"{store.directory}"}
        save_dictionary(tc, out / f"L{layer}", extra=extra, overwrite=args.force, allow_shipped=shipped)
        summary[layer] = {"scores": scores.to_dict(), "seconds": record.seconds}
        ax.plot(range(0, args.steps, 50), record.losses[::50], label=f"layer {layer}")
        print(f"layer {layer}: L0 {scores.l0:.1f}, variance explained {scores.variance_explained:.4f}, CE recovered "
              f"{scores.ce_recovered:.3f} (object token {scores.focus_ce_recovered:.3f}), dead {scores.dead:.3f}, "
              f"{record.seconds:.0f} s")
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("loss (normalised MSE + aux)")
    ax.legend()
    write_json(out / "training.json", summary)
    plot.save(fig, out / "training")
    print(f"transcoders in {out}/")
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    return main_for("analyses.train_transcoders", __doc__, add_arguments, run, argv)


if __name__ == "__main__":
    sys.exit(main())
