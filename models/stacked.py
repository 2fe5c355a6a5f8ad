"""Every block's weights stacked along a leading layer axis, under TransformerLens' names.

    model.W_Q     [n_layers, n_heads, d_model, d_head]     (W_K, W_V likewise; b_Q [n_layers, n_heads, d_head])
    model.W_O     [n_layers, n_heads, d_head, d_model]     b_O [n_layers, d_model]
    model.W_in    [n_layers, d_model, d_mlp]               b_in [n_layers, d_mlp]; W_gate likewise
    model.W_out   [n_layers, d_mlp, d_model]               b_out [n_layers, d_model]
    model.W_E     [d_vocab, d_model]   W_pos [n_ctx, d_model]   W_U [d_model, d_vocab]   b_U [d_vocab]
    model.QK      FactoredMatrix W_Q @ W_K^T   [n_layers, n_heads, d_model, d_model]
    model.OV      FactoredMatrix W_V @ W_O     [n_layers, n_heads, d_model, d_model]

The stacks are copies (torch.stack): writing into one changes nothing; edit
`model.blocks[l].attn.W_Q` instead. With grouped-query attention W_K, W_V, b_K and
b_V have n_kv_heads heads, as in TransformerLens 4.3; QK and OV repeat each key/value
head for the query heads that share it, so they have n_heads.
"""

from __future__ import annotations

import torch

from interp.factored import FactoredMatrix


def kv_repeat(x: torch.Tensor, n_heads: int) -> torch.Tensor:
    """[n_kv_heads, ...] -> [n_heads, ...], each key/value head repeated for its query heads."""
    return x.repeat_interleave(n_heads // x.shape[0], dim=0)


_MLP_STACKS = ("W_in", "W_gate", "W_out", "b_in", "b_out")


class StackedWeights:
    """Mixin for `Transformer`: read-only stacked views of the weights (see the module docstring)."""

    def __getattr__(self, name: str):
        # A property that raises AttributeError lands here; keep its reason instead of nn.Module's.
        try:
            return super().__getattr__(name)
        except AttributeError:
            cfg = self.__dict__.get("cfg")
            if cfg is not None and name in _MLP_STACKS and cfg.attn_only:
                raise AttributeError(f"an attn_only model has no MLP weights ({name})") from None
            if cfg is not None and name == "W_gate" and not cfg.gated_mlp:
                raise AttributeError("W_gate exists only for gated MLPs (gated_mlp=True)") from None
            raise

    def _stack(self, attr: str, kv: bool = False) -> torch.Tensor:
        module, name = attr.split(".")  # a missing one raises AttributeError, explained in __getattr__
        parts = [getattr(getattr(block, module), name) for block in self.blocks]
        if kv:
            parts = [kv_repeat(p, self.cfg.n_heads) for p in parts]
        return torch.stack(parts)

    @property
    def W_E(self) -> torch.Tensor:
        return self.embed.W_E

    @property
    def W_pos(self) -> torch.Tensor:
        if not hasattr(self, "pos_embed") or not hasattr(self.pos_embed, "W_pos"):
            raise AttributeError(f"this model has {self.cfg.positional} positions, not a learned W_pos")
        return self.pos_embed.W_pos

    @property
    def W_U(self) -> torch.Tensor:
        return self.unembed.W_U

    @property
    def b_U(self) -> torch.Tensor:
        return self.unembed.b_U

    W_Q = property(lambda self: self._stack("attn.W_Q"))
    W_K = property(lambda self: self._stack("attn.W_K"))
    W_V = property(lambda self: self._stack("attn.W_V"))
    W_O = property(lambda self: self._stack("attn.W_O"))
    b_Q = property(lambda self: self._stack("attn.b_Q"))
    b_K = property(lambda self: self._stack("attn.b_K"))
    b_V = property(lambda self: self._stack("attn.b_V"))
    b_O = property(lambda self: self._stack("attn.b_O"))
    W_in = property(lambda self: self._stack("mlp.W_in"))
    W_gate = property(lambda self: self._stack("mlp.W_gate"))
    W_out = property(lambda self: self._stack("mlp.W_out"))
    b_in = property(lambda self: self._stack("mlp.b_in"))
    b_out = property(lambda self: self._stack("mlp.b_out"))

    @property
    def QK(self) -> FactoredMatrix:
        """Each head's bilinear form on (query residual, key residual): W_Q W_K^T."""
        return FactoredMatrix(self.W_Q, self._stack("attn.W_K", kv=True).transpose(-2, -1))

    @property
    def OV(self) -> FactoredMatrix:
        """Each head's map from the residual it reads to what it writes: W_V W_O."""
        return FactoredMatrix(self._stack("attn.W_V", kv=True), self.W_O)


__all__ = ["StackedWeights", "kv_repeat"]
