"""ActivationCache: the activations of one run, by hook name, with residual-stream tools.

Shortcuts as in TransformerLens: ``cache["pattern", 3]`` is
``cache["blocks.3.attn.hook_pattern"]``, ``cache["resid_post", -1]`` the last
block's, ``cache["scale"]`` the final norm's scale.

Unlike TransformerLens, nothing here assumes weights were folded: applying a
norm to a stack of residual components uses the norm's frozen scale *and* its
weight (`frozen_norm`), so per-component logit attributions plus the norm's and
unembedding's biases add up exactly to the logits.

Part of the base layer: `HookedModule.run_with_cache` returns it, so it imports
no model code. It reads the model only through its configuration (``model.cfg``)
and its TransformerLens parameter names (``blocks.{l}.attn.W_O``, ``ln_final.w``,
``unembed.b_U``, ``model.W_U``), which every model here provides.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Iterator, Optional, Sequence, Union

import torch
from einops import einsum, rearrange

from interp import names as hook_names

PosSlice = Union[None, int, slice, Sequence[int], torch.Tensor]
Tokens = Union[int, str, Sequence[int], torch.Tensor]


def frozen_norm(x: torch.Tensor, scale: Union[torch.Tensor, float], weight: Optional[torch.Tensor],
                centre: bool) -> torch.Tensor:
    """The linear part of a norm as it acted in one run: centre (LayerNorm only), divide by
    the run's scale, multiply by the weight. x [..., d_model]; scale broadcastable to x.

    Applied to each of a set of residual components, the results plus the norm's bias sum
    to the norm's output (the norm is linear once its scale is fixed). This is the one
    implementation of that step (caches, direct logit attribution, neuron values).
    """
    if centre:
        x = x - x.mean(-1, keepdim=True)
    x = x / scale
    return x * weight if weight is not None else x


def _slice_pos(x: torch.Tensor, pos_slice: PosSlice, pos_dim: int = -2) -> torch.Tensor:
    """Index the position axis (an int drops it, like TransformerLens' Slice)."""
    if pos_slice is None:
        return x
    if isinstance(pos_slice, int):
        return x.select(pos_dim, pos_slice)
    if isinstance(pos_slice, slice):
        idx = [slice(None)] * x.dim()
        idx[pos_dim] = pos_slice
        return x[tuple(idx)]
    return x.index_select(pos_dim % x.dim(), torch.as_tensor(pos_slice, device=x.device))


class ActivationCache(Mapping):
    """Mapping hook name -> tensor, for one forward (and optionally backward) pass."""

    def __init__(self, cache_dict: dict[str, torch.Tensor], model: Any) -> None:
        self.cache_dict = cache_dict
        self.model = model

    # ------------------------------------------------------------ mapping
    def _key(self, key: Union[str, tuple]) -> str:
        if isinstance(key, tuple):
            name = hook_names.act_name(*key)
        else:
            name = key if key in self.cache_dict else hook_names.act_name(key)
        n_blocks = getattr(self.model, "n_blocks", None)
        return hook_names.normalize(name, n_blocks) if n_blocks else name

    def __getitem__(self, key: Union[str, tuple]) -> torch.Tensor:
        name = self._key(key)
        try:
            return self.cache_dict[name]
        except KeyError:
            close = hook_names.closest(name, list(self.cache_dict))
            hint = f" Closest cached: {', '.join(close)}." if close else ""
            valid = name in getattr(self.model, "hook_dict", {})
            why = " (a valid hook, not cached: widen names_filter)" if valid else ""
            raise KeyError(f"{name!r} is not in the cache{why}.{hint}") from None

    def __contains__(self, key: object) -> bool:
        try:
            return self._key(key) in self.cache_dict  # type: ignore[arg-type]
        except (ValueError, IndexError):
            return False

    def __iter__(self) -> Iterator[str]:
        return iter(self.cache_dict)

    def __len__(self) -> int:
        return len(self.cache_dict)

    def __repr__(self) -> str:
        return f"ActivationCache({len(self)} activations: {list(self.cache_dict)[:4]}...)"

    def to(self, device: Union[str, torch.device]) -> "ActivationCache":
        return ActivationCache({k: v.to(device) for k, v in self.cache_dict.items()}, self.model)

    # ------------------------------------------------------------ the model, read by name
    @property
    def _cfg(self):
        return self.model.cfg

    def _weight(self, name: str) -> torch.Tensor:
        return self.model.get_parameter(name).detach()

    def _layer(self, layer: Optional[int], allow_end: bool = True) -> int:
        """A layer argument. With allow_end (the "up to the input of layer L" arguments of
        accumulated_resid, decompose_resid, stack_head_results, apply_ln_to_stack), L runs over
        0..n_layers, where n_layers is the input to the unembedding; None and -1 mean n_layers
        and -k means n_layers + 1 - k, as in TransformerLens. Without it, a block index:
        -1 is the last block."""
        n = self._cfg.n_layers
        if not allow_end:
            return hook_names.resolve_layer(layer, n)
        if layer is None:
            return n
        return hook_names.resolve_layer(layer, n + 1, "layer (0..n_layers, the input to that layer)")

    def _need_pre_norm(self, what: str) -> None:
        if self._cfg.norm_position != "pre":
            raise ValueError(f"{what} needs a pre-norm model: with post-norm the residual is not a sum of components")

    # ------------------------------------------------------------ residual stream
    def accumulated_resid(
        self,
        layer: Optional[int] = None,
        incl_mid: bool = False,
        apply_ln: bool = False,
        pos_slice: PosSlice = None,
        return_labels: bool = False,
    ):
        """The residual stream at the start of each block up to `layer` (default: all,
        plus the final residual): [component, batch, pos, d_model].

        incl_mid adds each block's resid_mid; apply_ln applies the final norm's
        frozen scale and weight (see `apply_ln_to_stack`).
        """
        n = self._cfg.n_layers
        layer = self._layer(layer)
        parts, labels = [], []
        for l in range(layer):
            parts.append(self[hook_names.act_name("resid_pre", l)])
            labels.append(f"{l}_pre")
            if incl_mid:
                parts.append(self[hook_names.act_name("resid_mid", l)])
                labels.append(f"{l}_mid")
        if layer == n:
            parts.append(self[hook_names.act_name("resid_post", n - 1)])
            labels.append("final_post")
        stack = _slice_pos(torch.stack(parts), pos_slice)
        if apply_ln:
            stack = self.apply_ln_to_stack(stack, pos_slice=pos_slice)
        return (stack, labels) if return_labels else stack

    def decompose_resid(
        self,
        layer: Optional[int] = None,
        mlp_input: bool = False,
        mode: str = "all",
        incl_embeds: bool = True,
        apply_ln: bool = False,
        pos_slice: PosSlice = None,
        return_labels: bool = False,
    ):
        """The residual stream entering block `layer` (default: the final residual)
        as a stack of what wrote it: embed, pos_embed, then each block's attn_out and
        mlp_out. [component, batch, pos, d_model]; with incl_embeds and mode="all"
        the components sum to the residual exactly.

        mlp_input: decompose block `layer`'s MLP input instead (adds its attn_out).
        mode: "all", "attn" or "mlp" (which block outputs to include).
        """
        self._need_pre_norm("decompose_resid")
        if mode not in ("all", "attn", "mlp"):
            raise ValueError(f"mode must be 'all', 'attn' or 'mlp', got {mode!r}")
        cfg = self._cfg
        layer = self._layer(layer)
        parts, labels = [], []
        if incl_embeds:
            parts.append(self["hook_embed"])
            labels.append("embed")
            if "hook_pos_embed" in self.model.hook_dict:
                parts.append(self["hook_pos_embed"])
                labels.append("pos_embed")
        # The MLP of a sequential block also reads its own attention output.
        extra = 1 if mlp_input and layer < cfg.n_layers and not cfg.parallel_attn_mlp else 0
        for l in range(layer + extra):
            if mode in ("all", "attn"):
                parts.append(self[hook_names.act_name("attn_out", l)])
                labels.append(f"{l}_attn_out")
            if mode in ("all", "mlp") and not (mlp_input and l == layer):
                parts.append(self[hook_names.act_name("mlp_out", l)])
                labels.append(f"{l}_mlp_out")
        stack = _slice_pos(torch.stack(parts), pos_slice)
        if apply_ln:
            stack = self.apply_ln_to_stack(stack, layer if layer < cfg.n_layers else None, mlp_input, pos_slice)
        return (stack, labels) if return_labels else stack

    def head_results(self, layer: int) -> torch.Tensor:
        """What each head of block `layer` writes, z_h W_O[h] without b_O: [batch, pos, head, d_model].
        hook_result if cached, else computed from hook_z and W_O."""
        layer = self._layer(layer, allow_end=False)
        name = hook_names.act_name("result", layer)
        if name in self.cache_dict:
            return self.cache_dict[name]
        W_O = self._weight(hook_names.param_name("attn.W_O", layer))
        return einsum(self[hook_names.act_name("z", layer)], W_O, "b p h k, h k d -> b p h d")

    def stack_head_results(
        self,
        layer: Optional[int] = None,
        return_labels: bool = False,
        incl_remainder: bool = False,
        pos_slice: PosSlice = None,
        apply_ln: bool = False,
    ):
        """What each head of blocks 0..layer-1 writes to the residual stream (z_h W_O[h],
        without b_O): [layer * head, batch, pos, d_model], labels "L{l}H{h}".

        incl_remainder adds one component: the residual minus all head results.
        Uses hook_result if cached, otherwise computes it from hook_z and W_O.
        """
        cfg = self._cfg
        layer = self._layer(layer)
        parts, labels = [], []
        for l in range(layer):
            parts.append(rearrange(_slice_pos(self.head_results(l), pos_slice, pos_dim=1), "b ... h d -> h b ... d"))
            labels += [f"L{l}H{h}" for h in range(cfg.n_heads)]
        stack = torch.cat(parts) if parts else torch.zeros(0)
        if incl_remainder:
            resid = (self[hook_names.act_name("resid_pre", layer)] if layer < cfg.n_layers
                     else self[hook_names.act_name("resid_post", cfg.n_layers - 1)])
            stack = torch.cat([stack, (_slice_pos(resid, pos_slice) - stack.sum(0))[None]])
            labels.append("remainder")
        if apply_ln:
            stack = self.apply_ln_to_stack(stack, layer if layer < cfg.n_layers else None, pos_slice=pos_slice)
        return (stack, labels) if return_labels else stack

    # ------------------------------------------------------------ norms and logits
    def _norm_for(self, layer: Optional[int], mlp_input: bool) -> Optional[str]:
        """The parameter prefix of the norm ("ln_final", "blocks.2.ln1"), None if there is none."""
        cfg = self._cfg
        layer = self._layer(layer)
        if layer == cfg.n_layers:
            return "ln_final" if cfg.final_norm else None
        return hook_names.param_name("ln2" if mlp_input else "ln1", layer)

    def apply_ln_to_stack(
        self,
        residual_stack: torch.Tensor,
        layer: Optional[int] = None,
        mlp_input: bool = False,
        pos_slice: PosSlice = None,
    ) -> torch.Tensor:
        """Apply the linear part of a norm, as it acted in this run, to each component.

        residual_stack [..., batch, pos, d_model] (or [..., batch, d_model] when
        pos_slice is an int). For each component x: centre it (LayerNorm only),
        divide by the norm's cached scale, multiply by the norm's weight. The
        results plus the norm's bias sum to the norm's output. layer=None is the
        final norm; else block `layer`'s ln1 (ln2 if mlp_input).
        """
        self._need_pre_norm("apply_ln_to_stack")
        norm = self._norm_for(layer, mlp_input)
        if norm is None:
            return residual_stack
        scale = _slice_pos(self[f"{norm}.hook_scale"], pos_slice)  # [batch, pos, 1]
        return frozen_norm(residual_stack, scale, self._weight(f"{norm}.w"), self._cfg.norm == "layernorm")

    def _token_id(self, t: Tokens) -> torch.Tensor:
        if isinstance(t, str):
            t = self.model.to_single_token(t)
        return torch.as_tensor(t, device=self.model.W_U.device)

    def _directions(self, tokens: Tokens) -> torch.Tensor:
        """Unembedding columns for tokens: [..., d_model]."""
        return rearrange(self.model.W_U.detach()[:, self._token_id(tokens)], "d ... -> ... d")

    def logit_attrs(
        self,
        residual_stack: torch.Tensor,
        tokens: Tokens,
        incorrect_tokens: Optional[Tokens] = None,
        pos_slice: PosSlice = None,
    ) -> torch.Tensor:
        """Each component's direct contribution to the logit of `tokens` (minus that of
        incorrect_tokens), through the final norm with its scale frozen from this run.

        residual_stack [component, batch, pos, d_model] (raw, not normed) ->
        [component, batch, pos]. tokens: one id or word, or one per batch element
        ([batch]) or per batch and position ([batch, pos]). The sum over a full
        decomposition plus `logit_bias(tokens)` equals the logits.
        """
        normed = self.apply_ln_to_stack(residual_stack, pos_slice=pos_slice)
        direction = self._directions(tokens)
        if incorrect_tokens is not None:
            direction = direction - self._directions(incorrect_tokens)
        if direction.dim() == 2 and normed.dim() == 4:  # one token per batch element
            direction = direction[:, None, :]
        return (normed * direction).sum(-1)

    def logit_bias(self, tokens: Tokens, incorrect_tokens: Optional[Tokens] = None) -> torch.Tensor:
        """The part of the logit no component writes: ln_final.b . W_U[:, t] + b_U[t]."""
        def bias(t: Tokens) -> torch.Tensor:
            ids = self._token_id(t)
            out = self._weight("unembed.b_U")[ids]
            if self._cfg.final_norm and self._cfg.norm == "layernorm":
                out = out + (self._weight("ln_final.b") @ self.model.W_U.detach())[ids]
            return out

        return bias(tokens) - bias(incorrect_tokens) if incorrect_tokens is not None else bias(tokens)


__all__ = ["ActivationCache", "frozen_norm"]
