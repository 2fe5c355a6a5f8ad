"""Transcoders in circuit-tracer's per-layer format (a "transcoder_set"): a folder with
config.yaml and layer_0.safetensors .. layer_{n-1}.safetensors, as its `load_transcoder_set`
reads them.

    save_circuit_tracer_transcoders(load_transcoders("factworld"), "ct_transcoders", model_name="factworld")
    transcoders = load_circuit_tracer_transcoders("ct_transcoders")   # back into SparseDictionary

config.yaml (flat): model_kind: transcoder_set, model_name, feature_input_hook and
feature_output_hook (the per-layer hook names without "blocks.{l}.", TransformerLens' names:
ours, "ln2.hook_normalized" and "hook_mlp_out" for a GPT-2 layout, are the same in TL),
activation: relu | topk (with k), or no activation key for JumpReLU (the threshold is in the
layer files). Written and read with PyYAML (installed with transformers).

layer_{i}.safetensors: W_enc (d_transcoder, d_model), used as x @ W_enc.T + b_enc; W_dec
(d_transcoder, d_model); b_enc (d_transcoder); b_dec (d_model); W_skip (d_model, d_model), used
as x @ W_skip.T, if the transcoder has one; activation_function.threshold (d_transcoder) for
JumpReLU. `k` goes into config.yaml only (circuit-tracer's loader reads k from there, and its
strict load_state_dict would reject an extra "k" tensor in a layer file); a "k" tensor in a file
written elsewhere is read.

How our transcoders map (SparseDictionary: f = act((x - b_pre) W_enc + b_enc)):
- b_pre is folded into the encoder bias: b_enc' = b_enc - b_pre @ W_enc (computed in float64),
  so x @ W_enc + b_enc' equals our pre-activations (exactly in exact arithmetic; to rounding in
  floats). Loading back gives b_pre = 0 and the folded b_enc: the same encoder.
- W_enc is stored transposed, W_skip transposed (ours is used as x @ W_skip).
- relu -> relu. batchtopk (at inference a single threshold t on ReLU'd pre-activations) ->
  JumpReLU with threshold max(t, 0) for every feature: pre * (pre > max(t, 0)) equals
  relu(pre) * (relu(pre) > t) for every pre, so the export is exact. JumpReLU files load back as
  batchtopk when every feature has the same threshold >= 0 (k, used only in training, is kept in
  config.yaml), else as jumprelu: pre * (pre > threshold[f]) with circuit-tracer's per-feature
  thresholds (negative ones included), written back as they are.
- topk -> topk with the same k, BUT the two differ: circuit-tracer's TopK keeps the k largest
  PRE-activations as they are (no ReLU), ours keeps the k largest after a ReLU. They agree
  whenever a row has at least k positive pre-activations (and no ties at the k-th place); a
  row with fewer than k positive pre-activations gets negative activations in circuit-tracer
  where ours has zeros (and its decode adds those negative features' decoder rows). The files
  hold the same weights either way; loading them back gives our topk.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Optional, Union

import torch

from models.checkpoint import check_empty_dir, check_not_shipped_dictionaries
from models.config import dtype_name
from probes.sae.dictionary import DictionaryConfig, SparseDictionary

CONFIG = "config.yaml"
THRESHOLD = "activation_function.threshold"
LAYER_FILE = re.compile(r"layer_(\d+)\.safetensors")
DEFAULT_K = DictionaryConfig.__dataclass_fields__["k"].default
FILE_KEYS = {"W_enc", "W_dec", "b_enc", "b_dec", "W_skip", THRESHOLD, "k"}

PathLike = Union[str, Path]


# ============================================================ hooks
def _hook_suffix(hook: str, layer: int, what: str) -> str:
    prefix = f"blocks.{layer}."
    if not hook.startswith(prefix) or len(hook) == len(prefix):
        raise ValueError(f"transcoder {layer}'s {what} {hook!r} is not a hook of block {layer} ('{prefix}...'): "
                         "circuit-tracer names one hook per layer as blocks.{l}.<suffix>")
    return hook[len(prefix):]


def _common(values: list, what: str):
    if len(set(values)) != 1:
        raise ValueError(f"circuit-tracer's transcoder set needs one {what} for every layer, got {values}")
    return values[0]


# ============================================================ ours -> circuit-tracer
def layer_tensors(tc: SparseDictionary) -> dict[str, torch.Tensor]:
    """The tensors of one layer_{i}.safetensors file for transcoder `tc`."""
    tensors = {"W_enc": tc.W_enc.detach().T.contiguous().cpu(), "W_dec": tc.W_dec.detach().contiguous().cpu(),
               "b_enc": tc.folded_b_enc().cpu(),
               "b_dec": tc.b_dec.detach().contiguous().cpu()}
    if tc.W_skip is not None:
        tensors["W_skip"] = tc.W_skip.detach().T.contiguous().cpu()
    if tc.cfg.activation == "batchtopk":
        t = tc.threshold.detach().clamp_min(0).cpu()
        tensors[THRESHOLD] = t.expand(tc.cfg.n_features).to(tc.W_enc.dtype).contiguous()
    if tc.cfg.activation == "jumprelu":
        tensors[THRESHOLD] = tc.threshold.detach().to(tc.W_enc.dtype).contiguous().cpu()
    return tensors


def _check_set(transcoders: list[SparseDictionary]) -> tuple[str, str]:
    """(feature_input_hook, feature_output_hook) of a list that circuit-tracer can hold as one set."""
    if not isinstance(transcoders, (list, tuple)) or not transcoders or not all(
            isinstance(t, SparseDictionary) for t in transcoders):
        raise TypeError("transcoders must be a non-empty list of SparseDictionary, one per layer in layer order")
    for i, t in enumerate(transcoders):
        if t.cfg.kind != "transcoder":
            raise ValueError(f"transcoders[{i}] is an SAE ({t.in_hook}); circuit-tracer's format holds transcoders")
        if t.cfg.d_in != t.cfg.d_out:
            raise ValueError(f"transcoders[{i}] maps d_in {t.cfg.d_in} to d_out {t.cfg.d_out}: circuit-tracer "
                             "needs both to be d_model")
    _common([t.cfg.n_features for t in transcoders], "number of features (d_transcoder)")
    _common([t.cfg.d_in for t in transcoders], "d_model")
    activation = _common([t.cfg.activation for t in transcoders], "activation")
    if activation in ("topk", "batchtopk"):
        _common([t.cfg.k for t in transcoders], "k")
    _common([t.W_skip is not None for t in transcoders], "skip connection (all or none)")
    hook_in = _common([_hook_suffix(t.in_hook, i, "in_hook") for i, t in enumerate(transcoders)], "input hook")
    hook_out = _common([_hook_suffix(t.out_hook, i, "out_hook") for i, t in enumerate(transcoders)], "output hook")
    return hook_in, hook_out


def _config(transcoders: list[SparseDictionary], model_name: str, hook_in: str, hook_out: str) -> dict:
    cfg = transcoders[0].cfg
    config = {"model_kind": "transcoder_set", "model_name": model_name, "feature_input_hook": hook_in,
              "feature_output_hook": hook_out}
    if cfg.activation in ("relu", "topk"):
        config["activation"] = cfg.activation
    if cfg.activation in ("topk", "batchtopk"):
        config["k"] = int(cfg.k)
    return config


def save_circuit_tracer_transcoders(transcoders: list[SparseDictionary], out_dir: PathLike, *, model_name: str,
                                    overwrite: bool = False) -> Path:
    """Write `transcoders` (one per layer, layer order) into `out_dir` as config.yaml +
    layer_{i}.safetensors (see the module docstring for the mapping). A folder with something in
    it is refused unless `overwrite` (then stale layer_*.safetensors beyond this set are removed,
    as circuit-tracer counts them); every check runs before anything is written. Returns out_dir."""
    import yaml
    from safetensors.torch import save_file

    if not isinstance(model_name, str) or not model_name:
        raise ValueError(f"model_name must be a non-empty str, got {model_name!r}")
    hook_in, hook_out = _check_set(transcoders)
    check_not_shipped_dictionaries(out_dir)
    out_dir = check_empty_dir(out_dir, overwrite)
    out_dir.mkdir(parents=True, exist_ok=True)
    for stale in out_dir.glob("layer_*.safetensors"):
        match = LAYER_FILE.fullmatch(stale.name)
        if match and int(match.group(1)) >= len(transcoders):
            stale.unlink()
    for i, tc in enumerate(transcoders):
        tmp = out_dir / f".layer_{i}.safetensors.tmp"
        save_file(layer_tensors(tc), str(tmp))
        tmp.replace(out_dir / f"layer_{i}.safetensors")
    tmp = out_dir / f".{CONFIG}.tmp"
    tmp.write_text(yaml.safe_dump(_config(transcoders, model_name, hook_in, hook_out), sort_keys=False))
    tmp.replace(out_dir / CONFIG)
    return out_dir


# ============================================================ circuit-tracer -> ours
def _read_config(path: Path) -> dict:
    import yaml

    if not (path / CONFIG).is_file():
        raise FileNotFoundError(f"{path} holds no circuit-tracer transcoder set: expected {CONFIG} and layer_*.safetensors")
    config = yaml.safe_load((path / CONFIG).read_text())
    if not isinstance(config, dict):
        raise ValueError(f"{path / CONFIG} is not a mapping of keys to values")
    kind = config.get("model_kind")
    if kind != "transcoder_set":
        raise ValueError(f"{path / CONFIG} has model_kind {kind!r}: only per-layer sets ('transcoder_set') load into "
                         "SparseDictionary (cross-layer transcoders write to several layers)")
    for key in ("feature_input_hook", "feature_output_hook"):
        if not isinstance(config.get(key), str) or not config[key]:
            raise ValueError(f"{path / CONFIG} lacks {key}")
    if config.get("activation") not in (None, "relu", "topk"):
        raise ValueError(f"{path / CONFIG} has activation {config['activation']!r}: allowed relu, topk, or none (JumpReLU)")
    return config


def _layer_paths(path: Path, config: dict) -> list[Path]:
    listed = config.get("transcoders")
    if listed is not None:
        if not isinstance(listed, list) or any(not isinstance(p, str) or p.startswith("hf://") for p in listed):
            raise ValueError(f"{path / CONFIG}: 'transcoders' must list local files (hf:// URIs are not fetched)")
        return [Path(p) if Path(p).is_absolute() else path / p for p in listed]
    found = sorted(int(m.group(1)) for p in path.iterdir() if (m := LAYER_FILE.fullmatch(p.name)))
    if not found or found != list(range(len(found))):
        raise FileNotFoundError(f"{path} has layer files {found}: expected layer_0 .. layer_(n-1).safetensors, "
                                "one per layer")
    return [path / f"layer_{i}.safetensors" for i in found]


def _check_layer_file(tensors: dict[str, torch.Tensor], where: Path) -> tuple[int, int]:
    """(n_features, d_model) of one layer file's tensors, or a clear error."""
    for key in ("W_enc", "W_dec", "b_enc", "b_dec"):
        if key not in tensors:
            raise ValueError(f"{where} lacks {key}")
    unknown = set(tensors) - FILE_KEYS
    if unknown:
        raise ValueError(f"{where} has tensors {sorted(unknown)} that SparseDictionary cannot hold")
    n, d = tensors["b_enc"].shape[0], tensors["b_dec"].shape[0]
    shapes = {"W_enc": (n, d), "W_dec": (n, d), "b_enc": (n,), "b_dec": (d,), "W_skip": (d, d), THRESHOLD: (n,)}
    for key, shape in shapes.items():
        if key in tensors and tuple(tensors[key].shape) != shape:
            raise ValueError(f"{where}: {key} has shape {list(tensors[key].shape)}, expected {list(shape)} "
                             f"(d_transcoder {n}, d_model {d})")
    return n, d


