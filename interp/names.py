"""Hook names: the one place that builds, parses and normalises them.

Names follow TransformerLens, per block ``l``:

    hook_embed, hook_pos_embed
    blocks.{l}.hook_resid_pre / hook_resid_mid / hook_resid_post / hook_attn_out / hook_mlp_out
    blocks.{l}.ln1.hook_scale / hook_normalized     (ln2 likewise; ln_final.hook_scale / hook_normalized)
    blocks.{l}.attn.hook_q / hook_k / hook_v / hook_rot_q / hook_rot_k / hook_z / hook_result
    blocks.{l}.attn.hook_attn_scores / hook_pattern
    blocks.{l}.mlp.hook_pre / hook_pre_linear / hook_post
    blocks.{l}.transcoder.hook_feature_acts / hook_error   (while a transcoder is attached: probes.sae.attached)

A model with several stacks (the encoder-decoder) puts a stack prefix in front:
``decoder.blocks.1.cross_attn.hook_pattern``. Negative layers count from the end
of their stack, as in TransformerLens: `act_name` keeps them as given
(``blocks.-1.attn.hook_z``, like TransformerLens' ``get_act_name``) and
`normalize` turns them into real indices once the number of layers is known
(hooked models and caches call it on every name they are given).

    act_name("pattern", 3)          -> "blocks.3.attn.hook_pattern"
    act_name("k6")                  -> "blocks.6.attn.hook_k"
    act_name("scale", 1, "ln2")     -> "blocks.1.ln2.hook_scale"
    act_name("scale")               -> "ln_final.hook_scale"
    act_name("z", 0, stack="decoder", attn="cross_attn") -> "decoder.blocks.0.cross_attn.hook_z"
    normalize("blocks.-1.hook_resid_post", 4)            -> "blocks.3.hook_resid_post"

Imports nothing but the standard library: this is the base layer.
"""

from __future__ import annotations

import difflib
import re
from functools import lru_cache
from typing import Mapping, Optional, Sequence, Union

from interp.checks import IndexRangeError, resolve_layer  # noqa: F401  (resolve_layer: re-exported)

ATTN_ACTS = ("q", "k", "v", "z", "rot_q", "rot_k", "attn_scores", "pattern", "result")
MLP_ACTS = ("pre", "pre_linear", "post")
BLOCK_ACTS = ("resid_pre", "resid_mid", "resid_post", "attn_out", "mlp_out")
TRANSCODER_ACTS = ("feature_acts", "error")  # exist only while a transcoder is attached (probes.sae.attached)
NORM_ACTS = ("scale", "normalized")
GLOBAL_ACTS = ("embed", "pos_embed")
ALIASES = {
    "attn": "pattern", "attn_logits": "attn_scores", "query": "q", "key": "k", "value": "v",
    "mlp_pre": "pre", "mlp_post": "post", "mlp_pre_linear": "pre_linear",
    "in": "resid_pre", "out": "resid_post",  # TransformerLens 4 bridge names: blocks.{l}.hook_in / hook_out
}
LAYER_TYPE_ALIASES = {"a": "attn", "attention": "attn", "m": "mlp", "b": "", "block": "", "blocks": ""}
STACKS = ("", "encoder", "decoder")

_BLOCK = re.compile(r"^(?:(?P<stack>[a-z_]+)\.)?blocks\.(?P<layer>-?\d+)\.")
_SHORT = re.compile(r"^([a-z_]+?)(\d+)([a-z]\w*)?$")


def _prefix(stack: str) -> str:
    if stack not in STACKS:
        raise ValueError(f"stack must be one of {STACKS}, got {stack!r}")
    return f"{stack}." if stack else ""


