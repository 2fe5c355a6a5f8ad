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


def unit(t: int, d: int):
    """Direction t of d dimensions: mean-zero and orthonormal to every other t's, so LayerNorm's
    centring leaves it alone."""
    import torch

    u = torch.zeros(d, dtype=torch.float64)
    u[2 * t], u[2 * t + 1] = 2 ** -0.5, -(2 ** -0.5)
    return u


def blank_word_model(words, *, n_layers: int, d_model: int, d_mlp: int = 4):
    """(model, directions): a float64 ReLU Transformer over `words` (one head of size d_model) with
    every weight zero except the norms' weights (1) and the embeddings (token i -> unit(i)): the
    start of a hand-built mechanism. directions[word] is that word's embedding direction."""
    import torch

    from models import Transformer, TransformerConfig
    from models.tokenizer import WordTokenizer

    cfg = TransformerConfig(n_layers=n_layers, d_model=d_model, n_heads=1, d_head=d_model, d_mlp=d_mlp,
                            d_vocab=len(words), n_ctx=8, act_fn="relu", tie_embeddings=False, dtype="float64")
    model = Transformer(cfg, WordTokenizer(list(words))).eval()
    directions = {w: unit(i, d_model) for i, w in enumerate(words)}
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.fill_(1.0) if name.endswith(".w") else p.zero_()
        model.embed.W_E.copy_(torch.stack([directions[w] for w in words]))
    return model, directions
