"""Activation patching side by side: ours, nnsight 0.8 and TransformerLens 4 on the same weights, one run.

    python -m benchmarks.patching              # fact-world model and the GPT-2-small shape (TL's part takes minutes)
    python -m benchmarks.patching --quick      # fact-world only, and a 2-layer GPT-2 shape
    python -m benchmarks.patching --skip-tl    # leave TransformerLens out

Sites: resid_pre (one layer at one position) and head_z_by_pos (one head at one position),
patching the clean activation into the corrupted run and recording the logit difference.

- ours: `interp.patching.sweep` (the engine picks its plan; defaults throughout).
- nnsight: written as its tutorials do, on our Transformer wrapped in `NNsight` (with the
  batching a custom model needs): one trace saves the clean activations, then one trace with
  one invoke per patch (on the GPT-2-small shape one such trace per layer, so that the
  2304-invoke batch fits in memory).
- TransformerLens: `transformer_lens.patching.get_act_patch_resid_pre` and
  `get_act_patch_attn_head_out_by_pos` on a TransformerBridge around the same weights.

Every pair of results is compared (max |difference|); timings are medians over round-robin
repeats on the fact-world model and single runs on the GPT-2-small shape. Then attribution
patching is timed for every head and every neuron. Results: stdout and
benchmarks/results/patching.json.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import platform
import time
import warnings
from typing import Callable

import torch

from benchmarks.common import time_interleaved, write_report
from interp import metrics
from interp.attribution import agreement, attribution_patch
from interp.crosscheck import bridge_for, random_gpt2
from interp.patching import sweep
from models import from_hf, load, to_hf

SITES = {"resid_pre": ("hook_resid_pre", None), "head_z_by_pos": ("attn.hook_z", "head")}
TL_FUNCTIONS = {"resid_pre": "get_act_patch_resid_pre", "head_z_by_pos": "get_act_patch_attn_head_out_by_pos"}


def timed(fn: Callable):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


# ------------------------------------------------------------------ nnsight, tutorial style
def nnsight_model(model):
    """Our Transformer in nnsight; a custom module needs `_batch` to put several invokes in one batch."""
    from nnsight import NNsight

    class BatchedNNsight(NNsight):
        def _batch_size(self, *args, **kwargs):
            return args[0].shape[0] if args else 0

        def _batch(self, invokes, fn):
            if len(invokes) == 1:
                return invokes[0]
            return (torch.cat([args[0] for args, _ in invokes]),), {}

    return BatchedNNsight(model)


def nnsight_sweep(nn_model, clean: torch.Tensor, corrupted: torch.Tensor, metric, site: str, n_layers: int,
                  n_heads: int, traces_per_layer: bool) -> torch.Tensor:
    """One trace for the clean activations, then one invoke per patch (all in one trace, or one trace
    per layer); the metric read from each invoke's last-position logits. -> [layer, pos(, head)]."""
    hook, unit = SITES[site]
    n_pos = clean.shape[1]
    units = range(n_heads) if unit else [None]

    def module(l):
        m = nn_model.blocks[l]
        for part in hook.split("."):
            m = getattr(m, part)
        return m

    with torch.no_grad():
        with nn_model.trace(clean):
            acts = list().save()
            for l in range(n_layers):
                acts.append(module(l).output)
        groups = [[l] for l in range(n_layers)] if traces_per_layer else [list(range(n_layers))]
        values = []
        for layers in groups:
            with nn_model.trace() as tracer:
                outs = list().save()
                for l in layers:
                    for p in range(n_pos):
                        for u in units:
                            with tracer.invoke(corrupted):
                                if u is None:
                                    module(l).output[:, p] = acts[l][:, p]
                                else:
                                    module(l).output[:, p, u] = acts[l][:, p, u]
                                outs.append(nn_model.output[:, -1])
            values += [float(metric.at(o)) for o in outs]
    shape = (n_layers, n_pos) + ((n_heads,) if unit else ())
    return torch.tensor(values, dtype=torch.float64).reshape(shape)


