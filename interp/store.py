"""Activations on disk: any hooks' activations at every real token of a corpus, in safetensors
shards described by a small JSON manifest, streamed back as shuffled batches with bounded memory.

    store = harvest(model, texts, ["blocks.1.ln2.hook_normalized", "blocks.1.hook_mlp_out"], "acts")
    store = ActivationStore.open("acts", model=model, hooks=["blocks.1.hook_mlp_out"])  # checked
    store = store_for(model, texts, hooks, "acts")   # open the store there (checked), or harvest it
    for x, y in store.batches(1024, hooks=[...], seed=0): ...     # [1024, d] each, endlessly

A folder holds `manifest.json` and `shard-00000.safetensors`, ...: each shard holds, per hook,
its activations [n, d] at the real tokens of a run of whole text batches (in corpus order), and
`sum.HOOK` [d] / `sumsq.HOOK` [] (float64 sums over the shard's rows, so means and variances need
no pass over the data). The manifest says what the store is:

    {"format": "interp-activation-store", "version": 1, "model": <weights fingerprint>,
     "hooks": [...], "d": {hook: d}, "dtype": "float32", "tokens": N, "corpus": <hash of the texts>,
     "n_texts": ..., "batch_size": ..., "shard_tokens": ..., "max_tokens": ..., "complete": true,
     "shards": [{"file": "shard-00000.safetensors", "tokens": n, "texts": [start, stop]}, ...]}

A store is never silently reused for something else: `ActivationStore.open(..., model=, hooks=,
dtype=)` refuses (`StaleStoreError`) a store of another model (any weight changed), without
one of the hooks, or of another dtype; `harvest` into a folder holding a store made with other
settings (model, hooks, dtype, corpus, batching) refuses too, unless `overwrite=True`. Every shard
is written to a temporary name and renamed; the manifest is rewritten (the same way) after each
shard, so a half-written shard never appears in it. An interrupted harvest is resumed by calling
`harvest` again with the same arguments (the shards listed are kept; `complete` is false until
the last one). Memory: harvesting holds one shard; `batches` holds at most `buffer_shards` shards
(and one batch carried over).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional, Sequence, Union

import torch

from interp.fingerprint import weights_hash
from interp.progress import progress_bar
from interp.tokens import cached_batches
from models.config import dtype_name

FORMAT = "interp-activation-store"
VERSION = 1
MANIFEST = "manifest.json"
_SALT = b"interp activation store v1"
_KEY_FIELDS = ("format", "version", "model", "hooks", "dtype", "corpus", "n_texts", "batch_size", "shard_tokens",
               "shard_texts", "max_tokens")
SHARDED_RESULTS = "harvest.shards.jsonl"  # interp.store_sharded's progress file, in the store's folder


class StaleStoreError(ValueError):
    """A store on disk was made for another model, hooks, dtype or corpus than the one asked for."""


def model_fingerprint(model: torch.nn.Module) -> str:
    """The store's model key: configuration, class and every weight (device-independent)."""
    return weights_hash(model, salt=_SALT)


def corpus_hash(texts: Sequence[str]) -> str:
    """Hash of the texts, in order (each text's length first, so boundaries count)."""
    h = hashlib.sha256()
    for t in texts:
        b = t.encode()
        h.update(f"{len(b)}:".encode())
        h.update(b)
    return h.hexdigest()[:24]


def _dtype(name: Union[str, torch.dtype]) -> torch.dtype:
    dtype = getattr(torch, name.removeprefix("torch.")) if isinstance(name, str) else name
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise ValueError(f"a store's dtype must be a floating-point torch dtype, got {name!r}")
    return dtype


