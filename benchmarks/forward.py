"""Forward-pass speed: ours vs HF transformers vs the TransformerLens 4 bridge.

    python -m benchmarks.forward [--batch 4] [--seq 128] [--repeats 5]

Same GPT-2-small-shaped random model (12 layers, d_model 768, 12 heads, vocab
50257), same tokens, one process, timed round-robin; prints median times and
the ratios the targets are about:
  ours forward / HF forward                      target <= 1.05
  bridge run_with_cache / ours run_with_cache    target >= 2
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import warnings
from pathlib import Path

import torch

from benchmarks.common import time_interleaved


def main() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    warnings.filterwarnings("ignore")
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--seq", type=int, default=128)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--layers", type=int, default=12)
    p.add_argument("--d-model", type=int, default=768)
    p.add_argument("--heads", type=int, default=12)
    p.add_argument("--vocab", type=int, default=50257)
    p.add_argument("--device", default="cpu")
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args()

    import transformers

    from interp.crosscheck import bridge_for, random_gpt2
    from models import from_hf

    transformers.logging.set_verbosity_error()
    hf = random_gpt2(n_layers=args.layers, d_model=args.d_model, n_heads=args.heads, d_vocab=args.vocab,
                     n_ctx=max(1024, args.seq), perturb=False).to(args.device)
    ours = from_hf(hf).eval()
    bridge = bridge_for(hf)
    tokens = torch.randint(0, args.vocab, (args.batch, args.seq), generator=torch.Generator().manual_seed(0)).to(args.device)

    with torch.no_grad():  # same numbers before timing anything
        diff = (ours(tokens) - hf(tokens).logits).abs().max().item()
    sync = torch.cuda.synchronize if args.device.startswith("cuda") else (lambda: None)

    def timed(fn):
        def run():
            out = fn()
            sync()
            return out
        return run

    times = time_interleaved({
        "ours forward": timed(lambda: ours(tokens)),
        "HF forward": timed(lambda: hf(tokens).logits),
        "ours run_with_cache (all hooks)": timed(lambda: ours.run_with_cache(tokens)),
        "bridge run_with_cache (all hooks)": timed(lambda: bridge.run_with_cache(tokens)),
    }, repeats=args.repeats)

    print(f"GPT-2-shaped random model: {args.layers} layers, d_model {args.d_model}, {args.heads} heads, "
          f"vocab {args.vocab}; tokens [{args.batch}, {args.seq}]; {args.device}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads; median of {args.repeats}")
    print(f"max |ours - HF| logits: {diff:.2e}")
    for name, t in times.items():
        print(f"  {name:36s} {t * 1e3:9.1f} ms")
    ratios = {
        "ours forward / HF forward (target <= 1.05)": times["ours forward"] / times["HF forward"],
        "bridge cache / ours cache (target >= 2)": times["bridge run_with_cache (all hooks)"] / times["ours run_with_cache (all hooks)"],
        "ours cache / ours forward": times["ours run_with_cache (all hooks)"] / times["ours forward"],
    }
    for name, r in ratios.items():
        print(f"  {name:44s} {r:6.2f}")
    if args.json:
        args.json.write_text(json.dumps({"args": vars(args) | {"json": str(args.json)}, "times_s": times,
                                         "ratios": ratios, "max_logit_diff": diff,
                                         "machine": platform.processor() or platform.machine()}, indent=2))


if __name__ == "__main__":
    main()