# ------------------------------------------------------------------ one model
def compare(name: str, model, hf_model, clean, corrupted, metric, repeats: int, skip_tl: bool,
            traces_per_layer: bool) -> dict:
    cfg = model.cfg
    nn_model = nnsight_model(model)
    report: dict = {"model": name, "shape": f"{cfg.n_layers} layers, d_model {cfg.d_model}, {cfg.n_heads} heads, "
                    f"vocab {cfg.d_vocab}", "prompt_tokens": clean.shape[1], "sites": {}}
    bridge = None
    if not skip_tl:
        from transformer_lens import patching as tl_patching

        bridge = bridge_for(hf_model)
    print(f"\n{name}: {report['shape']}; {clean.shape[1]} tokens")
    for site in SITES:
        fns = {
            "ours": lambda: sweep(model, clean, corrupted, metric, site, progress=False).values,
            "nnsight": lambda: nnsight_sweep(nn_model, clean, corrupted, metric, site, cfg.n_layers, cfg.n_heads,
                                             traces_per_layer),
        }
        if bridge is not None:
            def tl(site=site):
                with warnings.catch_warnings(), contextlib.redirect_stderr(io.StringIO()):  # TL's progress bars
                    warnings.simplefilter("ignore")
                    _, clean_cache = bridge.run_with_cache(clean)
                    return getattr(tl_patching, TL_FUNCTIONS[site])(bridge, corrupted, clean_cache,
                                                                      lambda logits: metric(logits)).double()
            fns["TransformerLens"] = tl
        results = {k: fn() for k, fn in fns.items()}  # also a warm-up
        if repeats > 1:
            times = time_interleaved(fns, repeats=repeats, warmup=0)
        else:
            times = {k: timed(fn)[1] for k, fn in fns.items()}
        entry = {"patches": results["ours"].numel(), "times_s": times,
                 "max_abs_diff_vs_ours": {k: float((v.reshape(results["ours"].shape) - results["ours"]).abs().max())
                                          for k, v in results.items() if k != "ours"},
                 "speedup_vs": {k: times[k] / times["ours"] for k in times if k != "ours"}}
        report["sites"][site] = entry
        print(f"  {site:14s} {entry['patches']:5d} patches: " + ", ".join(f"{k} {t:.4f} s" for k, t in times.items())
              + " | ours is " + ", ".join(f"{r:.1f}x {k}" for k, r in entry["speedup_vs"].items())
              + " | max |diff| " + ", ".join(f"{k} {d:.1e}" for k, d in entry["max_abs_diff_vs_ours"].items()))
    return report


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fact-world model and a 2-layer GPT-2 shape only")
    parser.add_argument("--skip-tl", action="store_true", help="leave TransformerLens out")
    parser.add_argument("--repeats", type=int, default=7, help="round-robin repeats on the fact-world model")
    parser.add_argument("--out", default="benchmarks/results/patching.json")
    args = parser.parse_args(argv)
    report: dict = {"torch_threads": torch.get_num_threads(), "machine": platform.processor() or platform.machine(),
                    "models": []}

    fw = load("factworld")
    clean, corrupted = fw.to_tokens("Michael Jordan plays the sport of"), fw.to_tokens("Michael Phelps plays the sport of")
    metric = metrics.logit_diff(fw, "basketball", "swimming")
    report["models"].append(compare("fact-world model", fw, to_hf(fw), clean, corrupted, metric, args.repeats,
                                    args.skip_tl, traces_per_layer=False))

    layers = 2 if args.quick else 12
    hf = random_gpt2(n_layers=layers, d_model=768, n_heads=12, d_vocab=50257, n_ctx=1024, d_mlp=3072)
    gpt2 = from_hf(hf)
    gen = torch.Generator().manual_seed(0)
    clean = torch.randint(0, 50257, (1, 16), generator=gen)
    corrupted = clean.clone()
    corrupted[0, 2:4] = torch.randint(0, 50257, (2,), generator=gen)
    metric = metrics.logit_diff(gpt2, 11, 12)
    report["models"].append(compare(f"GPT-2-small shape ({layers} layers)", gpt2, hf, clean, corrupted, metric, 1,
                                    args.skip_tl, traces_per_layer=True))

    ours = sweep(gpt2, clean, corrupted, metric, "head_z_by_pos", progress=False)
    for site in ("head_z_by_pos", "neuron_post_by_pos"):
        est, t = timed(lambda: attribution_patch(gpt2, clean, corrupted, metric, site))
        report[f"attribution_{site}_s"] = t
        report[f"attribution_{site}_sites"] = est.values.numel()
        print(f"attribution patching, {site}: {est.values.numel()} sites in {t:.2f} s")
        if site == "head_z_by_pos":
            agree = agreement(est, ours, k=20)
            report["attribution_vs_patching"] = vars(agree)
            print(f"  agreement with activation patching: {agree}")

    write_report(report, args.out)
    return report


if __name__ == "__main__":
    main()
