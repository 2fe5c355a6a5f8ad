"""`test_prompt`: TransformerLens' first look at a prompt (`transformer_lens.utils.test_prompt`).

    from interp.explore import test_prompt
    test_prompt("Michael Jordan plays the sport of", "basketball", model)

Prints the tokenised prompt and answer, then for each answer token its rank, logit and
probability and the top_k tokens, the way TransformerLens prints them; returns the ranks
[(answer token, rank), ...] per answer position (TransformerLens returns None).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Optional, Sequence, Union

import torch

from interp.words import answer_token

if TYPE_CHECKING:
    from models import Transformer

__test__ = False  # not a pytest test, despite the name


def answer_ids(model: "Transformer", answer: str, prepend_space_to_answer: bool = True) -> torch.Tensor:
    """The token ids [answer_len] of one answer. With prepend_space_to_answer, a one-token answer
    is read by the toolkit's answer-token policy (`interp.words.answer_token`: " " + word when
    that is one token, as TransformerLens prepends the space, else the word), and a longer answer
    is tokenised as " " + answer (as TransformerLens does). Without it the text is tokenised
    exactly as given."""
    if prepend_space_to_answer:
        try:
            return torch.tensor([answer_token(model, answer)])
        except ValueError:
            answer = answer if answer.startswith(" ") else " " + answer
    ids = model.to_tokens(answer, prepend_bos=False)[0]
    if ids.numel() == 0:
        raise ValueError(f"answer {answer!r} has no tokens")
    return ids


def test_prompt(
    prompt: str,
    answer: Union[str, Sequence[str]],
    model: "Transformer",
    prepend_space_to_answer: bool = True,
    print_details: bool = True,
    prepend_bos: Optional[bool] = None,
    top_k: int = 10,
) -> list[list[tuple[str, int]]]:
    """Rank, logit and probability of `answer` after `prompt` (several answers: their first
    tokens, compared as alternatives). With prepend_space_to_answer each answer is read by
    `answer_ids` (a space before an answer that lacks one, for BPE vocabularies; a word-level
    vocabulary ignores spaces); without it, exactly as given."""
    answers = [answer] if isinstance(answer, str) else list(answer)
    if not answers:
        raise ValueError("no answer given")
    several = len(answers) > 1
    prompt_tokens = model.to_tokens(prompt, prepend_bos=prepend_bos)
    answer_tokens = [answer_ids(model, a, prepend_space_to_answer).to(prompt_tokens.device) for a in answers]
    if several:
        answer_tokens = [t[:1] for t in answer_tokens]
    ids = torch.stack(answer_tokens)  # [n_answers, answer_len]
    tokens = torch.cat([prompt_tokens.expand(len(answers), -1), ids], dim=1)
    prompt_str = model.to_str_tokens(prompt, prepend_bos=prepend_bos)
    answer_str = [model.to_str_tokens(t) for t in ids]
    if print_details:
        print("Tokenized prompt:", prompt_str)
        print("Tokenized answers:" if several else "Tokenized answer:", answer_str if several else answer_str[0])
    with torch.no_grad():
        logits = model(tokens)
    probs = logits.softmax(-1)
    n_prompt = prompt_tokens.shape[1]
    ranks: list[list[tuple[str, int]]] = []
    for i in range(ids.shape[1]):
        pos = n_prompt + i - 1  # the position that predicts answer token i
        order = probs[:, pos].argsort(-1, descending=True)
        rank_of = order.argsort(-1)
        here = [(answer_str[a][i], int(rank_of[a, ids[a, i]])) for a in range(len(answers))]
        ranks.append(here)
        if print_details:
            print(f"Performance on answer token{'s' if several else ''}:")
            for a, (text, rank) in enumerate(here):
                t = int(ids[a, i])
                print(f"Rank: {rank: <8} Logit: {logits[a, pos, t]:5.2f} Prob: {probs[a, pos, t]:6.2%} Token: |{text}|")
            for k in range(min(top_k, logits.shape[-1])):
                t = int(order[0, k])
                print(f"Top {k}th token. Logit: {logits[0, pos, t]:5.2f} Prob: {probs[0, pos, t]:6.2%} "
                      f"Token: |{model.to_str_tokens(t)[0]}|")
    if print_details:
        print("Ranks of the answer tokens:", [r for step in ranks for r in step])
    return ranks


__all__ = ["test_prompt", "answer_ids"]
