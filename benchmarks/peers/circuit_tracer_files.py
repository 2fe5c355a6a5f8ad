"""Transcoder files WRITTEN BY circuit-tracer 0.5.0's own code, with the outputs ITS code computes.

Runs INSIDE .venv-ct (benchmarks/peers/setup_circuit_tracer.sh builds it) and imports nothing of
ours. For each case (below) it writes OUT/<case>/ (config.yaml + layer_{i}.safetensors) and
OUT/<case>.reference.safetensors, entirely with circuit-tracer's code:

  1. circuit-tracer modules with random weights: `SingleLayerTranscoder(d_model, d_transcoder,
     activation, layer, skip_connection=...)` per layer (activation F.relu, or its `JumpReLU(threshold)`),
     parameters filled from a seeded generator, gathered in its `TranscoderSet`;
  2. saved with circuit-tracer's own writer, `TranscoderSet.to_safetensors(src)` (each layer's
     `SingleLayerTranscoder.to_safetensors`: W_enc [d_tc, d_model], W_dec, b_enc, b_dec, and
     activation_function.threshold / W_skip where there are);
  3. turned into the folder circuit-tracer itself keeps on disk with its own cache writer,
     `circuit_tracer.utils.caching.save_transcoders_to_cache`: it re-reads every layer with its
     loader (`load_relu_transcoder`), writes it again with `to_safetensors` and then writes
     config.yaml (`yaml.dump` of the repository's config, less `transcoders`, plus `scan` and
     `revision`). The one thing replaced is the hub download of the repository's config.yaml
     (`caching.hf_hub_download`, patched to return a local file listing the local layer files):
     the network is never used;
  4. the folder loaded back with circuit-tracer's own reader, `load_transcoders_from_cache`, and its
     `encode` / `decode` / forward run on fixed inputs x [n_layers, n, d_model]; the reference file
     holds x, features [n_layers, n, d_tc] (encode), pre [n_layers, n, d_tc]
     (encode(apply_activation_function=False)) and output [n_layers, n, d_model]
     (decode(encode(x), x): with W_skip when there is one).

Cases ("skip": with W_skip):
  relu, relu_skip            ReLU (what its loader gives when a file has no threshold);
  jumprelu_shared            JumpReLU, one threshold (0.3) for every feature;
  jumprelu, jumprelu_skip    JumpReLU with per-feature thresholds, some NEGATIVE (circuit-tracer's
                             JumpReLU is pre * (pre > threshold), with no ReLU: a negative threshold
                             lets negative pre-activations through);
  topk                       the relu files + `activation: topk`, `k: 4` in config.yaml (kept by the
                             cache writer). circuit-tracer's per-layer loader ignores them and gives
                             ReLU; the reference runs circuit-tracer's own `TopK(4)` module in its
                             place (the k largest PRE-activations, no ReLU), as
                             run_circuit_tracer.py does for topk sets.
plus clt: a cross-layer transcoder written by `CrossLayerTranscoder.to_safetensors` (W_enc_{l} /
W_dec_{l} files) with config.yaml as the cache writer writes it (model_kind cross_layer_transcoder),
reference from circuit-tracer's `load_clt` + `encode` + `decode`.

    .venv-ct/bin/python benchmarks/peers/circuit_tracer_files.py --out tests/data/circuit_tracer

OUT/manifest.json: the versions and, per case, what was written and how. The inputs include a
row of zeros (only the encoder bias, mostly negative: fewer than k positive pre-activations) so
that TopK's two rules differ somewhere.
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never the network
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "disabled")

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import shutil  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
from importlib.metadata import version  # noqa: E402
from pathlib import Path  # noqa: E402
from unittest import mock  # noqa: E402

import torch  # noqa: E402

CASES = {  # name: (activation, skip)
    "relu": ("relu", False),
    "relu_skip": ("relu", True),
    "jumprelu_shared": ("jumprelu_shared", False),
    "jumprelu": ("jumprelu", False),
    "jumprelu_skip": ("jumprelu", True),
    "topk": ("topk", False),
}
HOOK_IN, HOOK_OUT = "ln2.hook_normalized", "hook_mlp_out"
TOPK_K = 4


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, type=Path, help="output folder (created; an existing one is replaced "
                                                              "only with --overwrite)")
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("--d-model", type=int, default=8)
    p.add_argument("--d-transcoder", type=int, default=16)
    p.add_argument("--n-layers", type=int, default=2)
    p.add_argument("--n-inputs", type=int, default=6)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    if a.out.exists() and any(a.out.iterdir()) and not a.overwrite:
        p.error(f"--out {a.out} exists and is not empty (give --overwrite to replace it)")
    if min(a.d_model, a.d_transcoder, a.n_layers) < 1 or a.n_inputs < 2 or a.d_transcoder < TOPK_K:
        p.error("sizes must be positive, --n-inputs >= 2, --d-transcoder >= 4")
    return a


# ---------------------------------------------------------------- circuit-tracer modules, random weights
def random_set(activation: str, skip: bool, d: int, n: int, n_layers: int, g: torch.Generator):
    """circuit-tracer's TranscoderSet of SingleLayerTranscoders with random float32 weights."""
    import torch.nn.functional as F
    from circuit_tracer.transcoder.activation_functions import JumpReLU
    from circuit_tracer.transcoder.single_layer_transcoder import SingleLayerTranscoder, TranscoderSet

    layers = {}
    for layer in range(n_layers):
        if activation == "jumprelu":
            act = JumpReLU(torch.empty(n).uniform_(-0.3, 0.5, generator=g), 0.1)
        elif activation == "jumprelu_shared":
            act = JumpReLU(torch.full((n,), 0.3), 0.1)
        else:
            act = F.relu
        tc = SingleLayerTranscoder(d, n, act, layer, skip_connection=skip, device=torch.device("cpu"),
                                   dtype=torch.float32)
        with torch.no_grad():
            tc.W_enc.copy_(torch.randn(n, d, generator=g) / d ** 0.5)
            tc.W_dec.copy_(torch.randn(n, d, generator=g) / d ** 0.5)
            tc.b_enc.copy_(0.3 * torch.randn(n, generator=g) - 0.2)
            tc.b_dec.copy_(0.1 * torch.randn(d, generator=g))
            if skip:
                tc.W_skip.copy_(torch.randn(d, d, generator=g) / d ** 0.5)
        layers[layer] = tc
    return TranscoderSet(layers, feature_input_hook=HOOK_IN, feature_output_hook=HOOK_OUT, scan="fixture")


