"""`load(name_or_path)`: a model by name, without touching the network.

"factworld" (the shipped model), one of our checkpoint directories (`models.checkpoint`),
an HF-format directory (`models.hf_import`), or a model id already in the local HF cache.
Never downloads and never returns a randomly initialised model.

The rest moved to one module per job, and is importable from here as before:
`models.hf_import.from_hf`, `models.hf_export.to_hf`, `models.checkpoint.save` (also
`models.save`), `load_weights`, `check_not_shipped`, `shipped_dictionaries`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

from models.checkpoint import (FORMAT_KEY, WEIGHTS_FILE, check_not_shipped, is_checkpoint,  # noqa: F401 (re-exported)
                               load_checkpoint, load_weights, save, shipped_dictionaries)
from models.hf_export import to_hf  # noqa: F401 (re-exported)
from models.hf_import import from_hf, hf_model_from_dir
from models.tokenizer import HFTokenizer
from models.transformer import Transformer


class ModelNotFoundError(FileNotFoundError):
    """Raised by `load` when nothing local matches; the message says what to fetch and where."""


def _load_hf_dir(path: Path, dtype: Optional[str]) -> Transformer:
    hf = hf_model_from_dir(path)
    tokenizer = None
    if any((path / f).exists() for f in ("tokenizer.json", "vocab.json", "tokenizer_config.json")):
        tokenizer = HFTokenizer.from_pretrained(path)
    return from_hf(hf, tokenizer, dtype=dtype).eval()


def _hf_cache_dir() -> str:
    try:
        from huggingface_hub import constants

        return str(constants.HF_HUB_CACHE)
    except Exception:  # pragma: no cover - very old huggingface_hub
        return os.path.expanduser("~/.cache/huggingface/hub")


def load(name_or_path: str | Path, dtype: Optional[str] = None, cache_dir: Optional[str | Path] = None) -> Transformer:
    """Load a model without touching the network.

    "factworld": the shipped fact-world model. A directory: ours (from `save`)
    or HF format (config.json + model.safetensors / pytorch_model.bin, tokenizer
    files optional). Anything else is taken as an HF model id and looked up in
    the local HF cache only (`cache_dir`, default the HF hub cache).
    """
    name = str(name_or_path)
    if name == "factworld":
        from models.factworld import checkpoint_dir
        from models.factworld.corpus import default_corpus
        from models.factworld.editing import edit_prompts

        ckpt = checkpoint_dir()
        if not (ckpt / "config.json").exists():
            raise ModelNotFoundError(
                f"the fact-world checkpoint is missing from {ckpt}; train it with `interp train-factworld --force`"
            )
        model = load(ckpt, dtype)
        model.default_corpus = default_corpus  # its training sentences: what corpus statistics default to
        model.edit_prompts = edit_prompts  # an edit's contexts and kept prompts: what rome / memit default to
        return model
    path = Path(name).expanduser()
    if path.is_dir():
        cfg_file = path / "config.json"
        if not cfg_file.exists():
            raise ModelNotFoundError(f"{path} has no config.json: not a model directory")
        if is_checkpoint(path):
            return load_checkpoint(path, dtype)
        return _load_hf_dir(path, dtype)
    if path.exists():
        raise ModelNotFoundError(f"{path} is a file; give the directory that holds config.json and the weights")
    # Not a path: an HF model id, from the local cache only.
    try:
        from huggingface_hub import snapshot_download

        local = snapshot_download(repo_id=name, local_files_only=True,
                                  cache_dir=str(cache_dir) if cache_dir is not None else None)
    except Exception as e:  # LocalEntryNotFoundError, invalid id, ...
        raise ModelNotFoundError(
            f"{name!r} is neither a local directory nor a model in the local Hugging Face cache "
            f"({cache_dir or _hf_cache_dir()}), and this toolkit never downloads. On a machine with internet run "
            f"`huggingface-cli download {name}` and copy the cache folder models--{name.replace('/', '--')} "
            f"into {_hf_cache_dir()}, or save the model with `save_pretrained(DIR)` and pass DIR. "
            f"({type(e).__name__})"
        ) from None
    return _load_hf_dir(Path(local), dtype)


__all__ = ["load", "ModelNotFoundError", "from_hf", "to_hf", "save", "load_weights", "hf_model_from_dir",
           "check_not_shipped", "shipped_dictionaries"]
