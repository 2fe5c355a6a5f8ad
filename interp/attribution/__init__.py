"""Attribution: attribution patching (gradient estimates of patching sweeps), direct logit
attribution per head, neuron, bias and transcoder feature, and the gradient estimates they and
their peers share.

  interp.attribution.patching   attribution_patch: a sweep's first-order estimate
  interp.attribution.agreement  agreement / Agreement: estimate vs real patching
  interp.attribution.direct     direct_logit_attribution / DirectLogitAttribution, Attribution
  interp.attribution.features   feature_logit_attribution / FeatureLogitAttribution
  interp.attribution.gradients  gradient_times_delta, integrated_gradients, riemann_alphas
"""

from interp.attribution.agreement import Agreement, agreement
from interp.attribution.direct import Attribution, DirectLogitAttribution, direct_logit_attribution
from interp.attribution.features import FeatureLogitAttribution, feature_logit_attribution
from interp.attribution.gradients import gradient_times_delta, integrated_gradients, riemann_alphas
from interp.attribution.patching import attribution_patch

__all__ = ["attribution_patch", "agreement", "Agreement", "direct_logit_attribution", "DirectLogitAttribution",
           "Attribution", "feature_logit_attribution", "FeatureLogitAttribution", "gradient_times_delta",
           "integrated_gradients", "riemann_alphas"]
