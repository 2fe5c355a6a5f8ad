"""Save and load a cross-layer transcoder: a directory with cfg.json (the `CLTConfig` fields, plus
"model_kind": "cross_layer_transcoder" and an "extra" mapping, e.g. the training record) and
clt_weights.safetensors (W_enc [n_layers, d_model, n_features], b_enc, b_pre, b_dec,
threshold, and W_dec.{l} [n_layers - l, n_features, d_model] per source layer). Loading reads
JSON and safetensors only (no pickle).

    save_clt(clt, "clt/")                     # a new or empty directory
    save_clt(clt, "clt/", overwrite=True)     # replace what is there
    clt = load_clt("clt/")                    # "factworld": the one shipped with the fact-world model
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional, Union

from models.checkpoint import check_empty_dir, check_not_shipped, check_not_shipped_dictionaries, shipped_dictionaries
from probes.sae.clt.model import CLTConfig, CrossLayerTranscoder
from probes.sae.io import DeviceArg

CONFIG, WEIGHTS = "cfg.json", "clt_weights.safetensors"
MODEL_KIND = "cross_layer_transcoder"


def shipped_clt(name: str = "factworld") -> Path:
    """The folder of the CLT shipped with a model ("factworld": models/factworld/clt)."""
    return shipped_dictionaries(name).parent / "clt"


def save_clt(clt: CrossLayerTranscoder, path: Union[str, Path], extra: Optional[dict] = None, *,
             overwrite: bool = False, allow_shipped: bool = False) -> Path:
    """Write `clt` (and `extra` into cfg.json) into directory `path`. A directory with something
    in it is refused unless `overwrite`, and the shipped fact-world CLT folder (or checkpoint)
    unless `allow_shipped`; every check runs before anything is written."""
    from safetensors.torch import save_file

    if not isinstance(clt, CrossLayerTranscoder):
        raise TypeError(f"save_clt saves a CrossLayerTranscoder, got {type(clt).__name__} (per-layer transcoders: "
                        "probes.sae.save_dictionary)")
    if extra is not None and not isinstance(extra, dict):
        raise TypeError(f"extra must be a dict, got {type(extra).__name__}")
    if not allow_shipped:
        check_not_shipped(path)
        check_not_shipped_dictionaries(path)
    path = check_empty_dir(path, overwrite)
    meta = clt.cfg.to_dict() | {"model_kind": MODEL_KIND, "extra": extra or {}}
    text = json.dumps(meta, indent=1) + "\n"  # before writing: a non-JSON extra fails here
    path.mkdir(parents=True, exist_ok=True)
    save_file({name: t.detach().contiguous().cpu() for name, t in clt.state_dict().items()}, str(path / WEIGHTS))
    (path / CONFIG).write_text(text)
    return path


def load_clt(path: Union[str, Path] = "factworld", device: DeviceArg = None) -> CrossLayerTranscoder:
    """The CLT (eval mode) that `save_clt` wrote into `path`, on `device` (default: the CPU);
    "factworld" (with no such folder here) is the one shipped with the fact-world model."""
    from safetensors.torch import load_file

    if str(path) == "factworld" and not Path(path).exists():
        path = shipped_clt()
    path = Path(path)
    if not (path / CONFIG).exists() or not (path / WEIGHTS).exists():
        raise FileNotFoundError(f"{path} holds no cross-layer transcoder: expected {CONFIG} and {WEIGHTS}")
    meta = json.loads((path / CONFIG).read_text())
    if not isinstance(meta, dict) or meta.get("model_kind") != MODEL_KIND:
        raise ValueError(f"{path / CONFIG} is not a cross-layer transcoder's (model_kind must be {MODEL_KIND!r}; "
                         "per-layer transcoders load with probes.sae.load_transcoders)")
    meta.pop("extra", None)
    meta.pop("model_kind")
    unknown = sorted(set(meta) - set(CLTConfig.__dataclass_fields__))
    if unknown:
        raise ValueError(f"{path / CONFIG} has keys {unknown} that are not CLTConfig's "
                         f"{sorted(CLTConfig.__dataclass_fields__)}")
    clt = CrossLayerTranscoder(CLTConfig(**meta))
    state = load_file(str(path / WEIGHTS))
    expected = clt.state_dict()
    missing, extra_keys = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    if missing or extra_keys:
        raise ValueError(f"{path / WEIGHTS} lacks {missing} / has unexpected {extra_keys}")
    wrong = [f"{k} {tuple(state[k].shape)} (expected {tuple(v.shape)})" for k, v in expected.items()
             if state[k].shape != v.shape]
    if wrong:
        raise ValueError(f"{path / WEIGHTS} has tensors of the wrong shape for its cfg.json: {wrong}")
    clt.load_state_dict(state)
    return clt.to(device or "cpu").eval()


__all__ = ["save_clt", "load_clt", "shipped_clt"]
