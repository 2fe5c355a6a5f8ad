"""Each analysis on a GPU, compared with the same analysis on the CPU (a smoke test, not a test).

    python -m benchmarks.cuda_smoke [--device cuda] [--dtype float32] [--json benchmarks/results/cuda_smoke.json]

Loads the shipped fact-world model twice (the CPU, and --device), runs every method below on
both with the same arguments and compares the numbers: patching sweeps (residual, heads),
attribution patching, direct logit attribution, causal tracing and attention knockout, the
average trace, the recall chain, the logit lens, knowledge neurons, fact neurons, localisation,
key statistics, dictionary training from an activation store, dictionary evaluation, feature
dashboards, attribution graphs, circuit edges, and the editing methods (ROME, MEMIT). Per method
it prints the CPU and device seconds and the largest difference relative to the result's scale,
and fails (exit 1) when a method raises on the device or differs by more than --tolerance.
Without a GPU it says so and exits with status 2: nothing here may depend on one.
(`--device cpu` runs the whole comparison CPU against CPU, to check the script itself.)
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any, Callable

import torch

P, C, S, A, B = "Michael Jordan plays the sport of", "Michael Phelps plays the sport of", "Michael Jordan", "basketball", \
    "swimming"


def _numbers(x: Any) -> torch.Tensor:
    """Every number in a result, flattened to float64 on the CPU (tensors, floats, lists, dicts,
    dataclasses and result objects with `values`)."""
    if isinstance(x, torch.Tensor):
        return x.detach().double().cpu().reshape(-1)
    if isinstance(x, bool):
        return torch.tensor([float(x)], dtype=torch.float64, device="cpu")
    if isinstance(x, (int, float)):
        return torch.tensor([float(x)], dtype=torch.float64, device="cpu")
    if isinstance(x, dict):
        return torch.cat([_numbers(v) for _, v in sorted(x.items(), key=lambda kv: str(kv[0]))] or [_numbers(0.0)])
    if isinstance(x, (list, tuple)):
        parts = [_numbers(v) for v in x if not isinstance(v, str)]
        return torch.cat(parts) if parts else _numbers(0.0)
    for attr in ("values", "indirect_effect", "scores"):
        if isinstance(getattr(x, attr, None), torch.Tensor):
            return _numbers(getattr(x, attr))
    if hasattr(x, "to_dict"):
        return _numbers(x.to_dict())
    if hasattr(x, "__dataclass_fields__"):
        return _numbers({k: getattr(x, k) for k in x.__dataclass_fields__ if not isinstance(getattr(x, k), str)})
    return _numbers(0.0)


def cases(model, store_dir: Path) -> dict[str, Callable[[], Any]]:
    """name -> a function computing that method's result on `model` (its device)."""
    from interp import logit_diff
    from interp.attribution import attribution_patch, direct_logit_attribution
    from interp.circuits import attribute_edges
    from interp.patching import sweep
    from interp.store import harvest
    from probes.causal_trace import trace
    from probes.edit import key_second_moment, memit, rome
    from probes.ffn import fact_neurons, localise
    from probes.graph import attribution_graph
    from probes.knockout import attention_knockout
    from probes.knowledge_neurons import knowledge_neurons
    from probes.logit_lens import logit_lens
    from probes.recall import attribute_extraction, moved_contributions, subject_enrichment
    from probes.sae import SparseDictionary, evaluate_dictionary, feature_dashboard, load_transcoders, train_dictionary
    from probes.trace_average import average_trace

    metric = logit_diff(model, A, B)
    texts = model.default_corpus()[:2000]
    tcs = load_transcoders("factworld", device=model.device)
    tcs = [t.to(model.W_E.dtype) for t in tcs]
    stats = lambda: key_second_moment(model, 1, texts, cache=False, progress=False)  # noqa: E731

    def from_store():
        store = harvest(model, texts, [tcs[1].in_hook, tcs[1].out_hook], store_dir, shard_tokens=4096, progress=False,
                        overwrite=True)
        tc = SparseDictionary.transcoder(model, 1, 128, k=8, seed=0)
        record = train_dictionary(tc, store, steps=40, batch_size=512, progress=False)
        return {"losses": record.losses, "W_dec": tc.W_dec}

    return {
        "patching resid_pre": lambda: sweep(model, P, C, metric, "resid_pre", progress=False),
        "patching head_z": lambda: sweep(model, P, C, metric, "head_z", progress=False),
        "attribution patching": lambda: attribution_patch(model, P, C, metric, "resid_pre"),
        "direct logit attribution": lambda: direct_logit_attribution(model, P, A, B).heads,
        "causal trace": lambda: trace(model, P, S, A, n_samples=5, progress=False).values,
        "attention knockout": lambda: attention_knockout(model, P, S, A, progress=False).values,
        "average trace": lambda: average_trace(model, [(P, S, A), ("Serena Williams plays the sport of",
                                                                   "Serena Williams", "tennis")],
                                               n_samples=3, progress=False),
        "subject enrichment": lambda: subject_enrichment(model, P, S, [A, B]),
        "attribute extraction": lambda: attribute_extraction(model, P, S, A).from_subject,
        "moved contributions": lambda: moved_contributions(model, P, S, A),
        "logit lens": lambda: logit_lens(model, P, target=A).target_ranks,
        "knowledge neurons": lambda: knowledge_neurons(model, P, A, steps=8, progress=False),
        "fact neurons": lambda: [n.contribution for n in fact_neurons(model, P, A)],
        "localise": lambda: [(s.layer, s.index, s.pos) for s in localise(model, P, A, max_sites=8).sites],
        "key statistics": stats,
        "dictionary from a store": from_store,
        "dictionary evaluation": lambda: evaluate_dictionary(model, tcs[1], texts[:200]),
        "feature dashboard": lambda: feature_dashboard(model, tcs[1], 3, texts[:300], progress=False).histogram,
        "attribution graph": lambda: attribution_graph(model, P, tcs, max_feature_nodes=200, progress=False).adjacency,
        "circuit edges (EAP)": lambda: attribute_edges(model, P, C, metric, "eap", progress=False),
        "rome": lambda: rome(model, P, S, B, layer=1, stats=stats(), steps=10, progress=False).deltas,
        "memit": lambda: memit(model, [(P, S, B)], layers=[1], stats={1: stats()}, steps=10, progress=False).deltas,
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda")
    p.add_argument("--dtype", default="float32", choices=["float32", "float64", "bfloat16", "float16"])
    p.add_argument("--tolerance", type=float, default=1e-3, help="largest difference allowed, relative to the scale")
    p.add_argument("--only", default=None, help="comma-separated method names (default: all)")
    p.add_argument("--json", type=Path, default=Path("benchmarks/results/cuda_smoke.json"))
    args = p.parse_args(argv)
    if torch.device(args.device).type == "cuda" and not torch.cuda.is_available():
        print(f"benchmarks.cuda_smoke: torch {torch.__version__} sees no CUDA GPU here, so there is nothing to compare "
              "(run it on a machine with one; `--device cpu` checks the script itself)")
        return 2
    from models import load

    torch.manual_seed(0)
    # two runs, "cpu" and "device" (--device cpu: a second CPU copy, to check the script itself)
    models = {"cpu": load("factworld", dtype=args.dtype), "device": load("factworld", dtype=args.dtype).to(args.device)}
    rows, failed = [], []
    with tempfile.TemporaryDirectory(prefix="cuda-smoke-") as tmp:
        per_device = {d: cases(m, Path(tmp) / d) for d, m in models.items()}
        names = list(per_device["cpu"]) if args.only is None else args.only.split(",")
        print(f"{'method':28} {'cpu s':>8} {args.device + ' s':>9} {'max diff / scale':>17}")
        for name in names:
            out, seconds = {}, {}
            for d in models:
                try:
                    t0 = time.perf_counter()
                    out[d] = per_device[d][name]()
                    if models[d].W_E.device.type == "cuda":
                        torch.cuda.synchronize()
                    seconds[d] = time.perf_counter() - t0
                except Exception as e:  # reported per method: one failure does not hide the others
                    out[d] = e
                    seconds[d] = float("nan")
                    traceback.print_exc(limit=3)
            row = {"method": name, "cpu_seconds": seconds["cpu"], "device_seconds": seconds["device"]}
            if any(isinstance(v, Exception) for v in out.values()):
                row["error"] = "; ".join(f"{d}: {type(v).__name__}: {v}" for d, v in out.items() if isinstance(v, Exception))
                failed.append(name)
                print(f"{name:28} ERROR {row['error'][:160]}")
            else:
                a, b = _numbers(out["cpu"]), _numbers(out["device"])
                if a.shape != b.shape:
                    row["error"] = f"shapes differ: {list(a.shape)} on the CPU, {list(b.shape)} on {args.device}"
                    failed.append(name)
                    print(f"{name:28} ERROR {row['error']}")
                else:
                    finite = torch.isfinite(a) & torch.isfinite(b)
                    same_inf = bool(((~torch.isfinite(a)) == (~torch.isfinite(b))).all())
                    scale = float(a[finite].abs().max()) if finite.any() else 1.0
                    diff = float((a[finite] - b[finite]).abs().max()) if finite.any() else 0.0
                    row |= {"max_diff": diff, "scale": scale, "relative": diff / max(scale, 1e-12), "n": int(a.numel())}
                    ok = same_inf and row["relative"] <= args.tolerance
                    if not ok:
                        failed.append(name)
                    print(f"{name:28} {seconds['cpu']:8.3f} {seconds['device']:9.3f} {row['relative']:17.2e}"
                          f"{'' if ok else '  DIFFERS'}")
            rows.append(row)
    device_name = torch.cuda.get_device_name(args.device) if torch.device(args.device).type == "cuda" else args.device
    report = {"device": device_name, "dtype": args.dtype, "torch": torch.__version__, "tolerance": args.tolerance,
              "rows": rows, "failed": failed}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=1))
    print(f"wrote {args.json}; {len(rows) - len(failed)} of {len(rows)} methods agree"
          + (f"; failed: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
