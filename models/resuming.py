"""Our models' side of the patching engine (`interp.resumable.Resumable`, reached through
`model.engine_adapter()`): run the blocks, keep what resuming needs, resume part-way, and read
out the final norm and the unembedding.

A row of the engine patches a copy of a base run; it only has to be recomputed from its first
patched block (the residual stream entering that block comes from the base run) and, where
attention is causal, from its first patched position (earlier positions' keys and values come
from the base run). `_BlockStack` holds that logic once; the decoder-only `Transformer` and the
decoder of the `EncoderDecoder` each say how to embed, how to call one block and what context
the blocks read (the encoder's memory).
"""

from __future__ import annotations

from typing import Any, Callable, Collection, Optional

import torch

from interp import names as hook_names
from models.components import KVCache
from models.encoder_decoder_components import _embed_with_positions

Entry = Optional[Callable[[torch.Tensor], torch.Tensor]]


def _repeat(x: Optional[torch.Tensor], n: int) -> Optional[torch.Tensor]:
    return None if x is None else x.repeat(n, *[1] * (x.dim() - 1))


class _BlockStack:
    """The shared part: a stack of `n_layers` blocks whose hook names start with `prefix`."""

    n_layers: int
    prefix: str = ""
    resumes_positions: bool = True  # patches' positions line up with the stack's (causal) positions

    # ------------------------------------------------------------ what each model says
    def _context(self, inputs: tuple) -> Any:
        """What every block reads besides the residual stream (None for a decoder-only model)."""
        return None

    def _repeat_context(self, ctx: Any, n: int) -> Any:
        return ctx

    def _embed(self, inputs: tuple, start: int, kv: Optional[KVCache]) -> torch.Tensor:
        raise NotImplementedError

    def _block(self, layer: int, resid: torch.Tensor, pos_offset: int, kv: Optional[KVCache], ctx: Any) -> torch.Tensor:
        raise NotImplementedError

    # ------------------------------------------------------------ the protocol
    def patch_layer(self, name: str) -> int:
        """The first block a patch at hook `name` can change: its block, the next one for resid_post,
        -1 for anything before the stack's blocks, n_layers for its final norm."""
        prefix, layer, rest = hook_names.split(name)
        if prefix != self.prefix:
            return -1
        if layer is None:
            return self.n_layers if "ln_final" in rest else -1
        return layer + 1 if rest == "hook_resid_post" else layer

    def entry_hook(self, layer: int) -> Optional[str]:
        """The hook whose patches apply to the residual stream a resumption at `layer` starts from."""
        return hook_names.act_name("resid_post", layer - 1, stack=self.prefix.rstrip(".")) if layer > 0 else None

    def run(self, inputs: tuple, resume_rows: int = 0, resume_layers: Collection[int] = ()
            ) -> tuple[torch.Tensor, Optional["Resumption"]]:
        """The residual stream after the last block [batch, pos, d_model] (hooks fire); with
        resume_rows, also a `Resumption` of the first resume_rows rows at the given layers."""
        kv = KVCache.empty(self.n_layers) if resume_rows and self.resumes_positions else None
        ctx = self._context(inputs)
        resid = self._embed(inputs, 0, kv)
        stored: dict[int, torch.Tensor] = {}
        for layer in range(self.n_layers):
            if layer in resume_layers:
                stored[layer] = resid[:resume_rows]
            resid = self._block(layer, resid, 0, kv, ctx)
        if self.n_layers in resume_layers:
            stored[self.n_layers] = resid[:resume_rows]
        if not resume_rows:
            return resid, None
        first = tuple(x[:resume_rows] for x in inputs)
        return resid, Resumption(self, first, self._slice_context(ctx, resume_rows), kv, resume_rows, stored)

    def _slice_context(self, ctx: Any, rows: int) -> Any:
        return ctx


