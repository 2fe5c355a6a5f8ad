"""Our Transformer, its configuration, tokenizers and loaders (layer 2: imports only the hook base)."""

from models.config import TransformerConfig
from models.components import KVCache
from models.transformer import Transformer
from models.tokenizer import HFTokenizer, Tokenizer
from models.loading import from_hf, load, to_hf
from models.encoder_decoder import EncoderDecoder
from models.encoder_decoder_components import EncoderDecoderConfig

__all__ = ["TransformerConfig", "Transformer", "KVCache", "Tokenizer", "HFTokenizer", "from_hf", "to_hf", "load",
           "EncoderDecoder", "EncoderDecoderConfig"]
