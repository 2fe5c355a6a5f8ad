"""A toy translation task for the encoder-decoder Transformer: reverse a sequence.

    python -m analyses.translate --out results/translate

Trains a small `models.encoder_decoder.EncoderDecoder` (2 + 2 layers, d_model
64, post-norm as in the paper) to map x_1 .. x_n to x_n .. x_1 (n = 5..8, 9
symbols, vocabulary of 12 with PAD, BOS and EOS), reports the exact-sequence
accuracy of greedy decoding on held-out sequences, and how often each
cross-attention head attends to the mirrored source position: the decoder
query that predicts x_{n-t} (query position t, input BOS or x_{n-t+1}) should
read source position n - 1 - t.

Writes OUT/cross_attention.png / .svg (every cross-attention head on one
held-out example), OUT/loss.png / .svg and OUT/translate.json (config,
training record, accuracy, mirror scores per head).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Optional, Sequence, Union

import torch

from analyses.common import (
    AnalysisResult, Outputs, add_batch_size_argument, add_out_argument, add_quiet_argument, main_for,
)
from interp.progress import progress_bar
from interp.names import act_name
from models.encoder_decoder import EncoderDecoder, EncoderDecoderConfig

PAD, BOS, EOS = 0, 1, 2
N_SYMBOLS = 9  # symbols are ids 3 .. 11
D_VOCAB = 3 + N_SYMBOLS
MIN_LEN, MAX_LEN = 5, 8


def reversal_data(n: int, gen: torch.Generator, exclude: Optional[set] = None,
                  min_len: int = MIN_LEN, max_len: int = MAX_LEN) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """n random sequences and their reversals.

    Returns src [n, max_len] (PAD after the sequence), src_mask [n, max_len]
    (True = real token) and tgt [n, max_len + 2] = BOS, reversed sequence, EOS,
    PADs. Sequences in `exclude` (a set of tuples) are left out (fewer rows).
    """
    lengths = torch.randint(min_len, max_len + 1, (n,), generator=gen)
    symbols = torch.randint(3, D_VOCAB, (n, max_len), generator=gen)
    src_mask = torch.arange(max_len)[None, :] < lengths[:, None]  # [n, max_len]
    src = symbols.masked_fill(~src_mask, PAD)
    tgt = torch.full((n, max_len + 2), PAD, dtype=torch.long)
    tgt[:, 0] = BOS
    for i, length in enumerate(lengths.tolist()):
        tgt[i, 1 : length + 1] = src[i, :length].flip(0)
        tgt[i, length + 1] = EOS
    if exclude:
        keep = torch.tensor([tuple(row[m].tolist()) not in exclude for row, m in zip(src, src_mask)])
        src, src_mask, tgt = src[keep], src_mask[keep], tgt[keep]
    return src, src_mask, tgt


def as_set(src: torch.Tensor, src_mask: torch.Tensor) -> set:
    return {tuple(row[m].tolist()) for row, m in zip(src, src_mask)}


def make_model(seed: int = 0, d_model: int = 64, n_heads: int = 4, n_layers: int = 2,
               norm_position: str = "post") -> EncoderDecoder:
    cfg = EncoderDecoderConfig(d_vocab_src=D_VOCAB, d_model=d_model, n_heads=n_heads, n_layers_enc=n_layers,
                               n_layers_dec=n_layers, n_ctx=MAX_LEN + 2, norm_position=norm_position, seed=seed)
    return EncoderDecoder(cfg)


def train(model: EncoderDecoder, steps: int = 600, batch_size: int = 64, lr: float = 2e-3, warmup: int = 50,
          seed: int = 0, exclude: Optional[set] = None, progress: bool = True) -> dict:
    """Adam with linear warm-up then linear decay to 0, fresh random batches each step (none in `exclude`).

    Returns the training record: losses per step and wall-clock seconds.
    """
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr, betas=(0.9, 0.98), eps=1e-9)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min((s + 1) / warmup, max(0.0, (steps - s) / max(1, steps - warmup))))
    model.train()
    losses = []
    start = time.perf_counter()
    for _ in progress_bar(range(steps), progress, desc="training"):
        src, src_mask, tgt = reversal_data(batch_size, gen, exclude)
        loss = model.loss(src, tgt, src_mask, pad_id=PAD)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        losses.append(loss.item())
    model.eval()
    return {"steps": steps, "batch_size": batch_size, "lr": lr, "warmup": warmup, "seed": seed,
            "seconds": time.perf_counter() - start, "losses": losses}


@torch.no_grad()
def greedy_accuracy(model: EncoderDecoder, src: torch.Tensor, src_mask: torch.Tensor, tgt: torch.Tensor) -> dict:
    """Exact-sequence and per-token accuracy of greedy decoding (up to and including EOS)."""
    out = model.generate(src, max_new_tokens=tgt.shape[1] - 1, bos_id=BOS, eos_id=EOS, src_mask=src_mask)
    pred = torch.full_like(tgt, EOS)
    pred[:, : out.shape[1]] = out
    real = tgt[:, 1:] != PAD  # the reversed symbols and EOS
    correct = (pred[:, 1:] == tgt[:, 1:]) | ~real
    return {"exact": correct.all(dim=1).float().mean().item(),
            "token": ((pred[:, 1:] == tgt[:, 1:]) & real).sum().item() / real.sum().item(),
            "n": int(src.shape[0])}


@torch.no_grad()
def mirror_scores(model: EncoderDecoder, src: torch.Tensor, src_mask: torch.Tensor, tgt: torch.Tensor) -> torch.Tensor:
    """[n_layers_dec, n_heads]: fraction of the queries that predict a symbol (position t < n)
    whose cross-attention peaks at the mirrored source position n - 1 - t."""
    names = [act_name("pattern", l, stack="decoder", attn="cross_attn") for l in range(model.cfg.n_layers_dec)]
    _, cache = model.run_with_cache(src, tgt[:, :-1], src_mask, names_filter=names)
    lengths = src_mask.sum(dim=1)  # [batch]
    t = torch.arange(tgt.shape[1] - 1)  # query positions
    mirror = lengths[:, None] - 1 - t[None, :]  # [batch, q_pos]
    valid = t[None, :] < lengths[:, None]  # [batch, q_pos]
    scores = []
    for name in names:
        peak = cache[name].argmax(dim=-1)  # [batch, head, q_pos]
        hit = (peak == mirror[:, None, :]) & valid[:, None, :]
        scores.append(hit.sum(dim=(0, 2)).float() / valid.sum())
    return torch.stack(scores)  # [layer, head]


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--steps", type=int, default=1000)
    add_batch_size_argument(p, 64, "training sequences")
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--n-test", type=int, default=1000, help="held-out sequences for the accuracy")
    p.add_argument("--norm-position", choices=["post", "pre"], default="post")
    add_quiet_argument(p)
    add_out_argument(p, "results/translate")


def translate(*, steps: int = 1000, batch_size: int = 64, lr: float = 2e-3, seed: int = 0, n_test: int = 1000,
              norm_position: str = "post", out: Optional[Union[str, Path]] = None,
              progress: bool = True) -> AnalysisResult:
    """Train the encoder-decoder to reverse sequences (see the module docstring; seeded, the global
    RNG untouched), measure greedy accuracy and the mirror score of every cross-attention head.
    `results` holds the trained model ("model") and the mirror scores [layer, head]."""
    test = reversal_data(n_test, torch.Generator().manual_seed(seed + 1))
    model = make_model(seed, norm_position=norm_position)
    record = train(model, steps, batch_size, lr, seed=seed, exclude=as_set(*test[:2]), progress=progress)
    accuracy = greedy_accuracy(model, *test)
    mirror = mirror_scores(model, *test)
    outputs = Outputs(out)
    src, tgt = _figures(model, test, mirror, record, outputs)
    report = {
        "task": f"reverse {MIN_LEN}..{MAX_LEN} symbols out of {N_SYMBOLS}", "config": model.cfg.to_dict(),
        "training": {k: v for k, v in record.items() if k != "losses"},
        "final_loss": sum(record["losses"][-20:]) / 20, "heldout_greedy_accuracy": accuracy,
        "mirror_scores": {"axes": ["layer", "head"], "values": mirror.tolist()},
        "example": {"src": src[0, :MAX_LEN].tolist(), "tgt": tgt[0].tolist()},
        "files": [str(p) for p in outputs.files],
    }
    path = outputs.json("translate.json", report)
    print(f"trained {steps} steps in {record['seconds']:.1f} s, final loss {report['final_loss']:.4f}")
    print(f"held-out greedy accuracy: exact sequence {accuracy['exact']:.1%}, token {accuracy['token']:.1%} "
          f"(n={accuracy['n']})")
    best = divmod(int(mirror.argmax()), model.cfg.n_heads)
    print(f"most mirror-like cross-attention head: L{best[0]}H{best[1]} ({mirror.max():.0%} of queries)")
    if path is not None:
        print(f"wrote {path} and {', '.join(report['files'])}")
    return AnalysisResult("translate", report, outputs.files, {"model": model, "mirror_scores": mirror})


def _figures(model: EncoderDecoder, test: tuple, mirror: torch.Tensor, record: dict, outputs: Outputs) -> tuple:
    """Cross-attention of every head on the first held-out example of full length, and the loss
    curve; returns that example's (src, tgt)."""
    from matplotlib.figure import Figure

    from interp import plot

    i = int((test[1].sum(dim=1) == MAX_LEN).nonzero()[0])
    src, src_mask, tgt = (x[i : i + 1] for x in test)
    if outputs.folder is None:
        return src, tgt
    names = [act_name("pattern", l, stack="decoder", attn="cross_attn") for l in range(model.cfg.n_layers_dec)]
    with torch.no_grad():
        _, cache = model.run_with_cache(src, tgt[:, :-1], src_mask, names_filter=names)
    patterns = torch.cat([cache[n][0] for n in names])  # [layer * head, tgt_pos, src_pos]
    titles = [f"cross L{l}H{h} (mirror {mirror[l, h]:.0%})" for l in range(model.cfg.n_layers_dec)
              for h in range(model.cfg.n_heads)]
    src_str = [str(int(t)) for t in src[0]]
    # attention_patterns labels queries with key tokens; relabel them with the decoder's inputs.
    fig = plot.attention_patterns(patterns[:, : MAX_LEN], tokens=src_str, titles=titles, ncols=model.cfg.n_heads)
    query_labels = ["BOS (0)"] + [f"{int(t)} ({p + 1})" for p, t in enumerate(tgt[0, 1:MAX_LEN])]
    for ax in fig.axes[: len(titles)]:
        ax.set_yticks(range(MAX_LEN), query_labels)
        ax.set_ylabel("decoder input (query)")
        ax.set_xlabel("source (key)")
    outputs.figure(fig, "cross_attention")

    fig = Figure(figsize=(6, 3.5), layout="constrained")
    ax = fig.add_subplot()
    ax.plot(record["losses"])
    ax.set_yscale("log")
    ax.set(xlabel="step", ylabel="cross-entropy", title="training loss (sequence reversal)")
    outputs.figure(fig, "loss")
    return src, tgt


def run(args: argparse.Namespace) -> int:
    return translate(steps=args.steps, batch_size=args.batch_size, lr=args.lr, seed=args.seed, n_test=args.n_test,
                     norm_position=args.norm_position, out=args.out, progress=not args.quiet).rc


def main(argv: Optional[Sequence[str]] = None) -> int:
    return main_for("analyses.translate", __doc__, add_arguments, run, argv)


if __name__ == "__main__":
    sys.exit(main())
