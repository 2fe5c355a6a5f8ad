"""Key statistics for editing: the second moment C = E[k k^T] of an MLP layer's keys (the
activations that multiply W_out, `blocks.{l}.mlp.hook_post`), over the real tokens of a corpus.

    C = key_second_moment(model, layer, texts)          # [d_mlp, d_mlp] float64, cached on disk
    C = key_second_moment(model, layer)                 # over the model's default corpus

The default corpus is the model's own (`model.default_corpus`, which `models.load("factworld")`
sets to a sample of the fact world's training sentences); any other model needs `corpus=`.

The cache lives in `cache_dir()` ($INTERP_CACHE, else ~/.cache/interp/key_stats), never next
to a checkpoint. A file is keyed by everything the numbers depend on: the model's
configuration, class, device type and every weight (with its dtype and shape) up to the
layer's MLP input; the layer; the exact token batches the model reads (so the texts, the
tokenizer, `default_prepend_bos`, the batch size, and for token-batch corpora their shapes and
dtypes); and the token budget. While any hook is attached to the model (a permanent hook, attached
transcoders, a torch module hook), the statistics are computed as the hooked model gives them
and neither read from nor written to the cache. Files are read with `weights_only=True`.
"""

from __future__ import annotations

import hashlib
import os
import pickle
from pathlib import Path
from typing import Iterable, Iterator, Optional, Sequence, Union

import torch

from interp import names as hook_names
from interp.checks import resolve_layer
from interp.fingerprint import tensor_bytes as _tensor_bytes, weights_hash
from interp.hooks import HookPoint
from interp.progress import progress_bar
from interp.tokens import padded_batches
from models.transformer import Transformer

Corpus = Union[Sequence[str], Iterable[torch.Tensor]]
Batch = tuple[torch.Tensor, Optional[torch.Tensor]]  # tokens [batch, pos], mask or None
FORMAT = b"key-second-moment v2"  # changes whenever the way files are keyed or computed changes


def cache_dir() -> Path:
    return Path(os.environ.get("INTERP_CACHE", Path.home() / ".cache" / "interp")) / "key_stats"


def default_corpus(model: Transformer) -> list[str]:
    """The model's own corpus for statistics (`model.default_corpus`: texts, or a function that
    returns them); a clear error asking for `corpus=` where the model has none."""
    corpus = getattr(model, "default_corpus", None)
    if corpus is None:
        raise ValueError("key statistics need a corpus, and this model has no default one (the shipped fact-world "
                         "model has its training sentences): pass corpus=[texts ...] (a few thousand sentences like "
                         "the model's training data) or stats= (precomputed key_second_moment)")
    return list(corpus() if callable(corpus) else corpus)


def hooks_attached(model: torch.nn.Module) -> bool:
    """True when any forward or backward hook is attached anywhere in the model: on a hook point
    (permanent ones included) or as a torch module hook, or globally for every module."""
    from torch.nn.modules import module as torch_module

    if torch_module._global_forward_hooks or torch_module._global_forward_pre_hooks:
        return True
    for m in model.modules():
        if isinstance(m, HookPoint) and m.has_hooks:
            return True
        if m._forward_hooks or m._forward_pre_hooks:
            return True
    return False


def _fingerprint(model: Transformer, layer: int) -> str:
    """Hash of the configuration, the device type and every parameter the layer's keys depend on."""

    def keep(name: str) -> bool:
        block = int(name.split(".")[1]) if name.startswith("blocks.") else None
        if block is not None and block > layer or name.startswith(("unembed", "ln_final")):
            return False
        return not (block == layer and name.endswith((".mlp.W_out", ".mlp.b_out")))

    return weights_hash(model, keep=keep, salt=FORMAT, with_device=True)


def _batches(model: Transformer, items: list, batch_size: int, max_tokens: int) -> Iterator[Batch]:
    """The token batches the statistics read, up to the first that reaches `max_tokens` real tokens."""
    if all(isinstance(t, str) for t in items):
        chunks = ((b.tokens, b.mask) for b in padded_batches(model, items, batch_size))
    elif all(isinstance(t, torch.Tensor) for t in items):
        for t in items:
            if t.ndim not in (1, 2) or t.dtype.is_floating_point or t.dtype.is_complex or t.dtype == torch.bool:
                raise ValueError(f"a token batch must be integer token ids [batch, pos] (or [pos]), got a "
                                 f"{t.dtype} tensor of shape {list(t.shape)}")
        chunks = ((t.reshape(1, -1) if t.ndim == 1 else t, None) for t in items)
    else:
        raise TypeError("the corpus must be texts or token batches (integer tensors), not a mix of them or "
                        f"{sorted({type(t).__name__ for t in items})}")
    count = 0
    for tokens, mask in chunks:
        yield tokens, mask
        count += int(mask.sum()) if mask is not None else tokens.numel()
        if count >= max_tokens:
            return


