"""Our Transformer, its configuration, tokenizers and loaders (layer 2: imports only the hook base)."""

from models.config import TransformerConfig
from models.components import KVCache
from models.transformer import Transformer
from models.tokenizer import HFTokenizer, Tokenizer
from models.checkpoint import save
from models.hf_export import to_hf
from models.hf_import import from_hf
from models.loading import load
from models.encoder_decoder import EncoderDecoder
from models.encoder_decoder_components import EncoderDecoderConfig

__all__ = ["TransformerConfig", "Transformer", "KVCache", "Tokenizer", "HFTokenizer", "from_hf", "to_hf", "load", "save",
           "EncoderDecoder", "EncoderDecoderConfig"]
