"""The encoder-decoder Transformer of "Attention Is All You Need" (Vaswani et al. 2017), hooked.

Built from the decoder-only model's components (`Embed`, `SinusoidalPosEmbed`,
`LayerNorm`, `Attention`, `MLP`, `TransformerBlock`, `Unembed` of
models/components.py), with the same weight names and shapes:

    encoder.embed.W_E [d_vocab_src, d_model]       decoder.embed.W_E [d_vocab_tgt, d_model]
    encoder.blocks.{l}.attn.W_Q [n_heads, d_model, d_head] ...   (ln1: attention, ln2: MLP)
    decoder.blocks.{l}.attn.W_Q ...          masked self-attention   (ln1)
    decoder.blocks.{l}.cross_attn.W_Q ...    queries from the decoder, keys/values from the encoder (ln2)
    decoder.blocks.{l}.mlp.W_in [d_model, d_mlp] ...                                              (ln3)
    encoder.ln_final, decoder.ln_final       (only with final_norm)
    unembed.W_U [d_model, d_vocab_tgt], unembed.b_U

Hook points are the decoder-only model's, under `encoder.` / `decoder.`, plus the
cross-attention's: `decoder.blocks.{l}.cross_attn.hook_q / hook_k / hook_v /
hook_attn_scores / hook_pattern / hook_z`, `decoder.blocks.{l}.hook_cross_attn_out`
and `decoder.blocks.{l}.hook_resid_mid_cross` (the residual after it). The
cross-attention pattern is [batch, head, tgt_pos, src_pos].

`interp.EncDecHead` / `interp.EncDecNeuron` address one head or neuron (`interp.Head` /
`interp.Neuron` with a stack prefix). Configuration and components:
`models.encoder_decoder_components`.
"""

from __future__ import annotations

import math
from typing import Any, Optional, Sequence, Union

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from interp.hooks import HookedModule
from models.components import MLP, Attention, KVCache, LayerNorm, Unembed
from models.config import dtype_name
from models.encoder_decoder_components import Decoder, Encoder, EncoderDecoderConfig
from models.resuming import DecoderOfEncoderDecoder
from models.sampling import check_sampling, next_token


