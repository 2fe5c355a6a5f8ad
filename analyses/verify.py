"""Cross-check our Transformer against HF transformers and TransformerLens on the same weights.

    interp verify [--model PATH|factworld] [--arch gpt2|neox|llama|qwen2] [--dtype float64] [--by-family] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default=None,
                   help="'factworld', a model directory, or a cached HF id (default: a random GPT-2-shaped model)")
    p.add_argument("--arch", choices=["gpt2", "neox", "llama", "qwen2"], default="gpt2",
                   help="random model: architecture (GPT-2, GPT-NeoX/Pythia, Llama, Qwen2)")
    p.add_argument("--layers", type=int, default=3, help="random model: number of layers")
    p.add_argument("--d-model", type=int, default=84, help="random model: width")
    p.add_argument("--heads", type=int, default=7, help="random model: attention heads")
    p.add_argument("--vocab", type=int, default=500, help="random model: vocabulary size")
    p.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--seq", type=int, default=16, help="tokens per prompt")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--by-family", action="store_true", help="one row per hook family (worst over layers)")
    p.add_argument("--json", type=Path, default=None, help="also write the numbers to this JSON file")


def run(args: argparse.Namespace) -> int:
    import torch

    from interp.crosscheck import crosscheck, crosscheck_model, random_hf

    dtype = getattr(torch, args.dtype)
    gen = torch.Generator().manual_seed(args.seed)
    if args.model is None:
        hf = random_hf(args.arch, n_layers=args.layers, d_model=args.d_model, n_heads=args.heads, d_vocab=args.vocab,
                       n_ctx=max(64, args.seq), seed=args.seed, dtype=dtype)
        print(f"random {type(hf).__name__}: {args.layers} layers, d_model {args.d_model}, {args.heads} heads "
              f"(d_head {args.d_model // args.heads}), vocab {args.vocab}; norm weights and biases perturbed")
        tokens = torch.randint(0, args.vocab, (args.batch, args.seq), generator=gen)
        report = crosscheck(hf, tokens)
    elif Path(args.model, "config.json").exists() and "interp_format" not in Path(args.model, "config.json").read_text():
        from models.loading import hf_model_from_dir

        hf = hf_model_from_dir(Path(args.model)).to(dtype)
        print(f"HF checkpoint {args.model}: {type(hf).__name__}")
        tokens = torch.randint(0, hf.config.vocab_size, (args.batch, args.seq), generator=gen)
        report = crosscheck(hf, tokens)
    else:
        from models import load

        model = load(args.model).to(dtype)
        print(f"model {args.model}: {model.cfg.n_layers} layers, d_model {model.cfg.d_model}, {model.cfg.n_heads} heads")
        tokens = torch.randint(0, model.cfg.d_vocab, (args.batch, min(args.seq, model.cfg.n_ctx)), generator=gen)
        report = crosscheck_model(model, tokens)
    print(report.table(by_family=args.by_family))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report.to_dict(), indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0 if report.passed else 1
