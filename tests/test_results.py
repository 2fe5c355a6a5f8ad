"""Every analysis returns the one labelled-result type: values, axes, labels, effect, top, JSON, plot."""

import json

import pytest
import torch
from matplotlib.figure import Figure

from interp import metrics
from interp.attribution import attribution_patch, direct_logit_attribution
from interp.patching import sweep
from interp.results import LabelledResult
from models import load
from probes.causal_trace import trace
from probes.knockout import attention_knockout_all
from probes.knowledge_neurons import knowledge_neurons
from probes.trace_average import average_trace

MJ, MP = "Michael Jordan plays the sport of", "Michael Phelps plays the sport of"


@pytest.fixture(scope="module")
def results():
    fw = load("factworld")
    ld = metrics.logit_diff(fw, "basketball", "swimming")
    return {
        "patching": sweep(fw, MJ, MP, ld, "head_z", progress=False),
        "attribution patching": attribution_patch(fw, MJ, MP, ld, "resid_pre"),
        "direct logit attribution": direct_logit_attribution(fw, MJ, "basketball", "swimming"),
        "heads": direct_logit_attribution(fw, MJ, "basketball").head_result(),
        "causal trace": trace(fw, MJ, "Michael Jordan", n_samples=2, progress=False),
        "average trace": average_trace(fw, [(MJ, "Michael Jordan", "basketball")], n_samples=2, progress=False),
        "knockout": attention_knockout_all(fw, MJ, "Michael Jordan", window=1, progress=False),
        "knowledge neurons": knowledge_neurons(fw, MJ, "basketball", steps=2, progress=False),
    }


@pytest.mark.parametrize("kind", ["patching", "attribution patching", "direct logit attribution", "heads",
                                  "causal trace", "average trace", "knockout", "knowledge neurons"])
def test_one_result_type(results, kind, tmp_path):
    r = results[kind]
    assert isinstance(r, LabelledResult)
    assert r.values.shape == tuple(len(r.labels[a]) for a in r.axes)
    baseline = getattr(r, "baseline", None)
    expected = r.values if baseline is None else r.values - baseline
    assert torch.equal(r.effect.nan_to_num(), expected.nan_to_num())
    label, value = LabelledResult.top(r, 1)[0]
    flat = expected.flatten().abs().nan_to_num(nan=-1.0)
    assert value == pytest.approx(float(r.values.flatten()[flat.argmax()]))
    data = json.loads(r.save_json(tmp_path / "r.json").read_text())
    assert data["axes"] == list(r.axes) and data["title"] == r.title and len(data["values"]) == r.values.shape[0]
    assert isinstance(r.plot(), Figure)


def test_baselines_mean_what_they_say(results):
    """Patching and tracing measure against the unpatched run; attributions are effects already."""
    assert results["patching"].baseline == results["patching"].corrupted_value
    assert results["causal trace"].baseline == results["causal trace"].corrupted_prob
    assert results["direct logit attribution"].baseline is None and results["heads"].baseline is None
