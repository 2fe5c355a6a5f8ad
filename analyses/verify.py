"""Cross-check our Transformer against HF transformers and TransformerLens on the same weights.

    interp verify [--model PATH|factworld] [--arch gpt2|neox|llama|qwen2] [--dtype float64] [--by-family] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Optional, Union

from analyses.common import AnalysisResult, ModelArg, add_json_argument


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
    p.add_argument("--batch", "--batch-size", dest="batch", type=int, default=2,
                   help="prompts (one forward pass)")
    p.add_argument("--seq", type=int, default=16, help="tokens per prompt")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--by-family", action="store_true", help="one row per hook family (worst over layers)")
    add_json_argument(p)


def verify(model: Optional[ModelArg] = None, *, arch: str = "gpt2", layers: int = 3, d_model: int = 84,
           heads: int = 7, vocab: int = 500, dtype: str = "float32", batch: int = 2, seq: int = 16, seed: int = 0,
           by_family: bool = False, json_path: Optional[Union[str, Path]] = None) -> AnalysisResult:
    """Cross-check a model against HF transformers and TransformerLens on the same weights and
    random tokens: `model` None (a random HF model of `arch` and the given sizes), a name or
    directory (an HF checkpoint directory is compared as HF loads it), or a `Transformer`.
    `results["crosscheck"]` is the report; `passed` says whether every hook agreed."""
    import torch

    from interp.crosscheck import crosscheck, crosscheck_model, random_hf

    torch_dtype = getattr(torch, dtype)
    gen = torch.Generator().manual_seed(seed)
    if model is None:
        hf = random_hf(arch, n_layers=layers, d_model=d_model, n_heads=heads, d_vocab=vocab, n_ctx=max(64, seq),
                       seed=seed, dtype=torch_dtype)
        print(f"random {type(hf).__name__}: {layers} layers, d_model {d_model}, {heads} heads "
              f"(d_head {d_model // heads}), vocab {vocab}; norm weights and biases perturbed")
        report = crosscheck(hf, torch.randint(0, vocab, (batch, seq), generator=gen))
    elif isinstance(model, (str, Path)) and _is_hf_dir(Path(model)):
        from models.loading import hf_model_from_dir

        hf = hf_model_from_dir(Path(model)).to(torch_dtype)
        print(f"HF checkpoint {model}: {type(hf).__name__}")
        report = crosscheck(hf, torch.randint(0, hf.config.vocab_size, (batch, seq), generator=gen))
    else:
        if isinstance(model, (str, Path)):
            from models import load

            name, model = model, load(str(model)).to(torch_dtype)
        else:
            name = type(model).__name__
        print(f"model {name}: {model.cfg.n_layers} layers, d_model {model.cfg.d_model}, {model.cfg.n_heads} heads")
        tokens = torch.randint(0, model.cfg.d_vocab, (batch, min(seq, model.cfg.n_ctx)), generator=gen)
        report = crosscheck_model(model, tokens)
    print(report.table(by_family=by_family))
    files = []
    if json_path is not None:
        json_path = Path(json_path)
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(report.to_dict(), indent=2) + "\n")
        files.append(json_path)
        print(f"wrote {json_path}")
    return AnalysisResult("verify", report.to_dict(), files, {"crosscheck": report}, passed=report.passed)


def _is_hf_dir(path: Path) -> bool:
    """A directory in HF's format (config.json not written by `models.save`)."""
    config = path / "config.json"
    return config.exists() and "interp_format" not in config.read_text()


def run(args: argparse.Namespace) -> int:
    return verify(args.model, arch=args.arch, layers=args.layers, d_model=args.d_model, heads=args.heads,
                  vocab=args.vocab, dtype=args.dtype, batch=args.batch, seq=args.seq, seed=args.seed,
                  by_family=args.by_family, json_path=args.json).rc
