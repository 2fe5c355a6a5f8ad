"""Attribution graphs side by side with circuit-tracer 0.5.0: the same graph, the same CPU, one run.

    make bench-graph                         # builds .venv-ct (circuit-tracer, TransformerLens 3) first
    python -m benchmarks.graph --peer-python .venv-ct/bin/python [--cases factworld,gpt2s] [--repeats 3]

Two cases:
  factworld  the shipped model and its TopK transcoders, "Michael Jordan plays the sport of"
             (circuit-tracer run with ReLU-then-top-k, our TopK's rule, so the graphs are the same);
  gpt2s      a GPT-2-small-shaped model (12 layers, d_model 768, 12 heads, d_mlp 3072, a 50,257-word
             vocabulary) with random weights and random ReLU transcoders (4,096 features per layer,
             about 200 active per position), capped at --gpt2s-max-features feature nodes.
Each case is written to a temporary folder (the model as an HF directory, the transcoders in
circuit-tracer's per-layer files), our `attribution_graph` is timed in this process (one
warm-up, then --repeats), circuit-tracer in its venv through benchmarks/peers/run_circuit_tracer.py
(the same), both on 2 threads, each at its own default batch size (ours 64 rows per backward
pass, circuit-tracer's command line 256; --ours-batch / --peer-batch change them). The edges are compared on the nodes both
graphs hold. Writes benchmarks/results/graph.json and prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
RUNNER = ROOT / "benchmarks" / "peers" / "run_circuit_tracer.py"
RESULTS = ROOT / "benchmarks" / "results" / "graph.json"
FACTWORLD_PROMPT = "Michael Jordan plays the sport of"
GPT2S_PROMPT = "w10 w11 w12 w13 w14"


def _export(model, folder: Path) -> Path:
    from models.hf_export import to_hf

    folder.mkdir(parents=True)
    to_hf(model).save_pretrained(str(folder))
    model.tokenizer.to_hf().save_pretrained(str(folder))
    return folder


@torch.no_grad()
def _random_relu_transcoders(model, n_features: int, active: int, texts: list[str]):
    """Random ReLU transcoders whose encoder bias lets about `active` features fire per position."""
    from interp.names import act_name
    from probes.sae import SparseDictionary

    _, cache = model.run_with_cache(texts, names_filter=lambda n: n.endswith("ln2.hook_normalized"))
    out = []
    for layer in range(model.cfg.n_layers):
        tc = SparseDictionary.transcoder(model, layer, n_features, activation="relu", seed=layer).eval()
        g = torch.Generator().manual_seed(1000 + layer)
        tc.b_pre.copy_(0.1 * torch.randn(tc.b_pre.shape, generator=g))
        tc.b_dec.copy_(0.01 * torch.randn(tc.b_dec.shape, generator=g))
        x = cache[act_name("normalized", layer, "ln2")].reshape(-1, model.cfg.d_model)
        pre = (x - tc.b_pre) @ tc.W_enc
        q = torch.quantile(pre.flatten()[:2_000_000], 1 - active / n_features)
        tc.b_enc.copy_(-q + 0.05 * torch.randn(n_features, generator=g))
        out.append(tc)
    return out


def _gpt2s_model():
    from models import Transformer, TransformerConfig
    from models.tokenizer import WordTokenizer

    tok = WordTokenizer(list(WordTokenizer.SPECIALS) + [f"w{i}" for i in range(50257 - 3)])
    cfg = TransformerConfig(n_layers=12, d_model=768, n_heads=12, d_head=64, n_kv_heads=12, d_mlp=3072,
                            d_vocab=tok.vocab_size, n_ctx=1024, act_fn="gelu_new", positional="learned",
                            tie_embeddings=False, seed=0)
    return Transformer(cfg, tokenizer=tok).eval()


def _case(name: str, max_features):
    from models import load
    from probes.sae import load_transcoders

    if name == "factworld":
        model = load("factworld").eval()
        return model, load_transcoders("factworld"), FACTWORLD_PROMPT, None
    model = _gpt2s_model()
    texts = [" ".join(f"w{i}" for i in range(s, s + 16)) for s in (10, 500, 9000)]
    return model, _random_relu_transcoders(model, 4096, 200, texts), GPT2S_PROMPT, max_features


def _time_ours(model, transcoders, prompt, max_features, batch_size: int, repeats: int):
    from probes.graph import attribution_graph

    def build():
        return attribution_graph(model, prompt, transcoders, max_feature_nodes=max_features, batch_size=batch_size,
                                 progress=False)

    build()
    seconds, graph = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        graph = build()
        seconds.append(time.perf_counter() - start)
    return graph, seconds


def _time_peer(peer_python: str, folder: Path, prompt, max_features, batch_size: int, repeats: int, relu_topk: bool):
    out = folder / "peer.pt"
    cmd = [peer_python, str(RUNNER), "--model", str(folder / "hf"), "--transcoders", str(folder / "ct"),
           "--prompt", prompt, "--out", str(out), "--batch-size", str(batch_size), "--repeats", str(repeats),
           "--threads", "2"]
    if max_features is not None:
        cmd += ["--max-feature-nodes", str(max_features)]
    if relu_topk:
        cmd.append("--relu-before-topk")
    subprocess.run(cmd, check=True, cwd=str(ROOT), env=os.environ | {"HF_HUB_OFFLINE": "1"})
    report = json.loads(out.with_suffix(".json").read_text())
    plain = torch.load(out.with_suffix(".plain.pt"), weights_only=True)
    return report, plain


def _compare(graph, plain) -> dict:
    """Edges on the nodes both graphs hold: features matched by (layer, pos, index); errors, tokens and
    targets by position (both use circuit-tracer's node order)."""
    theirs = plain["active_features"][plain["selected_features"]].long()
    A = plain["adjacency_matrix"].double()
    n_theirs, n_ours = theirs.shape[0], graph.n_features
    index = {tuple(r): i for i, r in enumerate(theirs.tolist())}
    ours_common = [i for i, r in enumerate(graph.features.tolist()) if tuple(r) in index]
    theirs_common = [index[tuple(graph.features[i].tolist())] for i in ours_common]
    rest = graph.n_nodes - n_ours
    ours_nodes = torch.tensor(ours_common + list(range(n_ours, n_ours + rest)))
    theirs_nodes = torch.tensor(theirs_common + list(range(n_theirs, n_theirs + rest)))
    a = graph.adjacency.double()[ours_nodes][:, ours_nodes]
    b = A[theirs_nodes][:, theirs_nodes]
    diff = (a - b).abs()
    return {"features_ours": n_ours, "features_theirs": n_theirs, "features_common": len(ours_common),
            "max_abs_edge_diff": float(diff.max()), "max_abs_edge": float(b.abs().max()),
            "edges_compared": int((b != 0).sum())}


def run_case(name: str, peer_python: str, repeats: int, ours_batch: int, peer_batch: int, max_features) -> dict:
    from probes.sae.circuit_tracer_format import save_circuit_tracer_transcoders

    model, transcoders, prompt, cap = _case(name, max_features)
    with tempfile.TemporaryDirectory(prefix=f"bench-graph-{name}-") as tmp:
        folder = Path(tmp)
        _export(model, folder / "hf")
        save_circuit_tracer_transcoders(transcoders, folder / "ct", model_name=name)
        graph, ours = _time_ours(model, transcoders, prompt, cap, ours_batch, repeats)
        report, plain = _time_peer(peer_python, folder, prompt, cap, peer_batch, repeats,
                                   relu_topk=transcoders[0].cfg.activation == "topk")
        graph, ours_after = _time_ours(model, transcoders, prompt, cap, ours_batch, repeats)  # alternate
    ours_all = ours + ours_after
    theirs = report["seconds"]["per_repeat"]
    row = {"prompt": prompt, "max_feature_nodes": cap, "batch_size": {"ours": ours_batch, "theirs": peer_batch},
           "ours_seconds": ours_all, "theirs_seconds": theirs,
           "ours_median": statistics.median(ours_all), "theirs_median": statistics.median(theirs),
           "nodes_ours": {"features": graph.n_features, "errors": graph.n_errors, "tokens": graph.n_pos,
                          "targets": graph.n_targets},
           "nodes_theirs": report["nodes"], "scores_ours": graph.scores(),
           "scores_theirs": {"replacement": report.get("replacement_score"),
                             "completeness": report.get("completeness_score")},
           "edges": _compare(graph, plain), "versions": report.get("versions")}
    row["speedup"] = row["theirs_median"] / row["ours_median"]
    return row


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--peer-python", default=str(ROOT / ".venv-ct" / "bin" / "python"))
    p.add_argument("--cases", default="factworld,gpt2s")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--ours-batch", type=int, default=64)
    p.add_argument("--peer-batch", type=int, default=256)
    p.add_argument("--gpt2s-max-features", type=int, default=1024)
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args(argv)
    if not Path(args.peer_python).exists():
        raise SystemExit(f"{args.peer_python} not found: run `make bench-graph` (it builds .venv-ct with "
                         "benchmarks/peers/setup_circuit_tracer.sh)")
    torch.set_num_threads(2)
    os.environ.setdefault("TQDM_DISABLE", "1")
    results = {}
    for name in args.cases.split(","):
        repeats = args.repeats if name == "factworld" else 1
        results[name] = run_case(name, args.peer_python, repeats, args.ours_batch, args.peer_batch,
                                 args.gpt2s_max_features)
        r = results[name]
        print(f"{name:10s} ours {r['ours_median']:.3f} s, circuit-tracer {r['theirs_median']:.3f} s "
              f"(x{r['speedup']:.2f}); features {r['edges']['features_ours']} / {r['edges']['features_theirs']} "
              f"({r['edges']['features_common']} common); max |edge diff| {r['edges']['max_abs_edge_diff']:.2e} "
              f"of max |edge| {r['edges']['max_abs_edge']:.2f}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    previous = json.loads(args.out.read_text())["cases"] if args.out.exists() else {}
    args.out.write_text(json.dumps({"machine": os.uname().machine, "threads": 2, "cases": previous | results},
                                   indent=1) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
