"""Train a sparse autoencoder (SAE) on any hook point of a model, and save it.

    interp train-sae --hook blocks.1.hook_resid_post --out results/sae-L1 [--features 512] [--k 32] [--steps 2000]
    interp train-sae --model DIR --hook blocks.0.hook_mlp_out --texts corpus.txt --out DIR
    interp train-sae --hook blocks.1.hook_resid_post --store acts/L1 --out results/sae-L1   # streamed from disk

The SAE reads and reconstructs the hook's activation at every real token of a corpus: the
fact world's training sentences (seeded) for the fact-world model, else one text per line of
--texts FILE. It is evaluated on held-out texts (the fact world's held-out-template
sentences, or the last 10% of --texts) with `probes.sae.evaluate_dictionary` and written with
`probes.sae.save_dictionary` into --out (required; a non-empty folder only with --force):
cfg.json (with the training record and the scores) and sae_weights.safetensors.

With --store DIR the activations are not held in memory: they are harvested into DIR (an
activation store, `interp.store`: safetensors shards and a manifest; whole shards up to
--tokens) and training streams shuffled batches from it. A complete store already in DIR is
reused, after checking that it holds this model's (same weights) --hook in its dtype; an
interrupted harvest is finished; anything else is refused.
(`interp train-transcoders` trains the fact-world model's MLP transcoders.)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Optional, Sequence, Union

from analyses.common import (
    AnalysisResult, ModelArg, add_batch_size_argument, add_model_arguments, add_out_argument, as_model, main_for,
)

DEFAULT_TOKENS = 100_000


def add_arguments(p: argparse.ArgumentParser) -> None:
    from probes.sae import ACTIVATIONS

    p.add_argument("--hook", required=True, help="the hook point whose activation the SAE reconstructs")
    p.add_argument("--features", type=int, default=512, help="dictionary size")
    p.add_argument("--activation", choices=list(ACTIVATIONS), default="topk")
    p.add_argument("--k", type=int, default=32, help="active features per token (topk, batchtopk)")
    p.add_argument("--l1", type=float, default=1e-3, help="L1 penalty (relu)")
    p.add_argument("--steps", type=int, default=2000)
    add_batch_size_argument(p, 1024, "activations (tokens)")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--tokens", type=int, default=DEFAULT_TOKENS, help="training tokens gathered from the corpus")
    p.add_argument("--texts", type=Path, default=None,
                   help="corpus, one text per line (default for the fact-world model: its training sentences)")
    p.add_argument("--store", type=Path, default=None,
                   help="an activation store folder to train from (harvested there first if it holds none)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--force", action="store_true", help="replace what is in --out")
    add_model_arguments(p)
    add_out_argument(p, None)


def corpus_texts(model: ModelArg, texts: Optional[Union[str, Path, Sequence[str]]]) -> tuple[list[str], list[str]]:
    """(training texts, held-out texts): from `texts` (a file of lines, or a list; the last 10% held
    out), or the fact world's training and held-out-template sentences for the fact-world model."""
    from analyses.factworld_facts import is_factworld

    if texts is None:
        if not is_factworld(model):
            raise ValueError("give the corpus (texts=[...] or --texts FILE, one text per line): only the fact-world "
                             "model has a default corpus")
        from analyses.factworld_edits import fluency_texts, stats_texts

        return stats_texts(20_000), fluency_texts(300)
    if isinstance(texts, (str, Path)):
        texts = [line.strip() for line in Path(texts).read_text().splitlines() if line.strip()]
    texts = list(texts)
    n_test = max(1, len(texts) // 10)
    if len(texts) < 2:
        raise ValueError(f"the corpus needs at least 2 texts (training and held out), got {len(texts)}")
    return texts[:-n_test], texts[-n_test:]


def train_sae(model: ModelArg = "factworld", *, hook: str, out: Union[str, Path], features: int = 512,
              activation: str = "topk", k: int = 32, l1: float = 1e-3, steps: int = 2000, batch_size: int = 1024,
              lr: float = 1e-3, tokens: int = DEFAULT_TOKENS, texts: Optional[Union[str, Path, Sequence[str]]] = None,
              seed: int = 0, force: bool = False, progress: bool = True, dtype: Optional[str] = None,
              store: Optional[Union[str, Path]] = None) -> AnalysisResult:
    """Train an SAE on `hook` (see the module docstring) and save it into `out` (required; refused
    if it holds anything, unless `force`); with `store`, from the activation store in that folder
    (harvested first where there is none). `results["sae"]` is the trained `SparseDictionary`,
    `results["scores"]` its `DictionaryScores`; the report has the record and the scores."""
    from models.checkpoint import check_empty_dir
    from probes.sae import SparseDictionary, activation_pairs, evaluate_dictionary, save_dictionary, train_dictionary
    from probes.sae.train import training_dtype

    if out is None:
        raise ValueError("train_sae needs out=: the folder to save the SAE into")
    check_empty_dir(out, overwrite=force)  # before any work
    train_texts, test_texts = corpus_texts(model, texts)
    model = as_model(model, dtype)
    d = _hook_width(model, hook, train_texts[0])
    sae = SparseDictionary.sae(d, features, hook=hook, activation=activation, k=k, seed=seed,
                               dtype=training_dtype(model)).to(model.device)
    if store is not None:
        from interp.store import store_for

        data = store_for(model, train_texts, [hook], store, max_tokens=tokens, progress=progress)
        n_tokens = data.tokens
    else:
        data = activation_pairs(model, sae, train_texts, max_tokens=tokens)
        n_tokens = int(data[0].shape[0])
    record = train_dictionary(sae, data, steps=steps, batch_size=min(batch_size, n_tokens), lr=lr, l1=l1,
                              progress=progress)
    scores = evaluate_dictionary(model, sae.eval(), test_texts)
    report = {"hook": hook, "d_in": d, "n_features": features, "activation": activation, "tokens": n_tokens,
              "training": record.to_dict() | {"losses": record.losses[::50]}, "scores": scores.to_dict()}
    path = save_dictionary(sae, out, extra=report, overwrite=force)
    print(f"SAE on {hook} ({d} -> {features} features, {activation}): L0 {scores.l0:.1f}, variance explained "
          f"{scores.variance_explained:.4f}, CE recovered {scores.ce_recovered:.3f}, dead {scores.dead:.3f}, "
          f"{record.seconds:.1f} s; saved in {path}/")
    files = [Path(path) / name for name in ("cfg.json", "sae_weights.safetensors")]
    return AnalysisResult("train-sae", report, files, {"sae": sae, "scores": scores, "record": record})


def _hook_width(model, hook: str, text: str) -> int:
    """The last dimension of `hook`'s activation (an unknown hook name: the error lists close names)."""
    import torch

    with torch.no_grad():
        _, cache = model.run_with_cache(text, names_filter=[hook], return_type=None)
    if hook not in cache:
        raise ValueError(f"hook {hook!r} did not run on a forward pass")
    shape = tuple(cache[hook].shape)
    if len(shape) != 3:
        raise ValueError(f"an SAE reads one vector per token: {hook!r} is {list(shape)}, not [batch, pos, d] "
                         "(per-head hooks: use hook_attn_out or a residual hook)")
    return shape[-1]


def run(args: argparse.Namespace) -> int:
    from interp.store import StaleStoreError

    try:
        return train_sae(args.model, hook=args.hook, out=args.out, features=args.features, activation=args.activation,
                         k=args.k, l1=args.l1, steps=args.steps, batch_size=args.batch_size, lr=args.lr,
                         tokens=args.tokens, texts=args.texts, seed=args.seed, force=args.force,
                         progress=not args.quiet, dtype=args.dtype, store=args.store).rc
    except (FileExistsError, NotADirectoryError, StaleStoreError) as e:  # a clean command-line error: nothing was written
        raise SystemExit(f"interp train-sae: {e}") from None


def main(argv: Optional[Sequence[str]] = None) -> int:
    return main_for("analyses.train_sae", __doc__, add_arguments, run, argv)


if __name__ == "__main__":
    sys.exit(main())