def _write_atomic(path: Path, write) -> None:
    """`write(tmp)` then rename tmp to `path`: the final name never holds a partial file."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def _write_manifest(directory: Path, manifest: dict) -> None:
    _write_atomic(directory / MANIFEST, lambda tmp: tmp.write_text(json.dumps(manifest, indent=1)))


def read_manifest(directory: Union[str, Path]) -> dict:
    """The manifest of the store in `directory` (a clear error when there is none, or it is not one)."""
    path = Path(directory) / MANIFEST
    if not path.is_file():
        raise FileNotFoundError(f"no activation store in {directory}: {MANIFEST} is missing (make one with "
                                "interp.store.harvest)")
    try:
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise StaleStoreError(f"{path} is not a readable manifest ({e})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise StaleStoreError(f"{path} is not an activation store's manifest (format {manifest.get('format')!r})")
    if manifest.get("version") != VERSION:
        raise StaleStoreError(f"{path} is version {manifest.get('version')} of the store format; this code reads "
                              f"version {VERSION}: harvest the store again")
    return manifest


def _differences(have: dict, want: dict) -> list[str]:
    return [f"{k}: {have.get(k)!r} on disk, {want.get(k)!r} asked for" for k in _KEY_FIELDS if have.get(k) != want.get(k)]


def checked_hooks(model, hooks: Sequence[str], texts: Sequence[str]) -> tuple[list[str], list[str]]:
    """(hook names, texts) for a store, checked before anything is written: known names (the hook
    base's error names the closest valid ones), at least one of each, one vector per token."""
    for h in hooks:
        model.hook_point(h)
    hooks = list(dict.fromkeys(model.normalize_name(h) for h in hooks))
    texts = list(texts)
    if not hooks:
        raise ValueError("give at least one hook name to store")
    if not texts:
        raise ValueError("no texts to harvest activations from")
    with torch.no_grad():  # shapes checked on one text
        _, probe = model.run_with_cache(texts[0], names_filter=hooks, return_type=None)
    for h in hooks:
        if probe[h].dim() != 3:
            raise ValueError(f"a store keeps one vector per token: {h!r} is {list(probe[h].shape)}, not "
                             "[batch, pos, d] (per-head hooks: use hook_attn_out or a residual hook)")
    return hooks, texts


def harvest(model, texts: Sequence[str], hooks: Sequence[str], directory: Union[str, Path], *,
            dtype: Optional[Union[str, torch.dtype]] = None, batch_size: int = 256, shard_tokens: int = 65_536,
            max_tokens: Optional[int] = None, overwrite: bool = False, progress: bool = True) -> "ActivationStore":
    """Run `model` over `texts` (`batch_size` at a time, right-padded) and store the activations of
    `hooks` ([batch, pos, d] each) at every real token into `directory`, in shards of whole batches
    of at least `shard_tokens` rows (the last may be smaller), cast to `dtype` (default: the model's).
    With `max_tokens`, harvesting stops after the shard that reaches it (whole shards: a few more
    tokens may be kept). A folder that already holds this store (same model, hooks, dtype, corpus and
    settings) is reused, finished if it was interrupted; one holding anything else is refused
    unless `overwrite` (which removes that store's files first)."""
    directory = Path(directory)
    hooks, texts = checked_hooks(model, hooks, texts)
    if batch_size < 1 or shard_tokens < 1 or (max_tokens is not None and max_tokens < 1):
        raise ValueError(f"batch_size, shard_tokens and max_tokens must be positive, got {batch_size}, "
                         f"{shard_tokens}, {max_tokens}")
    store_dtype = _dtype(dtype) if dtype is not None else next(model.parameters()).dtype
    want = {"format": FORMAT, "version": VERSION, "model": model_fingerprint(model), "hooks": hooks,
            "dtype": dtype_name(store_dtype), "corpus": corpus_hash(texts), "n_texts": len(texts),
            "batch_size": batch_size, "shard_tokens": shard_tokens, "max_tokens": max_tokens}
    manifest = _start(directory, want, overwrite)
    if manifest["complete"]:
        return ActivationStore(directory, manifest)
    done = manifest["shards"]
    start = done[-1]["texts"][1] if done else 0
    total = sum(s["tokens"] for s in done)
    rows: dict[str, list[torch.Tensor]] = {h: [] for h in hooks}
    n_rows, shard_start = 0, start
    bar = progress_bar(total=max_tokens, initial=total, progress=progress, unit="tok",
                       desc=f"harvesting {len(hooks)} hook{'s' * (len(hooks) > 1)} into {directory}")
    with bar:
        for batch, cache in cached_batches(model, texts[start:], hooks, batch_size):
            real = batch.real
            for h in hooks:
                act = cache[h]
                rows[h].append(act[real.to(act.device)].to(device="cpu", dtype=store_dtype))
            n = int(real.sum())
            n_rows += n
            total += n
            bar.update(n)
            stop = start + batch.start + len(batch.texts)
            last = stop == len(texts) or (max_tokens is not None and total >= max_tokens)
            if n_rows >= shard_tokens or last:
                _add_shard(directory, manifest, {h: torch.cat(rows[h]) for h in hooks}, (shard_start, stop))
                rows = {h: [] for h in hooks}
                n_rows, shard_start = 0, stop
            if last:
                break
    manifest["complete"] = True
    _write_manifest(directory, manifest)
    return ActivationStore(directory, manifest)


def store_for(model, texts: Sequence[str], hooks: Sequence[str], directory: Union[str, Path], *,
              dtype: Optional[Union[str, torch.dtype]] = None, **harvest_options) -> "ActivationStore":
    """The store of `hooks` in `directory`: a complete one there is opened and checked against
    `model`, `hooks` and `dtype` (default: the model's) whatever corpus it was harvested from;
    otherwise `harvest(model, texts, hooks, directory, dtype=dtype, **harvest_options)` makes it
    (or finishes an interrupted harvest made with the same settings)."""
    directory = Path(directory)
    if (directory / MANIFEST).is_file() and read_manifest(directory).get("complete"):
        for h in hooks:
            model.hook_point(h)
        want = dtype if dtype is not None else next(model.parameters()).dtype
        return ActivationStore.open(directory, model=model, hooks=[model.normalize_name(h) for h in hooks], dtype=want)
    return harvest(model, texts, hooks, directory, dtype=dtype, **harvest_options)


def _start(directory: Path, want: dict, overwrite: bool) -> dict:
    """The manifest to continue: the one on disk when it matches `want`, else a fresh one (old
    store removed with `overwrite`; refused without)."""
    if directory.exists() and not directory.is_dir():
        raise NotADirectoryError(f"{directory} is a file; give a directory for the activation store")
    if (directory / MANIFEST).exists():
        have = read_manifest(directory)
        diff = _differences(have, want)
        if not diff:
            return have
        if not overwrite:
            raise StaleStoreError(f"{directory} holds an activation store made with other settings ("
                                  + "; ".join(diff) + "): give another folder, or overwrite=True (--force) to "
                                  "replace it")
        for s in have.get("shards", []):
            (directory / s["file"]).unlink(missing_ok=True)
        (directory / SHARDED_RESULTS).unlink(missing_ok=True)
        (directory / MANIFEST).unlink()
    elif directory.is_dir() and any(directory.iterdir()):
        raise FileExistsError(f"{directory} is not empty and holds no activation store: give a new or empty folder")
    directory.mkdir(parents=True, exist_ok=True)
    manifest = want | {"d": {}, "tokens": 0, "complete": False, "shards": []}
    _write_manifest(directory, manifest)
    return manifest


def shard_tensors(acts: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """What a shard file holds: per hook its rows [n, d] and the float64 sums `sum.HOOK` [d] and
    `sumsq.HOOK` [] (the means and variances come from these)."""
    tensors = {}
    for h, a in acts.items():
        tensors[h] = a.contiguous()
        wide = a.double()
        tensors[f"sum.{h}"] = wide.sum(0)
        tensors[f"sumsq.{h}"] = wide.pow(2).sum()
    return tensors


def _add_shard(directory: Path, manifest: dict, acts: dict[str, torch.Tensor], texts: tuple[int, int]) -> None:
    """Write one shard (tmp, then rename), then list it in the manifest (tmp, then rename)."""
    from safetensors.torch import save_file

    index = len(manifest["shards"])
    name = f"shard-{index:05d}.safetensors"
    tensors = shard_tensors(acts)
    for h, a in acts.items():
        manifest["d"][h] = int(a.shape[1])
    n = int(next(iter(acts.values())).shape[0])
    _write_atomic(directory / name, lambda tmp: save_file(tensors, str(tmp), metadata={"format": FORMAT}))
    manifest["shards"].append({"file": name, "tokens": n, "texts": list(texts)})
    manifest["tokens"] += n
    _write_manifest(directory, manifest)


@dataclass
class ActivationStore:
    """A store on disk (see the module docstring): `open` it, read `hooks`, `d`, `tokens`, `dtype`,
    `mean(hook)` / `variance(hook)`, and stream `batches(...)`."""

    directory: Path
    manifest: dict

    @classmethod
    def open(cls, directory: Union[str, Path], *, model=None, hooks: Optional[Sequence[str]] = None,
             dtype: Optional[Union[str, torch.dtype]] = None) -> "ActivationStore":
        """The complete store in `directory`, checked against what is given: `model` (its weights'
        fingerprint), `hooks` (each must be stored) and `dtype`; `StaleStoreError` otherwise."""
        directory = Path(directory)
        manifest = read_manifest(directory)
        if not manifest.get("complete"):
            raise StaleStoreError(f"the activation store in {directory} is incomplete (its harvest was interrupted "
                                  f"after {len(manifest['shards'])} shards): run harvest again with the same "
                                  "arguments to finish it")
        problems = []
        if model is not None and manifest["model"] != (have := model_fingerprint(model)):
            problems.append(f"it was harvested from another model or other weights (fingerprint {manifest['model']}, "
                            f"this model {have})")
        missing = [h for h in (hooks or ()) if h not in manifest["hooks"]]
        if missing:
            problems.append(f"it holds no {', '.join(map(repr, missing))} (it holds {manifest['hooks']})")
        if dtype is not None and manifest["dtype"] != dtype_name(_dtype(dtype)):
            problems.append(f"it holds {manifest['dtype']} activations, not {dtype_name(_dtype(dtype))}")
        if problems:
            raise StaleStoreError(f"the activation store in {directory} does not fit: " + "; ".join(problems)
                                  + ". Harvest a new store into another folder (or replace this one with "
                                  "interp.store.harvest(..., overwrite=True))")
        return cls(directory, manifest)

    @property
    def hooks(self) -> list[str]:
        return list(self.manifest["hooks"])

    @property
    def d(self) -> dict[str, int]:
        return dict(self.manifest["d"])

    @property
    def tokens(self) -> int:
        return int(self.manifest["tokens"])

    @property
    def dtype(self) -> torch.dtype:
        return _dtype(self.manifest["dtype"])

    @property
    def n_shards(self) -> int:
        return len(self.manifest["shards"])

    def _check_hooks(self, hooks: Sequence[str]) -> list[str]:
        hooks = list(hooks)
        missing = [h for h in hooks if h not in self.manifest["hooks"]]
        if missing or not hooks:
            raise StaleStoreError(f"the activation store in {self.directory} holds {self.manifest['hooks']}, "
                                  f"not {missing or 'no hook'}")
        return hooks

    def read_shard(self, index: int, hooks: Optional[Sequence[str]] = None) -> dict[str, torch.Tensor]:
        """{hook: [n, d]} of shard `index` (only the hooks asked for are read from disk)."""
        from safetensors import safe_open

        hooks = self._check_hooks(self.hooks if hooks is None else hooks)
        info = self.manifest["shards"][index]
        out = {}
        with safe_open(str(self.directory / info["file"]), framework="pt") as f:
            for h in hooks:
                t = f.get_tensor(h)
                if tuple(t.shape) != (info["tokens"], self.manifest["d"][h]):
                    raise StaleStoreError(f"{info['file']} in {self.directory} holds {h!r} as {list(t.shape)}, the "
                                          f"manifest says [{info['tokens']}, {self.manifest['d'][h]}]: harvest again")
                out[h] = t
        return out

    def _sums(self, hook: str) -> tuple[torch.Tensor, torch.Tensor]:
        from safetensors import safe_open

        self._check_hooks([hook])
        total, sq = torch.zeros(self.manifest["d"][hook], dtype=torch.float64, device="cpu"), 0.0
        for info in self.manifest["shards"]:
            with safe_open(str(self.directory / info["file"]), framework="pt") as f:
                total += f.get_tensor(f"sum.{hook}")
                sq += float(f.get_tensor(f"sumsq.{hook}"))
        return total, torch.tensor(sq, dtype=torch.float64, device="cpu")

    def mean(self, hook: str) -> torch.Tensor:
        """[d] float64: the mean activation of `hook` over the store."""
        total, _ = self._sums(hook)
        return total / self.tokens

    def variance(self, hook: str) -> torch.Tensor:
        """[] float64: the mean squared distance of `hook`'s activations from their mean (summed over d)."""
        total, sq = self._sums(hook)
        mean = total / self.tokens
        return sq / self.tokens - mean.pow(2).sum()

    def batches(self, batch_size: int, *, hooks: Optional[Sequence[str]] = None, seed: int = 0,
                buffer_shards: int = 4, epochs: Optional[int] = None, device: Optional[Union[str, torch.device]] = None,
                dtype: Optional[torch.dtype] = None) -> Iterator[tuple[torch.Tensor, ...]]:
        """Shuffled batches: a tuple with one [batch_size, d] tensor per hook in `hooks` (default:
        all), rows of the same tokens, on `device` in `dtype` (default: the CPU, the stored dtype).
        Each epoch visits the shards in a fresh seeded order, `buffer_shards` at a time, and draws
        the rows of those shards (plus the last epoch-group's leftover rows) in a seeded random
        order; `epochs=None` never stops. The rows live in one buffer per hook, allocated once
        (`buffer_shards` of the largest shards plus one batch) and refilled shard by shard, so
        memory stays flat however long training runs."""
        hooks = self._check_hooks(self.hooks if hooks is None else hooks)
        if batch_size < 1 or buffer_shards < 1:
            raise ValueError(f"batch_size and buffer_shards must be positive, got {batch_size} and {buffer_shards}")
        if self.tokens < batch_size:
            raise ValueError(f"the activation store in {self.directory} holds {self.tokens} tokens, fewer than one "
                             f"batch of {batch_size}")
        g = torch.Generator(device="cpu").manual_seed(seed)
        largest = max(s["tokens"] for s in self.manifest["shards"])
        rows = min(self.tokens, buffer_shards * largest) + batch_size
        buffer = {h: torch.empty(rows, self.manifest["d"][h], dtype=self.dtype, device="cpu") for h in hooks}
        carried = 0  # rows left over from the previous group, at the buffer's start
        epoch = 0
        while epochs is None or epoch < epochs:
            order = torch.randperm(self.n_shards, generator=g, device="cpu").tolist()
            for lo in range(0, len(order), buffer_shards):
                n = carried
                for i in order[lo: lo + buffer_shards]:
                    part = self.read_shard(i, hooks)
                    m = part[hooks[0]].shape[0]
                    for h in hooks:
                        buffer[h][n: n + m].copy_(part[h])
                    n += m
                    del part
                perm = torch.randperm(n, generator=g, device="cpu")
                full = n - n % batch_size
                for b in range(0, full, batch_size):
                    idx = perm[b: b + batch_size]
                    yield tuple(buffer[h][idx].to(device=device, dtype=dtype) for h in hooks)  # copies
                rest = perm[full:]
                for h in hooks:
                    buffer[h][: len(rest)] = buffer[h][rest]  # gathered (a copy) before it is written
                carried = len(rest)
            epoch += 1


__all__ = ["ActivationStore", "StaleStoreError", "harvest", "store_for", "shard_tensors", "read_manifest", "model_fingerprint", "corpus_hash",
           "FORMAT", "MANIFEST"]
