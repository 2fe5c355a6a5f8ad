"""Training a sparse dictionary on activations collected from a model, or on given pairs, or
streamed from an activation store on disk.

    record = train_dictionary(tc, activation_pairs(model, tc, texts), steps=3000)     # in memory
    store = harvest(model, texts, [tc.in_hook, tc.out_hook], "acts")                   # interp.store
    record = train_dictionary(tc, ActivationStore.open("acts", model=model), steps=3000)  # streamed
    record.losses, record.dead_fraction, record.seconds

`activation_pairs` runs the model over the corpus once and keeps every real token's (input,
target) activations in memory (`max_tokens` bounds them); training then draws its batches from
that buffer, reshuffled every epoch. From an `interp.store.ActivationStore`, training streams
shuffled batches from the shards with bounded memory (`buffer_shards` shards at a time), and the
biases start at the store's means (kept in the shards, no pass over the data). Loss: the mean squared reconstruction error divided by the target's variance, plus
  - "relu": an L1 penalty on f times the decoder row norms (`l1`);
  - "topk" / "batchtopk": an auxiliary-k loss (Gao et al. 2024) that lets the `aux_k` dead
    features with the largest pre-activations reconstruct the residual, so dead features
    come back (dead: no activation in the last `dead_after` training tokens).
Decoder rows are renormalised after every step. Deterministic given the seed.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Iterable, Iterator, Optional, Sequence, Union

import torch
from interp.progress import progress_bar
from interp.store import ActivationStore
from interp.tokens import cached_batches
from models.transformer import Transformer
from probes.sae.dictionary import SparseDictionary


def activation_pairs(model: Transformer, dictionary: SparseDictionary, texts: Sequence[str], *, batch_size: int = 256,
                     max_tokens: Optional[int] = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(inputs [n, d_in], targets [n, d_out]) at every real token of `texts`: the dictionary's
    in_hook and out_hook activations, all held in memory (at most `max_tokens` rows if given)."""
    names = sorted({dictionary.in_hook, dictionary.out_hook})
    xs, ys = [], []
    count = 0
    for batch, cache in cached_batches(model, texts, names, batch_size):
        xs.append(cache[dictionary.in_hook][batch.real])
        ys.append(cache[dictionary.out_hook][batch.real])
        count += int(batch.real.sum())
        if max_tokens is not None and count >= max_tokens:
            break
    x, y = torch.cat(xs), torch.cat(ys)
    return (x, y) if max_tokens is None else (x[:max_tokens], y[:max_tokens])


@dataclass
class TrainingRecord:
    steps: int
    losses: list[float] = field(default_factory=list)  # per step: normalised MSE (+ penalty)
    dead_fraction: list[float] = field(default_factory=list)  # every `log_every` steps
    seconds: float = 0.0
    tokens: int = 0

    def to_dict(self) -> dict:
        return {"steps": self.steps, "losses": self.losses, "dead_fraction": self.dead_fraction,
                "seconds": self.seconds, "tokens": self.tokens}


def training_dtype(model: torch.nn.Module) -> str:
    """The dtype to train a dictionary for `model` in: the model's, but float32 for a float16 or
    bfloat16 model (Adam's updates and the loss sums need the wider mantissa; the trained
    dictionary reads and writes the model's half-precision activations all the same)."""
    dtype = next(model.parameters()).dtype
    return "float32" if dtype in (torch.float16, torch.bfloat16) else str(dtype).removeprefix("torch.")


Pairs = tuple[torch.Tensor, torch.Tensor]  # (inputs [n, ...], targets [n, ...]) in memory
Data = Union[Pairs, ActivationStore]


def _batches(n: int, batch_size: int, g: torch.Generator) -> Iterator[torch.Tensor]:
    while True:  # a fresh shuffle of the whole buffer each epoch (indices on the CPU, as the generator)
        order = torch.randperm(n, generator=g, device="cpu")
        for lo in range(0, n - batch_size + 1, batch_size):
            yield order[lo: lo + batch_size]