def act_name(
    name: str,
    layer: Optional[Union[int, str]] = None,
    layer_type: Optional[str] = None,
    *,
    stack: str = "",
    attn: str = "attn",
) -> str:
    """Full hook name for a short activation name, with TransformerLens' `get_act_name` rules.

    A full name (one with a dot, or starting with ``hook_``) is returned unchanged.
    Short forms with the layer glued on work too ("k6", "pattern0", "scale4ln1").
    layer_type distinguishes norms ("ln1", "ln2"); stack ("encoder" / "decoder")
    and attn ("attn" / "cross_attn") address the encoder-decoder's modules.
    """
    if ("." in name or name.startswith("hook_")) and layer is None and layer_type is None:
        return name
    short = _SHORT.match(name)
    if short is not None and layer is None:
        name, layer, glued = short.group(1), int(short.group(2)), short.group(3)
        layer_type = layer_type or glued
    if name in ("in", "out") and layer_type:
        raise ValueError(f"act_name({name!r}, {layer}, {layer_type!r}): a module's input or output is not a hook "
                         f"here; use the activation's name (e.g. 'normalized' with 'ln2' for the MLP's input)")
    name = ALIASES.get(name, name)
    if layer is not None:
        layer = int(layer)
    prefix = _prefix(stack)
    if name in GLOBAL_ACTS:
        return f"{prefix}hook_{name}"
    if name in NORM_ACTS:
        if layer is None:
            return f"{prefix}ln_final.hook_{name}"
        if layer_type not in ("ln1", "ln2", "ln3"):
            raise ValueError(f"act_name({name!r}, {layer}) needs layer_type 'ln1' or 'ln2' (which norm of the block)")
        return f"{prefix}blocks.{layer}.{layer_type}.hook_{name}"
    if layer is None:
        raise ValueError(f"act_name({name!r}) needs a layer")
    if name in ATTN_ACTS:
        return f"{prefix}blocks.{layer}.{attn}.hook_{name}"
    if name in MLP_ACTS:
        return f"{prefix}blocks.{layer}.mlp.hook_{name}"
    if name in TRANSCODER_ACTS:
        return f"{prefix}blocks.{layer}.transcoder.hook_{name}"
    if name in BLOCK_ACTS:
        if name == "attn_out" and attn != "attn":
            return f"{prefix}blocks.{layer}.hook_{attn}_out"
        return f"{prefix}blocks.{layer}.hook_{name}"
    known = ATTN_ACTS + MLP_ACTS + BLOCK_ACTS + TRANSCODER_ACTS + NORM_ACTS + GLOBAL_ACTS + tuple(ALIASES)
    raise ValueError(f"unknown activation name {name!r}; known: {', '.join(known)}")


def param_name(name: str, layer: Optional[int] = None, *, stack: str = "") -> str:
    """A weight's full name: param_name("mlp.W_out", 3) -> "blocks.3.mlp.W_out";
    param_name("ln_final.w") -> "ln_final.w" (TransformerLens names, see models.components)."""
    prefix = _prefix(stack)
    return f"{prefix}blocks.{layer}.{name}" if layer is not None else f"{prefix}{name}"


@lru_cache(maxsize=4096)
def split(name: str) -> tuple[str, Optional[int], str]:
    """(stack prefix, layer or None, rest): "decoder.blocks.1.mlp.hook_post" -> ("decoder.", 1, "mlp.hook_post")."""
    m = _BLOCK.match(name)
    if m is None:
        stack, _, rest = name.partition(".") if name.split(".")[0] in STACKS[1:] else ("", "", name)
        return (f"{stack}." if stack and rest else ""), None, (rest if stack and rest else name)
    stack = m.group("stack")
    return (f"{stack}." if stack else ""), int(m.group("layer")), name[m.end():]


def layer_of(name: str) -> Optional[int]:
    """The block index in a hook name ('blocks.3.attn.hook_z' -> 3), else None."""
    return split(name)[1]


def normalize(name: str, n_layers: Union[int, Mapping[str, int]]) -> str:
    """The name with a negative layer replaced by its index from the end.

    n_layers: the number of blocks, or a mapping stack prefix ("", "encoder.",
    "decoder.") -> number of blocks for models with several stacks. A layer out
    of range raises IndexError naming the name.
    """
    if ".-" not in name:  # no negative layer: the common case, without parsing
        return name
    prefix, layer, rest = split(name)
    if layer is None or layer >= 0:
        return name
    n = n_layers if isinstance(n_layers, int) else n_layers.get(prefix)
    if n is None:
        raise IndexRangeError(f"{name!r}: the model has no blocks under {prefix or 'the top level'!r}")
    if layer < -n:
        raise IndexRangeError(f"{name!r}: layer {layer} does not exist in a stack of {n} layers")
    return f"{prefix}blocks.{layer % n}.{rest}"


def closest(name: str, candidates: Sequence[str], n: int = 5) -> list[str]:
    """Up to n names close to a misspelt `name`, for error messages; names that share its
    last component ("hook_z") fill the list when spelling alone finds too few."""
    close = difflib.get_close_matches(name, candidates, n=n, cutoff=0.6)
    if len(close) < n:
        tail = name.rsplit(".", 1)[-1]
        close += [m for m in candidates if m.endswith("." + tail) and m not in close][: n - len(close)]
    return close


@lru_cache(maxsize=4096)
def pos_dim(name: str) -> int:
    """The (query) position axis of the activation at `name`, counting the batch axis as 0:
    2 for attention scores and patterns ([batch, head, q_pos, k_pos]), else 1."""
    return 2 if name.endswith(("hook_attn_scores", "hook_pattern")) else 1


def sort_key(name: str, n_layers: int) -> int:
    """Where in the forward pass a hook sits, coarsely: -1 before the blocks (embeddings),
    its block index inside them, n_layers after them (final norm)."""
    layer = layer_of(name)
    if layer is not None:
        return layer
    return n_layers if "ln_final" in name else -1


__all__ = ["act_name", "param_name", "resolve_layer", "split", "layer_of", "normalize", "closest", "pos_dim", "sort_key",
           "ATTN_ACTS", "MLP_ACTS", "BLOCK_ACTS", "NORM_ACTS", "GLOBAL_ACTS"]
