"""Train the fact-world model from scratch on CPU (deterministic given the seed).

    interp train-factworld --out DIR [--steps N] [--seed S]    # DIR new or empty
    interp train-factworld --force [--steps N]                  # replace the shipped checkpoint
    python -m models.factworld.train ...

Nothing is overwritten unless asked: `--out` must be a new or empty directory (or `--force`),
and without `--out` only `--force` writes the shipped checkpoint folder, which the README,
the tests and the results rely on. The checks run before training starts.

The architecture follows the key-value picture of the FFN: GPT-2's layout with a
ReLU MLP, so neuron n's key is W_in[:, n] (+ b_in[n]) and its value W_out[n, :],
and `models.to_hf` exports it to an HF GPT2LMHeadModel(activation_function="relu")
for cross-checks. The loss is plain next-token prediction over whole sentences.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional

import torch

from interp.progress import progress_bar
from models.checkpoint import check_empty_dir, check_not_shipped, save
from models.config import TransformerConfig
from models.factworld import checkpoint_dir
from models.factworld.corpus import build_tokenizer, encode_batch, training_sentences
from models.transformer import Transformer


@dataclass
class TrainConfig:
    n_layers: int = 4
    d_model: int = 128
    n_heads: int = 4
    d_mlp: int = 512
    n_ctx: int = 32
    steps: int = 1800
    batch_size: int = 256
    lr: float = 3e-3
    warmup: int = 100
    weight_decay: float = 0.01
    seed: int = 0
    eval_every: int = 0  # 0: only at the end

    @classmethod
    def tiny(cls, **overrides) -> "TrainConfig":
        """Seconds on a CPU, for tests."""
        kw = dict(n_layers=1, d_model=32, n_heads=2, d_mlp=64, steps=30, batch_size=32, warmup=5, lr=1e-2)
        kw.update(overrides)
        return cls(**kw)


def model_config(cfg: TrainConfig, d_vocab: int) -> TransformerConfig:
    return TransformerConfig(
        n_layers=cfg.n_layers, d_model=cfg.d_model, n_heads=cfg.n_heads, d_mlp=cfg.d_mlp, d_vocab=d_vocab,
        n_ctx=cfg.n_ctx, act_fn="relu", norm="layernorm", positional="learned", tie_embeddings=False,
        seed=cfg.seed,
    )


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Linear warm-up, then cosine decay to 10% of the peak."""
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    progress = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
    return cfg.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


@dataclass
class TrainResult:
    model: Transformer
    losses: list[float] = field(default_factory=list)
    seconds: float = 0.0


def train(cfg: TrainConfig, progress: bool = True) -> TrainResult:
    """Train a fact-world model from scratch. Deterministic given cfg.seed, which seeds the
    initialisation and the batches through local generators (torch's global RNG is not touched)."""
    tokenizer = build_tokenizer()
    sentences = training_sentences()
    model = Transformer(model_config(cfg, tokenizer.vocab_size), tokenizer=tokenizer).train()
    model.unembed.b_U.requires_grad_(False)  # GPT-2 has no unembedding bias: keep it 0 so to_hf can export
    decay = [p for n, p in model.named_parameters() if p.requires_grad and n.split(".")[-1].startswith("W_")]
    no_decay = [p for n, p in model.named_parameters() if p.requires_grad and not n.split(".")[-1].startswith("W_")]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr, betas=(0.9, 0.98))
    gen = torch.Generator().manual_seed(cfg.seed)
    result = TrainResult(model)
    t0 = time.perf_counter()
    bar = progress_bar(range(cfg.steps), progress, desc="training fact-world")
    for step in bar:
        idx = torch.randint(len(sentences), (cfg.batch_size,), generator=gen)
        tokens, mask = encode_batch(tokenizer, [sentences[i].text for i in idx.tolist()])
        for group in opt.param_groups:
            group["lr"] = lr_at(step, cfg)
        loss = model.loss(tokens, attention_mask=mask)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        result.losses.append(loss.item())
        if step % 20 == 0:
            bar.set_postfix(loss=f"{loss.item():.3f}")
    result.seconds = time.perf_counter() - t0
    model.eval()
    return result


def plot_losses(losses: list[float], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(losses, lw=0.8)
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("next-token loss (nats)")
    ax.set_title("fact-world training loss")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: Optional[list[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="interp train-factworld", description="Train the fact-world model on CPU.")
    add_arguments(p)
    return run(p.parse_args(argv))


def add_arguments(p: argparse.ArgumentParser) -> None:
    defaults = TrainConfig()
    p.add_argument("--out", type=Path, default=None,
                   help="checkpoint directory, new or empty (required unless --force)")
    p.add_argument("--force", action="store_true",
                   help=f"replace what is there; without --out, the shipped checkpoint {checkpoint_dir()}")
    for name, value in asdict(defaults).items():
        p.add_argument("--" + name.replace("_", "-"), type=type(value), default=value)
    p.add_argument("--quiet", action="store_true")


def output_dir(out: Optional[Path], force: bool = False) -> Path:
    """Where `interp train-factworld` writes: `out` if it is new or empty (or `force`); without
    `out`, the shipped checkpoint folder, only with `force`. A clear error otherwise."""
    if out is None:
        if not force:
            raise ValueError(f"give --out DIR (a new or empty directory) for the trained model, or --force to "
                             f"replace the shipped fact-world checkpoint {checkpoint_dir()}")
        return checkpoint_dir()
    if not force:
        check_not_shipped(out)
    return check_empty_dir(out, overwrite=force)


def run(args: argparse.Namespace) -> int:
    from models.factworld.evaluate import evaluate, format_report

    cfg = TrainConfig(**{k: getattr(args, k) for k in asdict(TrainConfig())})
    out = output_dir(args.out, args.force)  # before the training: nothing is lost to a refusal
    result = train(cfg, progress=not args.quiet)
    save(result.model, out, overwrite=args.force, allow_shipped=args.force)
    plot_losses(result.losses, out / "loss_curve.png")
    report = evaluate(result.model, progress=not args.quiet)
    print(format_report(report))
    record = {
        "command": "interp train-factworld " + " ".join(sys.argv[2:] if sys.argv[1:2] == ["train-factworld"] else sys.argv[1:]),
        "train_config": asdict(cfg),
        "seconds": round(result.seconds, 1),
        "final_loss": sum(result.losses[-50:]) / len(result.losses[-50:]),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "machine": platform.machine(),
        "evaluation": report,
    }
    (out / "training_record.json").write_text(json.dumps(record, indent=2) + "\n")
    print(f"trained in {result.seconds:.0f} s; wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