def store_stream(store: ActivationStore, in_hooks: Sequence[str], out_hooks: Sequence[str], *, batch_size: int,
                 seed: int, device: torch.device, dtype: torch.dtype, buffer_shards: int = 4) -> Iterator[Pairs]:
    """(inputs, targets) batches streamed from `store`: [batch, d] for one hook each, or the hooks'
    activations stacked [batch, n_hooks, d] (a cross-layer transcoder's layers)."""
    hooks = list(dict.fromkeys([*in_hooks, *out_hooks]))
    at = {h: i for i, h in enumerate(hooks)}

    def join(parts: tuple, names: Sequence[str]) -> torch.Tensor:
        return parts[at[names[0]]] if len(names) == 1 else torch.stack([parts[at[h]] for h in names], dim=1)

    for parts in store.batches(batch_size, hooks=hooks, seed=seed, buffer_shards=buffer_shards, device=device,
                               dtype=dtype):
        yield join(parts, in_hooks), join(parts, out_hooks)


def store_moments(store: ActivationStore, hooks: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """(means, variances) float64 over `store`: [d] and [] for one hook, [n_hooks, d] and [n_hooks] for several."""
    means = [store.mean(h) for h in hooks]
    variances = [store.variance(h) for h in hooks]
    if len(hooks) == 1:
        return means[0], variances[0]
    return torch.stack(means), torch.stack(variances)


def check_store(store: ActivationStore, hooks: Sequence[str], width: int, batch_size: int) -> None:
    """A clear error unless `store` holds every hook, `width` wide, and at least one batch."""
    missing = [h for h in hooks if h not in store.hooks]
    if missing:
        raise ValueError(f"the activation store in {store.directory} holds {store.hooks}, not {missing}: harvest "
                         "the dictionary's hooks")
    wrong = {h: store.d[h] for h in hooks if store.d[h] != width}
    if wrong:
        raise ValueError(f"the dictionary reads vectors of {width}, the store holds {wrong}")
    if store.tokens < batch_size:
        raise ValueError(f"need at least batch_size={batch_size} rows, the store holds {store.tokens}")


def train_dictionary(dictionary: SparseDictionary, data: Data, *, steps: int = 2000,
                     batch_size: int = 1024, lr: float = 1e-3, l1: float = 1e-3, aux_k: int = 64,
                     aux_coeff: float = 1 / 32, dead_after: int = 20_000, log_every: int = 100,
                     progress: bool = True, buffer_shards: int = 4) -> TrainingRecord:
    """Fit `dictionary` to `data` (see the module docstring): (inputs, targets) in memory, or an
    `ActivationStore` holding the dictionary's in_hook and out_hook (streamed, `buffer_shards`
    shards in memory at a time); returns the record."""
    cfg = dictionary.cfg
    dtype = dictionary.W_dec.dtype
    device = dictionary.W_dec.device
    if isinstance(data, ActivationStore):
        check_store(data, [dictionary.in_hook], cfg.d_in, batch_size)
        check_store(data, [dictionary.out_hook], cfg.d_out, batch_size)
        x_mean, _ = store_moments(data, [dictionary.in_hook])
        y_mean, variance = store_moments(data, [dictionary.out_hook])
        x_mean, y_mean, variance = (t.to(device=device, dtype=dtype) for t in (x_mean, y_mean, variance))
        batches: Union[Pairs, Iterable[Pairs]] = store_stream(
            data, [dictionary.in_hook], [dictionary.out_hook], batch_size=batch_size, seed=cfg.seed, device=device,
            dtype=dtype, buffer_shards=buffer_shards)
    else:
        x_all, y_all = data
        if x_all.shape[0] != y_all.shape[0] or x_all.shape[0] < batch_size:
            raise ValueError(f"need at least batch_size={batch_size} paired rows, got {x_all.shape[0]} and "
                             f"{y_all.shape[0]}")
        x_all, y_all = x_all.to(dtype), y_all.to(dtype)
        x_mean, y_mean = x_all.mean(0), y_all.mean(0)
        variance = (y_all - y_mean).pow(2).sum(-1).mean()
        batches = (x_all, y_all)
    with torch.no_grad():  # start the biases at the data's means
        dictionary.b_dec.copy_(y_mean if cfg.kind == "transcoder" else x_mean)
        if dictionary.b_pre is not None:
            dictionary.b_pre.copy_(x_mean)

    def step_loss(x: torch.Tensor, y: torch.Tensor, mark_fired) -> torch.Tensor:
        pre = dictionary.pre_acts(x)
        f = dictionary.activate(pre, training=True)
        recon = dictionary.decode(f, x)
        loss = (recon - y).pow(2).sum(-1).mean() / variance
        if cfg.activation == "relu":
            loss = loss + l1 * (f * dictionary.W_dec.norm(dim=-1)).sum(-1).mean()
        dead = mark_fired((f > 0).any(0))
        if cfg.activation != "relu" and dead.any():
            residual = (y - recon).detach()
            dead_pre = torch.relu(pre).masked_fill(~dead, 0.0)
            top = dead_pre.topk(min(aux_k, int(dead.sum())), dim=-1)
            aux = torch.zeros_like(dead_pre).scatter(-1, top.indices, top.values) @ dictionary.W_dec
            loss = loss + aux_coeff * (aux - residual).pow(2).sum(-1).mean() / variance
        return loss

    return fit(dictionary, batches, step_loss, seed=cfg.seed, steps=steps, batch_size=batch_size, lr=lr,
               dead_after=dead_after, log_every=log_every, progress=progress,
               desc=f"training {cfg.kind} ({cfg.out_hook})")


def fit(dictionary: torch.nn.Module, data: Union[Pairs, Iterable[Pairs]], step_loss, *, seed: int, steps: int,
        batch_size: int, lr: float, dead_after: int, log_every: int, progress: bool, desc: str) -> TrainingRecord:
    """The training loop both dictionaries share: Adam on `step_loss(x, y, mark_fired)` over
    batches drawn from the (inputs, targets) buffer (a fresh shuffle each epoch, seeded), or taken
    in turn from an iterable of (inputs, targets) batches of `batch_size` rows (a stream from an
    activation store), decoder rows renormalised after every step. Batches are moved to the
    dictionary's device. `step_loss` calls `mark_fired(fired)` with which features fired in the
    batch (a bool tensor, [n_features] or [n_layers, n_features]) and gets back which are dead:
    none fired in the last `dead_after` training tokens."""
    opt = torch.optim.Adam(dictionary.parameters(), lr=lr)
    since_fired: Optional[torch.Tensor] = None
    record = TrainingRecord(steps)
    start = time.perf_counter()
    device = next(dictionary.parameters()).device
    if isinstance(data, tuple) and len(data) == 2 and all(isinstance(t, torch.Tensor) for t in data):
        x_all, y_all = data
        order = _batches(x_all.shape[0], batch_size, torch.Generator(device="cpu").manual_seed(seed))
        batches: Iterator[Pairs] = ((x_all[idx], y_all[idx]) for idx in order)
    else:
        batches = iter(data)

    def mark_fired(fired: torch.Tensor) -> torch.Tensor:
        nonlocal since_fired
        if since_fired is None:
            since_fired = torch.zeros(fired.shape, dtype=torch.long, device=fired.device)
        since_fired = torch.where(fired, torch.zeros_like(since_fired), since_fired + batch_size)
        return since_fired >= dead_after

    with torch.enable_grad():
        for step in progress_bar(range(steps), progress, desc=desc):
            try:
                x, y = next(batches)
            except StopIteration:
                raise ValueError(f"the batches ran out after {step} of {steps} steps") from None
            loss = step_loss(x.to(device), y.to(device), mark_fired)
            opt.zero_grad()
            loss.backward()
            opt.step()
            dictionary.normalise_decoder()
            record.losses.append(float(loss.detach()))
            if step % log_every == 0 or step == steps - 1:
                record.dead_fraction.append(float((since_fired >= dead_after).double().mean()))
    record.seconds = time.perf_counter() - start
    record.tokens = steps * batch_size
    return record


__all__ = ["activation_pairs", "train_dictionary", "TrainingRecord", "fit", "training_dtype", "store_stream", "store_moments",
           "check_store"]