class Resumption:
    """n patched copies of the first rows of a run, recomputed from block `layer` and position `start`."""

    def __init__(self, stack: _BlockStack, inputs: tuple, ctx: Any, kv: Optional[KVCache], rows: int,
                 stored: dict[int, torch.Tensor]) -> None:
        self.stack, self.inputs, self.ctx, self.rows, self.stored = stack, inputs, ctx, rows, stored
        self.kv = None if kv is None else KVCache([None if k is None else k[:rows] for k in kv.keys],
                                                  [None if v is None else v[:rows] for v in kv.values])

    def _kv(self, layer: int, start: int, n: int) -> Optional[KVCache]:
        if not start:
            return None
        if self.kv is None:
            raise ValueError("this model cannot resume part-way through the positions")
        kv = KVCache.empty(self.stack.n_layers)
        for l in range(max(layer, 0), self.stack.n_layers):
            kv.keys[l] = _repeat(self.kv.keys[l][:, :start], n)
            kv.values[l] = _repeat(self.kv.values[l][:, :start], n)
        return kv

    def __call__(self, layer: int, start: int, n: int, entry: Entry = None) -> torch.Tensor:
        """The residual stream after the last block, positions start.. [n * rows, pos - start, d_model]:
        n copies of the stored rows (copy c is rows c * rows ... (c + 1) * rows - 1), recomputed with
        whatever hooks are attached from block `layer` on (-1: from the inputs, n_layers: none), `entry`
        applied to the residual stream entering block `layer` first."""
        stack = self.stack
        kv = self._kv(layer, start, n)
        if layer < 0:
            inputs = tuple(_repeat(x, n) for x in self.inputs)
            ctx = stack._context(inputs)
            resid = stack._embed(inputs, start, kv)
            layer = 0
        else:
            ctx = stack._repeat_context(self.ctx, n)
            resid = _repeat(self.stored[layer][:, start:], n)
        if entry is not None:
            resid = entry(resid)
        for l in range(layer, stack.n_layers):
            resid = stack._block(l, resid, start, kv, ctx)
        return resid


def _sizes(adapter: Any, d: int, m: int, h: int, dh: int, d_vocab: int, weights_per_block: int,
           dtype: torch.dtype) -> None:
    """The cost model's sizes (multiply-adds and activations per token)."""
    adapter.block_weights = weights_per_block
    adapter.attention_width = h * dh  # multiply-adds per token and key, for q.k and for p.v each
    adapter.attention_heads = h
    adapter.unembed_weights = d * d_vocab
    adapter.activation_width = 12 * d + 3 * m  # floats per token kept by one block
    adapter.d_vocab = d_vocab
    adapter.dtype = dtype


