"""circuit-tracer 0.5.0 as a peer for our attribution graphs (issue 23): one prompt, local files only.

Runs INSIDE .venv-ct (benchmarks/peers/setup_circuit_tracer.sh builds it) and imports nothing of
ours. It builds circuit-tracer's TransformerLens-backend ReplacementModel from

  --model DIR        an HF GPT-2-layout directory (config.json, model.safetensors, tokenizer files)
  --transcoders DIR  circuit-tracer's per-layer set: config.yaml + layer_{i}.safetensors
                     (W_enc [d_tc, d_model], b_enc, W_dec [d_tc, d_model], b_dec, optional W_skip)

runs `circuit_tracer.attribute` once to warm up and then `--repeats` times, timed, and writes

  --out FILE.pt      the graph (circuit-tracer's own Graph.to_pt; loading it needs circuit-tracer)
  FILE.plain.pt      the same graph as tensors and plain Python (torch.load(weights_only=True))
  FILE.json          (or --json) timings, node counts, replacement / completeness scores,
                     pruned node counts, the logit targets, the versions used.

    .venv-ct/bin/python benchmarks/peers/run_circuit_tracer.py --model /tmp/fw_hf \
        --transcoders /tmp/fw_tc_relu --prompt "Michael Jordan plays the sport of" \
        --out /tmp/ct_mj.pt --batch-size 256 --repeats 3 --threads 2

Offline route. `ReplacementModel.from_pretrained*` only accept official TransformerLens names
(TransformerLens 3's `HookedTransformer.from_pretrained` calls `get_official_model_name` first), and
the transcoder loader downloads from the hub. This script does what
`TransformerLensReplacementModel.from_pretrained_and_transcoders` does, from local files:
TransformerLens' `get_pretrained_model_config` / `get_pretrained_state_dict` (both accept a local
directory), the same processing (fold_ln=False, center_writing_weights=False,
center_unembed=False), then `_configure_replacement_model(transcoders)`; the transcoders come
from circuit-tracer's `load_transcoders(config)` with `config["transcoders"]` set to the local files.

Activation. circuit-tracer 0.5.0's per-layer loader ignores config.yaml's `activation`/`k` (it
gives ReLU, or JumpReLU when a threshold is stored). `activation: topk` here installs
circuit-tracer's own `TopK(k)`, which keeps the k largest PRE-activations with no ReLU (negative
values can survive); a ReLU-then-top-k transcoder (ours) agrees with it only where at least k
pre-activations are positive. The JSON counts the negative activations kept.
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never the network
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "disabled")

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from contextlib import contextmanager  # noqa: E402
from importlib.metadata import version  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402

DTYPES = {"float32": torch.float32, "float64": torch.float64, "bfloat16": torch.bfloat16}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True, type=Path, help="HF model directory (GPT-2 layout)")
    p.add_argument("--transcoders", required=True, type=Path,
                   help="circuit-tracer transcoder directory (config.yaml + layer_{i}.safetensors)")
    p.add_argument("--prompt", required=True)
    p.add_argument("--out", required=True, type=Path, help="graph file (.pt)")
    p.add_argument("--json", type=Path, default=None, help="report file (default: --out with .json)")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--repeats", type=int, default=3, help="timed attribute calls after one warm-up")
    p.add_argument("--max-feature-nodes", type=int, default=None, help="default: all active features")
    p.add_argument("--max-n-logits", type=int, default=10)
    p.add_argument("--desired-logit-prob", type=float, default=0.95)
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="float32", choices=sorted(DTYPES))
    p.add_argument("--relu-before-topk", action="store_true",
                   help="for activation topk: ReLU, then top-k (our TopK) instead of circuit-tracer's TopK")
    p.add_argument("--verbose", action="store_true", help="circuit-tracer's phase timings (logged to stderr)")
    p.add_argument("--lazy-decoder", action="store_true",
                   help="read decoder rows from the files on demand (circuit-tracer's default; off here)")
    a = p.parse_args(argv)
    problems = [msg for bad, msg in [
        (not (a.model / "config.json").is_file(), f"--model {a.model}: no config.json (need an HF model directory)"),
        (not (a.transcoders / "config.yaml").is_file(), f"--transcoders {a.transcoders}: no config.yaml"),
        (a.out.suffix != ".pt", f"--out {a.out}: must end in .pt"),
        (a.batch_size < 1, f"--batch-size must be >= 1, got {a.batch_size}"),
        (a.repeats < 1, f"--repeats must be >= 1, got {a.repeats}"),
        (a.max_feature_nodes is not None and a.max_feature_nodes < 1,
         f"--max-feature-nodes must be >= 1, got {a.max_feature_nodes}"),
        (not a.prompt.strip(), "--prompt is empty"),
    ] if bad]
    if problems:
        p.error("; ".join(problems))
    return a


# ---------------------------------------------------------------- loading
def load_tokenizer(model_dir: Path):
    """The directory's tokenizer. A tokenizer saved by transformers 5 names a class that 4.57
    lacks ("TokenizersBackend"): then tokenizer.json is wrapped as a PreTrainedTokenizerFast with the
    special tokens of tokenizer_config.json / special_tokens_map.json."""
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    try:
        return AutoTokenizer.from_pretrained(str(model_dir), local_files_only=True)
    except (ValueError, OSError, KeyError, TypeError) as err:
        tok_file = model_dir / "tokenizer.json"
        if not tok_file.is_file():
            raise FileNotFoundError(f"{model_dir}: AutoTokenizer failed ({err}) and there is no tokenizer.json") from err
        specials: dict = {}
        for name in ("special_tokens_map.json", "tokenizer_config.json"):
            f = model_dir / name
            if f.is_file():
                specials.update({k: v for k, v in json.loads(f.read_text()).items()
                                 if k in ("bos_token", "eos_token", "pad_token", "unk_token") and v})
        specials = {k: (v["content"] if isinstance(v, dict) else v) for k, v in specials.items()}
        # name_or_path and add_bos_token=True: TransformerLens' set_tokenizer otherwise reloads the
        # tokenizer by name with AutoTokenizer, which is what failed. (circuit-tracer tokenizes with
        # add_special_tokens=False and prepends BOS itself.)
        return PreTrainedTokenizerFast(tokenizer_file=str(tok_file), name_or_path=str(model_dir),
                                       add_bos_token=True, **specials)


class ReLUTopK(torch.nn.Module):
    """ReLU, then the k largest kept: f = topk(relu(pre)) (our TopK). circuit-tracer's TopK skips the
    ReLU; the two differ only where fewer than k pre-activations are positive."""

    def __init__(self, k: int) -> None:
        super().__init__()
        from circuit_tracer.transcoder.activation_functions import TopK

        self.topk = TopK(k)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.topk(torch.relu(x))


def load_transcoder_set(tc_dir: Path, device: str, dtype: torch.dtype, lazy_decoder: bool,
                        relu_before_topk: bool = False):
    """circuit-tracer's TranscoderSet from a local per-layer directory; returns (set, config, activation)."""
    import yaml
    from circuit_tracer.transcoder.activation_functions import JumpReLU, TopK
    from circuit_tracer.utils.hf_utils import load_transcoders

    config = yaml.safe_load((tc_dir / "config.yaml").read_text())
    if config.get("model_kind") != "transcoder_set":
        raise ValueError(f"{tc_dir}/config.yaml: model_kind {config.get('model_kind')!r}; "
                         "this runner takes per-layer sets ('transcoder_set')")
    for key in ("feature_input_hook", "feature_output_hook"):
        if key not in config:
            raise ValueError(f"{tc_dir}/config.yaml lacks {key!r}")
    activation = config.get("activation")
    if activation not in (None, "relu", "topk"):
        raise ValueError(f"{tc_dir}/config.yaml: activation {activation!r}; allowed: relu, topk (or absent)")
    if activation == "topk" and "k" not in config:
        raise ValueError(f"{tc_dir}/config.yaml: activation topk needs k")
    if relu_before_topk and activation != "topk":
        raise ValueError(f"--relu-before-topk needs a topk transcoder set; {tc_dir} is {activation or 'relu'}")
    if "transcoders" not in config:
        files = sorted(tc_dir.glob("layer_*.safetensors"), key=lambda f: int(f.stem.split("_")[1]))
        if [int(f.stem.split("_")[1]) for f in files] != list(range(len(files))) or not files:
            raise ValueError(f"{tc_dir}: expected layer_0.safetensors .. layer_{{n-1}}.safetensors, "
                             f"found {[f.name for f in files]}")
        config["transcoders"] = [str(f.resolve()) for f in files]
    else:
        config["transcoders"] = [p if p.startswith("hf://") or Path(p).is_absolute() else str((tc_dir / p).resolve())
                                 for p in config["transcoders"]]
    config.setdefault("repo_id", "")
    config.setdefault("scan", config.get("scan_name") or f"local//{tc_dir.resolve().name}")
    transcoders = load_transcoders(config, device=torch.device(device), dtype=dtype,
                                   lazy_encoder=False, lazy_decoder=lazy_decoder)
    if activation == "topk":
        for tc in transcoders:
            tc.activation_function = (ReLUTopK if relu_before_topk else TopK)(int(config["k"]))
    loaded = ("relu_topk" if relu_before_topk else "topk") if activation == "topk" else (
        "jumprelu" if isinstance(transcoders[0].activation_function, JumpReLU) else "relu")
    return transcoders, config, loaded


