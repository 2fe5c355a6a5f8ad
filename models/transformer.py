"""The decoder-only Transformer: embeddings, blocks, final norm and unembedding
(`models.components`), with text in and out, losses and generation.

    model = Transformer(TransformerConfig(n_layers=2, d_model=64, n_heads=4, d_vocab=1000))
    logits = model(tokens)                                   # [batch, pos, d_vocab]
    resid = model(tokens, stop_at_layer=2)                   # the residual entering block 2
    logits = model(resid, start_at_layer=2)                  # ... and the rest of the forward pass

Weights have TransformerLens names and shapes (see `models.components`).
"""

from __future__ import annotations

import copy
import math
from typing import Optional, Sequence, Union

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from interp.checks import IndexRangeError, resolve_layer
from interp.hooks import HookedModule, HookPoint
from interp.words import answer_token, exact_token_conflict
from models.components import Embed, KVCache, PosEmbed, SinusoidalPosEmbed, TransformerBlock, Unembed, make_norm
from models.config import TransformerConfig, dtype_name
from models.resuming import DecoderOnlyStack
from models.sampling import check_sampling, next_token
from models.stacked import StackedWeights
from models.tokenizer import Tokenizer

Input = Union[str, Sequence[str], torch.Tensor]


# ============================================================ the model
class Transformer(StackedWeights, HookedModule):
    """Decoder-only Transformer; see `TransformerConfig` for the choices.

    `model(input)` takes token ids [batch, pos] (or [pos]), a string or a list
    of strings, and returns logits [batch, pos, d_vocab].
    """

    def __init__(self, cfg: TransformerConfig, tokenizer: Optional[Tokenizer] = None) -> None:
        """Build the model from its own copy of `cfg` (the caller's object is never changed).
        The weights are initialised from `cfg.seed` (a local generator; without a seed, from
        torch's global generator, as nn.Linear does) and placed on `cfg.device` if it is given."""
        super().__init__()
        cfg = copy.deepcopy(cfg)
        self.cfg = cfg
        self.tokenizer = tokenizer
        self.default_prepend_bos = True
        self.embed = Embed(cfg)
        self.hook_embed = HookPoint()  # [batch, pos, d_model]
        if cfg.positional == "learned":
            self.pos_embed = PosEmbed(cfg)
        elif cfg.positional == "sinusoidal":
            self.pos_embed = SinusoidalPosEmbed(cfg)
        if cfg.positional != "rotary":
            self.hook_pos_embed = HookPoint()  # [batch, pos, d_model]
        self.blocks = nn.ModuleList([TransformerBlock(cfg, layer) for layer in range(cfg.n_layers)])
        if cfg.final_norm:
            self.ln_final = make_norm(cfg)
        self.unembed = Unembed(cfg, self.embed if cfg.tie_embeddings else None)
        self.init_weights(cfg.seed)
        self.setup_hooks()
        if cfg.device is not None:
            self.to(cfg.device)
        self._describe_weights()

    def _apply(self, fn, *args, **kwargs):  # .to(), .cuda(), .double(), .half(): keep cfg current
        out = super()._apply(fn, *args, **kwargs)
        self._describe_weights()
        return out

    def _describe_weights(self) -> None:
        """cfg.device and cfg.dtype say where the weights are and what they are (read from the
        parameters; the config is this model's own, so no other model or caller sees this)."""
        self.cfg.device = str(self.device)
        self.cfg.dtype = dtype_name(self.embed.W_E.dtype)

    # ------------------------------------------------------------ set-up
    def init_weights(self, seed: Optional[int] = None) -> None:
        """GPT-2's initialisation: N(0, 0.02), output projections scaled by 1/sqrt(2 n_layers).

        Norm weights are set to 1 and biases to 0.
        """
        gen = torch.Generator().manual_seed(seed) if seed is not None else None
        std = 0.02
        with torch.no_grad():
            for name, p in self.named_parameters():
                if name.endswith((".w",)):
                    p.fill_(1.0)
                elif name.split(".")[-1].startswith("b_") or name.endswith(".b"):
                    p.zero_()
                else:
                    s = std / math.sqrt(2 * self.cfg.n_layers) if name.endswith(("W_O", "W_out")) else std
                    p.copy_(torch.randn(p.shape, generator=gen, dtype=torch.float64).to(p.dtype) * s)

    @property
    def device(self) -> torch.device:
        return self.embed.W_E.device

    # ------------------------------------------------------------ tokens
    def _need_tokenizer(self) -> Tokenizer:
        if self.tokenizer is None:
            raise ValueError("this model has no tokenizer: pass token ids (a LongTensor [batch, pos]) instead of text")
        return self.tokenizer

    def to_tokens(self, input: Union[str, Sequence[str]], prepend_bos: Optional[bool] = None) -> torch.Tensor:
        """Text -> token ids [batch, pos]. Lists of texts of different lengths are padded on the right."""
        return self._tokenize(input, prepend_bos)[0]

    def _tokenize(
        self, input: Union[str, Sequence[str]], prepend_bos: Optional[bool] = None
    ) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        tok = self._need_tokenizer()
        texts = [input] if isinstance(input, str) else list(input)
        if not texts:
            raise ValueError("no text given")
        prepend_bos = self.default_prepend_bos if prepend_bos is None else prepend_bos
        bos = tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id
        if prepend_bos and bos is None:
            raise ValueError("prepend_bos=True but the tokenizer has no BOS (or EOS) token")
        ids = [([bos] if prepend_bos else []) + tok.encode(t) for t in texts]
        n = max(len(i) for i in ids)
        if n > self.cfg.n_ctx and self.cfg.positional != "rotary":
            raise ValueError(f"input has {n} tokens, more than the model's n_ctx={self.cfg.n_ctx}")
        pad = tok.pad_token_id if tok.pad_token_id is not None else 0
        tokens = torch.tensor([i + [pad] * (n - len(i)) for i in ids], dtype=torch.long, device=self.device)
        if all(len(i) == n for i in ids):
            return tokens, None
        mask = torch.tensor([[1] * len(i) + [0] * (n - len(i)) for i in ids], dtype=torch.long, device=self.device)
        return tokens, mask

    def to_str_tokens(self, input: Union[Input, Sequence[int], int], prepend_bos: Optional[bool] = None
                      ) -> Union[list[str], list[list[str]]]:
        """Each token as text, as TransformerLens: a text, token ids [pos] or [1, pos] (the
        batch of one is dropped), or one id give a list; a list of texts gives a list of lists.
        (A [batch > 1, pos] tensor also gives a list of lists, where TransformerLens fails.)"""
        tok = self._need_tokenizer()
        if isinstance(input, str):
            input = self.to_tokens(input, prepend_bos)[0]
        elif isinstance(input, (list, tuple)) and input and all(isinstance(t, str) for t in input):
            return [self.to_str_tokens(t, prepend_bos) for t in input]
        ids = torch.as_tensor(input)
        if ids.dim() == 2 and ids.shape[0] == 1 or ids.dim() == 0:
            ids = ids.reshape(-1)
        if ids.dim() == 2:
            return [[tok.token_str(int(t)) for t in row] for row in ids]
        if ids.dim() != 1:
            raise ValueError(f"to_str_tokens takes text or token ids [pos] or [batch, pos], got shape {tuple(ids.shape)}")
        return [tok.token_str(int(t)) for t in ids]

    def to_string(self, tokens: Union[torch.Tensor, Sequence[int], int]) -> Union[str, list[str]]:
        """Token ids -> text: one id or [pos] gives a string, [batch, pos] a list of strings."""
        tok = self._need_tokenizer()
        ids = torch.as_tensor(tokens)
        if ids.dim() == 2:
            return [tok.decode(row.tolist()) for row in ids]
        if ids.dim() > 2:
            raise ValueError(f"to_string takes token ids [pos] or [batch, pos], got shape {tuple(ids.shape)}")
        return tok.decode(ids.reshape(-1).tolist())

    def to_single_token(self, word: str) -> int:
        """The id of `word` if it is exactly one token; a clear error otherwise."""
        ids = self._need_tokenizer().encode(word)
        if len(ids) != 1:
            pieces = [self.tokenizer.token_str(i) for i in ids]
            raise ValueError(f"{word!r} is not a single token: it splits into {len(ids)} tokens {pieces}")
        return ids[0]

    def get_token_position(self, single_token: Union[str, int, torch.Tensor], input: Union[str, torch.Tensor],
                           mode: str = "first", prepend_bos: Optional[bool] = None) -> int:
        """Where `single_token` (a word or id) occurs in `input` (text, ids [pos] or [1, pos]):
        its first or last position (mode), counting the BOS token if text gets one."""
        if mode not in ("first", "last"):
            raise ValueError(f"mode must be 'first' or 'last', got {mode!r}")
        tokens = self.to_tokens(input, prepend_bos)[0] if isinstance(input, str) else torch.as_tensor(input)
        if tokens.dim() == 2:
            if tokens.shape[0] != 1:
                raise ValueError(f"token ids must be [pos] or [1, pos], got shape {tuple(tokens.shape)}")
            tokens = tokens[0]
        token = self.to_single_token(single_token) if isinstance(single_token, str) else int(single_token)
        where = (tokens == token).nonzero().flatten()
        if where.numel() == 0:
            raise ValueError(f"token {token} ({single_token!r}) does not occur in the input")
        return int(where[0] if mode == "first" else where[-1])

    def tokens_to_residual_directions(self, tokens: Union[str, int, torch.Tensor]) -> torch.Tensor:
        """The unembedding column of each token, W_U[:, t]: [d_model] for one token (a word, an
        id or a one-element tensor), [..., d_model] for a tensor of ids. Through the final norm
        these are the directions whose dot product is the logit, exactly only if the norm's
        weight is folded into W_U (models.processing.fold_layer_norm), as in TransformerLens."""
        W_U = self.W_U
        if isinstance(tokens, torch.Tensor) and tokens.numel() > 1:
            return rearrange(W_U[:, tokens.to(W_U.device)], "d ... -> ... d")
        if isinstance(tokens, str):
            conflict = exact_token_conflict(self, tokens)
            if conflict is not None:
                raise ValueError(conflict)
            return W_U[:, answer_token(self, tokens)]
        return W_U[:, int(tokens)]

    # ------------------------------------------------------------ forward
    def _as_tokens(
        self, input: Input, attention_mask: Optional[torch.Tensor], prepend_bos: Optional[bool] = None
    ) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        if isinstance(input, torch.Tensor):
            tokens = input[None] if input.dim() == 1 else input
            if tokens.dim() != 2 or tokens.dtype not in (torch.long, torch.int32, torch.int64):
                raise ValueError(f"token input must be an integer tensor [batch, pos], got {tuple(input.shape)} {input.dtype}")
            if tokens.numel() and (tokens.min() < 0 or tokens.max() >= self.cfg.d_vocab):
                raise ValueError(f"token ids must be in [0, {self.cfg.d_vocab}); got range [{int(tokens.min())}, {int(tokens.max())}]")
            return tokens.to(self.device), attention_mask
        tokens, mask = self._tokenize(input, prepend_bos)
        return tokens, attention_mask if attention_mask is not None else mask

    def forward(
        self,
        input: Input,
        return_type: Optional[str] = "logits",
        loss_per_token: bool = False,
        prepend_bos: Optional[bool] = None,
        padding_side: Optional[str] = None,
        start_at_layer: Optional[int] = None,
        tokens: Optional[torch.Tensor] = None,
        attention_mask: Optional[torch.Tensor] = None,
        stop_at_layer: Optional[int] = None,
        kv_cache: Optional[KVCache] = None,
    ) -> Optional[torch.Tensor]:
        """Run the model (TransformerLens' arguments, in its order).

        input: token ids [batch, pos], text, or a list of texts; with start_at_layer,
            the residual stream [batch, pos, d_model] entering that block.
        return_type: "logits" [batch, pos, d_vocab], "loss" (mean next-token loss, or
            [batch, pos - 1] with loss_per_token), "both" (logits, loss) or None.
        prepend_bos: for text input, override `default_prepend_bos`.
        padding_side: texts of different lengths are padded on the right; "left" is refused.
        tokens: with start_at_layer and return_type "loss" / "both", the tokens to score.
        attention_mask: [batch, pos], 1 for real tokens, 0 for padding keys.
        stop_at_layer: return the residual stream entering that block instead.
        kv_cache: a `KVCache`; the new tokens are appended to it (for generation).
        """
        if padding_side not in (None, "right"):
            raise ValueError(f"padding_side={padding_side!r}: this model pads texts on the right only")
        if return_type not in ("logits", "loss", "both", None):
            raise ValueError(f"return_type must be 'logits', 'loss', 'both' or None, got {return_type!r}")
        pos_offset = kv_cache.n_pos if kv_cache is not None else 0
        if start_at_layer is None:
            tokens, attention_mask = self._as_tokens(input, attention_mask, prepend_bos)
            batch, n_pos = tokens.shape
            if self.cfg.positional != "rotary" and pos_offset + n_pos > self.cfg.n_ctx:
                raise ValueError(f"{pos_offset + n_pos} positions exceed the model's n_ctx={self.cfg.n_ctx}")
            resid = self.hook_embed(self.embed(tokens))
            if self.cfg.positional != "rotary":
                pos = self.pos_embed(batch, n_pos, pos_offset)
                resid = resid + self.hook_pos_embed(pos.clone() if self.hook_pos_embed.has_hooks else pos)
        else:
            if return_type in ("loss", "both") and tokens is None:
                raise ValueError(f"return_type={return_type!r} with start_at_layer needs tokens=... to score")
            resid = input
        if attention_mask is not None and kv_cache is not None:
            raise ValueError("attention_mask with a kv_cache is not supported: generate from unpadded prompts")
        key_mask = attention_mask.bool() if attention_mask is not None else None
        first, last = self._layer_range(start_at_layer, stop_at_layer)
        for block in self.blocks[first:last]:
            resid = block(resid, pos_offset, kv_cache, key_mask)
        if stop_at_layer is not None:
            return resid
        if self.cfg.final_norm:
            resid = self.ln_final(resid)
        logits = self.unembed(resid)
        if return_type == "logits":
            return logits
        if return_type is None:
            return None
        loss = self.loss_fn(logits, tokens, attention_mask, per_token=loss_per_token)
        return loss if return_type == "loss" else (logits, loss)

    def _layer_range(self, start_at_layer: Optional[int], stop_at_layer: Optional[int]) -> tuple[int, int]:
        """The blocks forward runs, [first, last): negatives count from the end (as slices do, and
        TransformerLens); a layer outside -n_layers..n_layers is an IndexRangeError."""
        n = self.cfg.n_layers
        first = 0 if start_at_layer is None else resolve_layer(start_at_layer, n, "start_at_layer", allow_end=True)
        last = n if stop_at_layer is None else resolve_layer(stop_at_layer, n, "stop_at_layer", allow_end=True)
        if first > last:
            raise IndexRangeError(f"start_at_layer={start_at_layer} comes after stop_at_layer={stop_at_layer}: "
                                  "no block would run")
        return first, last

    @staticmethod
    def loss_fn(
        logits: torch.Tensor, tokens: torch.Tensor, attention_mask: Optional[torch.Tensor] = None, per_token: bool = False
    ) -> torch.Tensor:
        """Next-token cross-entropy: position t predicts token t + 1. Mean over real targets,
        or per token [batch, pos - 1] (0 where the target is padding), as TransformerLens."""
        targets = tokens[:, 1:].clone()
        if attention_mask is not None:
            targets[attention_mask[:, 1:] == 0] = -100
        loss = F.cross_entropy(
            rearrange(logits[:, :-1], "b p v -> (b p) v"), rearrange(targets, "b p -> (b p)"),
            reduction="none" if per_token else "mean", ignore_index=-100,
        )
        return rearrange(loss, "(b p) -> b p", b=tokens.shape[0]) if per_token else loss

    def loss(self, input: Input, per_token: bool = False, attention_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Mean next-token cross-entropy (or per token, [batch, pos - 1])."""
        tokens, attention_mask = self._as_tokens(input, attention_mask)
        logits = self(tokens, attention_mask=attention_mask)
        return self.loss_fn(logits, tokens, attention_mask, per_token)

    # ------------------------------------------------------------ generation
    @torch.no_grad()
    def generate(
        self,
        input: Input,
        max_new_tokens: int = 20,
        temperature: float = 0.0,
        top_k: Optional[int] = None,
        use_kv_cache: bool = True,
        stop_at_eos: bool = False,
        seed: Optional[int] = None,
    ) -> Union[str, list[str], torch.Tensor]:
        """Continue the input. temperature=0 is greedy; otherwise sample from
        softmax(logits / temperature), restricted to the top_k tokens if given.

        Returns text if given text, else tokens [batch, pos + new]. With
        use_kv_cache the keys and values of earlier positions are reused, which
        gives the same tokens as recomputing the whole prefix each step.
        """
        check_sampling(temperature, top_k)
        tokens, mask = self._as_tokens(input, None)
        if mask is not None:
            raise ValueError("generate() needs prompts of equal token length (no padding); generate them one by one")
        gen = torch.Generator(device=self.device).manual_seed(seed) if seed is not None else None
        eos = self.tokenizer.eos_token_id if self.tokenizer is not None else None
        cache = KVCache.empty(self.cfg.n_layers) if use_kv_cache else None
        finished = torch.zeros(tokens.shape[0], dtype=torch.bool, device=self.device)
        new_input = tokens
        for _ in range(max_new_tokens):
            logits = self(new_input if use_kv_cache else tokens, kv_cache=cache)[:, -1]
            next_tok = next_token(logits, temperature, top_k, gen)
            if stop_at_eos and eos is not None:
                next_tok = torch.where(finished, torch.full_like(next_tok, eos), next_tok)
                finished |= next_tok == eos
            tokens = torch.cat([tokens, next_tok[:, None]], dim=1)
            new_input = next_tok[:, None]
            if stop_at_eos and bool(finished.all()):
                break
        if isinstance(input, torch.Tensor):
            return tokens
        # Text in, text out: without the BOS token that tokenisation prepended.
        start = 1 if self.default_prepend_bos else 0
        texts = self.to_string(tokens[:, start:])
        return texts[0] if isinstance(input, str) else texts

    # ------------------------------------------------------------ the patching engine
    def engine_adapter(self) -> DecoderOnlyStack:
        """This model's side of the patching engine (`interp.resumable.Resumable`): run patched
        copies of a run, resume them at their first patched block and position, read them out."""
        return DecoderOnlyStack(self)


@torch.no_grad()
def last_positions(tokens: torch.Tensor, mask: Optional[torch.Tensor]) -> torch.Tensor:
    """[batch]: each row's last real position (right padding; no mask: the last column)."""
    if mask is None:
        return torch.full((tokens.shape[0],), tokens.shape[1] - 1, dtype=torch.long, device=tokens.device)
    return mask.sum(1) - 1


def last_token_logits(model: Transformer, prompts: Sequence[str], batch_size: int = 512) -> torch.Tensor:
    """Logits of the token after each prompt: [n_prompts, d_vocab], without gradients (an
    evaluation); prompts may differ in length (padded on the right, each read at its own last token)."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    if len(prompts) == 0:
        raise ValueError("no prompts given")
    out = []
    with torch.no_grad():  # an evaluation: no autograd graph over thousands of prompts
        for i in range(0, len(prompts), batch_size):
            chunk = list(prompts[i : i + batch_size])
            tokens, mask = model._tokenize(chunk)
            logits = model(tokens, attention_mask=mask)
            last = last_positions(tokens, mask)
            out.append(logits[torch.arange(len(chunk), device=logits.device), last])
    return torch.cat(out)
