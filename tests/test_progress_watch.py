"""Watching and cancelling long work through its progress bars (interp.progress.watching)."""

import threading

import pytest
import torch

from interp.progress import Cancelled, progress_bar, watching


def test_watcher_sees_every_step_even_when_quiet():
    seen = []
    with watching(lambda done, total, desc: seen.append((done, total, desc))):
        assert list(progress_bar(range(3), progress=False, desc="work")) == [0, 1, 2]
    assert seen == [(0, 3, "work"), (1, 3, "work"), (2, 3, "work"), (3, 3, "work")]
    # outside the block nobody is told
    list(progress_bar(range(2), progress=False))
    assert len(seen) == 4


def test_manual_updates_are_reported():
    seen = []
    with watching(lambda done, total, desc: seen.append(done)):
        bar = progress_bar(total=10, progress=False)
        bar.update(4)
        bar.update(6)
        bar.close()
    assert seen == [0, 4, 10]


def test_watcher_is_per_thread():
    seen = []
    def other():
        list(progress_bar(range(5), progress=False))
    with watching(lambda *a: seen.append(a)):
        t = threading.Thread(target=other)
        t.start()
        t.join()
    assert seen == []


def test_cancel_stops_a_real_sweep_and_leaves_the_model_clean():
    from interp.metrics import logit_diff
    from interp.patching import sweep
    from models import load

    model = load("factworld")
    clean, corrupted = "Michael Jordan plays the sport of", "Michael Phelps plays the sport of"
    metric = logit_diff(model, "basketball", "swimming")
    steps = []

    def cancel_after_two(done, total, desc):
        steps.append(done)
        if done >= 2:
            raise Cancelled("stop")

    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(Cancelled):
        with watching(cancel_after_two):
            sweep(model, clean, corrupted, metric, "resid_pre", batch_size=1, progress=False)
    assert steps[-1] == 2
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    assert not any(hp._forward_hooks for hp in model.hook_dict.values())
    # and the same call afterwards runs to the end
    result = sweep(model, clean, corrupted, metric, "resid_pre", progress=False)
    assert result.values.shape[0] == model.cfg.n_layers
