"""Activation patching under TransformerLens' names, argument order and axis orders, run by
our batched engine (the same numbers as `transformer_lens.patching`, tested, in less time).

    from interp import tl_patching as patching
    _, clean_cache = model.run_with_cache(clean_tokens)
    out = patching.get_act_patch_resid_pre(model, corrupted_tokens, clean_cache, metric)   # [n_layers, pos]

Every function takes (model, corrupted_tokens, clean_cache, patching_metric): it runs the
corrupted tokens, patches in one clean activation (from clean_cache) at a time and returns
the metric (logits [batch, pos, d_vocab] -> scalar) for each patch as a float tensor.
For labels, normalisation, plots and noising or ablations, use `interp.patching.sweep`.
TransformerLens' extra keywords (index_df, reduce, baseline, ...) are refused by name.
"""

from __future__ import annotations

from typing import Any, Callable

import torch

from interp.engine import FromRun
from interp.patching import SITES, sweep_cells
from models import Transformer

Metric = Callable[[torch.Tensor], torch.Tensor]


def _patch(site: str, model: Transformer, corrupted_tokens: torch.Tensor, clean_cache: Any, patching_metric: Metric,
           **kwargs: Any) -> torch.Tensor:
    if kwargs:
        raise TypeError(f"unsupported argument(s) {sorted(kwargs)}: these functions take (model, corrupted_tokens, "
                        f"clean_cache, patching_metric); for more, use interp.patching.sweep")
    if not isinstance(corrupted_tokens, torch.Tensor) or corrupted_tokens.dim() != 2:
        raise ValueError("corrupted_tokens must be token ids [batch, pos] (use model.to_tokens)")
    kind = SITES[site]

    def clean_activations(names: list[str]) -> dict[str, torch.Tensor]:
        acts = {name: clean_cache[name] for name in names}
        for name, act in acts.items():
            if act.shape[0] != corrupted_tokens.shape[0] or act.shape[kind.pos_dim] != corrupted_tokens.shape[1]:
                raise ValueError(f"clean_cache[{name!r}] has shape {tuple(act.shape)}, which does not match "
                                 f"corrupted_tokens {tuple(corrupted_tokens.shape)} (same batch and positions needed)")
        return acts

    with torch.no_grad():
        cells = sweep_cells(model, corrupted_tokens, kind, patching_metric, FromRun("source"),
                            {"source": clean_activations})
    return cells.values.to(torch.get_default_dtype())


def _variant(site: str, tl_shape: str) -> Callable[..., torch.Tensor]:
    def patch(model: Transformer, corrupted_tokens: torch.Tensor, clean_cache: Any, patching_metric: Metric,
              **kwargs: Any) -> torch.Tensor:
        return _patch(site, model, corrupted_tokens, clean_cache, patching_metric, **kwargs)

    patch.__doc__ = f"Patch `{site}` (interp.patching site) one at a time; returns [{tl_shape}]."
    return patch


get_act_patch_resid_pre = _variant("resid_pre", "n_layers, pos")
get_act_patch_resid_mid = _variant("resid_mid", "n_layers, pos")
get_act_patch_attn_out = _variant("attn_out", "n_layers, pos")
get_act_patch_mlp_out = _variant("mlp_out", "n_layers, pos")
get_act_patch_attn_head_out_by_pos = _variant("head_z_by_pos", "n_layers, pos, n_heads")
get_act_patch_attn_head_q_by_pos = _variant("head_q_by_pos", "n_layers, pos, n_heads")
get_act_patch_attn_head_k_by_pos = _variant("head_k_by_pos", "n_layers, pos, n_heads")
get_act_patch_attn_head_v_by_pos = _variant("head_v_by_pos", "n_layers, pos, n_heads")
get_act_patch_attn_head_pattern_by_pos = _variant("head_pattern_by_pos", "n_layers, n_heads, dest_pos")
get_act_patch_attn_head_out_all_pos = _variant("head_z", "n_layers, n_heads")
get_act_patch_attn_head_q_all_pos = _variant("head_q", "n_layers, n_heads")
get_act_patch_attn_head_k_all_pos = _variant("head_k", "n_layers, n_heads")
get_act_patch_attn_head_v_all_pos = _variant("head_v", "n_layers, n_heads")
get_act_patch_attn_head_pattern_all_pos = _variant("head_pattern", "n_layers, n_heads")


def _kv_heads_padded(values: torch.Tensor, n_heads: int) -> torch.Tensor:
    """With grouped-query attention k and v have fewer heads: pad the head axis (last) with zeros,
    as TransformerLens does."""
    return torch.nn.functional.pad(values, (0, n_heads - values.shape[-1]))


def get_act_patch_block_every(model: Transformer, corrupted_tokens: torch.Tensor, clean_cache: Any,
                              metric: Metric) -> torch.Tensor:
    """resid_pre, attn_out and mlp_out patched by layer and position: [3, n_layers, pos]."""
    return torch.stack([f(model, corrupted_tokens, clean_cache, metric) for f in
                        (get_act_patch_resid_pre, get_act_patch_attn_out, get_act_patch_mlp_out)])


def get_act_patch_attn_head_all_pos_every(model: Transformer, corrupted_tokens: torch.Tensor, clean_cache: Any,
                                          metric: Metric) -> torch.Tensor:
    """Each head's output, query, key, value and pattern, all positions: [5, n_layers, n_heads]."""
    fns = (get_act_patch_attn_head_out_all_pos, get_act_patch_attn_head_q_all_pos, get_act_patch_attn_head_k_all_pos,
           get_act_patch_attn_head_v_all_pos, get_act_patch_attn_head_pattern_all_pos)
    out = [f(model, corrupted_tokens, clean_cache, metric) for f in fns]
    return torch.stack([_kv_heads_padded(v, model.cfg.n_heads) for v in out])


def get_act_patch_attn_head_by_pos_every(model: Transformer, corrupted_tokens: torch.Tensor, clean_cache: Any,
                                         metric: Metric) -> torch.Tensor:
    """Each head's output, query, key, value and pattern by position: [5, n_layers, pos, n_heads]
    (the pattern's [layer, head, pos] turned to [layer, pos, head] to stack, as TransformerLens)."""
    fns = (get_act_patch_attn_head_out_by_pos, get_act_patch_attn_head_q_by_pos, get_act_patch_attn_head_k_by_pos,
           get_act_patch_attn_head_v_by_pos)
    out = [_kv_heads_padded(f(model, corrupted_tokens, clean_cache, metric), model.cfg.n_heads) for f in fns]
    out.append(get_act_patch_attn_head_pattern_by_pos(model, corrupted_tokens, clean_cache, metric).transpose(1, 2))
    return torch.stack(out)


__all__ = [name for name in dir() if name.startswith("get_act_patch_")]
