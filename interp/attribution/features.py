"""Direct logit attribution of the features of attached transcoders (`probes.sae.attached`):
feature f of layer l writes acts[f] * W_dec[f], read like a neuron of `direct_logit_attribution`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import torch

from interp import names as hook_names
from interp.attribution.direct import AnswerReadout, ToAnswer, top_indices
from interp.metrics import Tokens
from interp.patching import Prompts, axis_labels
from interp.results import LabelledResult
from interp.sites import Feature
from interp.tokens import str_tokens
from models import Transformer


@dataclass
class FeatureLogitAttribution(ToAnswer, LabelledResult):
    """What each feature of the attached transcoders writes to logit[answer] -
    logit[counterfactual] at one position (mean over the prompts), like the neurons of
    `DirectLogitAttribution`: features [layer, feature] for the attached layers (`layers`),
    and per layer the reconstruction error and the rest of the transcoder's output (decoder
    bias, skip path) [layer]; `mlp` (their sum) is the MLP output's direct attribution.
    """

    features: torch.Tensor
    error: torch.Tensor
    rest: torch.Tensor
    layers: list[int]
    tokens: list[str]
    answer: str
    counterfactual: Optional[str]
    method: str = "direct logit attribution"
    axes: tuple[str, ...] = ("layer", "feature")

    @property
    def values(self) -> torch.Tensor:
        return self.features

    @property
    def labels(self) -> dict[str, list[str]]:
        return axis_labels(self.axes, self.layers, [], self.features.shape[1], self.tokens)

    @property
    def mlp(self) -> torch.Tensor:
        """Per attached layer: features + error + rest, the MLP output's attribution [layer]."""
        return self.features.sum(-1) + self.error + self.rest

    def _extra_dict(self) -> dict[str, Any]:
        return {"answer": self.answer, "counterfactual": self.counterfactual, "tokens": self.tokens,
                "layers": self.layers, "error": self.error.tolist(), "rest": self.rest.tolist(),
                "mlp": self.mlp.tolist(),
                "top_features": [{"layer": self.layers[i], "feature": f, "attribution": float(self.features[i, f])}
                                 for i, f in top_indices(self.features, 20)]}


def feature_logit_attribution(
    model: Transformer,
    prompts: Prompts,
    answer: Tokens,
    counterfactual: Optional[Tokens] = None,
    pos: int = -1,
) -> FeatureLogitAttribution:
    """Direct logit attribution of every feature of the transcoders attached to `model`
    (`probes.sae.attached`): feature f of layer l writes acts[f] * W_dec[f], read through the
    final norm with its scale frozen from the run. Same arguments as `direct_logit_attribution`."""
    layers = Feature.attached_layers(model)
    if not layers:
        raise ValueError("no transcoder is attached: run inside `with probes.sae.attached(model, transcoders):`")
    names = ["ln_final.hook_scale"] * bool(model.cfg.final_norm) + [hook_names.act_name(a, l) for l in layers
                                       for a in ("feature_acts", "error", "mlp_out")]
    readout = AnswerReadout(model, prompts, answer, counterfactual, pos, names_filter=names)
    cache, pos = readout.cache, readout.pos
    features, error, rest = [], [], []
    with torch.no_grad():
        for l in layers:
            acts = cache[hook_names.act_name("feature_acts", l)][:, pos]  # [batch, n_features]
            W_dec = model.get_submodule(f"blocks.{l}.transcoder").W_dec.detach().to(acts.dtype)
            written = acts @ W_dec
            err = cache[hook_names.act_name("error", l)][:, pos]
            features.append(readout.per_unit(acts, W_dec).mean(0))
            error.append(readout(err).mean(-1))
            rest.append(readout(cache[hook_names.act_name("mlp_out", l)][:, pos] - written - err).mean(-1))
    return FeatureLogitAttribution(
        torch.stack(features).double(), torch.stack(error).double(), torch.stack(rest).double(), layers,
        str_tokens(model, readout.tokens), *readout.names(model))


__all__ = ["FeatureLogitAttribution", "feature_logit_attribution"]
