"""Save and load a sparse dictionary: a directory with cfg.json and sae_weights.safetensors (the
file names and the tensor names W_enc, b_enc, W_dec, b_dec of SAELens' layout; b_pre, W_skip
and threshold where this dictionary has them). The cfg.json fields are ours (n_features, in_hook,
...), so SAELens cannot load these folders: write SAELens 6's own format with
`probes.sae.saelens_format.save_saelens`. `load_dictionary` reads both.

    save_dictionary(tc, "dictionaries/L1")                  # a new or empty directory
    save_dictionary(tc, "dictionaries/L1", overwrite=True)  # replace what is there
    tc = load_dictionary("dictionaries/L1")
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional, Union

import torch

from models.checkpoint import check_empty_dir, check_not_shipped_dictionaries, shipped_dictionaries
from probes.sae.dictionary import DictionaryConfig, SparseDictionary
from probes.sae.saelens_format import is_saelens_config, load_saelens

DeviceArg = Union[str, torch.device, None]

CONFIG, WEIGHTS = "cfg.json", "sae_weights.safetensors"


def save_dictionary(dictionary: SparseDictionary, path: Union[str, Path], extra: Optional[dict] = None, *,
                    overwrite: bool = False, allow_shipped: bool = False) -> Path:
    """Write the dictionary (and `extra`, e.g. its training record, into cfg.json) into directory
    `path`. A directory with something in it is refused unless `overwrite`, and the fact-world's
    shipped transcoder folder unless `allow_shipped` (training them anew); both checks run
    before anything is written."""
    from safetensors.torch import save_file

    if not allow_shipped:
        check_not_shipped_dictionaries(path)
    path = check_empty_dir(path, overwrite)
    path.mkdir(parents=True, exist_ok=True)
    tensors = {name: t.detach().contiguous().cpu() for name, t in dictionary.state_dict().items()}
    save_file(tensors, str(path / WEIGHTS))
    (path / CONFIG).write_text(json.dumps(dictionary.cfg.to_dict() | {"extra": extra or {}}, indent=1) + "\n")
    return path


def load_dictionary(path: Union[str, Path], device: DeviceArg = None) -> SparseDictionary:
    """The dictionary (eval mode) that `save_dictionary` wrote into `path`, or one in SAELens 6's
    format (a cfg.json with d_sae: read with `load_saelens`), on `device` (default: the CPU; pass
    `model.device` to use it with a model elsewhere)."""
    from safetensors.torch import load_file

    path = Path(path)
    if not (path / CONFIG).exists() or not (path / WEIGHTS).exists():
        raise FileNotFoundError(f"{path} holds no dictionary: expected {CONFIG} and {WEIGHTS}")
    meta = json.loads((path / CONFIG).read_text())
    if is_saelens_config(meta):  # a folder SAELens 6 wrote (or save_saelens)
        return load_saelens(path).to(device or "cpu")
    if not isinstance(meta, dict):
        raise ValueError(f"{path / CONFIG} is not a mapping of keys to values")
    meta.pop("extra", None)
    unknown = sorted(set(meta) - set(DictionaryConfig.__dataclass_fields__))
    if unknown:
        raise ValueError(f"{path / CONFIG} has keys {unknown} that are not DictionaryConfig's "
                         f"{sorted(DictionaryConfig.__dataclass_fields__)} (nor SAELens', which have d_sae; a SAELens "
                         "folder loads with load_saelens / load_dictionary, circuit-tracer's with "
                         "load_circuit_tracer_transcoders)")
    lacking = [key for key in ("d_in", "d_out", "n_features") if key not in meta]
    if lacking:
        raise ValueError(f"{path / CONFIG} lacks {lacking}")
    dictionary = SparseDictionary(DictionaryConfig(**meta))
    state = load_file(str(path / WEIGHTS))
    missing = set(dictionary.state_dict()) - set(state)
    if missing:
        raise ValueError(f"{path / WEIGHTS} lacks {sorted(missing)}")
    dictionary.load_state_dict(state)
    return dictionary.to(device or "cpu").eval()


# Named sets shipped beside the fact-world model's own transcoders (the folder's name next to them).
NAMED_SETS = {"factworld-wide": "transcoders-wide"}


def load_transcoders(name_or_dir: Union[str, Path], device: DeviceArg = None) -> list[SparseDictionary]:
    """One dictionary per layer, in layer order, from a folder of L0, L1, ... subfolders;
    "factworld" is the set shipped with the fact-world model, "factworld-wide" the wider one
    (2048 TopK features per layer; docs/sae.md); on `device` (default: the CPU)."""
    path = Path(name_or_dir)
    if not path.exists() and str(name_or_dir) == "factworld":
        path = shipped_dictionaries("factworld")
    elif not path.exists() and str(name_or_dir) in NAMED_SETS:
        path = shipped_dictionaries("factworld").parent / NAMED_SETS[str(name_or_dir)]
    layers = sorted((p for p in path.glob("L*") if p.is_dir() and p.name[1:].isdigit()), key=lambda p: int(p.name[1:]))
    if not layers:
        raise FileNotFoundError(f"no dictionaries (L0, L1, ... folders) in {path}"
                                + ("; train them with `interp train-transcoders --force`" if str(name_or_dir) == "factworld" else ""))
    if [int(p.name[1:]) for p in layers] != list(range(len(layers))):
        raise ValueError(f"{path} has layer folders {[p.name for p in layers]}: expected L0 .. L{len(layers) - 1}")
    return [load_dictionary(p, device) for p in layers]


__all__ = ["save_dictionary", "load_dictionary", "load_transcoders"]