@contextmanager
def tl_config_dir(model_dir: Path):
    """A directory whose config.json TransformerLens 3 can read. TL reads GPT-2's context length
    from `n_ctx`, which GPT-2's own config.json has but transformers 5's `save_pretrained` does not
    write; then a copy of config.json with n_ctx = n_positions goes into a temporary directory (the
    weights come from the HF model already loaded, so nothing else is needed there)."""
    hf_cfg = json.loads((model_dir / "config.json").read_text())
    if hf_cfg.get("model_type") != "gpt2" or "n_ctx" in hf_cfg:
        yield model_dir
        return
    with tempfile.TemporaryDirectory(prefix="ct_cfg_") as tmp:
        (Path(tmp) / "config.json").write_text(json.dumps(hf_cfg | {"n_ctx": hf_cfg["n_positions"]}))
        yield Path(tmp)


def build_replacement_model(model_dir: Path, transcoders, device: str, dtype: torch.dtype):
    """What TransformerLensReplacementModel.from_pretrained_and_transcoders does, from a local
    directory. Returns (replacement model, the HF model it was loaded from)."""
    from circuit_tracer.replacement_model.replacement_model_transformerlens import TransformerLensReplacementModel
    from transformer_lens import loading_from_pretrained as loading
    from transformers import AutoModelForCausalLM

    hf_model = AutoModelForCausalLM.from_pretrained(str(model_dir), local_files_only=True, dtype=dtype).eval()
    with tl_config_dir(model_dir) as cfg_dir:
        cfg = loading.get_pretrained_model_config(str(cfg_dir), fold_ln=False, device=device, dtype=dtype)
        state_dict = loading.get_pretrained_state_dict(str(cfg_dir), cfg, hf_model, dtype=dtype)
    cfg.model_name = model_dir.resolve().name
    model = TransformerLensReplacementModel(cfg, load_tokenizer(model_dir), move_to_device=False)
    model.load_and_process_state_dict(state_dict, fold_ln=False, center_writing_weights=False, center_unembed=False)
    model.move_model_modules_to_device()
    if transcoders.n_layers != cfg.n_layers:
        raise ValueError(f"{transcoders.n_layers} transcoder layers for a {cfg.n_layers}-layer model")
    model._configure_replacement_model(transcoders)
    return model, hf_model


