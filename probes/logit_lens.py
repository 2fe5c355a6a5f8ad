"""The logit lens: read the residual stream at one position, entering each layer and after
the last, through the final norm and the unembedding (nostalgebraist 2020).

    labels, logits = logit_lens(model, "Michael Jordan plays the sport of", pos=2)   # [n_layers + 1, d_vocab]
    lens = logit_lens(model, "Michael Jordan plays the sport of", target="basketball")
    lens.top_tokens[-1][0], lens.target_probs, lens.target_ranks   # per row; rank 0 = the top token
    lens.show()                                                     # the view (kind "lens")

Each state is normalised by ln_final as it would be at the end (its own scale;
`interp.unembedding.model_logits`), so the last row equals the model's logits at that position.
Rows are "embed" (entering block 0) and "L{l}" (after block l). The result is a `LogitLens`:
a 2-tuple `(labels, logits)` as before, carrying what its view needs (the prompt's tokens, each
row's top-k tokens with logits, probabilities and ranks, the tracked target's), so the view needs
no model. Ranks count the tokens with a higher logit (0: the top token), as in
TransformerLens' `test_prompt`.
"""

from __future__ import annotations

from typing import Any, Optional, Sequence, Union

import torch

from interp import names as hook_names
from interp.checks import resolve_pos
from interp.tokens import one_prompt, str_tokens
from interp.unembedding import model_logits
from interp.views.page import View, Viewable
from interp.words import Answer, answer_token, token_text
from models import Transformer

Prompt = Union[str, torch.Tensor]


