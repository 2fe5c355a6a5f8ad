"""circuit-tracer 0.5.0's own frontend files (`create_graph_files`) for one prompt, from local files.

Runs INSIDE .venv-ct and imports nothing of ours. It loads the model and the transcoders the way
run_circuit_tracer.py does (same folder; its loaders are reused), runs `circuit_tracer.attribute`
once and writes, with circuit-tracer's `create_graph_files(graph, slug, out_dir, scan,
node_threshold, edge_threshold)`, OUT_DIR/<slug>.json and OUT_DIR/graph-metadata.json, plus
OUT_DIR/<slug>.plain.pt (the graph as tensors, run_circuit_tracer.plain_graph).

create_graph_files reloads the tokenizer by name (`AutoTokenizer.from_pretrained(graph.cfg.tokenizer_name)`);
for a local model saved by transformers 5 that fails in transformers 4.57, so the name is
answered with the tokenizer the model was built with (run_circuit_tracer.load_tokenizer). Nothing
else is replaced.

    .venv-ct/bin/python benchmarks/peers/circuit_tracer_json.py --model /tmp/fw_hf --transcoders /tmp/fw_ct \
        --prompt "Michael Jordan plays the sport of" --out-dir /tmp/ct_json --slug jordan --scan factworld \
        --relu-before-topk
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from pathlib import Path
from unittest import mock

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import run_circuit_tracer as rct  # noqa: E402  (sets the offline environment first)
import torch  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True, type=Path)
    p.add_argument("--transcoders", required=True, type=Path)
    p.add_argument("--prompt", required=True)
    p.add_argument("--out-dir", required=True, type=Path)
    p.add_argument("--slug", required=True)
    p.add_argument("--scan", required=True)
    p.add_argument("--node-threshold", type=float, default=0.8)
    p.add_argument("--edge-threshold", type=float, default=0.98)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--max-n-logits", type=int, default=10)
    p.add_argument("--desired-logit-prob", type=float, default=0.95)
    p.add_argument("--relu-before-topk", action="store_true")
    p.add_argument("--threads", type=int, default=2)
    return p.parse_args(argv)


def main(argv=None) -> dict:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    from circuit_tracer import attribute
    cgf = importlib.import_module("circuit_tracer.utils.create_graph_files")  # the module, not the function

    transcoders, _, activation = rct.load_transcoder_set(args.transcoders, "cpu", torch.float32, False,
                                                         args.relu_before_topk)
    model, hf_model = rct.build_replacement_model(args.model, transcoders, "cpu", torch.float32)
    del hf_model
    graph = attribute(args.prompt, model, batch_size=args.batch_size, max_n_logits=args.max_n_logits,
                      desired_logit_prob=args.desired_logit_prob, verbose=False)

    class LocalTokenizer:  # create_graph_files asks for the tokenizer by name
        @staticmethod
        def from_pretrained(name, *a, **k):
            return model.tokenizer

    args.out_dir.mkdir(parents=True, exist_ok=True)
    with mock.patch.object(cgf, "AutoTokenizer", LocalTokenizer):
        cgf.create_graph_files(graph, args.slug, str(args.out_dir), scan=args.scan,
                               node_threshold=args.node_threshold, edge_threshold=args.edge_threshold)
    torch.save(rct.plain_graph(graph), str(args.out_dir / f"{args.slug}.plain.pt"))
    leaked = rct.our_packages_imported()
    if leaked:
        raise RuntimeError(f"this peer script must not import our packages, but {leaked} were imported")
    written = json.loads((args.out_dir / f"{args.slug}.json").read_text())
    summary = {"activation": activation, "nodes": len(written["nodes"]), "links": len(written["links"]),
               "graph_nodes": int(graph.adjacency_matrix.shape[0])}
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    main()