# ---------------------------------------------------------------- report
def node_counts(graph) -> dict:
    n_pos, n_layers = len(graph.input_tokens), graph.cfg.n_layers
    counts = {"features": len(graph.selected_features), "active_features": len(graph.active_features),
              "errors": n_layers * n_pos, "tokens": n_pos, "logits": len(graph.logit_targets)}
    counts["total"] = counts["features"] + counts["errors"] + counts["tokens"] + counts["logits"]
    if counts["total"] != graph.adjacency_matrix.shape[0]:
        raise RuntimeError(f"node counts {counts} do not add up to the adjacency's {graph.adjacency_matrix.shape}")
    return counts


def pruned_counts(graph, node_threshold: float = 0.8, edge_threshold: float = 0.98) -> dict:
    from circuit_tracer.graph import prune_graph

    res = prune_graph(graph, node_threshold=node_threshold, edge_threshold=edge_threshold)
    n_feat, n_err = len(graph.selected_features), graph.cfg.n_layers * len(graph.input_tokens)
    mask = res.node_mask.cpu()
    return {"node_threshold": node_threshold, "edge_threshold": edge_threshold,
            "features": int(mask[:n_feat].sum()), "errors": int(mask[n_feat:n_feat + n_err].sum()),
            "nodes": int(mask.sum()), "edges": int(res.edge_mask.sum())}


def plain_graph(graph) -> dict:
    """The graph as tensors and plain Python only (torch.load(..., weights_only=True) reads it
    without circuit-tracer installed: Graph.to_pt pickles circuit-tracer classes)."""
    return {"input_string": graph.input_string, "input_tokens": graph.input_tokens.cpu(),
            "adjacency_matrix": graph.adjacency_matrix.cpu(), "active_features": graph.active_features.cpu(),
            "selected_features": graph.selected_features.cpu(), "activation_values": graph.activation_values.cpu(),
            "logit_token_ids": graph.logit_token_ids.cpu(), "logit_tokens": [lt.token_str for lt in graph.logit_targets],
            "logit_probabilities": graph.logit_probabilities.cpu(), "vocab_size": int(graph.vocab_size),
            "n_layers": int(graph.cfg.n_layers), "scan": graph.scan if isinstance(graph.scan, (str, type(None))) else list(graph.scan)}


