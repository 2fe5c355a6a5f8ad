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
"""

from __future__ import annotations

from typing import Optional, Sequence, Union

import torch

Prompts = Union[str, Sequence[str], torch.Tensor]
Answer = Union[int, str, torch.Tensor]
Answers = Union[Answer, Sequence[Union[int, str]]]


class PromptLengthError(ValueError):
    """Prompts that must line up token by token do not have the same number of tokens."""


# ============================================================ prompts
def _describe(prompts: Prompts, i: int) -> str:
    if isinstance(prompts, str):
        return repr(prompts)
    if isinstance(prompts, torch.Tensor):
        return f"token row {i}"
    return repr(list(prompts)[i])


def prompt_tokens(model, prompts: Prompts, what: str = "prompts") -> torch.Tensor:
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


def paired_tokens(model, clean: Prompts, corrupted: Prompts) -> tuple[torch.Tensor, torch.Tensor]:
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


def one_prompt(model, prompt: Union[str, torch.Tensor]) -> torch.Tensor:
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


# ============================================================ answers
def token_text(model, token_id: int) -> str:
    """One token as text (its id as a string without a tokenizer)."""
    return model.tokenizer.token_str(int(token_id)) if model.tokenizer is not None else str(int(token_id))


def answer_token(model, answer: Answer) -> int:
    """The id of the answer token (see the module docstring for the policy)."""
    if isinstance(answer, torch.Tensor):
        if answer.numel() != 1:
            raise ValueError(f"an answer must be one token id, got a tensor of shape {tuple(answer.shape)}")
        answer = int(answer)
    if isinstance(answer, bool) or not isinstance(answer, (int, str)):
        raise TypeError(f"an answer must be a word or a token id, got {type(answer).__name__}")
    if isinstance(answer, int):
        if not 0 <= answer < model.cfg.d_vocab:
            raise ValueError(f"answer token id {answer} is outside the vocabulary [0, {model.cfg.d_vocab})")
        return answer
    if model.tokenizer is None:
        raise ValueError(f"the model has no tokenizer: give the answer {answer!r} as a token id")
    spellings = ([" " + answer] if not answer.startswith(" ") else []) + [answer]
    errors = []
    for text in spellings:
        try:
            return model.to_single_token(text)
        except ValueError as e:
            errors.append(str(e))
    raise ValueError(f"answer {answer!r} is not a single token of this model: {'; '.join(errors)}")


def answer_tokens(model, answers: Answers) -> torch.Tensor:
    """Token ids [n] for one answer or a sequence of them (words, ids, or a tensor of ids)."""
    if isinstance(answers, torch.Tensor):
        return answers.reshape(-1).long()
    items = [answers] if isinstance(answers, (int, str)) else list(answers)
    return torch.tensor([answer_token(model, a) for a in items], dtype=torch.long)


# ============================================================ labels
def str_tokens(model, tokens: torch.Tensor) -> list[str]:
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
           "token_text", "str_tokens", "pos_labels"]
