"""Causal tracing (Meng et al. 2022, ROME): corrupt the subject, restore clean states, watch the answer.

Where does a model keep "Michael Jordan -> basketball"? Corrupt the subject and
restore clean hidden states; the states whose restoration brings the answer back
are the ones that carry the fact.

    trace_with_patch(model, prompt, "Michael Jordan", "basketball",
                     states=[[("resid", 0, 2)], [("mlp", 0, 2), ("mlp", 1, 2)]])  # P(answer) per set of states
    trace(model, prompt, "Michael Jordan")     # TraceResult [layer, pos]: one state (or window) at a time

`trace_with_patch` is the primitive (ROME's `trace_with_patch(model, inp, states_to_patch)`):
any sets of clean states to restore, each set one row of `interp.engine.run_patched`.
`trace` is a short loop over it. Exactly what is computed (all probabilities are of the
answer token at the prompt's last position, after a softmax over the vocabulary):

- clean run: the prompt as it is -> ``clean_prob``.
- corrupted run: ``corruption="noise"`` adds Gaussian noise to the token embeddings
  (the output of ``hook_embed``) at the subject's positions only. The noise is drawn
  once as ``torch.randn(n_samples, n_subject_tokens, d_model,
  generator=torch.Generator().manual_seed(seed), dtype=model dtype)`` on the CPU and
  multiplied by ``noise * embedding_std(model)`` (the standard deviation of all entries
  of ``W_E``, times the embedding scale when ``cfg.scale_embeddings``: the spread of
  the embeddings as they enter the residual stream). Sample ``s`` is the same in every
  restoration, so a restored score and the corrupted score differ only by the
  restoration. ``corruption="replace"`` swaps the subject's tokens for those of
  ``replacement_subject`` (same number of tokens), one deterministic sample.
  ``corrupted_prob`` is the mean over samples.
- restored runs: the corrupted run with clean activations put back, and the mean over
  samples of the answer's probability. A state is (kind, layer, position): "resid"
  restores ``blocks.{L}.hook_resid_post``, "mlp" / "attn" restore
  ``blocks.{L}.hook_mlp_out`` / ``hook_attn_out``; or (hook name, position) for any hook.
  `trace`'s ``scores[L, p]`` restores "resid" at (L, p), or "mlp" / "attn" at position p
  for every layer in ``window_layers(L, window, n_layers)``: the layers
  ``max(0, L - window // 2) .. min(n_layers, L - window // 2 + window) - 1``, a window of
  ``window`` layers centred on ``L`` (for an even window one more layer below L than
  above), clipped at the model's first and last layer. ROME used window 10 on 48-layer
  GPT-2 XL; on a shallow model pass a small window (1-2) to see single layers.

Speed: the engine batches the restorations (rows = restorations x noise samples,
``batch_size`` per forward pass), resumes each from the cached corrupted residual
stream at its first restored layer and recomputes only the positions from the restored
one on.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Optional, Sequence, Union

import torch
from einops import repeat

from interp import names as hook_names
from interp.checks import resolve_layer, resolve_pos
from interp.engine import FromRun, Patch, run_patched
from interp.metrics import Probability
from interp.results import LabelledResult
from interp.tokens import answer_token, one_prompt, pos_labels, str_tokens, token_text
from models.transformer import Transformer
from probes.subjects import Prompt, Subject, encode, has_bos, resolve_span

Kind = Literal["resid", "mlp", "attn"]
Corruption = Literal["noise", "replace"]
Answer = Union[str, int, None]
State = Union[tuple[str, int, int], tuple[str, int]]  # (kind, layer, pos) or (hook name, pos)

KINDS = ("resid", "mlp", "attn")
KIND_ACTS = {"resid": "resid_post", "mlp": "mlp_out", "attn": "attn_out"}
CORRUPTIONS = ("noise", "replace")
DEFAULT_BATCH_SIZE = 256


def window_layers(layer: int, window: int, n_layers: int) -> list[int]:
    """The layers of a window of `window` layers centred on `layer`, clipped to [0, n_layers).

    ``range(max(0, layer - window // 2), min(n_layers, layer - window // 2 + window))``:
    window 1 -> [layer]; window 2 -> [layer - 1, layer]; window 3 -> [layer - 1 .. layer + 1].
    """
    if window < 1:
        raise ValueError(f"window must be >= 1, got {window}")
    layer = resolve_layer(layer, n_layers)
    lo = layer - window // 2
    return list(range(max(0, lo), min(n_layers, lo + window)))


def embedding_std(model: Transformer) -> float:
    """Standard deviation of the token embeddings as they enter the residual stream:
    std over all entries of W_E [d_vocab, d_model], times sqrt(d_model) if the model scales
    its embeddings (``cfg.scale_embeddings``)."""
    return float(model.embed.W_E.detach().double().std()) * float(model.embed.scale)


# ============================================================ the prompt, its subject and its answer
@dataclass
class Prepared:
    """A prompt read once: its tokens, the subject's span and the answer, with the clean run's probabilities."""

    tokens: torch.Tensor  # [pos]
    str_tokens: list[str]
    span: tuple[int, int]
    prefix: str  # "" or " ": how the subject's text was tokenised
    answer_id: int
    answer: str
    clean_probs: torch.Tensor  # [d_vocab] at the last position
    has_bos: bool
    subject: Optional[str] = None  # the subject's text, when given as text

    @property
    def clean_prob(self) -> float:
        return float(self.clean_probs[self.answer_id])

    @property
    def top_id(self) -> int:
        return int(self.clean_probs.argmax())


@torch.no_grad()
def prepare(model: Transformer, prompt: Prompt, subject: Subject, answer: Answer) -> Prepared:
    """Tokens, subject span and answer of a prompt (answer None: the clean top-1 prediction)."""
    tokens = one_prompt(model, prompt)
    start, end, prefix = resolve_span(model, tokens, subject)
    probs = model(tokens[None])[0, -1].softmax(-1)
    answer_id = int(probs.argmax()) if answer is None else answer_token(model, answer)
    text = answer if isinstance(answer, str) else token_text(model, answer_id)
    return Prepared(tokens, str_tokens(model, tokens), (start, end), prefix, answer_id, text, probs,
                    has_bos(model, prompt, tokens), subject if isinstance(subject, str) else None)


# ============================================================ the corrupted run
@dataclass
class Corrupted:
    """The corrupted base run: token ids [n_samples, pos] and the noise patch (if any)."""

    tokens: torch.Tensor
    patches: list[Patch]
    noise_std: Optional[float]

    @property
    def n_samples(self) -> int:
        return self.tokens.shape[0]


def corrupt(model: Transformer, prep: Prepared, corruption: str = "noise", noise: float = 3.0, n_samples: int = 10,
            seed: int = 0, replacement_subject: Union[str, Sequence[int], None] = None) -> Corrupted:
    """The corrupted run of a prepared prompt (see the module docstring)."""
    start, end = prep.span
    if corruption == "noise":
        if replacement_subject is not None:
            raise ValueError("replacement_subject is only used with corruption='replace'")
        if n_samples < 1:
            raise ValueError(f"n_samples must be >= 1, got {n_samples}")
        noise_std = noise * embedding_std(model)
        gen = torch.Generator(device="cpu").manual_seed(seed)  # the same noise on every device
        eps = torch.randn(n_samples, end - start, model.cfg.d_model, generator=gen, dtype=model.embed.W_E.dtype,
                          device="cpu")
        eps = eps.to(model.device) * noise_std  # [sample, subject pos, d_model]
        tokens = repeat(prep.tokens, "p -> s p", s=n_samples)
        return Corrupted(tokens, [Patch("hook_embed", (slice(start, end),), eps, op="add")], noise_std)
    if corruption == "replace":
        if replacement_subject is None:
            raise ValueError("corruption='replace' needs replacement_subject (a subject with as many tokens)")
        subject = prep.subject if prep.subject is not None else " ".join(prep.str_tokens[start:end])
        if isinstance(replacement_subject, str):
            new = encode(model, prep.prefix + replacement_subject, "replacement subject")
            name = repr(replacement_subject)
        else:
            new, name = [int(t) for t in replacement_subject], f"token ids {list(replacement_subject)}"
        if len(new) != end - start:
            raise ValueError(
                f"replacement subject {name} has {len(new)} tokens {[token_text(model, t) for t in new]} but the "
                f"subject {subject!r} has {end - start} tokens {prep.str_tokens[start:end]}: "
                "they must have the same number of tokens"
            )
        tokens = prep.tokens.clone()
        tokens[start:end] = torch.tensor(new, dtype=tokens.dtype, device=tokens.device)
        return Corrupted(tokens[None], [], None)
    raise ValueError(f"corruption must be one of {CORRUPTIONS}, got {corruption!r}")


def state_patch(model: Transformer, state: State, n_pos: Optional[int] = None) -> Patch:
    """The patch restoring one clean state: (kind, layer, pos) or (hook name, pos); layer and
    position (if `n_pos` is given) checked (IndexRangeError), negatives counted from the end."""
    if len(state) == 3:
        kind, layer, pos = state
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
        name = hook_names.act_name(KIND_ACTS[kind], resolve_layer(layer, model.cfg.n_layers))
    elif len(state) == 2:
        name, pos = state
    else:
        raise ValueError(f"a state is (kind, layer, pos) or (hook name, pos), got {state!r}")
    pos = pos if n_pos is None else resolve_pos(pos, n_pos, f"position of state {state!r}")
    return Patch(model.normalize_name(name), (pos,), FromRun("clean"))


def restore(model: Transformer, prep: Prepared, corrupted: Corrupted, states: Sequence[Sequence[State]], *,
            batch_size: int = DEFAULT_BATCH_SIZE, progress: bool = False):
    """The engine's output for restoring each set of clean states in the corrupted run:
    values [n_sets] (mean over samples of P(answer)), base_value (corrupted), base_logits."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    rows = [[state_patch(model, s, len(prep.tokens)) for s in group] for group in states]
    return run_patched(model, corrupted.tokens, rows, Probability(-1, torch.tensor([prep.answer_id], device=model.device)),
                       sources={"clean": prep.tokens[None]}, base_patches=corrupted.patches, batch_size=batch_size,
                       progress=progress, desc="causal trace")


def trace_with_patch(model: Transformer, prompt: Prompt, subject: Subject, answer: Answer = None, *,
                     states: Sequence[Sequence[State]], corruption: Corruption = "noise", noise: float = 3.0,
                     n_samples: int = 10, seed: int = 0, replacement_subject: Union[str, Sequence[int], None] = None,
                     batch_size: int = DEFAULT_BATCH_SIZE, progress: bool = False) -> torch.Tensor:
    """P(answer) [n_sets] with each set of clean states restored in the corrupted run (mean over
    noise samples). A state is (kind, layer, position) with kind "resid" / "mlp" / "attn", or
    (hook name, position); an empty set gives the corrupted probability."""
    prep = prepare(model, prompt, subject, answer)
    corrupted = corrupt(model, prep, corruption, noise, n_samples, seed, replacement_subject)
    return restore(model, prep, corrupted, states, batch_size=batch_size, progress=progress).values


# ============================================================ one state (or window) at a time
@dataclass
class TraceResult(LabelledResult):
    """Causal trace of one prompt.

    scores: [n_layers, n_pos] the answer's probability with the clean state restored
    at (layer, position), mean over noise samples. `values` is `scores`; axes
    ("layer", "pos"); baseline: the corrupted probability.
    restored_layers[L]: the layers restored for row L (one for "resid", a window else).
    """

    scores: torch.Tensor
    clean_prob: float
    corrupted_prob: float
    tokens: list[str]
    subject_span: tuple[int, int]
    kind: str
    answer: str
    window: int
    answer_id: int = -1
    corruption: str = "noise"
    noise_std: Optional[float] = None  # absolute std of the added noise ("noise" corruption)
    n_samples: int = 1
    replacement_subject: Optional[str] = None
    restored_layers: list[list[int]] = field(default_factory=list)
    corrupted_probs: list[float] = field(default_factory=list)  # per noise sample
    method: str = "causal tracing"
    axes: tuple[str, ...] = ("layer", "pos")

    @property
    def values(self) -> torch.Tensor:
        """= scores [n_layers, n_pos]."""
        return self.scores

    @property
    def labels(self) -> dict[str, list[str]]:
        return {"layer": [f"L{l}" for l in range(self.scores.shape[0])], "pos": pos_labels(self.tokens)}

    @property
    def baseline(self) -> float:
        return self.corrupted_prob

    @property
    def total_effect(self) -> float:
        """clean_prob - corrupted_prob."""
        return self.clean_prob - self.corrupted_prob

    @property
    def indirect_effect(self) -> torch.Tensor:
        """scores - corrupted_prob [n_layers, n_pos]: what restoring one state recovers."""
        return self.scores - self.corrupted_prob

    @property
    def metric_name(self) -> str:
        return f"P({self.answer})"

    @property
    def title(self) -> str:
        what = {"resid": "residual stream", "mlp": "MLP output", "attn": "attention output"}[self.kind]
        win = "" if self.kind == "resid" else f", window {self.window}"
        return f"causal trace: restoring {what}{win} ({self.corruption} on subject)"

    def _extra_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind, "window": self.window, "corruption": self.corruption, "noise_std": self.noise_std,
            "n_samples": self.n_samples, "replacement_subject": self.replacement_subject, "answer": self.answer,
            "answer_id": self.answer_id, "tokens": self.tokens, "subject_span": list(self.subject_span),
            "clean_prob": self.clean_prob, "corrupted_prob": self.corrupted_prob,
            "corrupted_probs": self.corrupted_probs, "total_effect": self.total_effect,
            "restored_layers": self.restored_layers, "indirect_effect": self.indirect_effect.tolist(),
        }


def check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")


def trace_prepared(model: Transformer, prep: Prepared, *, kind: str = "resid", noise: float = 3.0, n_samples: int = 10,
                   window: int = 10, corruption: str = "noise",
                   replacement_subject: Union[str, Sequence[int], None] = None, seed: int = 0,
                   batch_size: int = DEFAULT_BATCH_SIZE, progress: bool = False) -> TraceResult:
    """`trace` of an already prepared prompt: one set of states per (layer, position)."""
    check_kind(kind)
    n_layers, n_pos = model.cfg.n_layers, len(prep.tokens)
    if kind == "resid":
        window = 1
    restored = [window_layers(L, window, n_layers) for L in range(n_layers)]
    corrupted = corrupt(model, prep, corruption, noise, n_samples, seed, replacement_subject)
    states = [[(kind, l, p) for l in restored[L]] for L in range(n_layers) for p in range(n_pos)]
    out = restore(model, prep, corrupted, states, batch_size=batch_size, progress=progress)
    per_sample = out.base_logits.softmax(-1)[:, prep.answer_id]
    return TraceResult(
        scores=out.values.reshape(n_layers, n_pos).to(prep.clean_probs.dtype), clean_prob=prep.clean_prob,
        corrupted_prob=float(out.base_value), tokens=prep.str_tokens, subject_span=prep.span, kind=kind,
        answer=prep.answer, window=window, answer_id=prep.answer_id, corruption=corruption,
        noise_std=corrupted.noise_std, n_samples=corrupted.n_samples,
        replacement_subject=replacement_subject if isinstance(replacement_subject, str) or replacement_subject is None
        else str(list(replacement_subject)),
        restored_layers=restored, corrupted_probs=per_sample.tolist(),
    )


def trace(
    model: Transformer,
    prompt: Prompt,
    subject: Subject,
    answer: Answer = None,
    *,
    kind: Kind = "resid",
    noise: float = 3.0,
    n_samples: int = 10,
    window: int = 10,
    corruption: Corruption = "noise",
    replacement_subject: Union[str, Sequence[int], None] = None,
    seed: int = 0,
    batch_size: int = DEFAULT_BATCH_SIZE,
    progress: bool = True,
) -> TraceResult:
    """Causal trace of `prompt` (ROME): corrupt the subject, restore clean states one position at a time.

    prompt: text, or token ids [pos] (then `subject` must be a span).
    subject: its text (located with `subject_span`) or a span (start, end) of positions.
    answer: the word (single token; the answer-token policy of `interp.tokens.answer_token`)
        or token id whose probability at the last position is measured; default the clean
        top-1 prediction.
    kind: "resid" restores blocks.{L}.hook_resid_post; "mlp" / "attn" restore
        blocks.{l}.hook_mlp_out / hook_attn_out for l in window_layers(L, window, n_layers).
    noise: noise std in units of `embedding_std(model)` (ROME: 3).
    n_samples: noise samples (the probabilities are averaged); 1 for "replace".
    window: layers restored together for "mlp" / "attn" (ignored for "resid"; stored as 1).
    corruption: "noise" (Gaussian noise on the subject's embeddings) or "replace"
        (the subject's tokens swapped for `replacement_subject`'s, same token count).
    seed: seeds the noise (torch.Generator on the CPU).
    batch_size: rows (restorations x samples) per forward pass.

    Returns a TraceResult with scores [n_layers, n_pos]. See the module docstring for
    exactly what is computed.
    """
    check_kind(kind)
    if corruption not in CORRUPTIONS:
        raise ValueError(f"corruption must be one of {CORRUPTIONS}, got {corruption!r}")
    prep = prepare(model, prompt, subject, answer)
    return trace_prepared(model, prep, kind=kind, noise=noise, n_samples=n_samples, window=window,
                          corruption=corruption, replacement_subject=replacement_subject, seed=seed,
                          batch_size=batch_size, progress=progress)


__all__ = ["TraceResult", "trace", "trace_with_patch", "trace_prepared", "prepare", "corrupt", "restore",
           "Prepared", "Corrupted", "window_layers", "embedding_std", "KINDS", "CORRUPTIONS"]
