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


class UnknownWordError(ValueError):
    """Text with words outside a word-level vocabulary."""


class WordTokenizer:
    """A word-level tokenizer: words and punctuation marks are tokens.

    The text is split on whitespace ("Michael Jordan 's sport is" is five
    tokens); each piece must be in the vocabulary. Text with
    unknown words raises `UnknownWordError` naming them. Saved as JSON.
    """

    SPECIALS = ("<pad>", "<bos>", "<eos>")

    def __init__(self, vocab: Sequence[str]) -> None:
        if len(set(vocab)) != len(vocab):
            raise ValueError("vocabulary has duplicate words")
        self.vocab = list(vocab)
        self.ids = {w: i for i, w in enumerate(self.vocab)}
        self.pad_token_id = self.ids.get("<pad>")
        self.bos_token_id = self.ids.get("<bos>")
        self.eos_token_id = self.ids.get("<eos>")

    @classmethod
    def from_texts(cls, texts: Sequence[str]) -> "WordTokenizer":
        """Specials first, then every word in order of first appearance."""
        vocab = list(cls.SPECIALS)
        seen = set(vocab)
        for text in texts:
            for w in text.split():
                if w not in seen:
                    seen.add(w)
                    vocab.append(w)
        return cls(vocab)

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    def encode(self, text: str) -> list[int]:
        words = text.split()
        unknown = [w for w in words if w not in self.ids]
        if unknown:
            unique = list(dict.fromkeys(unknown))
            raise UnknownWordError(
                f"unknown word{'s' if len(unique) > 1 else ''} {', '.join(map(repr, unique))} in {text!r}: "
                f"not in this tokenizer's {len(self.vocab)}-word vocabulary"
            )
        return [self.ids[w] for w in words]

    def decode(self, ids: Sequence[int]) -> str:
        return " ".join(self.vocab[int(i)] for i in ids)

    def token_str(self, token_id: int) -> str:
        return self.vocab[int(token_id)]

    def to_hf(self) -> Any:
        """The same tokenizer as a `transformers` PreTrainedTokenizerFast (whitespace split, word
        level, BOS prepended as a special token), for running the fact-world model's text in HF
        or TransformerLens (`bridge.tokenizer = model.tokenizer.to_hf()`)."""
        from tokenizers import Tokenizer as HFTokenizerCore, decoders, models, pre_tokenizers, processors
        from transformers import PreTrainedTokenizerFast

        core = HFTokenizerCore(models.WordLevel(dict(self.ids), unk_token=None))
        core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
        core.decoder = decoders.WordPiece(prefix="##", cleanup=False)  # joins words with spaces
        if self.bos_token_id is not None:
            core.post_processor = processors.TemplateProcessing(
                single="<bos> $A", special_tokens=[("<bos>", self.bos_token_id)])
        return PreTrainedTokenizerFast(tokenizer_object=core, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>")

    def save(self, path: str | Path) -> None:
        import json

        Path(path, "tokenizer.json").write_text(json.dumps({"type": "word", "vocab": self.vocab}, indent=0) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> "WordTokenizer":
        import json

        data = json.loads(Path(path, "tokenizer.json").read_text())
        if data.get("type") != "word":
            raise ValueError(f"{path}/tokenizer.json is not a word-level tokenizer")
        return cls(data["vocab"])

    def __repr__(self) -> str:
        return f"WordTokenizer({len(self.vocab)} words)"
