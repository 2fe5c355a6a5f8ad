"""Causal tracing (Meng et al. 2022, ROME) and attention knockout (Geva et al. 2023).

Where does a model keep "Michael Jordan -> basketball"? Causal tracing corrupts the
subject and restores one clean hidden state at a time; the states whose restoration
brings the answer back are the ones that carry the fact. Attention knockout cuts
attention edges into the last position and watches the answer's probability.

    trace(model, "Michael Jordan plays the sport of", "Michael Jordan")   # TraceResult [layer, pos]
    average_trace(model, facts("sport"), templates("sport")[0])         # AverageTrace [layer, category]
    attention_knockout(model, prompt, "Michael Jordan", sources="subject")  # KnockoutResult [layer]
    attention_knockout_all(model, prompt, "Michael Jordan")             # [sources, layer]

Causal tracing, exactly what is computed (all probabilities are of the answer token
at the prompt's last position, after a softmax over the vocabulary):

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
- restored runs: the corrupted run with clean activations put back at one position
  ``p`` and ``scores[L, p]`` = the mean over samples of the answer's probability.
  ``kind="resid"`` restores ``blocks.{L}.hook_resid_post`` (one layer). ``kind="mlp"``
  / ``"attn"`` restore ``blocks.{l}.hook_mlp_out`` / ``blocks.{l}.hook_attn_out`` for
  every ``l`` in ``window_layers(L, window, n_layers)``: the layers
  ``max(0, L - window // 2) .. min(n_layers, L - window // 2 + window) - 1``, a window
  of ``window`` layers centred on ``L`` (for an even window one more layer below L than
  above), clipped at the model's first and last layer. With ``window >= 2 * n_layers``
  every ``L`` restores all layers; ROME used window 10 on 48-layer GPT-2 XL, on a
  shallow model pass a small window (1-2) to see single layers.

Speed: restorations are batched, rows = (restorations x noise samples), ``batch_size``
rows per forward pass. Nothing before the first restored layer changes, so each
restored run resumes from the cached corrupted residual stream: for ``"resid"`` at
layer L the patched ``resid_post`` is fed to ``model(resid, start_at_layer=L + 1)``
(for the last layer that is only ``ln_final`` + unembedding); for a window it resumes
at the window's first layer from the corrupted ``resid_pre`` there.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Literal, Optional, Sequence, Union

import torch
from einops import rearrange, repeat
from tqdm.auto import tqdm

from interp.report import pos_labels, str_tokens, write_json, one_prompt
from models.factworld import Fact
from models.transformer import Transformer

Kind = Literal["resid", "mlp", "attn"]
Corruption = Literal["noise", "replace"]
Prompt = Union[str, torch.Tensor]
Subject = Union[str, tuple[int, int]]
Answer = Union[str, int, None]
SourceSpec = Union[str, Sequence[int]]

KINDS = ("resid", "mlp", "attn")
CORRUPTIONS = ("noise", "replace")
SOURCE_SETS = ("subject", "relation", "last")
CATEGORIES = (
    "first subject token", "middle subject tokens", "last subject token",
    "first subsequent token", "further tokens", "last token",
)
DEFAULT_BATCH_SIZE = 256
KNOCKOUT_WINDOW = 9  # Geva et al. 2023 (GPT-2 XL); clipped to the model's depth


# ============================================================ helpers: subject, answer, windows
def window_layers(layer: int, window: int, n_layers: int) -> list[int]:
    """The layers of a window of `window` layers centred on `layer`, clipped to [0, n_layers).

    ``range(max(0, layer - window // 2), min(n_layers, layer - window // 2 + window))``:
    window 1 -> [layer]; window 2 -> [layer - 1, layer]; window 3 -> [layer - 1 .. layer + 1].
    """
    if window < 1:
        raise ValueError(f"window must be >= 1, got {window}")
    if not 0 <= layer < n_layers:
        raise ValueError(f"layer {layer} out of range for a model with {n_layers} layers")
    lo = layer - window // 2
    return list(range(max(0, lo), min(n_layers, lo + window)))


def embedding_std(model: Transformer) -> float:
    """Standard deviation of the token embeddings as they enter the residual stream:
    std over all entries of W_E [d_vocab, d_model], times sqrt(d_model) if the model scales
    its embeddings (``cfg.scale_embeddings``)."""
    return float(model.embed.W_E.detach().double().std()) * float(model.embed.scale)


def _has_bos(model: Transformer, prompt: Prompt, tokens: torch.Tensor) -> bool:
    """Whether position 0 is a BOS token the model prepended (not part of the text)."""
    if isinstance(prompt, str):
        return bool(model.default_prepend_bos)
    tok = model.tokenizer
    bos = None if tok is None else (tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id)
    return bos is not None and len(tokens) > 0 and int(tokens[0]) == bos


def _encode(model: Transformer, text: str, what: str) -> list[int]:
    if model.tokenizer is None:
        raise ValueError(f"the model has no tokenizer: give the {what} as token positions / ids, not text {text!r}")
    try:
        return list(model.tokenizer.encode(text))
    except ValueError as e:  # e.g. UnknownWordError
        raise ValueError(f"cannot tokenise the {what} {text!r}: {e}") from e


def _show(model: Transformer, ids: Sequence[int]) -> list[str]:
    return [model.tokenizer.token_str(int(i)) if model.tokenizer is not None else str(int(i)) for i in ids]


def _occurrences(haystack: Sequence[int], needle: Sequence[int]) -> list[int]:
    n = len(needle)
    return [i for i in range(len(haystack) - n + 1) if list(haystack[i:i + n]) == list(needle)]


def _find_subject(model: Transformer, tokens: torch.Tensor, subject: str) -> tuple[int, int, str]:
    """(start, end, prefix): the subject's token span [start, end) and the text prefix
    ("" or " ") whose tokenisation matched (BPE tokens depend on a leading space)."""
    ids = [int(t) for t in tokens]
    found: dict[tuple[int, int], str] = {}
    variants = [""] if subject.startswith(" ") else ["", " "]
    sub_ids: dict[str, list[int]] = {}
    for prefix in variants:
        try:
            sub = _encode(model, prefix + subject, "subject")
        except ValueError:
            if prefix:
                continue
            raise
        sub_ids[prefix] = sub
        if not sub:
            continue
        for i in _occurrences(ids, sub):
            found.setdefault((i, i + len(sub)), prefix)
    str_toks = str_tokens(model, tokens)
    if not found:
        shown = {repr(p + subject): [model.tokenizer.token_str(t) for t in s] for p, s in sub_ids.items()}
        raise ValueError(
            f"subject {subject!r} not found in the prompt: its tokens "
            f"{' or '.join(f'{k} -> {v}' for k, v in shown.items())} do not occur in the prompt's tokens {str_toks}"
        )
    if len(found) > 1:
        where = ", ".join(f"[{a}, {b}) {str_toks[a:b]}" for a, b in sorted(found))
        raise ValueError(
            f"subject {subject!r} occurs {len(found)} times in the prompt's tokens {str_toks}: at positions {where}; "
            "causal tracing needs exactly one occurrence (or pass the span (start, end) instead of the text)"
        )
    (start, end), prefix = next(iter(found.items()))
    return start, end, prefix


def subject_span(model: Transformer, prompt: str, subject: str) -> tuple[int, int]:
    """Token positions [start, end) of `subject` in the model's tokens of `prompt`.

    Positions index the model's token sequence [pos] (including the BOS token the
    model prepends by default). The subject is tokenised without BOS and searched as
    a subsequence; for BPE tokenizers " " + subject is tried too. ValueError naming the
    subject and the prompt's tokens if it is not found or found more than once.
    """
    start, end, _ = _find_subject(model, one_prompt(model, prompt), subject)
    return start, end


def last_subject_pos(model: Transformer, prompt: str, subject: str) -> int:
    """Position of the subject's last token (``subject_span(...)[1] - 1``)."""
    return subject_span(model, prompt, subject)[1] - 1


def _answer_id(model: Transformer, answer: Answer, clean_logits: torch.Tensor) -> tuple[int, str]:
    """(token id, text) of the answer; None -> the clean top-1 prediction.

    A string is looked up as " " + answer first (the next word after a prompt usually
    carries a leading space in BPE vocabularies; a word tokenizer ignores it), then as is.
    """
    if answer is None:
        idx = int(clean_logits.argmax())
        return idx, model.tokenizer.token_str(idx) if model.tokenizer is not None else str(idx)
    if isinstance(answer, int):
        if not 0 <= answer < model.cfg.d_vocab:
            raise ValueError(f"answer token id {answer} is outside the vocabulary [0, {model.cfg.d_vocab})")
        return answer, model.tokenizer.token_str(answer) if model.tokenizer is not None else str(answer)
    if model.tokenizer is None:
        raise ValueError(f"the model has no tokenizer: give the answer {answer!r} as a token id")
    errors = []
    for text in ([" " + answer] if not answer.startswith(" ") else []) + [answer]:
        try:
            return model.to_single_token(text), answer
        except ValueError as e:
            errors.append(str(e))
    raise ValueError(f"answer {answer!r} must be a single token: {errors[-1]}")


@dataclass
class _Prepared:
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
def _prepare(model: Transformer, prompt: Prompt, subject: Subject, answer: Answer) -> _Prepared:
    tokens = one_prompt(model, prompt)
    if isinstance(subject, str):
        start, end, prefix = _find_subject(model, tokens, subject)
    else:
        start, end = (int(x) for x in subject)
        prefix = ""
        if not 0 <= start < end <= len(tokens):
            raise ValueError(f"subject span {(start, end)} is not a non-empty range within the prompt's {len(tokens)} tokens")
    logits = model(tokens[None])[0, -1]
    probs = logits.softmax(-1)
    answer_id, answer_text = _answer_id(model, answer, logits)
    return _Prepared(tokens, str_tokens(model, tokens), (start, end), prefix, answer_id, answer_text, probs,
                     _has_bos(model, prompt, tokens), subject if isinstance(subject, str) else None)


@dataclass
class TraceResult:
    """Causal trace of one prompt.

    scores: [n_layers, n_pos] the answer's probability with the clean state restored
    at (layer, position), mean over noise samples. `values` is `scores`; axes
    ("layer", "pos"); labels {"layer": ["L0", ...], "pos": ["tok (i)", ...]}.
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

    axes: tuple[str, ...] = ("layer", "pos")

    @property
    def values(self) -> torch.Tensor:
        """= scores [n_layers, n_pos]."""
        return self.scores

    @property
    def labels(self) -> dict[str, list[str]]:
        return {"layer": [f"L{l}" for l in range(self.scores.shape[0])], "pos": pos_labels(self.tokens)}

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

    def to_dict(self) -> dict:
        return {
            "method": "causal tracing", "kind": self.kind, "window": self.window, "corruption": self.corruption,
            "noise_std": self.noise_std, "n_samples": self.n_samples, "replacement_subject": self.replacement_subject,
            "answer": self.answer, "answer_id": self.answer_id, "tokens": self.tokens,
            "subject_span": list(self.subject_span), "clean_prob": self.clean_prob,
            "corrupted_prob": self.corrupted_prob, "corrupted_probs": self.corrupted_probs,
            "total_effect": self.total_effect, "axes": list(self.axes), "labels": self.labels,
            "restored_layers": self.restored_layers, "values": self.scores.tolist(),
            "indirect_effect": self.indirect_effect.tolist(),
        }

    def save_json(self, path: Union[str, Path]) -> Path:
        return write_json(path, self.to_dict())


def _check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")


def _corrupted_run(
    model: Transformer, prep: _Prepared, corruption: str, noise: float, n_samples: int, seed: int,
    replacement_subject: Union[str, Sequence[int], None], cache_names: list[str],
) -> tuple[torch.Tensor, dict[str, torch.Tensor], Optional[float], int]:
    """Run the corrupted prompt(s) once. Returns (probs of the answer [n_samples],
    cache {name: [n_samples, pos, d_model]}, noise std, n_samples)."""
    start, end = prep.span
    tokens = prep.tokens
    hooks = []
    noise_std = None
    if corruption == "noise":
        if replacement_subject is not None:
            raise ValueError("replacement_subject is only used with corruption='replace'")
        if n_samples < 1:
            raise ValueError(f"n_samples must be >= 1, got {n_samples}")
        noise_std = noise * embedding_std(model)
        gen = torch.Generator().manual_seed(seed)
        eps = torch.randn(n_samples, end - start, model.cfg.d_model, generator=gen, dtype=model.embed.W_E.dtype)
        eps = eps.to(model.device) * noise_std  # [sample, subject pos, d_model]

        def add_noise(x: torch.Tensor, hook: Any) -> torch.Tensor:
            x = x.clone()  # [sample, pos, d_model]
            x[:, start:end] = x[:, start:end] + eps
            return x

        hooks.append(("hook_embed", add_noise))
        batch = repeat(tokens, "p -> s p", s=n_samples)
    elif corruption == "replace":
        if replacement_subject is None:
            raise ValueError("corruption='replace' needs replacement_subject (a subject with as many tokens)")
        prep_subject = (prep.subject if prep.subject is not None else " ".join(prep.str_tokens[start:end]))
        if isinstance(replacement_subject, str):
            new = _encode(model, prep.prefix + replacement_subject, "replacement subject")
            name = repr(replacement_subject)
        else:
            new, name = [int(t) for t in replacement_subject], f"token ids {list(replacement_subject)}"
        if len(new) != end - start:
            raise ValueError(
                f"replacement subject {name} has {len(new)} tokens {_show(model, new)} but the subject "
                f"{prep_subject!r} has {end - start} tokens {prep.str_tokens[start:end]}: "
                "they must have the same number of tokens"
            )
        n_samples = 1
        batch = tokens.clone()
        batch[start:end] = torch.tensor(new, dtype=tokens.dtype, device=tokens.device)
        batch = batch[None]
    else:
        raise ValueError(f"corruption must be one of {CORRUPTIONS}, got {corruption!r}")
    with model.hooks(fwd=hooks):
        logits, cache = model.run_with_cache(batch, names_filter=cache_names)
    probs = logits[:, -1].softmax(-1)[:, prep.answer_id]
    return probs, {n: cache[n] for n in cache_names}, noise_std, n_samples


@torch.no_grad()
def _trace_prepared(
    model: Transformer, prep: _Prepared, *, kind: str, noise: float, n_samples: int, window: int,
    corruption: str, replacement_subject: Union[str, Sequence[int], None], seed: int, batch_size: int,
    progress: bool,
) -> TraceResult:
    _check_kind(kind)
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    n_layers, n_pos = model.cfg.n_layers, len(prep.tokens)
    if kind == "resid":
        window = 1
    restored = [window_layers(L, window, n_layers) for L in range(n_layers)]

    # Clean activations to restore, [layer, pos, d_model].
    site = {"resid": "hook_resid_post", "mlp": "hook_mlp_out", "attn": "hook_attn_out"}[kind]
    clean_names = [f"blocks.{l}.{site}" for l in range(n_layers)]
    _, clean_cache = model.run_with_cache(prep.tokens[None], names_filter=clean_names)
    clean_acts = torch.stack([clean_cache[n][0] for n in clean_names])

    # Corrupted run, caching where the restored runs resume: resid_post (resid) or resid_pre (windows).
    starts = sorted({ls[0] for ls in restored})
    corr_names = clean_names if kind == "resid" else [f"blocks.{l}.hook_resid_pre" for l in starts]
    corr_probs, corr_cache, noise_std, n_samples = _corrupted_run(
        model, prep, corruption, noise, n_samples, seed, replacement_subject, corr_names)

    # Rows = (layer, pos, sample), in that order; each row resumes at its start layer.
    grid = torch.meshgrid(torch.arange(n_layers), torch.arange(n_pos), torch.arange(n_samples), indexing="ij")
    row_layer, row_pos, row_sample = (rearrange(g, "l p s -> (l p s)") for g in grid)
    row_start = torch.tensor([L + 1 if kind == "resid" else restored[L][0] for L in range(n_layers)])[row_layer]
    row_stop = torch.tensor([restored[L][-1] + 1 for L in range(n_layers)])[row_layer]  # window end (exclusive)
    out = torch.empty(len(row_layer), dtype=clean_acts.dtype)

    bar = tqdm(total=len(row_layer), desc=f"causal trace ({kind})", disable=not progress, leave=False)
    try:
        for start in row_start.unique().tolist():
            group = (row_start == start).nonzero()[:, 0]
            for chunk in group.split(batch_size):
                p_, s_ = row_pos[chunk], row_sample[chunk]
                rows = torch.arange(len(chunk), device=model.device)
                dev_p = p_.to(model.device)
                if kind == "resid":
                    # The input of block `start` is resid_post of layer start - 1: restore it at p.
                    corr = corr_cache[f"blocks.{start - 1}.hook_resid_post"]  # [sample, pos, d_model]
                    resid = corr[s_.to(model.device)].clone()  # [row, pos, d_model]
                    resid[rows, dev_p] = clean_acts[start - 1, dev_p]
                    logits = model(resid, start_at_layer=start)
                else:
                    resid = corr_cache[f"blocks.{start}.hook_resid_pre"][s_.to(model.device)]
                    hooks = []
                    for l in range(start, n_layers):
                        sel = (row_stop[chunk] > l).nonzero()[:, 0]  # rows whose window holds layer l
                        if len(sel):
                            hooks.append((f"blocks.{l}.{site}", _restore_hook(clean_acts[l], sel, p_[sel])))
                    with model.hooks(fwd=hooks):
                        logits = model(resid, start_at_layer=start)
                out[chunk] = logits[:, -1].softmax(-1)[:, prep.answer_id].to(out.device)
                bar.update(len(chunk))
    finally:
        bar.close()

    scores = rearrange(out, "(l p s) -> l p s", l=n_layers, p=n_pos).mean(-1)
    return TraceResult(
        scores=scores, clean_prob=prep.clean_prob, corrupted_prob=float(corr_probs.mean()),
        tokens=prep.str_tokens, subject_span=prep.span, kind=kind, answer=prep.answer, window=window,
        answer_id=prep.answer_id, corruption=corruption, noise_std=noise_std, n_samples=n_samples,
        replacement_subject=replacement_subject if isinstance(replacement_subject, str) or replacement_subject is None
        else str(list(replacement_subject)),
        restored_layers=restored, corrupted_probs=corr_probs.tolist(),
    )


def _restore_hook(clean: torch.Tensor, rows: torch.Tensor, pos: torch.Tensor) -> Callable:
    """Hook putting clean[pos[i]] ([pos, d_model]) back at (rows[i], pos[i]) of a [row, pos, d_model] activation."""
    rows, pos = rows.to(clean.device), pos.to(clean.device)

    def restore(x: torch.Tensor, hook: Any) -> torch.Tensor:
        x = x.clone()
        x[rows, pos] = clean[pos]
        return x

    return restore


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
    answer: the word (single token; " " + word is tried first) or token id whose
        probability at the last position is measured; default the clean top-1 prediction.
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
    _check_kind(kind)
    if corruption not in CORRUPTIONS:
        raise ValueError(f"corruption must be one of {CORRUPTIONS}, got {corruption!r}")
    prep = _prepare(model, prompt, subject, answer)
    return _trace_prepared(
        model, prep, kind=kind, noise=noise, n_samples=n_samples, window=window, corruption=corruption,
        replacement_subject=replacement_subject, seed=seed, batch_size=batch_size, progress=progress,
    )


# ============================================================ average over facts
def position_categories(n_pos: int, span: tuple[int, int]) -> dict[str, list[int]]:
    """ROME's position categories for a prompt of n_pos tokens with the subject at [start, end).

    first subject token: [start]; middle subject tokens: start+1 .. end-2 (empty for
    subjects of 1 or 2 tokens); last subject token: [end-1] (the same as the first for a
    one-token subject); first subsequent token: [end] unless that is the last token;
    further tokens: end+1 .. n_pos-2; last token: [n_pos-1] (always, also when the prompt
    ends with the subject). Tokens before the subject (BOS, openers) belong to no category.
    """
    start, end = span
    last = n_pos - 1
    return {
        "first subject token": [start],
        "middle subject tokens": list(range(start + 1, end - 1)),
        "last subject token": [end - 1],
        "first subsequent token": [end] if end < last else [],
        "further tokens": list(range(end + 1, last)),
        "last token": [last],
    }


@dataclass
class AverageTrace:
    """Causal tracing averaged over facts, positions grouped into ROME's categories.

    indirect_effect: [n_layers, n_categories] mean over facts of (score - corrupted prob),
    positions within a category averaged first; NaN where no fact has that category
    (e.g. "middle subject tokens" with two-token subjects). `values` is indirect_effect;
    axes ("layer", "category").
    counts: facts contributing to each category. total_effect, clean_prob, corrupted_prob:
    means over the facts used. n_skipped: facts left out because the clean model's top-1
    was not the answer (only_correct=True); skipped lists them as (prompt, answer, top-1).
    """

    indirect_effect: torch.Tensor
    categories: list[str]
    counts: list[int]
    total_effect: float
    clean_prob: float
    corrupted_prob: float
    n_facts: int
    n_skipped: int
    kind: str
    window: int
    skipped: list[tuple[str, str, str]] = field(default_factory=list)
    traces: list[TraceResult] = field(default_factory=list, repr=False)

    axes: tuple[str, ...] = ("layer", "category")

    @property
    def values(self) -> torch.Tensor:
        return self.indirect_effect

    @property
    def labels(self) -> dict[str, list[str]]:
        return {"layer": [f"L{l}" for l in range(self.indirect_effect.shape[0])], "category": list(self.categories)}

    @property
    def metric_name(self) -> str:
        return "average indirect effect"

    @property
    def title(self) -> str:
        win = "" if self.kind == "resid" else f", window {self.window}"
        return f"average causal trace ({self.kind}{win}) over {self.n_facts} facts"

    def to_dict(self) -> dict:
        return {
            "method": "average causal tracing", "kind": self.kind, "window": self.window, "axes": list(self.axes),
            "labels": self.labels, "values": self.indirect_effect.tolist(), "counts": self.counts,
            "total_effect": self.total_effect, "clean_prob": self.clean_prob, "corrupted_prob": self.corrupted_prob,
            "n_facts": self.n_facts, "n_skipped": self.n_skipped, "skipped": [list(s) for s in self.skipped],
        }

    def save_json(self, path: Union[str, Path]) -> Path:
        return write_json(path, self.to_dict())


def _as_triples(facts: Sequence[Any], template: Optional[str]) -> list[tuple[Prompt, Subject, Answer]]:
    out = []
    for f in facts:
        if isinstance(f, Fact):
            if template is None:
                raise ValueError("facts given as Fact need a template such as '{subject} plays the sport of'")
            out.append((template.format(subject=f.subject), f.subject, f.object))
        else:
            if template is not None:
                raise ValueError("give either (prompt, subject, answer) triples or Facts with a template, not both")
            prompt, subject, answer = f
            out.append((prompt, subject, answer))
    return out


def average_trace(
    model: Transformer,
    facts: Sequence[Union[tuple[Prompt, Subject, Answer], Fact]],
    template: Optional[str] = None,
    *,
    kind: Kind = "resid",
    noise: float = 3.0,
    n_samples: int = 10,
    window: int = 10,
    seed: int = 0,
    only_correct: bool = True,
    batch_size: int = DEFAULT_BATCH_SIZE,
    progress: bool = True,
) -> AverageTrace:
    """Average indirect effect of restoring states over many facts (ROME's figure 2 / 3).

    facts: (prompt, subject, answer) triples, or `Fact`s with a `template` holding
        "{subject}" (answer = fact.object).
    Each fact is traced with Gaussian noise (seed + its index) as in `trace`; its
    indirect effect [n_layers, n_pos] is summarised per `position_categories` (mean over
    the positions of a category), then averaged over facts -> [n_layers, 6].
    only_correct: skip facts whose clean top-1 prediction is not the answer.
    """
    _check_kind(kind)
    triples = _as_triples(facts, template)
    n_layers = model.cfg.n_layers
    sums = torch.zeros(n_layers, len(CATEGORIES), dtype=torch.float64)
    counts = [0] * len(CATEGORIES)
    traces: list[TraceResult] = []
    skipped: list[tuple[str, str, str]] = []
    for i, (prompt, subject, answer) in enumerate(tqdm(triples, desc=f"average trace ({kind})", disable=not progress)):
        prep = _prepare(model, prompt, subject, answer)
        if only_correct and prep.top_id != prep.answer_id:
            top = model.tokenizer.token_str(prep.top_id) if model.tokenizer is not None else str(prep.top_id)
            skipped.append((prompt if isinstance(prompt, str) else str(prep.str_tokens), prep.answer, top))
            continue
        result = _trace_prepared(
            model, prep, kind=kind, noise=noise, n_samples=n_samples, window=window, corruption="noise",
            replacement_subject=None, seed=seed + i, batch_size=batch_size, progress=False,
        )
        traces.append(result)
        ie = result.indirect_effect.double()
        for c, positions in enumerate(position_categories(len(result.tokens), result.subject_span).values()):
            if positions:
                sums[:, c] += ie[:, positions].mean(-1)
                counts[c] += 1
    denom = torch.tensor([n if n else float("nan") for n in counts], dtype=torch.float64)
    mean = lambda xs: float(sum(xs) / len(xs)) if xs else float("nan")  # noqa: E731
    return AverageTrace(
        indirect_effect=(sums / denom).float(), categories=list(CATEGORIES), counts=counts,
        total_effect=mean([t.total_effect for t in traces]), clean_prob=mean([t.clean_prob for t in traces]),
        corrupted_prob=mean([t.corrupted_prob for t in traces]), n_facts=len(traces), n_skipped=len(skipped),
        kind=kind, window=1 if kind == "resid" else window, skipped=skipped, traces=traces,
    )


# ============================================================ attention knockout
@dataclass
class KnockoutResult:
    """Attention knockout (Geva et al. 2023): the answer's probability when the attention
    edges from source positions to the target position are cut in a window of layers.

    probs: [n_layers] (one source set) or [n_sources, n_layers]: P(answer) with the
    knockout in blocked_layers[L] for column L. `values` is the relative change
    (probs - clean_prob) / clean_prob x 100 %; axes ("layer",) or ("sources", "layer").
    """

    probs: torch.Tensor
    clean_prob: float
    tokens: list[str]
    subject_span: tuple[int, int]
    answer: str
    target_pos: int
    window: int
    sources: list[str]
    source_positions: list[list[int]]
    blocked_layers: list[list[int]]
    answer_id: int = -1

    @property
    def relative_change(self) -> torch.Tensor:
        """(p_knockout - p_clean) / p_clean x 100 (percent), same shape as probs."""
        return (self.probs - self.clean_prob) / self.clean_prob * 100.0

    @property
    def values(self) -> torch.Tensor:
        return self.relative_change

    @property
    def axes(self) -> tuple[str, ...]:
        return ("layer",) if self.probs.dim() == 1 else ("sources", "layer")

    @property
    def labels(self) -> dict[str, list[str]]:
        out = {"layer": [f"L{l}" for l in range(self.probs.shape[-1])]}
        if self.probs.dim() == 2:
            out["sources"] = list(self.sources)
        return out

    @property
    def metric_name(self) -> str:
        return f"% change of P({self.answer})"

    @property
    def title(self) -> str:
        return f"attention knockout into {self.tokens[self.target_pos]!r} ({self.target_pos}), window {self.window}"

    def to_dict(self) -> dict:
        return {
            "method": "attention knockout", "answer": self.answer, "answer_id": self.answer_id, "tokens": self.tokens,
            "subject_span": list(self.subject_span), "target_pos": self.target_pos, "window": self.window,
            "sources": self.sources, "source_positions": self.source_positions,
            "blocked_layers": self.blocked_layers, "clean_prob": self.clean_prob, "axes": list(self.axes),
            "labels": self.labels, "probs": self.probs.tolist(), "values": self.relative_change.tolist(),
        }

    def save_json(self, path: Union[str, Path]) -> Path:
        return write_json(path, self.to_dict())


def _source_positions(prep: _Prepared, sources: SourceSpec, target: int) -> tuple[str, list[int]]:
    """(name, key positions) of a source set; only positions <= target matter (causal mask)."""
    start, end = prep.span
    n_pos = len(prep.tokens)
    if isinstance(sources, str):
        if sources == "subject":
            return sources, [p for p in range(start, end) if p <= target]
        if sources == "relation":
            first = 1 if prep.has_bos else 0
            return sources, [p for p in range(first, target) if not start <= p < end]
        if sources == "last":
            return sources, [target]
        raise ValueError(f"sources must be one of {SOURCE_SETS} or a list of positions, got {sources!r}")
    positions = []
    for p in sources:
        p = int(p)
        if not -n_pos <= p < n_pos:
            raise ValueError(f"source position {p} out of range for a prompt of {n_pos} tokens")
        positions.append(p % n_pos)
    positions = sorted(set(positions))
    return f"positions {positions}", positions


@torch.no_grad()
def _knockout(
    model: Transformer, prep: _Prepared, source_sets: Sequence[SourceSpec], window: Optional[int], target_pos: int,
    batch_size: int, progress: bool,
) -> KnockoutResult:
    n_layers, n_pos = model.cfg.n_layers, len(prep.tokens)
    if not -n_pos <= target_pos < n_pos:
        raise ValueError(f"target_pos {target_pos} out of range for a prompt of {n_pos} tokens")
    target = target_pos % n_pos
    window = min(KNOCKOUT_WINDOW, n_layers) if window is None else window
    blocked_layers = [window_layers(L, window, n_layers) for L in range(n_layers)]
    named = [_source_positions(prep, s, target) for s in source_sets]

    # blocked[row, layer, key]: cut the edge key -> target in that layer; rows = (source set, L).
    n_rows = len(named) * n_layers
    blocked = torch.zeros(len(named), n_layers, n_layers, n_pos, dtype=torch.bool)
    for i, (_, positions) in enumerate(named):
        for L, layers in enumerate(blocked_layers):
            for l in layers:
                blocked[i, L, l, positions] = True
    blocked = rearrange(blocked, "set L l k -> (set L) l k").to(model.device)
    # in_window[row, layer]: the layer is in the row's window (hooked even if nothing is cut there,
    # so an empty source set runs the same explicit attention path as a non-empty one).
    in_window = torch.zeros(n_layers, n_layers, dtype=torch.bool)
    for L, layers in enumerate(blocked_layers):
        in_window[L, layers] = True
    in_window = repeat(in_window, "L l -> (set L) l", set=len(named)).to(model.device)
    probs = torch.empty(n_rows, dtype=prep.clean_probs.dtype)

    for chunk in tqdm(torch.arange(n_rows).split(batch_size), desc="attention knockout", disable=not progress,
                      leave=False):
        rows = chunk.to(model.device)
        hooks = []
        for l in range(n_layers):
            mask = blocked[rows, l]  # [row, key]
            if in_window[rows, l].any():
                hooks.append((f"blocks.{l}.attn.hook_attn_scores", _knockout_hook(mask, target)))
                if mask[:, : target + 1].all(-1).any():  # a target that may attend to nothing
                    hooks.append((f"blocks.{l}.attn.hook_pattern", _zero_nan_hook))
        batch = repeat(prep.tokens, "p -> r p", r=len(chunk))
        with model.hooks(fwd=hooks):
            logits = model(batch)
        probs[chunk] = logits[:, -1].softmax(-1)[:, prep.answer_id].to(probs.device)

    values = rearrange(probs, "(set L) -> set L", L=n_layers)
    return KnockoutResult(
        probs=values, clean_prob=prep.clean_prob, tokens=prep.str_tokens, subject_span=prep.span,
        answer=prep.answer, target_pos=target, window=window, sources=[n for n, _ in named],
        source_positions=[p for _, p in named], blocked_layers=blocked_layers, answer_id=prep.answer_id,
    )


def _knockout_hook(mask: torch.Tensor, target: int) -> Callable:
    """Set attn_scores [row, head, q_pos, k_pos] at (row, :, target, k) to -inf where mask[row, k]."""

    def knock(scores: torch.Tensor, hook: Any) -> torch.Tensor:
        scores = scores.clone()
        row = scores[:, :, target, :]  # [row, head, k_pos]
        scores[:, :, target, :] = row.masked_fill(mask[:, None, :], float("-inf"))
        return scores

    return knock


def _zero_nan_hook(pattern: torch.Tensor, hook: Any) -> torch.Tensor:
    """A query whose keys are all cut has softmax(-inf, ...) = NaN: it attends to nothing (weights 0)."""
    return torch.nan_to_num(pattern, nan=0.0)


def attention_knockout(
    model: Transformer,
    prompt: Prompt,
    subject: Subject,
    answer: Answer = None,
    *,
    sources: SourceSpec = "subject",
    window: Optional[int] = None,
    target_pos: int = -1,
    batch_size: int = DEFAULT_BATCH_SIZE,
    progress: bool = True,
) -> KnockoutResult:
    """Attention knockout (Geva et al. 2023): for each layer L, cut the attention edges
    from `sources` to `target_pos` in all heads of window_layers(L, window, n_layers),
    by setting those attention scores (blocks.{l}.attn.hook_attn_scores) to -inf before
    the softmax (the target's other weights are re-normalised; a target left with no key
    attends to nothing). Rows = layers, one batched forward.

    sources: "subject" (the subject's positions), "relation" (every other position
        before the target except BOS at 0 when the model prepended it), "last" (the
        target itself), or a list of positions (may be empty: nothing is cut).
    window: default min(9, n_layers) (the paper's 9 on GPT-2 XL, clipped to the depth);
        on a shallow model, window=1 cuts one layer at a time.
    target_pos: the query position whose incoming edges are cut (default the last,
        where the answer is predicted).
    Returns a KnockoutResult with probs [n_layers] and relative change in %.
    """
    prep = _prepare(model, prompt, subject, answer)
    result = _knockout(model, prep, [sources], window, target_pos, batch_size, progress)
    result.probs = result.probs[0]
    return result


def attention_knockout_all(
    model: Transformer,
    prompt: Prompt,
    subject: Subject,
    answer: Answer = None,
    *,
    sources: Sequence[SourceSpec] = SOURCE_SETS,
    window: Optional[int] = None,
    target_pos: int = -1,
    batch_size: int = DEFAULT_BATCH_SIZE,
    progress: bool = True,
) -> KnockoutResult:
    """`attention_knockout` for several source sets at once (default subject, relation,
    last), batched: probs [n_sources, n_layers], axes ("sources", "layer")."""
    if isinstance(sources, str):
        raise TypeError("attention_knockout_all takes a sequence of source sets; use attention_knockout for one")
    prep = _prepare(model, prompt, subject, answer)
    return _knockout(model, prep, list(sources), window, target_pos, batch_size, progress)


__all__ = [
    "TraceResult", "AverageTrace", "KnockoutResult", "subject_span", "last_subject_pos", "trace", "average_trace",
    "attention_knockout", "attention_knockout_all", "window_layers", "embedding_std", "position_categories",
    "CATEGORIES", "SOURCE_SETS",
]
