"""Save and load a sparse dictionary: a directory with cfg.json and sae_weights.safetensors (the
file names and the tensor names W_enc, b_enc, W_dec, b_dec of SAELens' layout; b_pre, W_skip
and threshold where this dictionary has them).

    save_dictionary(tc, "dictionaries/L1")
    tc = load_dictionary("dictionaries/L1")
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Union


from probes.sae.dictionary import DictionaryConfig, SparseDictionary

CONFIG, WEIGHTS = "cfg.json", "sae_weights.safetensors"


def save_dictionary(dictionary: SparseDictionary, path: Union[str, Path], extra: dict = None) -> Path:
    """Write the dictionary (and `extra`, e.g. its training record, into cfg.json)."""
    from safetensors.torch import save_file

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    tensors = {name: t.detach().contiguous().cpu() for name, t in dictionary.state_dict().items()}
    save_file(tensors, str(path / WEIGHTS))
    (path / CONFIG).write_text(json.dumps(dictionary.cfg.to_dict() | {"extra": extra or {}}, indent=1) + "\n")
    return path


def load_dictionary(path: Union[str, Path]) -> SparseDictionary:
    from safetensors.torch import load_file

    path = Path(path)
    if not (path / CONFIG).exists() or not (path / WEIGHTS).exists():
        raise FileNotFoundError(f"{path} holds no dictionary: expected {CONFIG} and {WEIGHTS}")
    meta = json.loads((path / CONFIG).read_text())
    meta.pop("extra", None)
    dictionary = SparseDictionary(DictionaryConfig(**meta))
    state = load_file(str(path / WEIGHTS))
    missing = set(dictionary.state_dict()) - set(state)
    if missing:
        raise ValueError(f"{path / WEIGHTS} lacks {sorted(missing)}")
    dictionary.load_state_dict(state)
    return dictionary.eval()


__all__ = ["save_dictionary", "load_dictionary"]
