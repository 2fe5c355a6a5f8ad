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
repeats on the fact-world model and single runs on the GPT-2-small shape. On the GPT-2-small
shape, the resid_pre sweep is also timed with the logit difference written as a plain function
of the logits (TransformerLens style) against `interp.metrics.logit_diff`, and its multiply-adds
per second (what the sweep must compute: the blocks after each patch, the positions from it,
one unembedded position) against a large float32 matmul's. Then attribution patching is timed
for every head and every neuron. Results: stdout and
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
from models import Transformer, from_hf, load, to_hf

SITES = {"resid_pre": ("hook_resid_pre", None), "head_z_by_pos": ("attn.hook_z", "head")}
TL_FUNCTIONS = {"resid_pre": "get_act_patch_resid_pre", "head_z_by_pos": "get_act_patch_attn_head_out_by_pos"}


def timed(fn: Callable):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


# ------------------------------------------------------------------ nnsight, tutorial style
def nnsight_model(model: Transformer):
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


# ------------------------------------------------------------------ plain-function metrics, and the machine
def plain_logit_diff(answer: int, counterfactual: int) -> Callable:
    """The logit difference written as TransformerLens users write metrics: a plain function of the logits."""
    return lambda logits: (logits[:, -1, answer] - logits[:, -1, counterfactual]).mean()


def required_multiply_adds(model: Transformer, n_pos: int, patches: list[tuple[int, int]]) -> float:
    """What a sweep must compute, at least: for each patch (layer, pos), the blocks from its layer on at
    the positions from its own on (weights, and attention over the keys up to each position), and the
    unembedding of the one position the metric reads. The base and source runs are not counted."""
    cfg = model.cfg
    d, h, dh, m = cfg.d_model, cfg.n_heads, cfg.d_head, cfg.d_mlp
    weights = d * (h + 2 * cfg.n_kv_heads) * dh + h * dh * d + d * m * (3 if cfg.gated_mlp else 2)
    total = 0.0
    for layer, pos in patches:
        per_layer = sum(weights + 2 * h * dh * (t + 1) for t in range(pos, n_pos))
        total += (cfg.n_layers - layer) * per_layer + d * cfg.d_vocab
    return total


def matmul_rate(n: int = 2048, repeats: int = 5) -> float:
    """Multiply-adds per second of a large float32 matrix product, on the threads torch uses now."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    best = min(timed(lambda: a @ b)[1] for _ in range(repeats))
    return n ** 3 / best


def metric_and_machine(model: Transformer, clean: torch.Tensor, corrupted: torch.Tensor, answer: int,
                       counterfactual: int, repeats: int = 3) -> dict:
    """resid_pre swept with interp.metrics.logit_diff and with the same metric as a plain function, and the
    sweep's multiply-adds per second against a large matmul's."""
    ld, plain = metrics.logit_diff(model, answer, counterfactual), plain_logit_diff(answer, counterfactual)
    fns = {"logit_diff": lambda: sweep(model, clean, corrupted, ld, "resid_pre", progress=False).values,
           "plain function": lambda: sweep(model, clean, corrupted, plain, "resid_pre", progress=False).values}
    values = {k: fn() for k, fn in fns.items()}  # also a warm-up
    times = time_interleaved(fns, repeats=repeats, warmup=0)
    n_pos = clean.shape[1]
    need = required_multiply_adds(model, n_pos, [(l, p) for l in range(model.cfg.n_layers) for p in range(n_pos)])
    rate = matmul_rate()
    report = {
        "site": "resid_pre", "patches": values["logit_diff"].numel(), "times_s": times,
        "plain_over_logit_diff": times["plain function"] / times["logit_diff"],
        "max_abs_diff": float((values["plain function"] - values["logit_diff"]).abs().max()),
        "required_multiply_adds": need, "sweep_multiply_adds_per_s": need / times["logit_diff"],
        "matmul_multiply_adds_per_s": rate, "fraction_of_matmul_rate": need / times["logit_diff"] / rate,
    }
    print(f"  plain-function metric {times['plain function']:.3f} s vs logit_diff {times['logit_diff']:.3f} s "
          f"({report['plain_over_logit_diff']:.2f}x, max |diff| {report['max_abs_diff']:.1e}); the sweep does "
          f"{need / 1e9:.1f} G multiply-adds at {report['sweep_multiply_adds_per_s'] / 1e9:.1f} G/s, "
          f"{100 * report['fraction_of_matmul_rate']:.0f}% of a 2048^3 matmul's {rate / 1e9:.1f} G/s")
    return report


# ------------------------------------------------------------------ one model
def compare(name: str, model: Transformer, hf_model, clean, corrupted, metric, repeats: int, skip_tl: bool,
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

    print(f"\nGPT-2-small shape ({layers} layers): metrics and the machine")
    report["metric_and_machine"] = metric_and_machine(gpt2, clean, corrupted, 11, 12)

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
