"""Prompts, answers and token labels: the one place that turns what a user passes into token ids.

- `prompt_tokens(model, prompts)`: text, a list of texts or token ids -> [batch, pos],
  all the same length (patching lines positions up one to one), else `PromptLengthError`.
- `paired_tokens(model, clean, corrupted)`: two such batches that line up.
- `one_prompt(model, prompt)`: exactly one prompt -> [pos].
- `answer_token(model, answer)`: the answer-token policy used by metrics, patching,
  attribution, causal tracing and knowledge neurons alike. A token id is taken as it
  is. A word is the token that would *follow* a prompt: " " + word when that is one
  token (BPE vocabularies spell a next word with its leading space, as TransformerLens'
  `test_prompt` assumes), else the word as given; anything else is an error naming
  both spellings. With a word-level tokenizer both spellings are the same token.
- `str_tokens` / `pos_labels`: tokens as text for tables and plots.
- `padded_batches(model, texts, batch_size)`: texts of any lengths, `batch_size` at a time,
  right-padded (`PaddedBatch`: tokens, the attention mask, which positions are real, each
  row's length); `cached_batches(...)` adds each batch's activation cache. The one way
  texts become padded batches (layer means, linear-probe states, dictionary training data,
  feature activations, key statistics, trigger examples).
"""

from __future__ import annotations

from typing import Iterator, NamedTuple, Optional, Sequence, Union

import torch

from interp.cache import ActivationCache
from interp.progress import progress_bar
from models.transformer import Transformer

from interp.words import Answer, Answers, answer_token, answer_tokens, token_text  # noqa: F401  (re-exported)

Prompts = Union[str, Sequence[str], torch.Tensor]


class PromptLengthError(ValueError):
    """Prompts that must line up token by token do not have the same number of tokens."""


# ============================================================ prompts
def _describe(prompts: Prompts, i: int) -> str:
    if isinstance(prompts, str):
        return repr(prompts)
    if isinstance(prompts, torch.Tensor):
        return f"token row {i}"
    return repr(list(prompts)[i])


def prompt_tokens(model: Transformer, prompts: Prompts, what: str = "prompts") -> torch.Tensor:
    """Token ids [batch, pos] for prompts that must all have the same length (else PromptLengthError)."""
    if isinstance(prompts, torch.Tensor):
        tokens = prompts[None] if prompts.dim() == 1 else prompts
        return tokens.to(model.device)
    texts = [prompts] if isinstance(prompts, str) else list(prompts)
    if not texts:
        raise ValueError(f"no {what} given")
    rows = [model.to_tokens(t)[0] for t in texts]
    lengths = [len(r) for r in rows]
    if len(set(lengths)) > 1:
        listing = ", ".join(f"{t!r}: {n} tokens" for t, n in zip(texts, lengths))
        raise PromptLengthError(f"the {what} must all have the same number of tokens to line up position by position; got {listing}")
    return torch.stack(rows)


def paired_tokens(model: Transformer, clean: Prompts, corrupted: Prompts) -> tuple[torch.Tensor, torch.Tensor]:
    """Clean and corrupted token ids [batch, pos], checked to line up position by position."""
    c, k = prompt_tokens(model, clean, "clean prompts"), prompt_tokens(model, corrupted, "corrupted prompts")
    if c.shape[0] != k.shape[0]:
        raise PromptLengthError(f"{c.shape[0]} clean prompts but {k.shape[0]} corrupted prompts: give one of each per pair")
    if c.shape[1] != k.shape[1]:
        detail = ""
        if model.tokenizer is not None:
            detail = f": {model.to_str_tokens(c[0])} vs {model.to_str_tokens(k[0])}"
        raise PromptLengthError(
            f"clean prompt {_describe(clean, 0)} has {c.shape[1]} tokens but corrupted prompt "
            f"{_describe(corrupted, 0)} has {k.shape[1]}{detail}. Patching lines positions up one to one: "
            "choose a corrupted prompt with the same number of tokens (e.g. a subject of the same token length)"
        )
    return c, k