def write_with_cache_writer(src: Path, config: dict, out: Path, tmp: Path) -> None:
    """circuit-tracer's save_transcoders_to_cache on the local files of `src`; the result moved to `out`."""
    import yaml
    from circuit_tracer.utils import caching

    repo_config = dict(config) | {"transcoders": [str(src / f"layer_{i}.safetensors")
                                                  for i in range(len(list(src.glob("layer_*.safetensors"))))]}
    repo_config_path = tmp / f"{out.name}.repo-config.yaml"
    repo_config_path.write_text(yaml.safe_dump(repo_config))

    def local_config(**kwargs):
        assert kwargs.get("filename") == "config.yaml", kwargs
        return str(repo_config_path)

    with mock.patch.object(caching, "hf_hub_download", local_config):
        cached = caching.save_transcoders_to_cache(f"fixture/{out.name}", cache_dir=tmp / "cache",
                                                   dtype=torch.float32, delete_hf_cache=False)
    shutil.move(str(cached), str(out))


@torch.no_grad()
def reference(folder: Path, activation: str, x: torch.Tensor, tmp: Path) -> dict[str, torch.Tensor]:
    """Features / pre-activations / outputs from circuit-tracer's own loader and modules."""
    from circuit_tracer.transcoder.activation_functions import TopK
    from circuit_tracer.utils import caching

    cache = tmp / "load-cache"
    shutil.rmtree(cache, ignore_errors=True)
    shutil.copytree(folder, cache / "fixture" / folder.name)
    transcoders, _ = caching.load_transcoders_from_cache(f"fixture/{folder.name}", cache_dir=cache,
                                                         device=torch.device("cpu"), dtype=torch.float32,
                                                         lazy_encoder=False, lazy_decoder=False)
    feats, pres, outs = [], [], []
    for layer, tc in enumerate(transcoders):
        if activation == "topk":
            tc.activation_function = TopK(TOPK_K)
        pre = tc.encode(x[layer], apply_activation_function=False)
        f = tc.encode(x[layer])
        feats.append(f)
        pres.append(pre)
        outs.append(tc.decode(f, x[layer]))
    return {"x": x, "pre": torch.stack(pres), "features": torch.stack(feats), "output": torch.stack(outs)}


