"""Transcoders attached to a model as hook points, so their features are sites like neurons.

    with attached(model, load_transcoders("factworld")):
        logits, cache = model.run_with_cache(tokens)            # equal to the plain run (up to rounding)
        cache["blocks.1.transcoder.hook_feature_acts"]          # [batch, pos, n_features]
        model.run_with_hooks(tokens, fwd_hooks=[Feature(1, 134, pos=2).zero()])

While attached, MLP l's output is computed as decode(f, x) + error, where x is the MLP's
input (the transcoder's in_hook), f = encode(x) passes through
blocks.{l}.transcoder.hook_feature_acts and error = (the MLP's real output) - decode(encode(x), x)
passes through blocks.{l}.transcoder.hook_error. With no other hook the output is the MLP's
own (exact up to float rounding); a hook that edits the features changes the output through
the decoder, with the error held as it was. Everything is removed on exit (also on errors).

The features are encoded from the MLP input as it reaches the transcoder's own hook, which runs
before any hook added later on the same hook point: a later hook that edits the MLP input
(e.g. patching blocks.{l}.ln2.hook_normalized) changes the MLP output exactly (the error term
absorbs it) but not hook_feature_acts. Edit the features, or the residual stream before the
norm, to move them.

A cross-layer transcoder (`probes.sae.clt.CrossLayerTranscoder`) attaches the same way, with
blocks.{l}.transcoder hook points for the features of every layer l: MLP l's output is then
computed from the features of layers 0..l (each as it left its own feature hook), plus the
error (the MLP's real output minus the reconstruction from the unedited features), so editing a
layer-l feature changes MLP l and every later MLP through its decoders.

The transcoder's own hooks are permanent, so `model.reset_hooks()` in the body leaves them in
place. `model.reset_hooks(including_permanent=True)` removes them: the features are then no
longer computed, and any hook added to a feature (or error) hook point afterwards, a feature
patch or a cache of the features, raises a RuntimeError instead of silently never running.
"""

from __future__ import annotations

import contextlib
from typing import Iterator

import torch
from torch import nn

from interp import names as hook_names
from interp.hooks import HookFn, HookHandle, HookPoint
from models.transformer import Transformer
from probes.sae.clt.model import CrossLayerTranscoder
from probes.sae.dictionary import SparseDictionary


class _TranscoderHookPoint(HookPoint):
    """A hook point of an attached transcoder: it refuses new hooks once the transcoder's own
    hooks on the model (which compute the features) have been removed, since they would never run."""

    def __init__(self) -> None:
        super().__init__()
        self.owners: list[HookHandle] = []  # the transcoder's hooks on the model's in_hook and out_hook

    def add_hook(self, fn: HookFn, dir: str = "fwd", prepend: bool = False, is_permanent: bool = False) -> HookHandle:
        gone = [h.hook_point.name for h in self.owners if not any(f is h.fn for f in h.hook_point._hooks[h.dir])]
        if gone:
            raise RuntimeError(
                f"{self.name}: the attached transcoder's hooks on {', '.join(gone)} were removed (by "
                "reset_hooks(including_permanent=True) inside `with attached(...)`?), so its features are no "
                "longer computed and this hook would never run; leave the `with` and attach the transcoders again")
        return super().add_hook(fn, dir=dir, prepend=prepend, is_permanent=is_permanent)


class _Attached(nn.Module):
    """The hook points of one attached transcoder (a submodule blocks.{l}.transcoder)."""

    def __init__(self, dictionary, layer: int = 0) -> None:
        super().__init__()
        self.hook_feature_acts = _TranscoderHookPoint()
        self.hook_error = _TranscoderHookPoint()
        self.dictionary = [dictionary]  # a list: not registered as a submodule (its weights are not the model's)
        self.layer = layer

    @property
    def W_dec(self) -> torch.Tensor:
        """[n_features, d_model]: what each feature writes per unit of activation (its value); for a
        cross-layer transcoder, into the residual stream: its decoders summed over the MLPs it writes."""
        d = self.dictionary[0]
        return d.W_dec[self.layer].sum(0) if isinstance(d, CrossLayerTranscoder) else d.W_dec


def _layer_of(dictionary: SparseDictionary) -> int:
    _, layer, tail = hook_names.split(dictionary.out_hook)
    if dictionary.cfg.kind != "transcoder" or layer is None or tail != "hook_mlp_out":
        raise ValueError(f"only transcoders (to blocks.{{l}}.hook_mlp_out) can be attached; got a {dictionary.cfg.kind} "
                         f"writing {dictionary.out_hook!r}")
    return layer


