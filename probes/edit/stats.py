"""Key statistics for editing: the second moment C = E[k k^T] of an MLP layer's keys (the
activations that multiply W_out, `blocks.{l}.mlp.hook_post`), over the real tokens of a corpus.

    C = key_second_moment(model, layer, texts)          # [d_mlp, d_mlp] float64, cached on disk

The cache lives in `cache_dir()` ($INTERP_CACHE, else ~/.cache/interp/key_stats), never next
to a checkpoint. A file is keyed by a hash of the model's configuration and every weight up to
and including the layer's MLP input, by the layer, and by a hash of the corpus (its texts, or
its token batches) and the number of tokens used, so a changed model or corpus never reads a
stale file.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Iterable, Optional, Sequence, Union

import torch
from tqdm.auto import tqdm

from interp import names as hook_names

Corpus = Union[Sequence[str], Iterable[torch.Tensor]]


def cache_dir() -> Path:
    return Path(os.environ.get("INTERP_CACHE", Path.home() / ".cache" / "interp")) / "key_stats"


def _fingerprint(model, layer: int) -> str:
    """Hash of the configuration and of every parameter the layer's keys depend on."""
    h = hashlib.sha256(json.dumps(model.cfg.to_dict(), sort_keys=True).encode())
    for name, p in model.named_parameters():
        block = name.split(".")[1] if name.startswith("blocks.") else None
        if block is not None and int(block) > layer:
            continue
        if block is not None and int(block) == layer and ".mlp.W_out" in name or name.startswith(("unembed", "ln_final")):
            continue
        h.update(name.encode())
        h.update(p.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:24]


def _corpus_hash(texts: Sequence) -> str:
    h = hashlib.sha256()
    for t in texts:
        h.update(t.encode() if isinstance(t, str) else t.cpu().numpy().tobytes())
        h.update(b"\0")
    return h.hexdigest()[:16]


def key_second_moment(model, layer: int, corpus: Corpus, *, max_tokens: int = 200_000, batch_size: int = 256,
                      cache: bool = True, progress: bool = True, directory: Optional[Path] = None) -> torch.Tensor:
    """[d_mlp, d_mlp]: the mean of k k^T over the real tokens of `corpus` (texts, or token batches
    [batch, pos] with no padding), at most `max_tokens` tokens; cached on disk (see the module docstring)."""
    n_layers = model.cfg.n_layers
    if not -n_layers <= layer < n_layers:
        raise ValueError(f"layer {layer} is out of range for a model with {n_layers} layers")
    layer %= n_layers
    items = list(corpus)
    if not items:
        raise ValueError("the corpus is empty: give texts or token batches to estimate the key statistics from")
    path = (directory or cache_dir()) / f"{_fingerprint(model, layer)}_L{layer}_{_corpus_hash(items)}_{max_tokens}.pt"
    if cache and path.exists():
        return torch.load(path)
    name = hook_names.act_name("post", layer)
    total = torch.zeros(model.cfg.d_mlp, model.cfg.d_mlp, dtype=torch.float64)
    count = 0
    texts = isinstance(items[0], str)
    chunks = [items[i: i + batch_size] for i in range(0, len(items), batch_size)] if texts else items
    bar = tqdm(total=max_tokens, desc=f"key statistics, layer {layer}", disable=not progress, unit="tok")
    for chunk in chunks:
        if texts:
            tokens, mask = model._tokenize(list(chunk))
        else:
            tokens, mask = chunk, None
        with torch.no_grad():
            _, c = model.run_with_cache(tokens, attention_mask=mask, names_filter=[name], return_type=None)
        keys = c[name].double().reshape(-1, model.cfg.d_mlp)
        if mask is not None:
            keys = keys[mask.reshape(-1).bool()]
        keys = keys[: max_tokens - count]
        total += keys.T @ keys
        count += keys.shape[0]
        bar.update(keys.shape[0])
        if count >= max_tokens:
            break
    bar.close()
    moment = total / count
    if cache:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        torch.save(moment, tmp)
        tmp.replace(path)  # never a half-written file under the final name
    return moment


__all__ = ["key_second_moment", "cache_dir"]
