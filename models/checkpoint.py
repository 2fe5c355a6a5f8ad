"""Our checkpoint format on disk: a directory with config.json (the model's configuration,
dtype included), model.safetensors (TransformerLens-named weights) and the tokenizer files.

- `save(model, dir, overwrite=False)`: refuses a non-empty directory unless `overwrite`, and
  the shipped fact-world checkpoint's folder unless `allow_shipped` (training it anew).
- `load_checkpoint(dir)`: the model `save` wrote (`models.load(dir)` calls it).
- `load_weights(model, weights)`: copy TransformerLens-named tensors into a model, checked.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

import torch

from models.config import TransformerConfig
from models.tokenizer import HFTokenizer, Tokenizer, WordTokenizer
from models.transformer import Transformer

FORMAT_KEY = "interp_format"
WEIGHTS_FILE = "model.safetensors"
# The tokenizer kinds a checkpoint may name. Loading never imports a module the file names.
TOKENIZER_KINDS = {"word": WordTokenizer, "models.tokenizer:WordTokenizer": WordTokenizer}  # + "hf"


# ============================================================ weights by name
def load_weights(model: Transformer, weights: dict[str, torch.Tensor]) -> None:
    """Copy TransformerLens-named tensors into the model, checking names and shapes first."""
    params = dict(model.named_parameters())
    missing = sorted(set(params) - set(weights))
    unknown = sorted(set(weights) - set(params))
    if missing or unknown:
        raise ValueError(f"weights do not match the model: missing {missing[:8]}, unexpected {unknown[:8]}")
    bad = [(n, tuple(w.shape), tuple(params[n].shape)) for n, w in weights.items() if w.shape != params[n].shape]
    if bad:
        raise ValueError("shape mismatch (name, given, expected): " + "; ".join(map(str, bad[:8])))
    with torch.no_grad():
        for name, w in weights.items():
            params[name].copy_(w)


# ============================================================ where not to write
def shipped_dictionaries(name: str) -> Path:
    """The folder of the sparse dictionaries shipped with a model ("factworld": one transcoder per
    layer, trained by `interp train-transcoders`)."""
    if name != "factworld":
        raise ValueError(f"no dictionaries are shipped for {name!r}; give a directory instead")
    from models.factworld import checkpoint_dir

    return checkpoint_dir().parent / "transcoders"


def _inside(path: Path, folder: Path) -> bool:
    path, folder = path.resolve(), folder.resolve()
    return path == folder or folder in path.parents


def check_not_shipped(path: str | Path) -> None:
    """A clear error for a path inside the shipped fact-world checkpoint's folder."""
    from models.factworld import checkpoint_dir

    if _inside(Path(path), checkpoint_dir()):
        raise ValueError(f"refusing to write into the shipped fact-world checkpoint folder {checkpoint_dir().resolve()}; "
                         "save elsewhere (training it anew: `interp train-factworld --force`)")


# Every dictionary folder shipped beside the fact-world checkpoint: its name, what it holds, how
# to make it anew (the one place that says which folders are shipped artefacts).
SHIPPED_DICTIONARY_FOLDERS = {
    "transcoders": ("transcoder", "`interp train-transcoders --force`"),
    "transcoders-wide": ("wide transcoder", "`python -m analyses.dictionary_study --ship DIR`"),
    "clt": ("CLT", "`interp train-clt --force`"),
}


def check_not_shipped_dictionaries(path: str | Path) -> None:
    """A clear error for a path inside any of the fact world's shipped dictionary folders
    (`SHIPPED_DICTIONARY_FOLDERS`)."""
    root = shipped_dictionaries("factworld").parent
    for name, (what, how) in SHIPPED_DICTIONARY_FOLDERS.items():
        if _inside(Path(path), root / name):
            raise ValueError(f"refusing to write into the shipped fact-world {what} folder {(root / name).resolve()}; "
                             f"save elsewhere (training anew: {how})")


