"""Feature interventions: set, zero or scale transcoder features and see what the model does.

    from probes.graph.intervene import feature_intervention, generate_with_intervention, zero, scale
    tcs = load_transcoders("factworld")
    res = feature_intervention(model, "Michael Jordan plays the sport of", tcs,
                               [(0, 2, 17, 0.0), zero(1, 2, 5), scale(Feature(2, 9, pos=2), 3.0),
                                (1, slice(3, None), 40, 2.5)])
    res.logits          # [pos, d_vocab] after the intervention (res.clean_logits: before)
    res.activations     # {layer: [pos, n_features]} the features in the intervened run
    res.show()          # the top next tokens before vs after
    text, tokens = generate_with_intervention(model, prompt, tcs, [zero(Feature(0, 17, pos=slice(2, None)))])

An intervention is (layer, pos, index, value) or (Feature(layer, index, pos), value): value is a
number (or tensor) to set the feature to, or a function of the feature's activation giving its
new one (`zero(...)`, `scale(...)` build both kinds). pos is a position (negative ones count from
the end of the prompt), a slice of positions (`slice(k, None)`: every position from k, in
generation also the new tokens) or None (every position).

Two modes (circuit-tracer's `feature_intervention`, without and with `constrained_layers` over
all layers):

- "free": the real MLPs keep running. At each intervened layer the transcoder's features are set,
  and (new - current) x the decoder rows is added to the MLP's real output: that is what an
  attached transcoder (`probes.sae.attached`) with a Feature hook computes, the error term being
  the MLP's output minus the transcoder's reconstruction of it. Later layers' features are encoded
  again from their changed inputs, so effects propagate through the MLPs. freeze_attention fixes
  every attention pattern at the clean run's values (LayerNorm scales stay free).
- "frozen" (direct effects): attention patterns, every norm scale and every MLP output are fixed
  at the clean run's values; a transcoder layer's MLP output gets (new - clean) x its decoder rows
  added, the change computed from the clean run's activations, plus (x - x_clean) W_skip for a
  transcoder with a skip connection. The model is then linear in the residual stream and the
  change of a logit target is the attribution graph's edge: zeroing feature s moves the demeaned
  logit of target t (logit - its mean over the vocabulary, at the last position) by -A[t, s].
  The activations reported in this mode are the features encoded from the (frozen-mode) MLP
  inputs, with the intervened ones set; they do not feed back into the output.

`transcoders` may also be a cross-layer transcoder (`probes.sae.clt.CrossLayerTranscoder`): a
layer-l feature then writes to MLP l and every later MLP, so in "free" mode (new - current) x its
decoder to each of them is added there (`probes.sae.attached` with a CLT), and in "frozen" mode
MLP l' gets sum over l <= l' of (new - clean) x W_dec[l -> l'], again minus the edge exactly.

Everything is removed afterwards (no hooks, no transcoder left attached), also on errors; bad
input (a layer without a transcoder, a feature index or position out of range) raises before
anything is attached.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Sequence, Union

import torch

from interp import names as hook_names
from interp.checks import IndexRangeError, resolve_layer
from interp.hooks import HookFn
from interp.sites import Feature
from interp.views.page import View, Viewable
from models.transformer import Transformer
from probes.sae.attach import attached
from probes.sae.clt.model import CrossLayerTranscoder
from probes.sae.dictionary import SparseDictionary

Op = Callable[[torch.Tensor], torch.Tensor]
Value = Union[float, int, torch.Tensor, Op]
Position = Union[int, slice, None]
Acts = dict[int, torch.Tensor]  # {layer: [pos, n_features]}
MODES = ("free", "frozen")


# ============================================================ what an intervention is
class _Scale:
    """The op of `scale`: activation -> factor x activation."""

    def __init__(self, factor: float) -> None:
        self.factor = float(factor)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.factor

    def __repr__(self) -> str:
        return f"x{self.factor:g}"


@dataclass(frozen=True)
class Intervention:
    """Feature `index` of the transcoder of MLP `layer` at `pos` (int, slice or None = every
    position) set to `value` (a number or tensor) or to value(activation) (a callable)."""

    layer: int
    pos: Position
    index: int
    value: Value

    @property
    def where(self) -> str:
        if self.pos is None:
            return ""
        if isinstance(self.pos, slice):
            step = "" if self.pos.step in (None, 1) else f":{self.pos.step}"
            start, stop = ("" if b is None else b for b in (self.pos.start, self.pos.stop))
            return f"@{start}:{stop}{step}"
        return f"@{self.pos}"

    @property
    def label(self) -> str:
        """"L0F17@2 = 0", "L1F5@3: = x3", "L2F9@2: = f(a)"."""
        if isinstance(self.value, _Scale):
            what = repr(self.value)
        elif callable(self.value):
            what = f"{getattr(self.value, '__name__', 'f')}(a)"
        elif isinstance(self.value, torch.Tensor) and self.value.numel() != 1:
            what = f"tensor{tuple(self.value.shape)}"
        elif isinstance(self.value, (int, float, torch.Tensor)):
            what = f"{float(self.value):g}"
        else:
            what = repr(self.value)
        return f"L{self.layer}F{self.index}{self.where} = {what}"


def _site(args: tuple, what: str) -> tuple[int, Position, int]:
    """(layer, pos, index) from (Feature,) or (layer, pos, index)."""
    if len(args) == 1 and isinstance(args[0], Feature):
        f = args[0]
        return f.layer, f.pos, f.index
    if len(args) == 3:
        return args[0], args[1], args[2]
    raise TypeError(f"{what}: give a Feature(layer, index, pos) or layer, pos, index; got {args!r}")


def set_to(*site_and_value: Any) -> Intervention:
    """set_to(layer, pos, index, value) or set_to(Feature(layer, index, pos), value)."""
    if len(site_and_value) < 2:
        raise TypeError("set_to(layer, pos, index, value) or set_to(Feature(...), value)")
    return Intervention(*_site(site_and_value[:-1], "set_to"), site_and_value[-1])


def zero(*site: Any) -> Intervention:
    """zero(layer, pos, index) or zero(Feature(layer, index, pos)): the feature set to 0."""
    return Intervention(*_site(site, "zero"), 0.0)


def scale(*site_and_factor: Any) -> Intervention:
    """scale(layer, pos, index, factor) or scale(Feature(layer, index, pos), factor): the feature
    multiplied by factor (in "frozen" mode: its clean activation)."""
    if len(site_and_factor) < 2 or not isinstance(site_and_factor[-1], (int, float)):
        raise TypeError("scale(layer, pos, index, factor) or scale(Feature(...), factor), factor a number")
    return Intervention(*_site(site_and_factor[:-1], "scale"), _Scale(site_and_factor[-1]))


def _as_intervention(item: Any) -> Intervention:
    if isinstance(item, Intervention):
        return item
    if isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], Feature):
        return set_to(*item)
    if isinstance(item, tuple) and len(item) == 4:
        return Intervention(*item)
    raise TypeError(f"an intervention is (layer, pos, index, value), (Feature(layer, index, pos), value) or "
                    f"zero(...) / scale(...) / set_to(...); got {item!r}")


# ============================================================ checking input
def _by_layer(model: Transformer, transcoders) -> dict[int, Any]:
    """{layer: its transcoder}: per-layer transcoders, or the cross-layer transcoder for every layer."""
    if isinstance(transcoders, CrossLayerTranscoder):
        from probes.graph.replacement import check_clt

        return {l: check_clt(model, transcoders) for l in range(transcoders.n_layers)}
    out: dict[int, SparseDictionary] = {}
    for d in transcoders:
        _, layer, tail = hook_names.split(d.out_hook)
        if d.cfg.kind != "transcoder" or layer is None or tail != "hook_mlp_out":
            raise ValueError(f"only transcoders (to blocks.{{l}}.hook_mlp_out) can be used; got a {d.cfg.kind} "
                             f"writing {d.out_hook!r}")
        if not 0 <= layer < model.cfg.n_layers:
            raise IndexRangeError(f"a transcoder writes {d.out_hook!r}, but the model has {model.cfg.n_layers} layers")
        if layer in out:
            raise ValueError(f"two transcoders for layer {layer}")
        out[layer] = d
    return out


def _integer(x: Any) -> Optional[int]:
    """x as a Python int (int, numpy or 0-d torch integer), else None (bools are not indices)."""
    if isinstance(x, bool):
        return None
    try:
        return operator.index(x)
    except TypeError:
        return None


def _normalise_slice(sl: slice, n_prompt: int) -> slice:
    """Negative bounds counted from the end of the prompt (so they stay put while generating)."""
    for b in (sl.start, sl.stop, sl.step):
        if b is not None and not isinstance(b, int):
            raise TypeError(f"slice bounds must be integers, got {sl!r}")
    start = sl.start + n_prompt if sl.start is not None and sl.start < 0 else sl.start
    stop = sl.stop + n_prompt if sl.stop is not None and sl.stop < 0 else sl.stop
    return slice(start, stop, sl.step)


def _checked(items: Sequence[Any], model: Transformer, by_layer: dict[int, SparseDictionary], n_prompt: int,
             n_max: int) -> list[Intervention]:
    """The interventions with layers, indices and positions resolved (int positions in [0,
    n_prompt), slices non-empty over n_max positions), or a clear error."""
    out = []
    for item in items:
        iv = _as_intervention(item)
        layer = resolve_layer(iv.layer, model.cfg.n_layers)
        if layer not in by_layer:
            raise ValueError(f"{iv.label}: no transcoder for layer {layer} (transcoders given for layers "
                             f"{sorted(by_layer)})")
        index = _checked_index(iv, by_layer[layer].cfg.n_features)
        pos = _checked_pos(iv, n_prompt, n_max)
        if not callable(iv.value) and not isinstance(iv.value, (int, float, torch.Tensor)):
            raise TypeError(f"{iv.label}: a value is a number, a tensor or a function of the activation")
        out.append(Intervention(layer, pos, index, iv.value))
    return out


def _checked_index(iv: Intervention, n_features: int) -> int:
    index = _integer(iv.index)
    if index is None:
        raise TypeError(f"{iv.label}: a feature index is an int, got {iv.index!r}")
    if not 0 <= index < n_features:
        raise IndexRangeError(f"{iv.label}: feature index {iv.index!r} out of range, the layer-{iv.layer} transcoder "
                              f"has {n_features} features (valid: 0..{n_features - 1})")
    return index


def _checked_pos(iv: Intervention, n_prompt: int, n_max: int) -> Union[int, slice]:
    if iv.pos is None or isinstance(iv.pos, slice):
        pos = _normalise_slice(iv.pos or slice(None), n_prompt)
        if not range(n_max)[pos]:
            raise IndexRangeError(f"{iv.label}: the positions {pos} select none of the {n_max} positions")
        return pos
    pos = _integer(iv.pos)
    if pos is None:
        raise TypeError(f"{iv.label}: a position is an int, a slice or None, got {iv.pos!r}")
    if not -n_prompt <= pos < n_prompt:
        raise IndexRangeError(f"{iv.label}: position {pos} is outside a prompt of {n_prompt} tokens (valid: "
                              f"{-n_prompt}..{n_prompt - 1})")
    return pos % n_prompt


def _as_tokens(model: Transformer, prompt: Any) -> torch.Tensor:
    """[1, pos] token ids of one prompt (text, ids [pos] or [1, pos])."""
    tokens = model.to_tokens(prompt) if isinstance(prompt, str) else torch.as_tensor(prompt, dtype=torch.long)
    if tokens.dim() == 1:
        tokens = tokens[None]
    if tokens.dim() != 2 or tokens.shape[0] != 1 or tokens.shape[1] == 0:
        raise ValueError(f"one prompt: text or token ids [pos] / [1, pos]; got shape {tuple(tokens.shape)}")
    return tokens.to(model.device)


# ============================================================ the hooks
def _new_value(value: Value, current: torch.Tensor) -> torch.Tensor:
    new = value(current) if callable(value) else value
    return torch.as_tensor(new, dtype=current.dtype, device=current.device).expand_as(current)


def _edit(iv: Intervention, new_of: Op) -> tuple[str, HookFn]:
    """A Feature site's hook: the addressed activations (shape [batch] for one position,
    [batch, n_selected] for a slice) replaced by new_of(them)."""
    if isinstance(iv.pos, int):
        return Feature(iv.layer, iv.index, pos=iv.pos).edit(new_of)

    def column(col: torch.Tensor) -> torch.Tensor:  # [batch, pos]: this feature at every position
        out = col.clone()
        out[:, iv.pos] = new_of(col[:, iv.pos])
        return out

    return Feature(iv.layer, iv.index).edit(column)


def _selection(iv: Intervention) -> tuple:
    """Index of the intervened activations in a [batch, pos, n_features] tensor."""
    return (slice(None), iv.pos, iv.index)


def _frozen_values(model: Transformer, ivs: list[Intervention], clean: dict[int, torch.Tensor]
                   ) -> dict[int, torch.Tensor]:
    """{layer: [1, pos, n_features]} the clean activations with the interventions applied to
    them (in order), by the same site hooks as in the run."""
    new = {layer: acts.clone() for layer, acts in clean.items()}
    for iv in ivs:
        name, hook = _edit(iv, lambda cur, v=iv.value: _new_value(v, cur))
        new[iv.layer] = hook(new[iv.layer], model.hook_dict[name])
    return new


def _freezing(names: list[str], cache: Any) -> list[tuple[str, HookFn]]:
    """Hooks that replace each named activation by its clean value."""
    def fixed(x: torch.Tensor, hook) -> torch.Tensor:
        return cache[hook.name]

    return [(name, fixed) for name in names]


def _attachable(by_layer: dict[int, Any]):
    """What `attached` takes: the cross-layer transcoder, or the list of per-layer ones."""
    values = list(by_layer.values())
    return values[0] if values and isinstance(values[0], CrossLayerTranscoder) else values


def _frozen_mlp_hooks(model: Transformer, by_layer: dict[int, SparseDictionary], cache: Any,
                      new: dict[int, torch.Tensor], clean: dict[int, torch.Tensor]) -> list[tuple[str, HookFn]]:
    """Every MLP output fixed at its clean value, plus at a transcoder layer the decoder rows
    times the change of the features (and the skip path's change); with a cross-layer
    transcoder, the change of every earlier layer's features through its decoder to this layer."""
    hooks: list[tuple[str, HookFn]] = []
    clt = _attachable(by_layer)
    if isinstance(clt, CrossLayerTranscoder):
        for layer in range(clt.n_layers):
            delta = sum((new[l] - clean[l]) @ clt.decoder(l, layer) for l in range(layer + 1))  # [1, pos, d_model]

            def fixed(y: torch.Tensor, hook, delta=delta) -> torch.Tensor:
                return cache[hook.name] + delta.to(y.dtype)
            hooks.append((clt.out_hooks[layer], fixed))
        return hooks
    for layer in range(model.cfg.n_layers):
        name = hook_names.act_name("mlp_out", layer)
        if name not in model.hook_dict:
            continue  # attention-only block
        d = by_layer.get(layer)
        if d is None:
            hooks += _freezing([name], cache)
            continue
        delta = (new[layer] - clean[layer]) @ d.W_dec  # [1, pos, d_model]
        seen: dict[str, torch.Tensor] = {}

        def read(x: torch.Tensor, hook, seen=seen) -> None:
            seen["x"] = x

        def write(y: torch.Tensor, hook, seen=seen, d=d, delta=delta, x_clean=cache[d.in_hook]) -> torch.Tensor:
            out = cache[hook.name] + delta.to(y.dtype)
            if d.W_skip is not None:  # the skip path is linear: its change is part of the direct effects
                out = out + ((seen.pop("x") - x_clean).to(d.W_skip.dtype) @ d.W_skip).to(y.dtype)
            return out

        hooks += ([(d.in_hook, read)] if d.W_skip is not None else []) + [(name, write)]
    return hooks


def _forward(model: Transformer, tokens: torch.Tensor, by_layer: dict[int, SparseDictionary],
             ivs: list[Intervention], mode: str, freeze_attention: bool, record: bool, clean_run: bool = True
             ) -> tuple[Optional[torch.Tensor], torch.Tensor, dict[int, torch.Tensor], Optional[Acts]]:
    """The clean run (if clean_run, or needed) and the intervened one, with the transcoders
    attached (by the caller). Returns (clean logits [pos, d_vocab] or None, logits [pos, d_vocab],
    clean activations {layer: [pos, n_features]} (empty without a clean run), activations or None)."""
    patterns = [n for n in model.hook_dict if n.endswith("attn.hook_pattern")]
    scales = [n for n in model.hook_dict if n.endswith("hook_scale")]
    features = [hook_names.act_name("feature_acts", l) for l in sorted(by_layer)]
    names = list(features)
    if mode == "frozen":
        mlp_outs = [hook_names.act_name("mlp_out", l) for l in range(model.cfg.n_layers)]
        names += patterns + scales + [n for n in mlp_outs if n in model.hook_dict]
        names += [d.in_hook for d in by_layer.values() if isinstance(d, SparseDictionary)]
    elif freeze_attention:
        names += patterns
    clean_logits, cache, clean = None, {}, {}
    if clean_run or mode == "frozen" or freeze_attention:
        clean_logits, cache = model.run_with_cache(tokens, names_filter=list(dict.fromkeys(names)))
        clean_logits = clean_logits[0]
        clean = {l: cache[hook_names.act_name("feature_acts", l)] for l in sorted(by_layer)}

    hooks: list[tuple[str, HookFn]] = []
    if mode == "frozen":
        new = _frozen_values(model, ivs, clean)
        hooks += _freezing(patterns + scales, cache) + _frozen_mlp_hooks(model, by_layer, cache, new, clean)
        hooks += [_edit(iv, lambda cur, fixed=new[iv.layer][_selection(iv)]: fixed.expand_as(cur)) for iv in ivs]
    else:
        if freeze_attention:
            hooks += _freezing(patterns, cache)
        hooks += [_edit(iv, lambda cur, v=iv.value: _new_value(v, cur)) for iv in ivs]
    acts: dict[int, torch.Tensor] = {}
    if record:  # after the edits on the same hook points: the features as the run used them
        def keep(x: torch.Tensor, hook) -> None:
            acts[hook_names.layer_of(hook.name)] = x.detach()[0]

        hooks += [(name, keep) for name in features]
    logits = model.run_with_hooks(tokens, fwd_hooks=hooks)
    clean_acts = {l: a[0] for l, a in clean.items()}
    return clean_logits, logits[0], clean_acts, (acts if record else None)


def _check_mode(mode: str) -> None:
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")


# ============================================================ the result
def _str_tokens(model: Transformer, ids: Sequence[int]) -> list[str]:
    if getattr(model, "tokenizer", None) is None:
        return [str(int(i)) for i in ids]
    return [str(t) for t in model.to_str_tokens(torch.as_tensor(list(ids), dtype=torch.long))]


def _top(model: Transformer, logits: torch.Tensor, k: int) -> list[tuple[str, int, float]]:
    """[(token, id, probability)] of the k most likely next tokens (logits [d_vocab])."""
    probs = logits.double().softmax(-1)
    top = probs.topk(min(k, probs.shape[-1]))
    ids = [int(i) for i in top.indices]
    return list(zip(_str_tokens(model, ids), ids, [float(p) for p in top.values]))


@dataclass
class InterventionResult(Viewable):
    """The run under the interventions next to the clean one, for one prompt.

    logits, clean_logits [pos, d_vocab]; activations, clean_activations {layer: [pos,
    n_features]} (activations None unless asked for); top_before / top_after: the most likely
    next tokens at the last position, [(token, id, probability)]."""

    tokens: list[str]
    token_ids: torch.Tensor
    interventions: list[Intervention]
    mode: str
    freeze_attention: bool
    logits: torch.Tensor
    clean_logits: torch.Tensor
    activations: Optional[dict[int, torch.Tensor]]
    clean_activations: dict[int, torch.Tensor]
    top_before: list[tuple[str, int, float]] = field(default_factory=list)
    top_after: list[tuple[str, int, float]] = field(default_factory=list)

    def probs(self, before: bool = False) -> torch.Tensor:
        """[d_vocab] next-token probabilities at the last position (float64)."""
        return (self.clean_logits if before else self.logits)[-1].double().softmax(-1)

    def to_view(self) -> View:
        before, after = self.probs(before=True), self.probs()
        rows = []
        for rank in range(max(len(self.top_before), len(self.top_after))):
            row: list[Any] = [rank + 1]
            if rank < len(self.top_before):
                tok, i, p = self.top_before[rank]
                row += [tok, p, float(after[i])]
            else:
                row += ["", None, None]
            if rank < len(self.top_after):
                tok, i, p = self.top_after[rank]
                row += [tok, p, float(before[i])]
            else:
                row += ["", None, None]
            rows.append(row)
        columns = ["rank", "before", "p before", "its p after", "after", "p after", "its p before"]
        notes = [f"mode {self.mode}" + (", attention frozen" if self.freeze_attention and self.mode == "free" else ""),
                 "interventions: " + ("; ".join(iv.label for iv in self.interventions) or "none")]
        return View("table", {"columns": columns, "rows": rows,
                              "numeric": [True, False, True, True, False, True, True]},
                    title=f"next token after {''.join(self.tokens[1:] if len(self.tokens) > 1 else self.tokens)!r}: "
                          "before vs after the intervention", notes=notes)


# ============================================================ the entry points
def feature_intervention(model: Transformer, prompt: Any,
                         transcoders: Union[Sequence[SparseDictionary], CrossLayerTranscoder],
                         interventions: Sequence[Any], *, mode: str = "free", freeze_attention: bool = True,
                         return_activations: bool = True, top_k: int = 10) -> InterventionResult:
    """Run `prompt` (text, or token ids [pos] / [1, pos]) with the transcoders' features
    intervened on (see the module docstring for the interventions and the two modes;
    freeze_attention is for "free" mode, "frozen" always freezes the patterns)."""
    _check_mode(mode)
    tokens = _as_tokens(model, prompt)
    by_layer = _by_layer(model, transcoders)
    n_pos = tokens.shape[1]
    ivs = _checked(interventions, model, by_layer, n_pos, n_pos)
    with torch.no_grad(), attached(model, _attachable(by_layer)):
        clean_logits, logits, clean_acts, acts = _forward(model, tokens, by_layer, ivs, mode, freeze_attention,
                                                          return_activations)
    return InterventionResult(
        tokens=_str_tokens(model, tokens[0].tolist()), token_ids=tokens[0].cpu(), interventions=ivs, mode=mode,
        freeze_attention=freeze_attention, logits=logits, clean_logits=clean_logits, activations=acts,
        clean_activations=clean_acts, top_before=_top(model, clean_logits[-1], top_k),
        top_after=_top(model, logits[-1], top_k))


def generate_with_intervention(model: Transformer, prompt: Any,
                               transcoders: Union[Sequence[SparseDictionary], CrossLayerTranscoder],
                               interventions: Sequence[Any], *, max_new_tokens: int = 10, mode: str = "free",
                               freeze_attention: bool = False) -> tuple[str, torch.Tensor]:
    """Greedy continuation of `prompt` under the interventions: (text, tokens [pos + new]).

    Text is the prompt and the continuation as `model.generate` gives it (without the BOS that
    tokenisation prepended). Each step reruns the whole sequence (no KV cache), so the
    interventions (and, with freeze_attention or mode "frozen", the clean run whose patterns
    are frozen) apply to every position, new tokens included. A slice position
    (`slice(k, None)`) covers the new tokens too; an int position, and negative slice bounds,
    are counted in the prompt (so -1 is the prompt's last token at every step)."""
    _check_mode(mode)
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < 0:
        raise ValueError(f"max_new_tokens must be a non-negative int, got {max_new_tokens!r}")
    tokens = _as_tokens(model, prompt)
    by_layer = _by_layer(model, transcoders)
    n_prompt = tokens.shape[1]
    n_max = n_prompt + max(max_new_tokens - 1, 0)
    if model.cfg.positional == "learned" and n_max > model.cfg.n_ctx:
        raise ValueError(f"{n_prompt} prompt tokens + {max_new_tokens} new ones exceed the model's context of "
                         f"{model.cfg.n_ctx}")
    ivs = _checked(interventions, model, by_layer, n_prompt, n_max)
    with torch.no_grad(), attached(model, _attachable(by_layer)):
        for _ in range(max_new_tokens):
            _, logits, _, _ = _forward(model, tokens, by_layer, ivs, mode, freeze_attention, record=False,
                                       clean_run=False)
            tokens = torch.cat([tokens, logits[-1].argmax()[None, None]], dim=1)
    start = 1 if isinstance(prompt, str) and model.default_prepend_bos else 0
    ids = tokens[0, start:]
    text = model.to_string(ids) if getattr(model, "tokenizer", None) is not None else " ".join(map(str, ids.tolist()))
    return text, tokens[0].cpu()


__all__ = ["feature_intervention", "generate_with_intervention", "InterventionResult", "Intervention", "zero",
           "scale", "set_to", "MODES"]