# ============================================================ the model
class EncoderDecoder(HookedModule):
    """Encoder-decoder Transformer; see `EncoderDecoderConfig` for the choices.

    `model(src_tokens [batch, src_pos], tgt_tokens [batch, tgt_pos], src_mask)`
    returns logits [batch, tgt_pos, d_vocab_tgt]; logits[:, t] predicts target
    token t + 1 (the target starts with BOS). src_mask [batch, src_pos] is 1 /
    True for real source tokens and 0 for padding (the opposite of torch's
    src_key_padding_mask); padded source positions are hidden from the encoder's
    self-attention and from the cross-attention.
    """

    def __init__(self, cfg: EncoderDecoderConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.encoder = Encoder(cfg)
        self.decoder = Decoder(cfg, self.encoder.embed if cfg.share_embeddings else None)
        self.unembed = Unembed(cfg.layer_config(cfg.d_vocab_tgt), self.decoder.embed if cfg.tie_embeddings else None)
        self.init_weights(cfg.seed)
        self.setup_hooks()

    # ------------------------------------------------------------ set-up
    def init_weights(self, seed: Optional[int] = None) -> None:
        """Token embeddings N(0, 1/d_model) (so that W_E * sqrt(d_model) has unit variance),
        other matrices Xavier-uniform (as torch.nn.Transformer), biases 0, norm weights 1."""
        gen = torch.Generator().manual_seed(seed) if seed is not None else None
        with torch.no_grad():
            for name, p in self.named_parameters():
                last = name.split(".")[-1]
                if last == "w":
                    p.fill_(1.0)
                elif last == "b" or last.startswith("b_"):
                    p.zero_()
                elif last == "W_E":
                    p.copy_(torch.randn(p.shape, generator=gen, dtype=torch.float64) / math.sqrt(self.cfg.d_model))
                else:
                    fan_in, fan_out = _fans(last, p.shape)
                    bound = math.sqrt(6.0 / (fan_in + fan_out))
                    p.copy_((torch.rand(p.shape, generator=gen, dtype=torch.float64) * 2 - 1) * bound)

    @property
    def device(self) -> torch.device:
        return self.decoder.embed.W_E.device

    @property
    def W_U(self) -> torch.Tensor:
        return self.unembed.W_U

    # ------------------------------------------------------------ input checks
    def _check_tokens(self, tokens: torch.Tensor, d_vocab: int, what: str) -> torch.Tensor:
        if not isinstance(tokens, torch.Tensor):
            raise TypeError(f"{what} must be a tensor of token ids [batch, pos], got {type(tokens).__name__}")
        tokens = tokens[None] if tokens.dim() == 1 else tokens
        if tokens.dim() != 2 or tokens.dtype not in (torch.long, torch.int32, torch.int64):
            raise ValueError(f"{what} must be an integer tensor [batch, pos], got {tuple(tokens.shape)} {tokens.dtype}")
        if tokens.shape[1] == 0:
            raise ValueError(f"{what} has no positions")
        if tokens.min() < 0 or tokens.max() >= d_vocab:
            raise ValueError(f"{what} ids must be in [0, {d_vocab}); got range [{int(tokens.min())}, {int(tokens.max())}]")
        return tokens.to(self.device).long()

    def _check_src_mask(self, src_mask: Optional[torch.Tensor], shape: tuple[int, int]) -> Optional[torch.Tensor]:
        if src_mask is None:
            return None
        src_mask = src_mask[None] if src_mask.dim() == 1 else src_mask
        if tuple(src_mask.shape) != tuple(shape):
            raise ValueError(f"src_mask has shape {tuple(src_mask.shape)}, the source is {tuple(shape)} [batch, src_pos]")
        src_mask = src_mask.to(self.device).bool()
        empty = (~src_mask.any(dim=1)).nonzero().flatten().tolist()
        if empty:
            raise ValueError(f"src_mask hides every source position of batch rows {empty}")
        return src_mask

    # ------------------------------------------------------------ forward
    def encode(self, src_tokens: torch.Tensor, src_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Source tokens [batch, src_pos] -> memory (the encoder output) [batch, src_pos, d_model]."""
        src_tokens = self._check_tokens(src_tokens, self.cfg.d_vocab_src, "src_tokens")
        return self.encoder(src_tokens, self._check_src_mask(src_mask, src_tokens.shape))

    def decode(
        self,
        tgt_tokens: torch.Tensor,
        memory: torch.Tensor,
        src_mask: Optional[torch.Tensor] = None,
        kv_cache: Optional[KVCache] = None,
    ) -> torch.Tensor:
        """Target tokens [batch, tgt_pos] and memory [batch, src_pos, d_model] -> logits [batch, tgt_pos, d_vocab_tgt].

        kv_cache: a `KVCache` of the decoder's self-attention (for generation);
        the new target tokens are appended to it.
        """
        tgt_tokens = self._check_tokens(tgt_tokens, self.cfg.d_vocab_tgt, "tgt_tokens")
        if memory.dim() != 3 or memory.shape[0] != tgt_tokens.shape[0] or memory.shape[2] != self.cfg.d_model:
            raise ValueError(
                f"memory must be [batch={tgt_tokens.shape[0]}, src_pos, d_model={self.cfg.d_model}], "
                f"got {tuple(memory.shape)}"
            )
        src_mask = self._check_src_mask(src_mask, memory.shape[:2])
        return self.unembed(self.decoder(tgt_tokens, memory, src_mask, kv_cache))

    def engine_adapter(self) -> DecoderOfEncoderDecoder:
        """This model's side of the patching engine (`interp.resumable.Resumable`): patched copies
        of a run resume at their first patched decoder block."""
        return DecoderOfEncoderDecoder(self)

    def forward(
        self, src_tokens: torch.Tensor, tgt_tokens: torch.Tensor, src_mask: Optional[torch.Tensor] = None
    ) -> torch.Tensor:
        """src_tokens [batch, src_pos], tgt_tokens [batch, tgt_pos], src_mask [batch, src_pos]
        (1 = real token) -> logits [batch, tgt_pos, d_vocab_tgt]."""
        return self.decode(tgt_tokens, self.encode(src_tokens, src_mask), src_mask)

    def core_forward(
        self, src_emb: torch.Tensor, tgt_emb: torch.Tensor, src_mask: Optional[torch.Tensor] = None
    ) -> torch.Tensor:
        """The two stacks only, on embedded inputs (no embedding scale, positions or output layer).

        src_emb [batch, src_pos, d_model], tgt_emb [batch, tgt_pos, d_model] ->
        decoder output [batch, tgt_pos, d_model]; the same as torch.nn.Transformer's
        `core(src_emb, tgt_emb, tgt_mask=causal_mask, src_key_padding_mask=~src_mask,
        memory_key_padding_mask=~src_mask)` (batch_first=True).
        """
        for what, x in (("src_emb", src_emb), ("tgt_emb", tgt_emb)):
            if x.dim() != 3 or x.shape[2] != self.cfg.d_model:
                raise ValueError(f"{what} must be [batch, pos, d_model={self.cfg.d_model}], got {tuple(x.shape)}")
        if src_emb.shape[0] != tgt_emb.shape[0]:
            raise ValueError(f"src_emb and tgt_emb disagree on batch: {src_emb.shape[0]} vs {tgt_emb.shape[0]}")
        src_mask = self._check_src_mask(src_mask, src_emb.shape[:2])
        memory = self.encoder.run_blocks(src_emb, src_mask)
        return self.decoder.run_blocks(tgt_emb, memory, src_mask)

    def loss(
        self,
        src_tokens: torch.Tensor,
        tgt_tokens: torch.Tensor,
        src_mask: Optional[torch.Tensor] = None,
        pad_id: Optional[int] = None,
        per_token: bool = False,
    ) -> torch.Tensor:
        """Teacher-forced cross-entropy of tgt_tokens[:, 1:] given tgt_tokens[:, :-1] (which
        start with BOS); targets equal to pad_id are ignored. Mean, or [batch, tgt_pos - 1]."""
        tgt_tokens = self._check_tokens(tgt_tokens, self.cfg.d_vocab_tgt, "tgt_tokens")
        if tgt_tokens.shape[1] < 2:
            raise ValueError("tgt_tokens needs at least 2 positions (BOS and one target)")
        logits = self(src_tokens, tgt_tokens[:, :-1], src_mask)
        targets = tgt_tokens[:, 1:]
        if pad_id is not None:
            targets = targets.masked_fill(targets == pad_id, -100)
        loss = F.cross_entropy(
            rearrange(logits, "b p v -> (b p) v"), rearrange(targets, "b p -> (b p)"),
            reduction="none" if per_token else "mean", ignore_index=-100,
        )
        return rearrange(loss, "(b p) -> b p", b=tgt_tokens.shape[0]) if per_token else loss

    # ------------------------------------------------------------ generation
    @torch.no_grad()
    def generate(
        self,
        src_tokens: torch.Tensor,
        max_new_tokens: int,
        bos_id: int,
        eos_id: Optional[int] = None,
        temperature: float = 0.0,
        top_k: Optional[int] = None,
        seed: Optional[int] = None,
        src_mask: Optional[torch.Tensor] = None,
        use_kv_cache: bool = True,
    ) -> torch.Tensor:
        """Decode a target for each source, one token at a time: tokens [batch, 1 + new], starting with bos_id.

        temperature=0: greedy (the most likely next token); otherwise sample from
        softmax(logits / temperature), restricted to the top_k tokens if given,
        with a generator seeded by `seed`. After eos_id a row continues with
        eos_id; generation stops when every row has produced it. use_kv_cache
        reuses the decoder's self-attention keys and values (same tokens as
        re-running the whole target each step).
        """
        check_sampling(temperature, top_k)
        if max_new_tokens < 0 or max_new_tokens + 1 > self.cfg.n_ctx:
            raise ValueError(f"max_new_tokens={max_new_tokens} must be in [0, n_ctx - 1 = {self.cfg.n_ctx - 1}]")
        for what, tok in (("bos_id", bos_id), ("eos_id", eos_id)):
            if tok is not None and not 0 <= tok < self.cfg.d_vocab_tgt:
                raise ValueError(f"{what}={tok} is not a target token id (d_vocab_tgt={self.cfg.d_vocab_tgt})")
        src_tokens = self._check_tokens(src_tokens, self.cfg.d_vocab_src, "src_tokens")
        src_mask = self._check_src_mask(src_mask, src_tokens.shape)
        memory = self.encode(src_tokens, src_mask)
        gen = torch.Generator(device=self.device).manual_seed(seed) if seed is not None else None
        batch = src_tokens.shape[0]
        tokens = torch.full((batch, 1), bos_id, dtype=torch.long, device=self.device)  # [batch, 1 + new]
        cache = KVCache.empty(self.cfg.n_layers_dec) if use_kv_cache else None
        finished = torch.zeros(batch, dtype=torch.bool, device=self.device)
        for _ in range(max_new_tokens):
            logits = self.decode(tokens[:, -1:] if use_kv_cache else tokens, memory, src_mask, cache)[:, -1]
            next_tok = next_token(logits, temperature, top_k, gen)  # [batch]
            if eos_id is not None:
                next_tok = torch.where(finished, torch.full_like(next_tok, eos_id), next_tok)
                finished |= next_tok == eos_id
            tokens = torch.cat([tokens, next_tok[:, None]], dim=1)
            if eos_id is not None and bool(finished.all()):
                break
        return tokens

    # ------------------------------------------------------------ from torch.nn.Transformer
    @classmethod
    def from_torch(
        cls,
        core: nn.Transformer,
        d_vocab_src: int,
        d_vocab_tgt: Optional[int] = None,
        embeddings: Union[None, nn.Embedding, torch.Tensor, Sequence[Union[nn.Embedding, torch.Tensor]]] = None,
        output: Union[None, nn.Linear, torch.Tensor] = None,
        n_ctx: int = 512,
        seed: Optional[int] = None,
    ) -> "EncoderDecoder":
        """An EncoderDecoder with the weights of `core` (a torch.nn.Transformer, ReLU, in either norm position).

        `core_forward(src_emb, tgt_emb)` then equals `core(src_emb, tgt_emb, tgt_mask=causal)`
        (batch_first=True; with batch_first=False transpose the [pos, batch, d_model] inputs).
        Dropout is not copied: compare with `core.eval()`.

        embeddings: None (random init), one nn.Embedding / [d_vocab, d_model] tensor
            shared by source and target, or a pair (source, target). Our model
            multiplies them by sqrt(d_model) and adds sinusoidal positions.
        output: None (random init), an nn.Linear(d_model, d_vocab_tgt) or its
            weight [d_vocab_tgt, d_model]. A Linear whose weight is the target
            embedding's gives tied embeddings.
        """
        if not isinstance(core, nn.Transformer):
            raise TypeError(f"core must be a torch.nn.Transformer, got {type(core).__name__}")
        enc_layers, dec_layers = list(core.encoder.layers), list(core.decoder.layers)
        layers = enc_layers + dec_layers
        norm_first = {bool(layer.norm_first) for layer in layers}
        if len(norm_first) != 1:
            raise ValueError("core mixes norm_first=True and False layers")
        for i, layer in enumerate(layers):
            act = layer.activation
            if not (act is F.relu or isinstance(act, nn.ReLU)):
                raise ValueError(f"only ReLU is supported; layer {i} of core has activation {act!r}")
        if (core.encoder.norm is None) != (core.decoder.norm is None):
            raise ValueError("core has a final norm on one stack only")
        norms = [m for m in core.modules() if isinstance(m, nn.LayerNorm)]
        eps = {m.eps for m in norms}
        if len(eps) > 1:
            raise ValueError(f"core's LayerNorms have different eps: {sorted(eps)}")
        d_vocab_tgt = d_vocab_src if d_vocab_tgt is None else d_vocab_tgt

        src_emb, tgt_emb = _split_embeddings(embeddings)
        share = src_emb is not None and src_emb is tgt_emb
        tie = output is not None and tgt_emb is not None and _weight(output) is _weight(tgt_emb)
        cfg = EncoderDecoderConfig(
            d_vocab_src=d_vocab_src, d_vocab_tgt=d_vocab_tgt, d_model=core.d_model, n_heads=core.nhead,
            n_layers_enc=len(enc_layers), n_layers_dec=len(dec_layers), d_mlp=enc_layers[0].linear1.out_features,
            n_ctx=n_ctx, norm_position="pre" if norm_first.pop() else "post", final_norm=core.encoder.norm is not None,
            share_embeddings=share, tie_embeddings=tie, norm_eps=eps.pop() if eps else 1e-5,
            dtype=dtype_name(next(core.parameters()).dtype), seed=seed,
        )
        model = cls(cfg).to(next(core.parameters()).device)
        with torch.no_grad():
            for ours, theirs in zip(model.encoder.blocks, enc_layers):
                _copy_attention(ours.attn, theirs.self_attn)
                _copy_mlp(ours.mlp, theirs)
                _copy_norm(ours.ln1, theirs.norm1)
                _copy_norm(ours.ln2, theirs.norm2)
            for ours, theirs in zip(model.decoder.blocks, dec_layers):
                _copy_attention(ours.attn, theirs.self_attn)
                _copy_attention(ours.cross_attn, theirs.multihead_attn)
                _copy_mlp(ours.mlp, theirs)
                _copy_norm(ours.ln1, theirs.norm1)
                _copy_norm(ours.ln2, theirs.norm2)
                _copy_norm(ours.ln3, theirs.norm3)
            if cfg.final_norm:
                _copy_norm(model.encoder.ln_final, core.encoder.norm)
                _copy_norm(model.decoder.ln_final, core.decoder.norm)
            for ours, theirs, d_vocab, what in ((model.encoder.embed, src_emb, d_vocab_src, "source"),
                                                (model.decoder.embed, tgt_emb, d_vocab_tgt, "target")):
                if theirs is not None:
                    _copy(ours.W_E, _weight(theirs), f"{what} embedding [d_vocab={d_vocab}, d_model]")
            if output is not None and not tie:
                _copy(model.unembed.W_U, _weight(output).T, "output weight, transposed [d_model, d_vocab_tgt]")
            if isinstance(output, nn.Linear) and output.bias is not None:
                _copy(model.unembed.b_U, output.bias, "output bias [d_vocab_tgt]")
        return model


# ============================================================ helpers
def _fans(name: str, shape: torch.Size) -> tuple[int, int]:
    """(fan_in, fan_out) of a weight in our layout, as for the equivalent nn.Linear."""
    if name in ("W_Q", "W_K", "W_V"):  # [n_heads, d_model, d_head]
        return shape[1], shape[0] * shape[2]
    if name == "W_O":  # [n_heads, d_head, d_model]
        return shape[0] * shape[1], shape[2]
    return shape[0], shape[1]  # [in, out]: W_in, W_out, W_U


def _weight(x: Union[nn.Module, torch.Tensor]) -> torch.Tensor:
    return x.weight if isinstance(x, nn.Module) else x


def _split_embeddings(embeddings: Any) -> tuple[Any, Any]:
    if embeddings is None or isinstance(embeddings, (nn.Module, torch.Tensor)):
        return embeddings, embeddings
    if len(embeddings) != 2:
        raise ValueError("embeddings must be one embedding (shared) or a pair (source, target)")
    return embeddings[0], embeddings[1]


def _copy(ours: torch.Tensor, theirs: torch.Tensor, what: str) -> None:
    if tuple(ours.shape) != tuple(theirs.shape):
        raise ValueError(f"{what}: expected shape {tuple(ours.shape)}, got {tuple(theirs.shape)}")
    ours.copy_(theirs)


def _copy_attention(ours: Attention, mha: nn.MultiheadAttention) -> None:
    """nn.MultiheadAttention -> W_Q / W_K / W_V [n_heads, d_model, d_head], W_O [n_heads, d_head, d_model]."""
    h = ours.W_Q.shape[0]
    if mha._qkv_same_embed_dim:
        w_q, w_k, w_v = mha.in_proj_weight.chunk(3, dim=0)  # each [n_heads * d_head, d_model]
    else:
        w_q, w_k, w_v = mha.q_proj_weight, mha.k_proj_weight, mha.v_proj_weight
    for W, w in ((ours.W_Q, w_q), (ours.W_K, w_k), (ours.W_V, w_v)):
        W.copy_(rearrange(w, "(h k) d -> h d k", h=h))
    if mha.in_proj_bias is not None:
        for b, bias in zip((ours.b_Q, ours.b_K, ours.b_V), mha.in_proj_bias.chunk(3)):
            b.copy_(rearrange(bias, "(h k) -> h k", h=h))
    ours.W_O.copy_(rearrange(mha.out_proj.weight, "d (h k) -> h k d", h=h))
    if mha.out_proj.bias is not None:
        ours.b_O.copy_(mha.out_proj.bias)


def _copy_mlp(ours: MLP, layer: nn.Module) -> None:
    """linear1 [d_mlp, d_model] -> W_in [d_model, d_mlp]; linear2 [d_model, d_mlp] -> W_out [d_mlp, d_model]."""
    ours.W_in.copy_(layer.linear1.weight.T)
    ours.W_out.copy_(layer.linear2.weight.T)
    if layer.linear1.bias is not None:
        ours.b_in.copy_(layer.linear1.bias)
    if layer.linear2.bias is not None:
        ours.b_out.copy_(layer.linear2.bias)


def _copy_norm(ours: LayerNorm, norm: nn.LayerNorm) -> None:
    if norm.weight is not None:
        ours.w.copy_(norm.weight)
    if norm.bias is not None:
        ours.b.copy_(norm.bias)