def check_empty_dir(path: str | Path, overwrite: bool = False) -> Path:
    """`path` as a Path, if it is a new or empty directory (or `overwrite`); a clear error if it
    is a file or a directory with something in it."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise NotADirectoryError(f"{path} is a file; give a directory")
    if not overwrite and path.is_dir() and any(path.iterdir()):
        raise FileExistsError(f"{path} exists and is not empty: give a new directory, or overwrite=True (on the "
                              "command line --force) to replace what is there")
    return path


# ============================================================ save / load
def _tokenizer_kind(tok: Optional[Tokenizer]) -> Optional[str]:
    if tok is None:
        return None
    if isinstance(tok, HFTokenizer):
        return "hf"
    if isinstance(tok, WordTokenizer):
        return "word"
    raise TypeError(f"cannot save a {type(tok).__name__}: checkpoints hold HF or word-level tokenizers "
                    "(loading never imports code a checkpoint names)")


def save(model: Transformer, path: str | Path, *, overwrite: bool = False, allow_shipped: bool = False) -> Path:
    """Write config.json, model.safetensors and the tokenizer (if any) into directory `path`.

    A directory with something in it is refused unless `overwrite`; the shipped fact-world
    checkpoint's folder is refused unless `allow_shipped` (training it anew). The tokenizer must
    be an HF or a word-level one (checkpoints name a known kind, never code to import). Every
    check runs before a file is written. The dtype saved is the weights' own."""
    from safetensors.torch import save_file

    kind = _tokenizer_kind(model.tokenizer)
    if not allow_shipped:
        check_not_shipped(path)
    path = check_empty_dir(path, overwrite)
    path.mkdir(parents=True, exist_ok=True)
    if model.tokenizer is not None:
        model.tokenizer.save(path)
    meta = {FORMAT_KEY: 1, "config": model.cfg.to_dict(), "tokenizer": kind}
    (path / "config.json").write_text(json.dumps(meta, indent=2) + "\n")
    save_file({n: t.detach().contiguous().cpu() for n, t in model.named_parameters()}, str(path / WEIGHTS_FILE))
    return path


def load_checkpoint(path: str | Path, dtype: Optional[str] = None) -> Transformer:
    """The model (eval mode) that `save` wrote into `path`, in its saved dtype or `dtype`."""
    from safetensors.torch import load_file

    path = Path(path)
    meta = json.loads((path / "config.json").read_text())
    if FORMAT_KEY not in meta:
        raise ValueError(f"{path}/config.json is not one of our checkpoints (no {FORMAT_KEY!r}); use models.load")
    cfg = TransformerConfig.from_dict(meta["config"] | ({"dtype": dtype} if dtype else {}))
    tokenizer: Optional[Tokenizer] = None
    kind = meta.get("tokenizer")
    if kind == "hf":
        tokenizer = HFTokenizer.from_pretrained(path)
    elif kind in TOKENIZER_KINDS:
        tokenizer = TOKENIZER_KINDS[kind].load(path)
    elif kind:
        raise ValueError(f"{path}/config.json names tokenizer {kind!r}, which is not a known kind "
                         f"({', '.join(['hf', *TOKENIZER_KINDS])}); loading never imports code a checkpoint names")
    model = Transformer(cfg, tokenizer=tokenizer)
    load_weights(model, load_file(str(path / WEIGHTS_FILE)))
    return model.eval()


def is_checkpoint(path: str | Path) -> bool:
    """Whether `path` holds one of our checkpoints (rather than an HF-format model)."""
    cfg_file = Path(path) / "config.json"
    return cfg_file.exists() and FORMAT_KEY in json.loads(cfg_file.read_text())


__all__ = ["save", "load_checkpoint", "load_weights", "is_checkpoint", "check_not_shipped",
           "check_not_shipped_dictionaries", "SHIPPED_DICTIONARY_FOLDERS", "check_empty_dir", "shipped_dictionaries", "FORMAT_KEY", "WEIGHTS_FILE"]
