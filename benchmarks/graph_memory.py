"""Attribution graphs of long prompts under a memory bound (`attribution_graph(..., max_memory_mb=M)`).

    python -m benchmarks.graph_memory [--tokens 32] [--bounds 250,500,1000] [--max-features 2048]

A GPT-2-small-shaped model (12 layers, d_model 768, random weights) with random ReLU
transcoders (4,096 features per layer, about 200 active per position; benchmarks.graph's case),
on a prompt of --tokens words: tens of thousands of active features, whose full graph would not
fit in this machine's memory (its adjacency alone is n_active^2 floats). For each bound, the
graph is built once with at most --max-features feature nodes, and torch's profiler measures
the real peak of what the build allocates (every allocation and free, in time order). Writes
benchmarks/results/graph_memory.json and prints a table: bound, measured peak, the plan's
estimate, copies per backward pass, feature nodes kept, seconds (profiler included).
"""

from __future__ import annotations

import argparse
import time
import warnings

import torch

from benchmarks.common import write_report
from benchmarks.graph import _gpt2s_model, _random_relu_transcoders

MB = 2 ** 20
RESULTS = "benchmarks/results/graph_memory.json"


def main(argv=None) -> int:
    from probes.graph import attribution_graph
    from probes.graph.memory import measured_peak

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tokens", type=int, default=32)
    p.add_argument("--bounds", default="250,500,1000", help="comma-separated bounds in MB")
    p.add_argument("--max-features", type=int, default=2048)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    model = _gpt2s_model()
    texts = [" ".join(f"w{i}" for i in range(s, s + 16)) for s in (10, 500, 9000)]
    transcoders = _random_relu_transcoders(model, 4096, 200, texts)
    prompt = " ".join(f"w{i}" for i in range(100, 100 + args.tokens))
    rows = []
    for bound in [float(b) for b in args.bounds.split(",")]:
        started = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            graph, peak = measured_peak(lambda: attribution_graph(
                model, prompt, transcoders, targets=[5], max_feature_nodes=args.max_features, max_memory_mb=bound,
                progress=False))
        plan = graph.settings["memory_plan"]
        rows.append(dict(bound_mb=bound, peak_mb=round(peak / MB, 1), estimate_mb=round(plan["peak_bytes"] / MB, 1),
                         batch=plan["batch"], feature_nodes=graph.n_features, active=plan["n_active"],
                         seconds=round(time.perf_counter() - started, 1)))
        print(rows[-1], flush=True)
    n_active = rows[0]["active"]
    report = dict(case=f"GPT-2-small shape, random ReLU transcoders (4,096 per layer), {args.tokens + 1} tokens",
                  threads=args.threads, max_feature_nodes=args.max_features, n_active=n_active,
                  full_adjacency_gb=round((n_active + 13 * (args.tokens + 1) + 1) ** 2 * 4 / 2 ** 30, 1), rows=rows)
    write_report(report, RESULTS)
    print(f"{n_active} active features (a full float32 adjacency: {report['full_adjacency_gb']} GB)")
    print("bound MB | peak MB | estimate MB | copies | feature nodes | s")
    for r in rows:
        print(f"{r['bound_mb']:8.0f} | {r['peak_mb']:7.1f} | {r['estimate_mb']:11.1f} | {r['batch']:6d} | "
              f"{r['feature_nodes']:13d} | {r['seconds']:.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
