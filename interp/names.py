"""Short activation names -> full hook names, TransformerLens style.

    act_name("pattern", 3)          -> "blocks.3.attn.hook_pattern"
    act_name("resid_pre", 0)        -> "blocks.0.hook_resid_pre"
    act_name("post", 2)             -> "blocks.2.mlp.hook_post"
    act_name("scale", 1, "ln2")     -> "blocks.1.ln2.hook_scale"
    act_name("scale")               -> "ln_final.hook_scale"
    act_name("embed")               -> "hook_embed"
"""

from __future__ import annotations

from typing import Optional

ATTN_ACTS = ("q", "k", "v", "z", "rot_q", "rot_k", "attn_scores", "pattern", "result")
MLP_ACTS = ("pre", "pre_linear", "post")
BLOCK_ACTS = ("resid_pre", "resid_mid", "resid_post", "attn_out", "mlp_out")
NORM_ACTS = ("scale", "normalized")
GLOBAL_ACTS = ("embed", "pos_embed")
ALIASES = {
    "attn": "pattern", "attn_logits": "attn_scores", "query": "q", "key": "k", "value": "v",
    "mlp_pre": "pre", "mlp_post": "post", "mlp_pre_linear": "pre_linear",
}


def act_name(name: str, layer: Optional[int] = None, sub: Optional[str] = None) -> str:
    """Full hook name for a short activation name (a full name is returned unchanged)."""
    if "." in name or name.startswith("hook_"):
        return name
    name = ALIASES.get(name, name)
    if name in GLOBAL_ACTS:
        return f"hook_{name}"
    if name in NORM_ACTS:
        if layer is None or layer == -1 and sub is None:
            return f"ln_final.hook_{name}"
        if sub not in ("ln1", "ln2"):
            raise ValueError(f"act_name({name!r}, {layer}) needs sub='ln1' or 'ln2'")
        return f"blocks.{layer}.{sub}.hook_{name}"
    if layer is None:
        raise ValueError(f"act_name({name!r}) needs a layer")
    if name in ATTN_ACTS:
        return f"blocks.{layer}.attn.hook_{name}"
    if name in MLP_ACTS:
        return f"blocks.{layer}.mlp.hook_{name}"
    if name in BLOCK_ACTS:
        return f"blocks.{layer}.hook_{name}"
    known = ATTN_ACTS + MLP_ACTS + BLOCK_ACTS + NORM_ACTS + GLOBAL_ACTS + tuple(ALIASES)
    raise ValueError(f"unknown activation name {name!r}; known: {', '.join(known)}")
