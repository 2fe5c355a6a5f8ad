"""Where the subject of a prompt is: its token span, and ROME's position categories.

    subject_span(model, "Michael Jordan plays the sport of", "Michael Jordan")   # (1, 3), BOS counted
    last_subject_pos(model, prompt, "Michael Jordan")                            # 2
    position_categories(7, (1, 3))   # {"first subject token": [1], ..., "last token": [6]}
"""

from __future__ import annotations

from typing import Sequence, Union

import torch

from interp.tokens import one_prompt, str_tokens, token_text
from models.transformer import Transformer

Prompt = Union[str, torch.Tensor]
Subject = Union[str, tuple[int, int]]

CATEGORIES = (
    "first subject token", "middle subject tokens", "last subject token",
    "first subsequent token", "further tokens", "last token",
)


def encode(model: Transformer, text: str, what: str) -> list[int]:
    """Token ids of a piece of text (no BOS), with an error naming what it is."""
    if model.tokenizer is None:
        raise ValueError(f"the model has no tokenizer: give the {what} as token positions / ids, not text {text!r}")
    try:
        return list(model.tokenizer.encode(text))
    except ValueError as e:  # e.g. UnknownWordError
        raise ValueError(f"cannot tokenise the {what} {text!r}: {e}") from e


def _occurrences(haystack: Sequence[int], needle: Sequence[int]) -> list[int]:
    n = len(needle)
    return [i for i in range(len(haystack) - n + 1) if list(haystack[i:i + n]) == list(needle)]


def find_subject(model: Transformer, tokens: torch.Tensor, subject: str) -> tuple[int, int, str]:
    """(start, end, prefix): the subject's token span [start, end) in tokens [pos], and the
    text prefix ("" or " ") whose tokenisation matched (BPE tokens depend on a leading space)."""
    ids = [int(t) for t in tokens]
    found: dict[tuple[int, int], str] = {}
    variants = [""] if subject.startswith(" ") else ["", " "]
    sub_ids: dict[str, list[int]] = {}
    for prefix in variants:
        try:
            sub = encode(model, prefix + subject, "subject")
        except ValueError:
            if prefix:
                continue
            raise
        sub_ids[prefix] = sub
        if not sub:
            continue
        for i in _occurrences(ids, sub):
            found.setdefault((i, i + len(sub)), prefix)
    shown_tokens = str_tokens(model, tokens)
    if not found:
        shown = {repr(p + subject): [token_text(model, t) for t in s] for p, s in sub_ids.items()}
        raise ValueError(
            f"subject {subject!r} not found in the prompt: its tokens "
            f"{' or '.join(f'{k} -> {v}' for k, v in shown.items())} do not occur in the prompt's tokens {shown_tokens}"
        )
    if len(found) > 1:
        where = ", ".join(f"[{a}, {b}) {shown_tokens[a:b]}" for a, b in sorted(found))
        raise ValueError(
            f"subject {subject!r} occurs {len(found)} times in the prompt's tokens {shown_tokens}: at positions {where}; "
            "give exactly one occurrence (or pass the span (start, end) instead of the text)"
        )
    (start, end), prefix = next(iter(found.items()))
    return start, end, prefix


def subject_span(model: Transformer, prompt: Prompt, subject: str) -> tuple[int, int]:
    """Token positions [start, end) of `subject` in the model's tokens of `prompt`.

    Positions index the model's token sequence [pos] (including the BOS token the
    model prepends by default). The subject is tokenised without BOS and searched as
    a subsequence; for BPE tokenizers " " + subject is tried too. ValueError naming the
    subject and the prompt's tokens if it is not found or found more than once.
    """
    start, end, _ = find_subject(model, one_prompt(model, prompt), subject)
    return start, end


def last_subject_pos(model: Transformer, prompt: Prompt, subject: str) -> int:
    """Position of the subject's last token (``subject_span(...)[1] - 1``)."""
    return subject_span(model, prompt, subject)[1] - 1


def resolve_span(model: Transformer, tokens: torch.Tensor, subject: Subject) -> tuple[int, int, str]:
    """(start, end, prefix) of a subject given as text or as a span (start, end) of positions."""
    if isinstance(subject, str):
        return find_subject(model, tokens, subject)
    start, end = (int(x) for x in subject)
    if not 0 <= start < end <= len(tokens):
        raise ValueError(f"subject span {(start, end)} is not a non-empty range within the prompt's {len(tokens)} tokens")
    return start, end, ""


def has_bos(model: Transformer, prompt: Prompt, tokens: torch.Tensor) -> bool:
    """Whether position 0 is a BOS token the model prepended (not part of the text)."""
    if isinstance(prompt, str):
        return bool(model.default_prepend_bos)
    tok = model.tokenizer
    bos = None if tok is None else (tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id)
    return bos is not None and len(tokens) > 0 and int(tokens[0]) == bos


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


__all__ = ["subject_span", "last_subject_pos", "find_subject", "resolve_span", "position_categories", "CATEGORIES",
           "encode", "has_bos"]
