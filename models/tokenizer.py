"""The small tokenizer interface our Transformer needs, and an adapter for HF tokenizers.

Any object with these members works: `encode(text) -> list[int]` (no special
tokens added), `decode(ids) -> str`, `token_str(id) -> str` (one token as
text, for `to_str_tokens`), and the ids `bos_token_id`, `eos_token_id`,
`pad_token_id` (each may be None), plus `vocab_size`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional, Protocol, Sequence, runtime_checkable


@runtime_checkable
class Tokenizer(Protocol):
    bos_token_id: Optional[int]
    eos_token_id: Optional[int]
    pad_token_id: Optional[int]

    @property
    def vocab_size(self) -> int: ...

    def encode(self, text: str) -> list[int]: ...

    def decode(self, ids: Sequence[int]) -> str: ...

    def token_str(self, token_id: int) -> str: ...


class HFTokenizer:
    """Wraps a `transformers` tokenizer in our interface (no special tokens added by encode)."""

    def __init__(self, hf_tokenizer: Any) -> None:
        self.hf = hf_tokenizer
        self.bos_token_id = hf_tokenizer.bos_token_id
        self.eos_token_id = hf_tokenizer.eos_token_id
        # GPT-2 has no pad token: pad with EOS, as is customary (masked out anyway).
        self.pad_token_id = hf_tokenizer.pad_token_id if hf_tokenizer.pad_token_id is not None else self.eos_token_id

    @property
    def vocab_size(self) -> int:
        return len(self.hf)

    def encode(self, text: str) -> list[int]:
        return list(self.hf.encode(text, add_special_tokens=False))

    def decode(self, ids: Sequence[int]) -> str:
        return self.hf.decode(list(ids), clean_up_tokenization_spaces=False)

    def token_str(self, token_id: int) -> str:
        return self.hf.decode([int(token_id)], clean_up_tokenization_spaces=False)

    def save(self, path: str | Path) -> None:
        self.hf.save_pretrained(str(path))

    @classmethod
    def from_pretrained(cls, path: str | Path) -> "HFTokenizer":
        from transformers import AutoTokenizer

        return cls(AutoTokenizer.from_pretrained(str(path), local_files_only=True))

    def __repr__(self) -> str:
        return f"HFTokenizer({type(self.hf).__name__}, vocab_size={self.vocab_size})"