def _activation(config: dict, tensors: dict[str, torch.Tensor], n: int,
                where: Path) -> tuple[str, int, Optional[torch.Tensor]]:
    """(activation, k, threshold) in our terms for one layer."""
    k = config.get("k", int(tensors["k"]) if "k" in tensors else None)
    activation = config.get("activation") or ("jumprelu" if THRESHOLD in tensors else "relu")
    if activation == "relu":
        return "relu", DEFAULT_K, None
    if activation == "topk":
        if k is None:
            raise ValueError(f"{where}: activation topk needs k (in {CONFIG})")
        return "topk", int(k), None
    threshold = tensors[THRESHOLD]
    if torch.all(threshold == threshold[0]) and threshold[0] >= 0:  # one threshold: batchtopk's inference rule
        return "batchtopk", int(k or min(32, n)), threshold[0]
    return "jumprelu", min(DEFAULT_K, n), threshold  # one per feature, circuit-tracer's rule (k unused)


def _dictionary(tensors: dict[str, torch.Tensor], config: dict, layer: int, where: Path) -> SparseDictionary:
    n, d = _check_layer_file(tensors, where)
    activation, k, threshold = _activation(config, tensors, n, where)
    dtype = tensors["W_enc"].dtype
    cfg = DictionaryConfig(d, d, n, activation=activation, k=k, skip="W_skip" in tensors,
                           in_hook=f"blocks.{layer}.{config['feature_input_hook']}",
                           out_hook=f"blocks.{layer}.{config['feature_output_hook']}", kind="transcoder",
                           dtype=dtype_name(dtype))
    tc = SparseDictionary(cfg)
    state = {"W_enc": tensors["W_enc"].T, "W_dec": tensors["W_dec"], "b_enc": tensors["b_enc"],
             "b_dec": tensors["b_dec"], "b_pre": torch.zeros(d, dtype=dtype),
             "threshold": torch.zeros((), dtype=dtype) if threshold is None else threshold}
    if "W_skip" in tensors:
        state["W_skip"] = tensors["W_skip"].T
    tc.load_state_dict({name: t.to(dtype).contiguous() for name, t in state.items()})
    return tc.eval()


def load_circuit_tracer_transcoders(path: PathLike) -> list[SparseDictionary]:
    """One SparseDictionary per layer (eval mode) from a circuit-tracer transcoder-set folder
    (config.yaml + layer_{i}.safetensors, or config.yaml's `transcoders` list of local files)."""
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_dir():
        raise NotADirectoryError(f"{path} is not a folder holding {CONFIG} and layer_*.safetensors")
    config = _read_config(path)
    out = []
    for layer, file in enumerate(_layer_paths(path, config)):
        if not file.is_file():
            raise FileNotFoundError(f"{path / CONFIG} names {file}, which does not exist")
        out.append(_dictionary(load_file(str(file)), config, layer, file))
    return out


__all__ = ["save_circuit_tracer_transcoders", "load_circuit_tracer_transcoders", "layer_tensors"]