def one_prompt(model: Transformer, prompt: Union[str, torch.Tensor]) -> torch.Tensor:
    """One prompt -> token ids [pos]: text (tokenised with the model's BOS default) or ids [pos] / [1, pos]."""
    if isinstance(prompt, str):
        return model.to_tokens(prompt)[0]
    if isinstance(prompt, torch.Tensor):
        tokens = prompt[0] if prompt.dim() == 2 and prompt.shape[0] == 1 else prompt
        if tokens.dim() != 1:
            raise ValueError(f"give one prompt: token ids [pos] or [1, pos], got shape {tuple(prompt.shape)}")
        if tokens.numel() == 0:
            raise ValueError("the prompt has no tokens")
        return tokens.to(model.device).long()
    raise TypeError(f"prompt must be a string or a tensor of token ids, got {type(prompt).__name__}")


# ============================================================ texts of any lengths
class PaddedBatch(NamedTuple):
    """Texts `start` .. `start + len(texts)` of a corpus as one right-padded batch."""

    start: int  # index of the batch's first text
    texts: list[str]
    tokens: torch.Tensor  # [batch, pos], right-padded
    mask: Optional[torch.Tensor]  # [batch, pos] attention mask (1 real, 0 padding); None: no padding
    real: torch.Tensor  # [batch, pos] bool: not padding
    lengths: torch.Tensor  # [batch]: each row's number of real tokens

    @property
    def last(self) -> torch.Tensor:
        """[batch]: each row's last real position."""
        return self.lengths - 1


def padded_batches(model: Transformer, texts: Sequence[str], batch_size: int = 512, *, progress: bool = False,
                   desc: str = "batches") -> Iterator[PaddedBatch]:
    """`texts` tokenised `batch_size` at a time (the model's BOS default), right-padded."""
    if isinstance(texts, str):
        texts = [texts]
    texts = list(texts)
    if not texts:
        raise ValueError("no texts given")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    for start in progress_bar(range(0, len(texts), batch_size), progress, desc=desc, leave=False):
        chunk = texts[start: start + batch_size]
        tokens, mask = model._tokenize(chunk)
        real = torch.ones_like(tokens, dtype=torch.bool) if mask is None else mask.bool()
        yield PaddedBatch(start, chunk, tokens, mask, real, real.sum(1))


def cached_batches(model: Transformer, texts: Sequence[str], names: Sequence[str], batch_size: int = 512, *,
                   stop_at_layer: Optional[int] = None, progress: bool = False,
                   desc: str = "batches") -> Iterator[tuple[PaddedBatch, ActivationCache]]:
    """(batch, cache of the hooks `names`) for each `padded_batches` batch, without gradients;
    the forward pass stops before block `stop_at_layer` if given."""
    stop = {} if stop_at_layer is None else {"stop_at_layer": stop_at_layer}
    for batch in padded_batches(model, texts, batch_size, progress=progress, desc=desc):
        with torch.no_grad():
            _, cache = model.run_with_cache(batch.tokens, attention_mask=batch.mask, names_filter=list(names),
                                            return_type=None, **stop)
        yield batch, cache


# ============================================================ labels
def str_tokens(model: Transformer, tokens: torch.Tensor) -> list[str]:
    """The tokens of one prompt ([pos], or the first row of [batch, pos]) as text, or as ids without a tokenizer."""
    row = tokens[0] if tokens.dim() == 2 else tokens
    if model.tokenizer is None:
        return [str(int(t)) for t in row]
    return [model.tokenizer.token_str(int(t)) for t in row]


def pos_labels(tokens: Sequence[str], positions: Optional[Sequence[int]] = None) -> list[str]:
    """Position labels "tok (i)", so that repeated tokens stay distinguishable."""
    positions = range(len(tokens)) if positions is None else positions
    return [f"{tokens[p]} ({p})" for p in positions]


__all__ = ["PromptLengthError", "prompt_tokens", "paired_tokens", "one_prompt", "answer_token", "answer_tokens",
           "token_text", "str_tokens", "pos_labels", "PaddedBatch", "padded_batches", "cached_batches"]