@torch.no_grad()
def model_check(model, hf_model, tokens: torch.Tensor) -> float:
    """Max |logit difference| between the replacement model (TransformerLens) and the HF model."""
    ours = model(tokens.unsqueeze(0)).float()
    ref = hf_model(tokens.unsqueeze(0).to(hf_model.device)).logits.float().to(ours.device)
    return float((ours - ref).abs().max())


def our_packages_imported() -> list[str]:
    root = Path(__file__).resolve().parents[2]
    return sorted(name for name, mod in list(sys.modules.items())
                  if name.split(".")[0] in ("interp", "models", "probes", "analyses")
                  and root in Path(getattr(mod, "__file__", None) or "/").resolve().parents)


def main(argv=None) -> dict:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    from circuit_tracer import attribute
    from circuit_tracer.graph import compute_graph_scores

    dtype = DTYPES[args.dtype]
    t0 = time.perf_counter()
    transcoders, tc_config, activation = load_transcoder_set(args.transcoders, args.device, dtype, args.lazy_decoder,
                                                           args.relu_before_topk)
    model, hf_model = build_replacement_model(args.model, transcoders, args.device, dtype)
    load_s = time.perf_counter() - t0
    tokens = model.ensure_tokenized(args.prompt)
    logit_diff = model_check(model, hf_model, tokens)
    del hf_model

    kwargs = dict(batch_size=args.batch_size, max_feature_nodes=args.max_feature_nodes,
                  max_n_logits=args.max_n_logits, desired_logit_prob=args.desired_logit_prob, verbose=args.verbose)
    load_before = os.getloadavg()[0]  # a shared machine: timings mean little under load
    t = time.perf_counter()
    graph = attribute(args.prompt, model, **kwargs)  # warm-up
    warmup_s = time.perf_counter() - t
    times = []
    for _ in range(args.repeats):
        t = time.perf_counter()
        graph = attribute(args.prompt, model, **kwargs)
        times.append(time.perf_counter() - t)

    args.out.parent.mkdir(parents=True, exist_ok=True)
    graph.to_pt(str(args.out))
    plain_path = args.out.with_suffix(".plain.pt")
    torch.save(plain_graph(graph), str(plain_path))
    replacement, completeness = compute_graph_scores(graph)
    vals = graph.activation_values
    report = {
        "peer": "circuit-tracer", "backend": "transformerlens",
        "model": str(args.model.resolve()), "transcoders": str(args.transcoders.resolve()),
        "transcoder_activation": activation, "topk_k": tc_config.get("k") if "topk" in activation else None,
        "feature_input_hook": tc_config["feature_input_hook"], "feature_output_hook": tc_config["feature_output_hook"],
        "prompt": args.prompt, "input_tokens": graph.input_tokens.tolist(),
        "str_tokens": [model.tokenizer.decode([int(t)]) for t in graph.input_tokens],
        "n_layers": graph.cfg.n_layers, "d_model": graph.cfg.d_model, "d_vocab": graph.cfg.d_vocab,
        "d_transcoder": transcoders.d_transcoder,
        "nodes": node_counts(graph), "pruned": pruned_counts(graph),
        "replacement_score": replacement, "completeness_score": completeness,
        "logit_targets": [{"token": lt.token_str, "id": int(lt.vocab_idx), "prob": float(p)}
                          for lt, p in zip(graph.logit_targets, graph.logit_probabilities)],
        "negative_activations_kept": int((vals < 0).sum()),
        "max_abs_logit_diff_vs_hf": logit_diff,
        "settings": kwargs | {"device": args.device, "dtype": args.dtype, "threads": torch.get_num_threads(),
                              "lazy_decoder": args.lazy_decoder, "repeats": args.repeats},
        "load_average_1min": {"before": load_before, "after": os.getloadavg()[0]},
        "seconds": {"load": load_s, "warmup": warmup_s, "per_repeat": times,
                    "mean": sum(times) / len(times), "min": min(times)},
        "versions": {name: version(name) for name in ("circuit-tracer", "transformer-lens", "transformers", "torch")}
        | {"python": platform.python_version()},
        "graph_file": str(args.out.resolve()), "plain_graph_file": str(plain_path.resolve()),
    }
    leaked = our_packages_imported()
    if leaked:
        raise RuntimeError(f"this peer runner must not import our packages, but {leaked} were imported")
    json_path = args.json or args.out.with_suffix(".json")
    json_path.write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps({k: report[k] for k in ("nodes", "pruned", "replacement_score", "completeness_score",
                                             "logit_targets", "seconds")}, indent=1))
    print(f"wrote {args.out} and {json_path}")
    return report


if __name__ == "__main__":
    main()
