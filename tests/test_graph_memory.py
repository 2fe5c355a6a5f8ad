"""attribution_graph(..., max_memory_mb=M) (probes.graph.memory): the real peak of what the build
allocates, measured with torch's profiler (every allocation and free during the call), stays
under the bound; a bound that fits changes nothing; a tight one lowers the batch, then keeps the
most influential features (the same graph as max_feature_nodes with that cap); a bound that
nothing fits is refused before any backward pass, leaving the model as it was."""

import warnings

import pytest
import torch

from probes.graph.build import attribution_graph
from probes.graph.memory import MB, estimate_peak, measured_peak, memory_limit, saved_bytes
from tests.conftest import make_model
from tests.test_graph_build import no_hooks, random_graph, random_transcoders


def measured_peak_mb(fn):
    """(fn(), its measured peak in MB)."""
    out, peak = measured_peak(fn)
    return out, peak / MB


def test_the_profiler_measure_sees_a_known_allocation():
    def allocate():
        a = torch.zeros(1000, 1000)  # 4 MB
        b = torch.zeros(2000, 1000)  # 8 MB, while a is alive
        del a
        c = torch.zeros(500, 1000)
        del b, c
    _, peak = measured_peak_mb(allocate)
    assert peak == pytest.approx(12e6 / MB, rel=0.01)


@pytest.fixture(scope="module")
def long_case():
    """A random GPT-2-layout model (float64) with 64-feature skip transcoders on 24 tokens: about
    1,600 active features, a 50 MB graph without a bound."""
    model = make_model("gpt2", dtype="float64", seed=3)
    tcs = random_transcoders(model, skip=True, n_features=64)
    tokens = torch.randint(0, 50, (24,), generator=torch.Generator().manual_seed(5))
    return model, tcs, tokens


@pytest.mark.parametrize("bound", [2, 4, 8])
def test_the_measured_peak_stays_under_the_bound(long_case, bound):
    model, tcs, tokens = long_case
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        graph, peak = measured_peak_mb(lambda: attribution_graph(model, tokens, tcs, targets=[3, 17], batch_size=32,
                                                                 max_memory_mb=bound, progress=False))
    assert peak <= bound
    plan = graph.settings["memory_plan"]
    assert plan["limited"] and graph.n_features == plan["n_rows"] > 0
    assert graph.settings["n_active_features"] > 1000


def test_float32_with_rotary_and_grouped_queries_stays_under_the_bound():
    model = make_model("llama_gqa", dtype="float32", seed=3)
    tcs = random_transcoders(model, skip=False, n_features=128)
    tokens = torch.randint(0, 50, (30,), generator=torch.Generator().manual_seed(5))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        graph, peak = measured_peak_mb(lambda: attribution_graph(model, tokens, tcs, targets=[3], max_memory_mb=3,
                                                                 progress=False))
    assert peak <= 3 and graph.n_features > 0 and graph.adjacency.dtype == torch.float32


def test_a_bound_that_fits_changes_nothing():
    model, tcs, tokens, graph = random_graph("gpt2")
    bounded = attribution_graph(model, tokens, tcs, targets=[3, 17, 41], batch_size=16, max_memory_mb=1000,
                                progress=False)
    assert torch.equal(bounded.adjacency, graph.adjacency) and torch.equal(bounded.features, graph.features)
    plan = bounded.settings["memory_plan"]
    assert plan["batch"] == 16 and not plan["limited"] and plan["n_rows"] == graph.n_features


def test_saved_bytes_counts_what_autograd_keeps_once_per_storage():
    x = torch.randn(1000, dtype=torch.float64, requires_grad=True)
    with saved_bytes() as count:
        y = x.exp()          # exp keeps its output: 8,000 bytes
        z = y.view(10, 100)  # a view saves nothing
        (z * 2).sum()        # multiplying by a number keeps nothing
    assert count[0] == 8000


def test_a_tighter_bound_lowers_the_batch_first_and_keeps_every_feature():
    model, tcs, tokens, graph = random_graph("gpt2")
    roomy = attribution_graph(model, tokens, tcs, targets=[3, 17, 41], batch_size=16, max_memory_mb=1000,
                              progress=False).settings["memory_plan"]
    # A bound that holds every feature with 3 copies per backward pass, not with 16.
    bound = estimate_peak(batch=3, n_rows=graph.n_features, n_active=roomy["n_active"], n_targets=3, n_layers=2,
                          n_pos=8, d_model=model.cfg.d_model, saved_per_copy=roomy["saved_per_copy"], itemsize=8) / MB
    assert roomy["peak_bytes"] > bound * MB
    bounded = attribution_graph(model, tokens, tcs, targets=[3, 17, 41], batch_size=16, max_memory_mb=bound,
                                progress=False)
    plan = bounded.settings["memory_plan"]
    assert 2 <= plan["batch"] < 16 and not plan["limited"]
    assert torch.equal(bounded.features, graph.features)
    torch.testing.assert_close(bounded.adjacency, graph.adjacency, rtol=0, atol=1e-12)


def test_a_tight_bound_keeps_the_most_influential_features_and_says_so(long_case):
    model, tcs, tokens = long_case
    with pytest.warns(UserWarning, match=r"keeps \d+ of the \d+ active features"):
        bounded = attribution_graph(model, tokens, tcs, targets=[3, 17], batch_size=32, max_memory_mb=3,
                                    progress=False)
    plan = bounded.settings["memory_plan"]
    assert plan["n_rows"] < bounded.settings["n_active_features"] and plan["batch"] < 32
    # the same graph as the cap alone, at the batch size asked for: the ranking schedule is in rows
    capped = attribution_graph(model, tokens, tcs, targets=[3, 17], batch_size=32, max_feature_nodes=plan["n_rows"],
                               progress=False)
    assert torch.equal(bounded.features, capped.features)
    torch.testing.assert_close(bounded.adjacency, capped.adjacency, rtol=0, atol=1e-12)


def test_a_bound_nothing_fits_is_refused_and_changes_nothing(long_case):
    model, tcs, tokens = long_case
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    with pytest.raises(ValueError, match=r"max_memory_mb=0.01 is too small for this prompt.*needs about [\d.]+ MB"):
        attribution_graph(model, tokens, tcs, targets=[3], max_memory_mb=0.01, progress=False)
    assert no_hooks(model)
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters())
    assert all(p.requires_grad for p in model.parameters())


@pytest.mark.parametrize("bad", [0, -1, "1GB", True, float("nan")])
def test_bad_bounds_are_refused(bad):
    with pytest.raises(ValueError, match="max_memory_mb must be a positive number"):
        memory_limit(bad)
    model, tcs, tokens, _ = random_graph("gpt2")
    with pytest.raises(ValueError, match="max_memory_mb"):
        attribution_graph(model, tokens, tcs, targets=[3], max_memory_mb=bad, progress=False)