def _batches_hash(batches: Sequence[Batch]) -> str:
    h = hashlib.sha256()
    for tokens, mask in batches:
        h.update(_tensor_bytes(tokens))
        h.update(_tensor_bytes(mask) if mask is not None else b"no mask")
        h.update(b"\0")
    return h.hexdigest()[:16]


def _accumulator_device(model: Transformer) -> torch.device:
    """Where the float64 sums live: the model's device, or the CPU for one without float64 (MPS)."""
    return torch.device("cpu") if model.device.type == "mps" else model.device


def _compute(model: Transformer, layer: int, batches: Sequence[Batch], max_tokens: int, progress: bool) -> torch.Tensor:
    """The mean of k k^T, summed in float64 whatever the model's dtype (bfloat16 / float16 keys are
    widened before the product), on the model's device."""
    name = hook_names.act_name("post", layer)
    d_mlp = model.cfg.d_mlp
    device = _accumulator_device(model)
    total = torch.zeros(d_mlp, d_mlp, dtype=torch.float64, device=device)
    count = 0
    with progress_bar(total=max_tokens, progress=progress, desc=f"key statistics, layer {layer}", unit="tok") as bar:
        for tokens, mask in batches:
            with torch.no_grad():
                _, c = model.run_with_cache(tokens, attention_mask=mask, names_filter=[name], stop_at_layer=layer + 1)
            keys = c[name].reshape(-1, d_mlp)
            if mask is not None:
                keys = keys[mask.to(keys.device).reshape(-1).bool()]
            keys = keys[: max_tokens - count].to(device=device, dtype=torch.float64)
            total += keys.T @ keys
            count += keys.shape[0]
            bar.update(keys.shape[0])
    return total / count


def _read(path: Path, d_mlp: int) -> Optional[torch.Tensor]:
    """The cached moment (tensors only: weights_only), None when absent or not a [d_mlp, d_mlp] tensor."""
    if not path.exists():
        return None
    try:
        moment = torch.load(path, weights_only=True, map_location="cpu")
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError):
        return None
    ok = isinstance(moment, torch.Tensor) and tuple(moment.shape) == (d_mlp, d_mlp)
    return moment if ok else None


def key_second_moment(model: Transformer, layer: int, corpus: Optional[Corpus] = None, *, max_tokens: int = 200_000,
                      batch_size: int = 256, cache: bool = True, progress: bool = True,
                      directory: Optional[Path] = None) -> torch.Tensor:
    """[d_mlp, d_mlp] float64 on the model's device: the mean of k k^T over the real tokens of
    `corpus` (texts, or token batches [batch, pos] with no padding; None: the model's default
    corpus), at most `max_tokens` tokens; cached on disk unless hooks are attached (see the module
    docstring)."""
    layer = resolve_layer(layer, model.cfg.n_layers)
    items = default_corpus(model) if corpus is None else list(corpus)
    if not items:
        raise ValueError("the corpus is empty: give texts or token batches to estimate the key statistics from")
    if max_tokens < 1:
        raise ValueError(f"max_tokens must be at least 1, got {max_tokens}")
    batches = list(_batches(model, items, batch_size, max_tokens))
    use_cache = cache and not hooks_attached(model)
    path = (directory or cache_dir()) / f"{_fingerprint(model, layer)}_L{layer}_{_batches_hash(batches)}_{max_tokens}.pt"
    if use_cache and (cached := _read(path, model.cfg.d_mlp)) is not None:
        return cached.to(_accumulator_device(model))
    moment = _compute(model, layer, batches, max_tokens, progress)
    if use_cache:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        torch.save(moment.cpu(), tmp)
        tmp.replace(path)  # never a half-written file under the final name
    return moment


__all__ = ["key_second_moment", "cache_dir", "default_corpus", "hooks_attached", "Corpus"]