# ---------------------------------------------------------------- cross-layer transcoder
@torch.no_grad()
def clt_case(out: Path, d: int, n: int, n_layers: int, x: torch.Tensor, g: torch.Generator) -> dict:
    """A ReLU CLT written by CrossLayerTranscoder.to_safetensors, config.yaml as the cache writer
    writes it, the reference from load_clt + encode + decode."""
    import yaml
    from circuit_tracer.transcoder.cross_layer_transcoder import CrossLayerTranscoder, load_clt

    clt = CrossLayerTranscoder(n_layers, n, d, activation_function="relu", lazy_decoder=False,
                               feature_input_hook=HOOK_IN, feature_output_hook=HOOK_OUT,
                               device=torch.device("cpu"), dtype=torch.float32)
    for p in clt.parameters():
        p.copy_(torch.randn(p.shape, generator=g) / d ** 0.5)
    clt.to_safetensors(str(out))
    (out / "config.yaml").write_text(yaml.dump({"model_kind": "cross_layer_transcoder", "model_name": "fixture",
                                                "feature_input_hook": HOOK_IN, "feature_output_hook": HOOK_OUT,
                                                "scan": "fixture/clt", "revision": None}))
    loaded = load_clt(str(out), feature_input_hook=HOOK_IN, feature_output_hook=HOOK_OUT,
                      device=torch.device("cpu"), dtype=torch.float32, lazy_decoder=False)
    features = loaded.encode(x)
    return {"x": x, "features": features, "output": loaded.decode(features)}


def main(argv=None) -> dict:
    args = parse_args(argv)
    from safetensors.torch import save_file

    if args.out.exists():
        shutil.rmtree(args.out)
    args.out.mkdir(parents=True)
    d, n, L = args.d_model, args.d_transcoder, args.n_layers
    manifest = {"versions": {name: version(name) for name in ("circuit-tracer", "torch", "safetensors")}
                | {"python": platform.python_version()},
                "sizes": {"d_model": d, "d_transcoder": n, "n_layers": L, "n_inputs": args.n_inputs},
                "seed": args.seed, "cases": {}}
    with tempfile.TemporaryDirectory(prefix="ct_files_") as tmp_name:
        tmp = Path(tmp_name)
        for i, (case, (activation, skip)) in enumerate(CASES.items()):
            g = torch.Generator().manual_seed(args.seed * 100 + i)
            tset = random_set("relu" if activation == "topk" else activation, skip, d, n, L, g)
            src = tmp / f"{case}.src"
            tset.to_safetensors(str(src))
            config = {"model_kind": "transcoder_set", "model_name": "fixture", "feature_input_hook": HOOK_IN,
                      "feature_output_hook": HOOK_OUT}
            if activation == "topk":
                config |= {"activation": "topk", "k": TOPK_K}
            write_with_cache_writer(src, config, args.out / case, tmp)
            x = torch.randn(L, args.n_inputs, d, generator=g)
            x[:, 0] = 0.0  # only the encoder bias: few positive pre-activations
            ref = reference(args.out / case, activation, x, tmp)
            save_file({k: v.contiguous() for k, v in ref.items()}, str(args.out / f"{case}.reference.safetensors"))
            manifest["cases"][case] = {
                "activation_in_circuit_tracer": {"relu": "F.relu", "jumprelu": "JumpReLU (per-feature thresholds)",
                                                 "jumprelu_shared": "JumpReLU (one threshold, 0.3)",
                                                 "topk": f"TopK({TOPK_K}) installed after loading"}[activation],
                "skip": skip, "written_by": "TranscoderSet.to_safetensors, then caching.save_transcoders_to_cache",
                "reference_by": "caching.load_transcoders_from_cache, then encode / decode",
                "negative_features": int((ref["features"] < 0).sum()),
                "active_features": int((ref["features"] != 0).sum())}
        g = torch.Generator().manual_seed(args.seed * 100 + 99)
        x = torch.randn(L, args.n_inputs, d, generator=g)
        ref = clt_case(args.out / "clt", d, n, L, x, g)
        save_file({k: v.contiguous() for k, v in ref.items()}, str(args.out / "clt.reference.safetensors"))
        manifest["cases"]["clt"] = {"written_by": "CrossLayerTranscoder.to_safetensors + config.yaml (yaml.dump, "
                                                  "the cache writer's keys)",
                                    "reference_by": "load_clt, then encode / decode"}
    leaked = sorted(m for m in sys.modules if m.split(".")[0] in ("interp", "models", "probes", "analyses"))
    if leaked:
        raise RuntimeError(f"this peer script must not import our packages, but {leaked} were imported")
    (args.out / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    print(json.dumps(manifest["cases"], indent=1))
    print(f"wrote {args.out}")
    return manifest


if __name__ == "__main__":
    main()
