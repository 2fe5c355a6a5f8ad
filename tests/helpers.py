"""Test helpers: a real (tiny) HF tokenizer built offline with the `tokenizers` library."""

from pathlib import Path

WORDS = ("the cat sat on a mat and the dog ran to the park while a bird sang in the tree "
         "Michael Jordan plays the sport of basketball").split()


def build_hf_tokenizer(path: Path, vocab_size: int = 100):
    """Train a byte-level BPE tokenizer on a few sentences and save it as an HF tokenizer in `path`."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator([" ".join(WORDS)] * 20, trainer)
    hf_tok = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|endoftext|>", eos_token="<|endoftext|>")
    hf_tok.save_pretrained(str(path))
    return hf_tok
