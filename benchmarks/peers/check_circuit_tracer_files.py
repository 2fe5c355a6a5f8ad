"""Transcoder folders written by circuit-tracer's own code, read by ours (issue 23).

Runs in .venv (our code). Calls benchmarks/peers/circuit_tracer_files.py with .venv-ct's python
(circuit-tracer writes the folders and computes the reference outputs with its own modules), then
loads every folder with `load_circuit_tracer_transcoders` and compares, per case, our
pre-activations, features (encode) and outputs (forward: decode + skip) with circuit-tracer's:
max |ours - theirs|. Expected: relu, relu_skip, jumprelu_shared (one threshold: batchtopk),
jumprelu / jumprelu_skip (per-feature thresholds, some negative: jumprelu) load and agree (float32
rounding); clt (a cross-layer transcoder) is refused with a clear error; topk loads as our
ReLU-then-top-k, which equals
relu(circuit-tracer's TopK features) on every row and circuit-tracer's own features on the rows
with at least k positive pre-activations. Then (unless --no-graph) an attribution graph over
per-feature JumpReLU transcoders, ours against circuit-tracer's (jumprelu_graph).

    .venv/bin/python benchmarks/peers/check_circuit_tracer_files.py [--out DIR] [--json report.json] [--tol 1e-5]
        [--no-graph]
    .venv/bin/python benchmarks/peers/check_circuit_tracer_files.py --out tests/data/circuit_tracer  # the fixtures

Exit status 1 if a difference exceeds --tol or a case does not behave as expected.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
from safetensors.torch import load_file

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from probes.sae.circuit_tracer_format import load_circuit_tracer_transcoders  # noqa: E402

PEER = ROOT / "benchmarks" / "peers" / "circuit_tracer_files.py"
REFUSED = {"clt": "cross_layer_transcoder"}


@torch.no_grad()
def compare(folder: Path, case: str) -> dict:
    """Our reading of OUT/<case> against OUT/<case>.reference.safetensors."""
    ref = load_file(str(folder / f"{case}.reference.safetensors"))
    try:
        tcs = load_circuit_tracer_transcoders(folder / case)
    except ValueError as err:
        return {"loaded": False, "error": str(err), "ok": REFUSED.get(case, "\0") in str(err)}
    x = ref["x"]
    pre = torch.stack([tc.pre_acts(x[l]) for l, tc in enumerate(tcs)])
    feats = torch.stack([tc.encode(x[l]) for l, tc in enumerate(tcs)])
    out = torch.stack([tc(x[l]) for l, tc in enumerate(tcs)])
    row = {"loaded": True, "activation": tcs[0].cfg.activation, "skip": tcs[0].W_skip is not None,
           "max_abs_pre_diff": float((pre - ref["pre"]).abs().max()),
           "max_abs_feature_diff": float((feats - ref["features"]).abs().max()),
           "max_abs_output_diff": float((out - ref["output"]).abs().max()),
           "max_abs_output": float(ref["output"].abs().max())}
    if case == "topk":
        k = tcs[0].cfg.k
        full = (ref["pre"] > 0).sum(-1) >= k  # [n_layers, n] rows where both rules agree
        row |= {"k": k, "rows_with_k_positive": int(full.sum()), "rows": int(full.numel()),
                "max_abs_feature_diff_on_those_rows": float((feats - ref["features"])[full].abs().max()),
                "max_abs_output_diff_on_those_rows": float((out - ref["output"])[full].abs().max()),
                "max_abs_diff_vs_relu_of_theirs": float((feats - ref["features"].relu()).abs().max()),
                "negative_features_theirs": int((ref["features"] < 0).sum())}
    return row


def jumprelu_graph(peer_python: str, seed: int = 0) -> dict:
    """The fact-world graph of "Michael Jordan plays the sport of" over its transcoders turned into
    per-feature JumpReLU ones (thresholds uniform in [-0.05, 0.3]: some negative, so negative
    activations become nodes), ours against circuit-tracer's (its loader builds JumpReLU from the
    thresholds our writer puts in the files): nodes, scores and the edges on the common nodes."""
    from benchmarks.graph import FACTWORLD_PROMPT, _compare, _export, _time_peer
    from models import load
    from probes.graph import attribution_graph
    from probes.sae import SparseDictionary, load_transcoders
    from probes.sae.circuit_tracer_format import save_circuit_tracer_transcoders
    from probes.sae.dictionary import DictionaryConfig

    model, g, tcs = load("factworld").eval(), torch.Generator().manual_seed(seed), []
    for tc in load_transcoders("factworld"):
        jump = SparseDictionary(DictionaryConfig(**(tc.cfg.to_dict() | {"activation": "jumprelu"})))
        state = tc.state_dict() | {"threshold": torch.empty(tc.cfg.n_features).uniform_(-0.05, 0.3, generator=g)}
        jump.load_state_dict(state)
        tcs.append(jump.eval())
    graph = attribution_graph(model, FACTWORLD_PROMPT, tcs, progress=False)
    with tempfile.TemporaryDirectory(prefix="ct_jumprelu_graph_") as tmp:
        folder = Path(tmp)
        _export(model, folder / "hf")
        save_circuit_tracer_transcoders(tcs, folder / "ct", model_name="factworld-jumprelu")
        report, plain = _time_peer(peer_python, folder, FACTWORLD_PROMPT, None, 256, 1, relu_topk=False)
    return {"prompt": FACTWORLD_PROMPT, "activation_theirs": report["transcoder_activation"],
            "features_ours": graph.n_features, "negative_activations_ours": int((graph.activations < 0).sum()),
            "negative_activations_theirs": report["negative_activations_kept"], "scores_ours": graph.scores(),
            "scores_theirs": {"replacement": report["replacement_score"], "completeness": report["completeness_score"]},
            "edges": _compare(graph, plain)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--peer-python", default=str(ROOT / ".venv-ct" / "bin" / "python"))
    p.add_argument("--out", type=Path, default=None, help="where circuit-tracer writes (default: a temporary folder)")
    p.add_argument("--json", type=Path, default=None)
    p.add_argument("--tol", type=float, default=1e-5)
    p.add_argument("--no-graph", action="store_true", help="skip the per-feature JumpReLU graph against circuit-tracer's")
    args = p.parse_args(argv)
    if not Path(args.peer_python).exists():
        raise SystemExit(f"{args.peer_python} not found: bash benchmarks/peers/setup_circuit_tracer.sh builds it")
    tmp = None if args.out else tempfile.mkdtemp(prefix="ct_files_")
    out = args.out or Path(tmp) / "files"
    try:
        subprocess.run([args.peer_python, str(PEER), "--out", str(out), "--overwrite"], check=True, cwd=str(ROOT),
                       stdout=subprocess.DEVNULL)
        manifest = json.loads((out / "manifest.json").read_text())
        report = {"versions": manifest["versions"], "cases": {}}
        bad = []
        for case in manifest["cases"]:
            row = compare(out, case)
            if row["loaded"]:
                diffs = [row["max_abs_pre_diff"]] + ([row["max_abs_diff_vs_relu_of_theirs"],
                                                      row["max_abs_feature_diff_on_those_rows"],
                                                      row["max_abs_output_diff_on_those_rows"]] if case == "topk" else
                                                     [row["max_abs_feature_diff"], row["max_abs_output_diff"]])
                row["ok"] = case not in REFUSED and max(diffs) <= args.tol
            report["cases"][case] = row
            if not row["ok"]:
                bad.append(case)
            print(f"{case:16s} " + ("loaded " + row["activation"] + f": max |diff| pre {row['max_abs_pre_diff']:.2e}, "
                                    f"features {row['max_abs_feature_diff']:.2e}, output {row['max_abs_output_diff']:.2e}"
                                    if row["loaded"] else "refused: " + row["error"][:110])
                  + ("" if row["ok"] else "   <-- UNEXPECTED"))
    finally:
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)
    if not args.no_graph:
        graph = report["jumprelu_graph"] = jumprelu_graph(args.peer_python)
        edges = graph["edges"]
        ok = (graph["activation_theirs"] == "jumprelu" and edges["features_ours"] == edges["features_theirs"]
              == edges["features_common"] and graph["negative_activations_ours"] > 0
              and graph["negative_activations_ours"] == graph["negative_activations_theirs"]
              and edges["max_abs_edge_diff"] <= args.tol * max(1.0, edges["max_abs_edge"]))
        print(f"jumprelu graph   {edges['features_ours']} / {edges['features_theirs']} features "
              f"({graph['negative_activations_ours']} negative), max |edge diff| {edges['max_abs_edge_diff']:.2e} "
              f"of max |edge| {edges['max_abs_edge']:.2f}" + ("" if ok else "   <-- UNEXPECTED"))
        if not ok:
            bad.append("jumprelu_graph")
    if args.json:
        args.json.write_text(json.dumps(report, indent=1) + "\n")
    print("all as expected" if not bad else f"unexpected: {bad}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