# ============================================================ the decoder-only Transformer
class DecoderOnlyStack(_BlockStack):
    """`models.Transformer` for the engine: inputs are (tokens [batch, pos],)."""

    def __init__(self, model: Any) -> None:
        cfg = model.cfg
        self.model, self.n_layers, self.device = model, cfg.n_layers, model.device
        d, h, kv, dh = cfg.d_model, cfg.n_heads, cfg.n_kv_heads, cfg.d_head
        m = 0 if getattr(cfg, "attn_only", False) else cfg.d_mlp
        weights = d * (h + 2 * kv) * dh + h * dh * d + d * m * (3 if cfg.gated_mlp else 2)
        _sizes(self, d, m, h, dh, cfg.d_vocab, weights, model.embed.W_E.dtype)

    def inputs(self, base: Any) -> tuple:
        if not isinstance(base, torch.Tensor) or base.dim() != 2:
            raise ValueError(f"base must be token ids [batch, pos], got {getattr(base, 'shape', type(base).__name__)}")
        return (base.to(self.device),)

    def n_pos(self, inputs: tuple) -> int:
        return inputs[0].shape[1]

    def shared_prefix(self, base: tuple, source: tuple) -> int:
        """How many leading positions the source's tokens share with the base run's in every row."""
        differ = (base[0] != source[0]).any(0).nonzero()
        return int(differ[0]) if len(differ) else base[0].shape[1]

    def _embed(self, inputs: tuple, start: int, kv: Optional[KVCache]) -> torch.Tensor:
        return self.model(inputs[0][:, start:], stop_at_layer=0, kv_cache=kv)

    def _block(self, layer: int, resid: torch.Tensor, pos_offset: int, kv: Optional[KVCache], ctx: Any) -> torch.Tensor:
        return self.model.blocks[layer](resid, pos_offset, kv, None)

    def final_norm(self, resid: torch.Tensor) -> torch.Tensor:
        return self.model.ln_final(resid) if self.model.cfg.final_norm else resid

    def unembed(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.unembed(x)


# ============================================================ the encoder-decoder: resume in the decoder
class DecoderOfEncoderDecoder(_BlockStack):
    """`models.EncoderDecoder` for the engine: inputs are (src, tgt) or (src, tgt, src_mask); rows
    resume at their first patched decoder block (a patch in the encoder reruns the whole model),
    over every target position (cross-attention's keys are the source's positions, so patches'
    positions do not all line up with the target's)."""

    prefix = "decoder."
    resumes_positions = False

    def __init__(self, model: Any) -> None:
        cfg = model.cfg
        self.model, self.n_layers, self.device = model, cfg.n_layers_dec, model.device
        d, m, h, dh = cfg.d_model, cfg.d_mlp, cfg.n_heads, cfg.d_head
        weights = 8 * h * dh * d + 2 * d * m  # self-attention, cross-attention, MLP
        _sizes(self, d, m, h, dh, cfg.d_vocab_tgt, weights, model.unembed.W_U.dtype)

    def inputs(self, base: Any) -> tuple:
        inputs = tuple(base) if isinstance(base, (tuple, list)) else (base,)
        if len(inputs) not in (2, 3) or not all(isinstance(x, torch.Tensor) for x in inputs):
            raise ValueError("an EncoderDecoder's base run is (src_tokens, tgt_tokens) or (src_tokens, tgt_tokens, "
                             "src_mask)")
        return tuple(x.to(self.device) for x in inputs)

    def n_pos(self, inputs: tuple) -> int:
        return inputs[1].shape[1]

    def shared_prefix(self, base: tuple, source: tuple) -> int:
        """Target positions the source run shares with the base run: none unless the source side agrees."""
        if any(not torch.equal(a.expand_as(b), b) for a, b in zip(source[::2], base[::2])):
            return 0
        differ = (base[1] != source[1]).any(0).nonzero()
        return int(differ[0]) if len(differ) else base[1].shape[1]

    def _context(self, inputs: tuple) -> Any:
        mask = inputs[2] if len(inputs) == 3 else None
        return self.model.encode(inputs[0], mask), (None if mask is None else mask.to(self.device).bool())

    def _slice_context(self, ctx: Any, rows: int) -> Any:
        return ctx[0][:rows], (None if ctx[1] is None else ctx[1][:rows])

    def _repeat_context(self, ctx: Any, n: int) -> Any:
        return _repeat(ctx[0], n), _repeat(ctx[1], n)

    def _embed(self, inputs: tuple, start: int, kv: Optional[KVCache]) -> torch.Tensor:
        tgt = self.model._check_tokens(inputs[1], self.model.cfg.d_vocab_tgt, "tgt_tokens")
        return _embed_with_positions(self.model.decoder, tgt[:, start:], start)

    def _block(self, layer: int, resid: torch.Tensor, pos_offset: int, kv: Optional[KVCache], ctx: Any) -> torch.Tensor:
        return self.model.decoder.blocks[layer](resid, ctx[0], ctx[1], pos_offset, kv)

    def final_norm(self, resid: torch.Tensor) -> torch.Tensor:
        decoder = self.model.decoder
        return decoder.ln_final(resid) if hasattr(decoder, "ln_final") else resid

    def unembed(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.unembed(x)


__all__ = ["DecoderOnlyStack", "DecoderOfEncoderDecoder", "Resumption"]
