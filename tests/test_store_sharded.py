"""The activation store harvested in shards on Ray workers (interp.store_sharded): the same rows
as the one-process harvest, with 0 (in this process), 1 and 2 workers; an interrupted harvest
resumes; a store made with other settings is refused."""

import json

import pytest
import torch

import interp.store_sharded as sharded
from interp.store import MANIFEST, ActivationStore, StaleStoreError, harvest
from interp.store_sharded import harvest_sharded
from interp.workers import ray_cluster
from models import load

HOOKS = ["blocks.1.ln2.hook_normalized", "blocks.1.hook_mlp_out"]


@pytest.fixture(scope="module")
def fw():
    return load("factworld")


@pytest.fixture(scope="module")
def texts(fw):
    return fw.default_corpus()[:700]


@pytest.fixture(scope="module")
def serial(fw, texts, tmp_path_factory):
    return harvest(fw, texts, HOOKS, tmp_path_factory.mktemp("serial") / "s", batch_size=64, progress=False)


def rows(store):
    return {h: torch.cat([store.read_shard(i, [h])[h] for i in range(store.n_shards)]) for h in HOOKS}


def test_the_same_rows_with_0_1_and_2_workers(fw, texts, serial, tmp_path):
    want = rows(serial)
    with ray_cluster(workers=2):
        for workers in (None, 1, 2):
            store = harvest_sharded("factworld", texts, HOOKS, tmp_path / f"w{workers}", texts_per_shard=192,
                                    batch_size=64, loaded=fw, workers=workers, progress=False)
            got = rows(store)
            assert all(torch.equal(got[h], want[h]) for h in HOOKS), workers
            assert [s["texts"] for s in store.manifest["shards"]] == [[0, 192], [192, 384], [384, 576], [576, 700]]
            assert store.tokens == serial.tokens and torch.allclose(store.mean(HOOKS[1]), serial.mean(HOOKS[1]))
    assert ActivationStore.open(tmp_path / "w2", model=fw, hooks=HOOKS).tokens == serial.tokens


def test_an_interrupted_sharded_harvest_resumes(fw, texts, serial, tmp_path, monkeypatch):
    real = sharded.HarvestTask._harvest
    calls = []

    def crash_in_third(self, start, stop):
        calls.append(start)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(self, start, stop)

    monkeypatch.setattr(sharded.HarvestTask, "_harvest", crash_in_third)
    with pytest.raises(KeyboardInterrupt):
        harvest_sharded(fw, texts, HOOKS, tmp_path / "st", texts_per_shard=192, batch_size=64, progress=False)
    m = json.loads((tmp_path / "st" / MANIFEST).read_text())
    assert not m["complete"] and m["shards"] == []  # shards are listed only once all are there
    with pytest.raises(StaleStoreError, match="incomplete"):
        ActivationStore.open(tmp_path / "st")
    monkeypatch.setattr(sharded.HarvestTask, "_harvest", real)
    calls.clear()
    store = harvest_sharded(fw, texts, HOOKS, tmp_path / "st", texts_per_shard=192, batch_size=64, progress=False)
    assert store.manifest["complete"] and all(torch.equal(a, b) for a, b in zip(rows(store).values(),
                                                                                rows(serial).values()))
    with pytest.raises(StaleStoreError, match="other settings"):
        harvest_sharded(fw, texts[:-1], HOOKS, tmp_path / "st", texts_per_shard=192, batch_size=64, progress=False)
    with pytest.raises(ValueError, match="multiple of batch_size"):
        harvest_sharded(fw, texts, HOOKS, tmp_path / "other", texts_per_shard=100, batch_size=64, progress=False)