def _ranks(logits: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """[row, m]: for each row's token ids `ids` [row, m], how many tokens have a higher logit."""
    values = logits.gather(-1, ids)
    return (logits[:, None, :] > values[:, :, None]).sum(-1)


class LogitLens(tuple, Viewable):
    """`(labels, logits [n_layers + 1, d_vocab])` (unpacks as before) with the view's data:
    `tokens` (the prompt's str tokens), `pos`, `top_ids` / `top_tokens` / `top_logits` /
    `top_probs` / `top_ranks` ([row, k]), and with a target: `target` (its id), `target_token`,
    `target_logits` / `target_probs` / `target_ranks` ([row]); else these are None."""

    def __new__(cls, labels: Sequence[str], logits: torch.Tensor, *, tokens: Sequence[str] = (), pos: int = -1,
                top_ids: Optional[torch.Tensor] = None, top_tokens: Sequence[Sequence[str]] = (),
                target: Optional[int] = None, target_token: Optional[str] = None) -> "LogitLens":
        self = super().__new__(cls, (list(labels), logits))
        self.tokens, self.pos, self.target, self.target_token = list(tokens), pos, target, target_token
        self.top_ids = top_ids
        self.top_tokens = [list(row) for row in top_tokens]
        return self

    def __getnewargs_ex__(self) -> tuple[tuple, dict]:
        return (self[0], self[1]), {}

    @property
    def labels(self) -> list[str]:
        """"embed", "L0", ..., "L{n-1}": the residual entering block 0, then after each block."""
        return self[0]

    @property
    def logits(self) -> torch.Tensor:
        """[n_layers + 1, d_vocab]."""
        return self[1]

    @property
    def probs(self) -> torch.Tensor:
        """[n_layers + 1, d_vocab]: softmax of each row's logits."""
        return self.logits.float().softmax(-1) if self.logits.dtype == torch.float16 else self.logits.softmax(-1)

    @property
    def top_logits(self) -> Optional[torch.Tensor]:
        return None if self.top_ids is None else self.logits.gather(-1, self.top_ids)

    @property
    def top_probs(self) -> Optional[torch.Tensor]:
        return None if self.top_ids is None else self.probs.gather(-1, self.top_ids)

    @property
    def top_ranks(self) -> Optional[torch.Tensor]:
        return None if self.top_ids is None else _ranks(self.logits, self.top_ids)

    def _target_column(self, values: torch.Tensor) -> Optional[torch.Tensor]:
        return None if self.target is None else values[:, self.target]

    @property
    def target_logits(self) -> Optional[torch.Tensor]:
        return self._target_column(self.logits)

    @property
    def target_probs(self) -> Optional[torch.Tensor]:
        return self._target_column(self.probs)

    @property
    def target_ranks(self) -> Optional[torch.Tensor]:
        if self.target is None:
            return None
        return _ranks(self.logits, torch.full((self.logits.shape[0], 1), self.target, dtype=torch.long,
                                              device=self.logits.device))[:, 0]

    def to_view(self, k: Optional[int] = None, title: Optional[str] = None) -> View:
        """The lens as a table (kind "lens"): a row per layer, the top-k tokens (k: at most the
        stored number; None: all of them) shaded by probability, the target's rank and
        probability per row when tracked; hover a cell for token, logit, probability, rank."""
        if self.top_ids is None:
            raise ValueError("this LogitLens holds no top tokens to show (make it with logit_lens(...))")
        stored = self.top_ids.shape[1]
        k = stored if k is None else k
        if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= stored:
            raise ValueError(f"k must be an integer in 1..{stored} (the top tokens stored; ask logit_lens for "
                             f"more with k=...), got {k!r}")
        data: dict[str, Any] = {
            "labels": self.labels, "tokens": self.tokens, "pos": self.pos,
            "top_tokens": [row[:k] for row in self.top_tokens],
            "top_logits": self.top_logits[:, :k], "top_probs": self.top_probs[:, :k],
            "top_ranks": self.top_ranks[:, :k], "target": None,
        }
        if self.target is not None:
            data["target"] = {"token": self.target_token, "logits": self.target_logits, "probs": self.target_probs,
                              "ranks": self.target_ranks}
        if title is None:
            at = f"{self.tokens[self.pos]!r} ({self.pos})" if self.tokens else f"position {self.pos}"
            title = f"logit lens at {at}"
        return View("lens", data, title=title)


def _check_k(k: Any, d_vocab: int) -> int:
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k (top tokens per row) must be a positive integer, got {k!r}")
    return min(k, d_vocab)


def logit_lens(model: Transformer, prompt: Prompt, pos: int = -1, *, target: Optional[Answer] = None,
               k: int = 10) -> LogitLens:
    """(labels, logits [n_points, d_vocab]): ln_final and the unembedding applied to the residual
    stream at `pos` entering each layer and after the last ("embed", "L0", ..., "L{n-1}"), as a
    `LogitLens` that also keeps each row's top `k` tokens and, with `target` (a word or token id,
    read as every answer is: `interp.words.answer_token`), that token's logit, probability and
    rank per row; `.show()` / `.save_html(path)` / `.to_view()` draw it."""
    tokens = one_prompt(model, prompt)
    pos = resolve_pos(pos, tokens.shape[0])
    k = _check_k(k, model.cfg.d_vocab)
    target_id = None if target is None else answer_token(model, target)
    n = model.cfg.n_layers
    names = [hook_names.act_name("resid_pre", l) for l in range(n)] + [hook_names.act_name("resid_post", n - 1)]
    with torch.no_grad():
        _, cache = model.run_with_cache(tokens[None], names_filter=names, return_type=None)
        logits = model_logits(model, torch.stack([cache[name][0, pos] for name in names])[None])[0]
    top_ids = logits.topk(k, dim=-1).indices
    return LogitLens(["embed"] + [f"L{l}" for l in range(n)], logits, tokens=str_tokens(model, tokens), pos=pos,
                     top_ids=top_ids, top_tokens=[[token_text(model, i) for i in row.tolist()] for row in top_ids],
                     target=target_id, target_token=None if target_id is None else token_text(model, target_id))


__all__ = ["LogitLens", "logit_lens"]
