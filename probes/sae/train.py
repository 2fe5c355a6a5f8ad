"""Training a sparse dictionary on activations collected from a model, or on given pairs.

    record = train_dictionary(tc, activation_pairs(model, tc, texts), steps=3000)
    record.losses, record.dead_fraction, record.seconds

`activation_pairs` runs the model over the corpus once and keeps every real token's (input,
target) activations in memory (`max_tokens` bounds them); nothing is streamed. Training draws
its batches from that buffer, reshuffled every epoch. Loss: the mean squared reconstruction error divided by the target's variance, plus
  - "relu": an L1 penalty on f times the decoder row norms (`l1`);
  - "topk" / "batchtopk": an auxiliary-k loss (Gao et al. 2024) that lets the `aux_k` dead
    features with the largest pre-activations reconstruct the residual, so dead features
    come back (dead: no activation in the last `dead_after` training tokens).
Decoder rows are renormalised after every step. Deterministic given the seed.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Iterator, Optional, Sequence

import torch
from interp.progress import progress_bar
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


def _batches(n: int, batch_size: int, g: torch.Generator) -> Iterator[torch.Tensor]:
    while True:  # a fresh shuffle of the whole buffer each epoch
        order = torch.randperm(n, generator=g)
        for lo in range(0, n - batch_size + 1, batch_size):
            yield order[lo: lo + batch_size]


def train_dictionary(dictionary: SparseDictionary, data: tuple[torch.Tensor, torch.Tensor], *, steps: int = 2000,
                     batch_size: int = 1024, lr: float = 1e-3, l1: float = 1e-3, aux_k: int = 64,
                     aux_coeff: float = 1 / 32, dead_after: int = 20_000, log_every: int = 100,
                     progress: bool = True) -> TrainingRecord:
    """Fit `dictionary` to (inputs, targets) (see the module docstring); returns the record."""
    x_all, y_all = data
    if x_all.shape[0] != y_all.shape[0] or x_all.shape[0] < batch_size:
        raise ValueError(f"need at least batch_size={batch_size} paired rows, got {x_all.shape[0]} and {y_all.shape[0]}")
    cfg = dictionary.cfg
    dtype = dictionary.W_dec.dtype
    x_all, y_all = x_all.to(dtype), y_all.to(dtype)
    with torch.no_grad():  # start the biases at the data's means
        dictionary.b_dec.copy_(y_all.mean(0) if cfg.kind == "transcoder" else x_all.mean(0))
        if dictionary.b_pre is not None:
            dictionary.b_pre.copy_(x_all.mean(0))
    variance = (y_all - y_all.mean(0)).pow(2).sum(-1).mean()

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

    return fit(dictionary, (x_all, y_all), step_loss, seed=cfg.seed, steps=steps, batch_size=batch_size, lr=lr,
               dead_after=dead_after, log_every=log_every, progress=progress,
               desc=f"training {cfg.kind} ({cfg.out_hook})")


def fit(dictionary: torch.nn.Module, data: tuple[torch.Tensor, torch.Tensor], step_loss, *, seed: int, steps: int,
        batch_size: int, lr: float, dead_after: int, log_every: int, progress: bool, desc: str) -> TrainingRecord:
    """The training loop both dictionaries share: Adam on `step_loss(x, y, mark_fired)` over
    batches drawn from the (inputs, targets) buffer (a fresh shuffle each epoch, seeded), decoder
    rows renormalised after every step. `step_loss` calls `mark_fired(fired)` with which features
    fired in the batch (a bool tensor, [n_features] or [n_layers, n_features]) and gets back which
    are dead: none fired in the last `dead_after` training tokens."""
    x_all, y_all = data
    opt = torch.optim.Adam(dictionary.parameters(), lr=lr)
    since_fired: Optional[torch.Tensor] = None
    record = TrainingRecord(steps)
    start = time.perf_counter()
    batches = _batches(x_all.shape[0], batch_size, torch.Generator().manual_seed(seed))

    def mark_fired(fired: torch.Tensor) -> torch.Tensor:
        nonlocal since_fired
        since_fired = torch.zeros(fired.shape, dtype=torch.long) if since_fired is None else since_fired
        since_fired = torch.where(fired, torch.zeros_like(since_fired), since_fired + batch_size)
        return since_fired >= dead_after

    with torch.enable_grad():
        for step in progress_bar(range(steps), progress, desc=desc):
            idx = next(batches)
            loss = step_loss(x_all[idx], y_all[idx], mark_fired)
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


__all__ = ["activation_pairs", "train_dictionary", "TrainingRecord"]
