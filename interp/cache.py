"""ActivationCache: the activations of one run, by hook name, with residual-stream tools.

Shortcuts as in TransformerLens: ``cache["pattern", 3]`` is
``cache["blocks.3.attn.hook_pattern"]``, ``cache["resid_post", -1]`` the last
block's, ``cache["scale"]`` the final norm's scale.

The residual-stream methods (accumulated_resid, decompose_resid, stack_head_results,
apply_ln_to_stack, logit_attrs) take TransformerLens 4.3's arguments in its order and give
its numbers. Where TransformerLens' numbers assume folded weights (apply_ln ignores the
norm's weight), a model whose norm weights are not folded must say which it means
(``ln_weight=True``: the exact norm, whose per-component logit attributions plus
`logit_bias` add up to the logits; ``ln_weight=False``: TransformerLens' numbers).

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
from interp.checks import require_pre_norm
from interp.unembedding import FrozenNorm, Readout, frozen_norm, unembed_directions
from interp.words import answer_token, exact_token_conflict

PosSlice = Union[None, int, tuple, slice, Sequence[int], torch.Tensor]
Tokens = Union[int, str, Sequence[int], torch.Tensor]


def slice_axis(x: torch.Tensor, index: PosSlice, dim: int) -> torch.Tensor:
    """Index one axis with TransformerLens' `Slice` rules: None leaves x as it is, an int
    selects (dropping the axis), a tuple is slice(*tuple) ((k,) is :k, (m, k) is m:k), a
    slice slices, a list or tensor of indices gathers."""
    if index is None:
        return x
    if isinstance(index, torch.Tensor) and index.dim() == 0:
        index = int(index)
    if isinstance(index, int):
        return x.select(dim, index)
    if isinstance(index, tuple):
        index = slice(*index)
    if isinstance(index, slice):
        idx = [slice(None)] * x.dim()
        idx[dim] = index
        return x[tuple(idx)]
    return x.index_select(dim % x.dim(), torch.as_tensor(index, device=x.device))


class ActivationCache(Mapping):
    """Mapping hook name -> tensor, for one forward (and optionally backward) pass.

    Tensors have a leading batch axis unless `remove_batch_dim()` (or
    ``run_with_cache(remove_batch_dim=True)``) took it away (`has_batch_dim`).
    """

    def __init__(self, cache_dict: dict[str, torch.Tensor], model: Any, has_batch_dim: bool = True) -> None:
        self.cache_dict = cache_dict
        self.model = model
        self.has_batch_dim = has_batch_dim

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
        return ActivationCache({k: v.to(device) for k, v in self.cache_dict.items()}, self.model, self.has_batch_dim)

    def remove_batch_dim(self) -> "ActivationCache":
        """Drop the batch axis of a one-prompt cache, in place (as TransformerLens); returns self.
        A cache of several prompts raises (index the batch instead)."""
        if not self.has_batch_dim:
            raise ValueError("this cache has no batch axis any more (remove_batch_dim was already called)")
        sizes = {v.shape[0] for v in self.cache_dict.values() if v.dim() > 0}
        if sizes - {1}:
            raise ValueError(f"remove_batch_dim needs a batch of one; this cache's batch sizes are {sorted(sizes)}")
        self.cache_dict = {k: (v[0] if v.dim() > 0 else v) for k, v in self.cache_dict.items()}
        self.has_batch_dim = False
        return self

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
        (as in TransformerLens) and -k means n_layers + 1 - k. Without it, a block index:
        -1 is the last block."""
        n = self._cfg.n_layers
        if not allow_end:
            return hook_names.resolve_layer(layer, n)
        if layer is None:
            return n
        return hook_names.resolve_layer(layer, n + 1, "layer (0..n_layers, the input to that layer)")

    # ------------------------------------------------------------ residual stream
    def accumulated_resid(
        self,
        layer: Optional[int] = None,
        incl_mid: bool = False,
        apply_ln: bool = False,
        pos_slice: PosSlice = None,
        mlp_input: bool = False,
        return_labels: bool = False,
        *,
        ln_weight: Optional[bool] = None,
    ):
        """The residual stream entering blocks 0..layer (TransformerLens' semantics):
        [component, batch, pos, d_model], labels "0_pre", ..., "final_post".

        layer: None, -1 or n_layers: every block's resid_pre and the final residual.
        incl_mid: each earlier block's resid_mid after its resid_pre ("{l}_mid").
        mlp_input: also block `layer`'s resid_mid (the input of its MLP).
        apply_ln: with layer = n_layers, apply the final norm to each component as
            if it were the whole residual (its own mean and scale, then the norm's
            weight and bias): the logit lens. With layer < n_layers, block `layer`'s
            norm with this run's cached scale (see `apply_ln_to_stack`, ln_weight).
        """
        cfg = self._cfg
        n = cfg.n_layers
        layer = self._layer(layer)
        parts, labels = [], []
        for l in range(layer + 1):
            if l == n:
                parts.append(self[hook_names.act_name("resid_post", n - 1)])
                labels.append("final_post")
                continue
            parts.append(self[hook_names.act_name("resid_pre", l)])
            labels.append(f"{l}_pre")
            if (incl_mid and l < layer) or (mlp_input and l == layer):
                if cfg.parallel_attn_mlp or cfg.attn_only:
                    raise ValueError("this model's blocks have no resid_mid (parallel or attention-only blocks)")
                parts.append(self[hook_names.act_name("resid_mid", l)])
                labels.append(f"{l}_mid")
        stack = torch.stack([slice_axis(x, pos_slice, -2) for x in parts])
        if apply_ln:
            # (mlp_input means nothing at the final norm, as in TransformerLens.)
            stack = self.apply_ln_to_stack(stack, layer, mlp_input and layer < n, pos_slice, recompute_ln=layer == n,
                                           ln_weight=ln_weight)
        return (stack, labels) if return_labels else stack

    def decompose_resid(
        self,
        layer: Optional[int] = None,
        mlp_input: bool = False,
        mode: str = "all",
        apply_ln: bool = False,
        pos_slice: PosSlice = None,
        incl_embeds: bool = True,
        return_labels: bool = False,
        *,
        ln_weight: Optional[bool] = None,
    ):
        """The residual stream entering block `layer` (default: the final residual)
        as a stack of what wrote it: embed, pos_embed, then each block's attn_out and
        mlp_out. [component, batch, pos, d_model]; with incl_embeds and mode="all"
        the components sum to the residual exactly.

        mlp_input: decompose block `layer`'s MLP input instead (adds its attn_out).
        mode: "all", "attn" or "mlp" (which block outputs to include).
        apply_ln: apply block `layer`'s norm (ln2 with mlp_input; the final norm for
            n_layers) with this run's cached scale; see `apply_ln_to_stack`.
        """
        require_pre_norm(self._cfg, "decompose_resid")
        if mode not in ("all", "attn", "mlp"):
            raise ValueError(f"mode must be 'all', 'attn' or 'mlp', got {mode!r}")
        cfg = self._cfg
        layer = self._layer(layer)
        if mlp_input and cfg.parallel_attn_mlp:
            raise ValueError("mlp_input=True: in a parallel block the MLP reads resid_pre, not attn_out "
                             "(TransformerLens would add attn_out); use mlp_input=False")
        parts, labels = [], []
        if incl_embeds:
            parts.append(self["hook_embed"])
            labels.append("embed")
            if "hook_pos_embed" in self.model.hook_dict:
                parts.append(self["hook_pos_embed"])
                labels.append("pos_embed")
        for l in range(layer):
            if mode != "mlp":
                parts.append(self[hook_names.act_name("attn_out", l)])
                labels.append(f"{l}_attn_out")
            if mode != "attn" and not cfg.attn_only:
                parts.append(self[hook_names.act_name("mlp_out", l)])
                labels.append(f"{l}_mlp_out")
        if mlp_input and mode != "mlp" and layer < cfg.n_layers:
            parts.append(self[hook_names.act_name("attn_out", layer)])
            labels.append(f"{layer}_attn_out")
        stack = torch.stack([slice_axis(x, pos_slice, -2) for x in parts])
        if apply_ln:
            stack = self.apply_ln_to_stack(stack, layer, mlp_input, pos_slice, ln_weight=ln_weight)
        return (stack, labels) if return_labels else stack

    def head_results(self, layer: int) -> torch.Tensor:
        """What each head of block `layer` writes, z_h W_O[h] without b_O: [batch, pos, head, d_model].
        hook_result if cached, else computed from hook_z and W_O."""
        layer = self._layer(layer, allow_end=False)
        name = hook_names.act_name("result", layer)
        if name in self.cache_dict:
            return self.cache_dict[name]
        W_O = self._weight(hook_names.param_name("attn.W_O", layer))
        return einsum(self[hook_names.act_name("z", layer)], W_O, "... h k, h k d -> ... h d")

    def stack_head_results(
        self,
        layer: Optional[int] = -1,
        return_labels: bool = False,
        incl_remainder: bool = False,
        pos_slice: PosSlice = None,
        apply_ln: bool = False,
        *,
        ln_weight: Optional[bool] = None,
    ):
        """What each head of blocks 0..layer-1 writes to the residual stream (z_h W_O[h],
        without b_O): [layer * head, batch, pos, d_model], labels "L{l}H{h}".
        layer: -1, None or n_layers for every block.

        incl_remainder adds one component: the residual entering `layer` minus all head results.
        Uses hook_result if cached, otherwise computes it from hook_z and W_O.
        """
        cfg = self._cfg
        layer = self._layer(layer)
        parts, labels = [], []
        for l in range(layer):
            parts.append(rearrange(slice_axis(self.head_results(l), pos_slice, -3), "... h d -> h ... d"))
            labels += [f"L{l}H{h}" for h in range(cfg.n_heads)]
        if parts:
            stack = torch.cat(parts)
        else:
            shape = slice_axis(self["hook_embed"], pos_slice, -2).shape
            stack = self["hook_embed"].new_zeros((0, *shape))
        if incl_remainder:
            resid = (self[hook_names.act_name("resid_pre", layer)] if layer < cfg.n_layers
                     else self[hook_names.act_name("resid_post", cfg.n_layers - 1)])
            stack = torch.cat([stack, (slice_axis(resid, pos_slice, -2) - stack.sum(0))[None]])
            labels.append("remainder")
        if apply_ln:
            stack = self.apply_ln_to_stack(stack, layer, pos_slice=pos_slice, ln_weight=ln_weight)
        return (stack, labels) if return_labels else stack

    # ------------------------------------------------------------ norms and logits
    def _norm_for(self, layer: int, mlp_input: bool) -> Optional[str]:
        """The parameter prefix of the norm ("ln_final", "blocks.2.ln1"), None if there is none."""
        cfg = self._cfg
        if layer == cfg.n_layers:
            if mlp_input:
                raise ValueError("mlp_input=True needs a block (layer < n_layers); the final norm has no MLP")
            return "ln_final" if cfg.final_norm else None
        return hook_names.param_name("ln2" if mlp_input else "ln1", layer)

    def _norm_weight(self, norm: str, ln_weight: Optional[bool]) -> Optional[torch.Tensor]:
        """The norm weight to multiply by, per the ln_weight rule (see `apply_ln_to_stack`)."""
        w = self._weight(f"{norm}.w")
        if ln_weight is None:
            if bool((w == 1).all()):
                return None  # folded (or never trained): both conventions agree
            raise ValueError(
                f"{norm}.w is not folded into the next weights, so TransformerLens' apply_ln (divide by the "
                f"cached scale, ignore the weight: numbers meant for fold_ln=True) is not this norm. Say which "
                f"you mean: ln_weight=True (the norm's exact linear part: with logit_bias, attributions add up "
                f"to the logits), ln_weight=False (TransformerLens' numbers on these unfolded weights), or fold "
                f"first with models.processing.process_weights(model, fold_value_biases=...)."
            )
        return w if ln_weight else None

    def apply_ln_to_stack(
        self,
        residual_stack: torch.Tensor,
        layer: Optional[int] = None,
        mlp_input: bool = False,
        pos_slice: PosSlice = None,
        batch_slice: PosSlice = None,
        has_batch_dim: bool = True,
        recompute_ln: bool = False,
        *,
        ln_weight: Optional[bool] = None,
    ) -> torch.Tensor:
        """Apply a norm, as it acted in this run, to each component of a residual stack.

        residual_stack [component, batch, pos, d_model] (pos_slice and batch_slice already
        applied to it; they are applied here to the cached scale). layer: the input of
        block `layer` (ln1, or ln2 with mlp_input); None, -1 or n_layers: the final norm.
        Each component is centred (LayerNorm) and divided by the norm's cached scale, as
        in TransformerLens. Then:

        ln_weight: whether to multiply by the norm's weight w. TransformerLens does not
            (its numbers assume weights folded with fold_ln). Left as None, it is not
            needed where w is all ones (a folded model); elsewhere it must be given, so
            the two conventions never differ silently. True: the norm's exact linear part,
            whose results plus the norm's bias sum to the norm's output.
        recompute_ln: for the final norm only, normalise each component by its own
            statistics and apply the weight and bias (the logit lens), as TransformerLens.
        """
        require_pre_norm(self._cfg, "apply_ln_to_stack")
        cfg = self._cfg
        layer = self._layer(layer)
        residual_stack = self._batch_sliced(residual_stack, batch_slice, has_batch_dim)
        norm = self._norm_for(layer, mlp_input)
        if recompute_ln and layer == cfg.n_layers and norm is not None:
            centre = cfg.norm == "layernorm"
            x = residual_stack - residual_stack.mean(-1, keepdim=True) if centre else residual_stack
            x = x / (x.pow(2).mean(-1, keepdim=True) + cfg.norm_eps).sqrt() * self._weight(f"{norm}.w")
            return x + self._weight(f"{norm}.b") if centre else x
        return self._frozen(layer, mlp_input, pos_slice, batch_slice, ln_weight)(residual_stack)

    def _batch_sliced(self, residual_stack: torch.Tensor, batch_slice: PosSlice, has_batch_dim: bool) -> torch.Tensor:
        if has_batch_dim and self.has_batch_dim:
            return slice_axis(residual_stack, batch_slice, 1)
        return residual_stack

    def _frozen(self, layer: int, mlp_input: bool, pos_slice: PosSlice, batch_slice: PosSlice,
                ln_weight: Optional[bool]) -> FrozenNorm:
        """The norm entering block `layer` (ln2 with mlp_input; the final norm for n_layers) with
        this run's cached scale, sliced like the stack (`interp.unembedding`); the identity if none."""
        norm = self._norm_for(layer, mlp_input)
        if norm is None:
            return FrozenNorm(identity=True)
        scale = slice_axis(self[f"{norm}.hook_scale"], pos_slice, -2)  # [batch, pos, 1]
        if self.has_batch_dim:
            scale = slice_axis(scale, batch_slice, 0)
        return FrozenNorm(scale, self._norm_weight(norm, ln_weight), self._cfg.norm == "layernorm")

    def _token_id(self, t: Tokens) -> torch.Tensor:
        if isinstance(t, str):
            conflict = exact_token_conflict(self.model, t)
            if conflict is not None:
                raise ValueError(conflict)
            t = answer_token(self.model, t)
        return torch.as_tensor(t, device=self.model.W_U.device)

    def logit_attrs(
        self,
        residual_stack: torch.Tensor,
        tokens: Tokens,
        incorrect_tokens: Optional[Tokens] = None,
        pos_slice: PosSlice = None,
        batch_slice: PosSlice = None,
        has_batch_dim: bool = True,
        *,
        ln_weight: Optional[bool] = None,
    ) -> torch.Tensor:
        """Each component's direct contribution to the logit of `tokens` (minus that of
        incorrect_tokens), through the final norm with its scale frozen from this run.

        residual_stack [component, batch, pos, d_model] (raw, not normed) ->
        [component, batch, pos]. tokens: one id or word, or one per batch element
        ([batch]) or per batch and position ([batch, pos]). ln_weight as in
        `apply_ln_to_stack`; with ln_weight=True the sum over a full decomposition plus
        `logit_bias(tokens)` equals the logits.
        """
        require_pre_norm(self._cfg, "logit_attrs")
        stack = self._batch_sliced(residual_stack, batch_slice, has_batch_dim)
        readout = Readout(self.model, norm=self._frozen(self._cfg.n_layers, False, pos_slice, batch_slice, ln_weight))
        ids = self._token_id(tokens)
        wrong = self._token_id(incorrect_tokens) if incorrect_tokens is not None else None
        if wrong is not None and ids.shape != wrong.shape:
            raise ValueError("tokens and incorrect_tokens must have the same shape")
        direction = unembed_directions(self.model, ids, wrong)
        if (has_batch_dim and self.has_batch_dim and not isinstance(batch_slice, int) and stack.dim() == 4
                and direction.dim() == 2 and direction.shape[0] == stack.shape[1]):
            direction = direction[:, None, :]  # one token per batch element, for every position
        return readout.logit(stack, direction)

    def logit_bias(self, tokens: Tokens, incorrect_tokens: Optional[Tokens] = None) -> torch.Tensor:
        """The part of the logit no component writes: ln_final.b . W_U[:, t] + b_U[t]."""
        def bias(t: Tokens) -> torch.Tensor:
            ids = self._token_id(t)
            out = self._weight("unembed.b_U")[ids]
            if self._cfg.final_norm and self._cfg.norm == "layernorm":
                out = out + (self._weight("ln_final.b") @ self.model.W_U.detach())[ids]
            return out

        return bias(tokens) - bias(incorrect_tokens) if incorrect_tokens is not None else bias(tokens)


__all__ = ["ActivationCache", "frozen_norm", "slice_axis"]
