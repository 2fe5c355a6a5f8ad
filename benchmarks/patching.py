"""Per-head-by-position activation patching: ours vs TransformerLens 4, side by side.

    python -m benchmarks.patching              # GPT-2-small shape, 16 tokens (TL's part takes minutes)
    python -m benchmarks.patching --layers 2   # a quick smoke run

Both sweeps patch the clean z of every (layer, position, head) into the
corrupted run of the same weights and record the logit difference; the script
checks that the two results agree, then times attribution patching for all
heads and all neurons. Results go to stdout and benchmarks/results/patching.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
import warnings
from pathlib import Path

import torch

from interp import metrics
from interp.attribution import agreement, attribution_patch
from interp.crosscheck import bridge_for, random_gpt2
from interp.patching import sweep
from models import from_hf


def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=12)
    parser.add_argument("--d-model", type=int, default=768)
    parser.add_argument("--heads", type=int, default=12)
    parser.add_argument("--vocab", type=int, default=50257)
    parser.add_argument("--n-pos", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=64, help="rows per forward pass in our sweep")
    parser.add_argument("--skip-tl", action="store_true", help="time only our side")
    parser.add_argument("--out", default="benchmarks/results/patching.json")
    args = parser.parse_args(argv)

    torch.manual_seed(0)
    hf = random_gpt2(n_layers=args.layers, d_model=args.d_model, n_heads=args.heads, d_vocab=args.vocab,
                     n_ctx=1024, d_mlp=4 * args.d_model)
    model = from_hf(hf)
    gen = torch.Generator().manual_seed(0)
    clean = torch.randint(0, args.vocab, (1, args.n_pos), generator=gen)
    corrupted = clean.clone()
    corrupted[0, 2:4] = torch.randint(0, args.vocab, (2,), generator=gen)
    metric = metrics.logit_diff(model, 11, 12)
    n_patches = args.layers * args.n_pos * args.heads
    report: dict = {
        "model": f"{args.layers} layers, d_model {args.d_model}, {args.heads} heads, vocab {args.vocab}",
        "prompt_tokens": args.n_pos, "patches": n_patches, "torch_threads": torch.get_num_threads(),
        "machine": platform.processor() or platform.machine(),
    }
    print(f"{report['model']}; {args.n_pos} tokens; {n_patches} head-by-position patches; "
          f"{torch.get_num_threads()} torch threads")

    with torch.no_grad():
        model(clean)  # warm up
    ours, t_ours = timed(lambda: sweep(model, clean, corrupted, metric, "head_z_by_pos",
                                       batch_size=args.batch_size, progress=False))
    report["ours_s"] = t_ours
    print(f"ours  interp.patching.sweep(site='head_z_by_pos'): {t_ours:8.2f} s")

    if not args.skip_tl:
        from transformer_lens import patching as tl_patching

        bridge = bridge_for(hf)
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            _, clean_cache = bridge.run_with_cache(clean)
            theirs, t_tl = timed(lambda: tl_patching.get_act_patch_attn_head_out_by_pos(
                bridge, corrupted, clean_cache, lambda logits: metric(logits)))
        diff = float((ours.values - theirs.double()).abs().max())
        report.update(tl_s=t_tl, speedup=t_tl / t_ours, max_abs_diff=diff,
                      metric_range=[float(ours.values.min()), float(ours.values.max())])
        print(f"TL    get_act_patch_attn_head_out_by_pos (bridge):   {t_tl:8.2f} s")
        print(f"speed-up {t_tl / t_ours:.1f}x; results agree to {diff:.2e} (metric range "
              f"{report['metric_range'][0]:.3f} .. {report['metric_range'][1]:.3f})")

    for site in ("head_z_by_pos", "neuron_post_by_pos"):
        est, t = timed(lambda: attribution_patch(model, clean, corrupted, metric, site))
        report[f"attribution_{site}_s"] = t
        report[f"attribution_{site}_sites"] = est.values.numel()
        print(f"attribution patching, {site}: {est.values.numel()} sites in {t:.2f} s")
        if site == "head_z_by_pos":
            agree = agreement(est, ours, k=20)
            report["attribution_vs_patching"] = vars(agree)
            print(f"  agreement with activation patching: {agree}")

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1))
    print(f"wrote {out}")
    return report


if __name__ == "__main__":
    main()
