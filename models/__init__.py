"""Our Transformer, its configuration, tokenizers and loaders."""

from models.config import TransformerConfig
from models.transformer import KVCache, Transformer
from models.tokenizer import HFTokenizer, Tokenizer
from models.loading import from_hf, load, to_hf
from models.encoder_decoder import EncDecHead, EncDecNeuron, EncoderDecoder, EncoderDecoderConfig

__all__ = ["TransformerConfig", "Transformer", "KVCache", "Tokenizer", "HFTokenizer", "from_hf", "to_hf", "load",
           "EncoderDecoder", "EncoderDecoderConfig", "EncDecHead", "EncDecNeuron"]
