"""Process a model's weights as TransformerLens does (`models.processing.process_weights`) and save it.

    interp process-weights factworld --out results/factworld-processed --keep-value-biases
    interp process-weights DIR --out DIR2 --fold-value-biases [--no-fold-ln] [--no-center-writing-weights]

Folds the norms' weights into the layers that read them, centres the weights that write the
residual stream and the unembedding, and (--fold-value-biases) moves b_V into the attention
output bias; one of --fold-value-biases / --keep-value-biases is required (folding matches
TransformerLens but changes each head's own output). The processed copy is saved with
`models.save` into --out (required; a non-empty folder only with --force); the model given
is not changed. Prints how far the processed model's log-probabilities are from the
original's on random tokens (the processing keeps them, up to rounding).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Optional, Sequence, Union

from analyses.common import AnalysisResult, ModelArg, add_out_argument, as_model, main_for


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="'factworld', a model directory, or a cached HF id")
    p.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    group = p.add_mutually_exclusive_group(required=True)
    group.add_argument("--fold-value-biases", dest="fold_value_biases", action="store_true", default=None,
                       help="move b_V into b_O (TransformerLens' default)")
    group.add_argument("--keep-value-biases", dest="fold_value_biases", action="store_false",
                       help="leave b_V in each head")
    p.add_argument("--no-fold-ln", dest="fold_ln", action="store_false", help="keep the norms' weights")
    p.add_argument("--no-center-writing-weights", dest="center_writing_weights", action="store_false")
    p.add_argument("--no-center-unembed", dest="center_unembed", action="store_false")
    p.add_argument("--force", action="store_true", help="replace what is in --out")
    add_out_argument(p, None)


def process_and_save(model: ModelArg, *, out: Union[str, Path], fold_value_biases: bool, fold_ln: bool = True,
                     center_writing_weights: bool = True, center_unembed: bool = True, force: bool = False,
                     dtype: Optional[str] = None) -> AnalysisResult:
    """A processed copy of `model` saved into `out` (refused if it holds anything, unless
    `force`); the report has the steps and the largest change of any log-probability on
    3 x 8 random tokens (seeded); `results["model"]` is the processed copy."""
    import torch

    from models import save
    from models.checkpoint import check_empty_dir
    from models.processing import process_weights

    if out is None:
        raise ValueError("process_and_save needs out=: the folder to save the processed model into")
    check_empty_dir(out, overwrite=force)
    model = as_model(model, dtype)
    processed = process_weights(model, fold_value_biases=fold_value_biases, fold_ln=fold_ln,
                                center_writing_weights=center_writing_weights, center_unembed=center_unembed)
    tokens = torch.randint(0, model.cfg.d_vocab, (3, min(8, model.cfg.n_ctx)), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        diff = float((model(tokens).log_softmax(-1) - processed(tokens).log_softmax(-1)).abs().max())
    path = save(processed, out, overwrite=force)
    steps = {"fold_ln": fold_ln, "center_writing_weights": center_writing_weights, "center_unembed": center_unembed,
             "fold_value_biases": fold_value_biases}
    print("processed (" + ", ".join(k for k, v in steps.items() if v) + f"); largest log-probability change on random "
          f"tokens {diff:.2e}; saved in {path}/")
    return AnalysisResult("process-weights", {"steps": steps, "max_log_prob_change": diff, "out": str(path)},
                          sorted(Path(path).iterdir()), {"model": processed})


def run(args: argparse.Namespace) -> int:
    try:
        return process_and_save(args.model, out=args.out, fold_value_biases=args.fold_value_biases,
                                fold_ln=args.fold_ln, center_writing_weights=args.center_writing_weights,
                                center_unembed=args.center_unembed, force=args.force, dtype=args.dtype).rc
    except (FileExistsError, NotADirectoryError, ValueError) as e:  # a clean command-line error: nothing was written
        raise SystemExit(f"interp process-weights: {e}") from None


def main(argv: Optional[Sequence[str]] = None) -> int:
    return main_for("analyses.process_weights", __doc__, add_arguments, run, argv)


if __name__ == "__main__":
    sys.exit(main())