def _maps(dictionary, layer: int):
    """(encode(x) -> features of `layer`, output(features by layer, x) -> MLP `layer`'s
    reconstruction) of the transcoder writing MLP `layer`: a per-layer transcoder decodes its own
    features (and skip path); a cross-layer transcoder sums the features of layers 0..layer."""
    if isinstance(dictionary, CrossLayerTranscoder):
        return (lambda x: dictionary.activate(dictionary.pre_acts(x, layer), layer),
                lambda acts, x: dictionary.output(layer, acts))
    return dictionary.encode, lambda acts, x: dictionary.decode(acts[layer].to(dictionary.W_dec.dtype), x)


@contextlib.contextmanager
def attached(model: Transformer, dictionaries) -> Iterator[None]:
    """Attach transcoders (a list of per-layer ones, or a `CrossLayerTranscoder`) as hook points
    (see the module docstring) for the body of the `with`."""
    if isinstance(dictionaries, CrossLayerTranscoder):
        clt = dictionaries
        if clt.n_layers != model.cfg.n_layers or clt.out_hooks != [hook_names.act_name("mlp_out", l)
                                                                    for l in range(clt.n_layers)]:
            raise ValueError(f"the cross-layer transcoder writes {clt.out_hooks}; the model's MLP outputs are "
                             f"blocks.0..{model.cfg.n_layers - 1}.hook_mlp_out")
        dictionaries = [clt] * clt.n_layers
        layers = list(range(clt.n_layers))
    else:
        clt = None
        layers = [_layer_of(d) for d in dictionaries]
    if len(set(layers)) != len(layers):
        raise ValueError(f"two transcoders for the same layer: {layers}")
    for layer, dictionary in zip(layers, dictionaries):
        where = next(dictionary.parameters()).device
        if where != model.W_E.device:
            raise ValueError(f"the transcoder of layer {layer} is on {where}, the model on {model.W_E.device}: load it "
                             f"there (load_transcoders(..., device=model.device)) or move it (.to(model.device))")
    for layer in layers:
        if hasattr(model.blocks[layer], "transcoder"):
            raise RuntimeError(f"a transcoder is already attached to layer {layer}")
    handles = []
    try:
        for layer, dictionary in zip(layers, dictionaries):
            model.blocks[layer].add_module("transcoder", _Attached(dictionary, layer))
        model.setup_hooks()
        fs: dict[int, torch.Tensor] = {}  # this pass's features by layer, as edited by the feature hooks
        f0s: dict[int, torch.Tensor] = {}  # and as encoded
        for layer, dictionary in zip(layers, dictionaries):
            points: _Attached = model.blocks[layer].transcoder
            encode, output = _maps(dictionary, layer)
            seen: dict[str, torch.Tensor] = {}

            def read(x: torch.Tensor, hook, seen=seen) -> None:
                seen["x"] = x

            def write(y: torch.Tensor, hook, seen=seen, points=points, layer=layer, encode=encode,
                      output=output) -> torch.Tensor:
                x = seen.pop("x")
                f0s[layer] = encode(x).to(y.dtype)
                error = points.hook_error(y - output(f0s, x).to(y.dtype))
                # A copy, so the gradient at the feature hook is the decoder's alone: through the
                # error, f0's gradient cancels the features' (upstream gradients stay the model's own).
                fs[layer] = points.hook_feature_acts(f0s[layer].clone())
                return output(fs, x).to(y.dtype) + error

            # Permanent: a model.reset_hooks() in the body leaves the transcoder in place.
            in_hook, out_hook = ((dictionary.in_hooks[layer], dictionary.out_hooks[layer]) if clt is not None
                                 else (dictionary.in_hook, dictionary.out_hook))
            own = (model.add_hook(in_hook, read, is_permanent=True)
                   + model.add_hook(out_hook, write, is_permanent=True))
            points.hook_feature_acts.owners = points.hook_error.owners = own
            handles += own
        yield
    finally:
        for handle in handles:
            handle.remove()
        for layer in layers:
            if hasattr(model.blocks[layer], "transcoder"):
                delattr(model.blocks[layer], "transcoder")
        model.setup_hooks()


__all__ = ["attached"]
