"""Answer words -> token ids: the one answer-token policy (hook base: torch only).

A token id is taken as it is. A word is the token that would *follow* a prompt: " " + word
when that is one token (BPE vocabularies spell a next word with its leading space, as
TransformerLens' `test_prompt` assumes), else the word as given; a word that already starts
with a space is taken exactly. Anything else is an error naming both spellings. With a
word-level tokenizer both spellings are the same token. Metrics, patching, attribution,
causal tracing, knowledge neurons, the recall chain, editing and the cache's
TransformerLens methods all read words through `answer_token`.

`exact_token_conflict(model, word)`: where TransformerLens would read `word` as a different
token (it takes the string exactly), the message to raise; None where both readings agree.
"""

from __future__ import annotations

from typing import Any, Optional, Protocol, Sequence, Union

import torch

class TokenModel(Protocol):
    """What the answer policy needs of a model (a `models.Transformer` has it)."""

    tokenizer: Any
    cfg: Any

    def to_single_token(self, text: str) -> int: ...


Answer = Union[int, str, torch.Tensor]
Answers = Union[Answer, Sequence[Union[int, str]]]


def token_text(model: TokenModel, token_id: int) -> str:
    """One token as text (its id as a string without a tokenizer)."""
    return model.tokenizer.token_str(int(token_id)) if model.tokenizer is not None else str(int(token_id))


def answer_token(model: TokenModel, answer: Answer) -> int:
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


def answer_tokens(model: TokenModel, answers: Answers) -> torch.Tensor:
    """Token ids [n] for one answer or a sequence of them (words, ids, or a tensor of ids)."""
    if isinstance(answers, torch.Tensor):
        return answers.reshape(-1).long()
    items = [answers] if isinstance(answers, (int, str)) else list(answers)
    return torch.tensor([answer_token(model, a) for a in items], dtype=torch.long, device=getattr(model, "device", None))


def exact_token_conflict(model: TokenModel, word: str) -> Optional[str]:
    """Why reading `word` with this toolkit's policy would silently differ from TransformerLens'
    exact reading (`to_single_token(word)`), or None where they agree."""
    if word.startswith(" ") or model.tokenizer is None:
        return None
    ours = answer_token(model, word)
    try:
        exact = model.to_single_token(word)
    except ValueError:
        return None
    if exact == ours:
        return None
    return (f"{word!r} is ambiguous here: TransformerLens reads it exactly (token {exact}, {word!r}), this "
            f"toolkit reads answer words with their leading space (token {ours}, {' ' + word!r}). Pass "
            f"{' ' + word!r} for the next-word token, or the id {exact} for the token without the space")


__all__ = ["TokenModel", "Answer", "Answers", "answer_token", "answer_tokens", "token_text", "exact_token_conflict"]
