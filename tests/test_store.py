"""The activation store (interp.store): shards hold exactly the activations the in-memory path
collects; a stale store (other weights, hooks, dtype, corpus) is refused; a harvest stopped in
the middle of a shard lists only whole shards and resumes to the same store; batches are seeded,
shuffled and cover the data; dictionaries train from a store as from memory."""

import copy
import json
import weakref

import pytest
import torch

import interp.store as store_module
from interp.store import MANIFEST, ActivationStore, StaleStoreError, harvest, store_for
from models import load
from probes.sae import SparseDictionary, activation_pairs, train_dictionary
from probes.sae.train import fit

IN, OUT = "blocks.1.ln2.hook_normalized", "blocks.1.hook_mlp_out"


@pytest.fixture(scope="module")
def fw():
    return load("factworld")


@pytest.fixture(scope="module")
def texts(fw):
    return fw.default_corpus()[:1200]


@pytest.fixture(scope="module")
def pairs_store(fw, texts, tmp_path_factory):
    return harvest(fw, texts, [IN, OUT], tmp_path_factory.mktemp("s") / "pairs", shard_tokens=3000, batch_size=128,
                   progress=False)


def test_shards_hold_the_in_memory_activations_in_order(fw, texts, pairs_store):
    tc = SparseDictionary.transcoder(fw, 1, 8, k=2)
    x, y = activation_pairs(fw, tc, texts, batch_size=128)
    m = json.loads((pairs_store.directory / MANIFEST).read_text())
    assert m["complete"] and m["hooks"] == [IN, OUT] and m["dtype"] == "float32" and m["d"] == {IN: 128, OUT: 128}
    assert m["tokens"] == x.shape[0] == sum(s["tokens"] for s in m["shards"]) and len(m["shards"]) >= 4
    assert [s["texts"][0] for s in m["shards"][1:]] == [s["texts"][1] for s in m["shards"][:-1]]
    assert m["shards"][-1]["texts"][1] == len(texts)
    shards = [pairs_store.read_shard(i) for i in range(pairs_store.n_shards)]
    assert torch.equal(torch.cat([s[IN] for s in shards]), x) and torch.equal(torch.cat([s[OUT] for s in shards]), y)
    assert torch.allclose(pairs_store.mean(OUT), y.double().mean(0), atol=1e-9)
    assert torch.allclose(pairs_store.variance(OUT), (y.double() - y.double().mean(0)).pow(2).sum(-1).mean(), rtol=1e-9)


def test_a_stale_store_is_refused(fw, texts, pairs_store, tmp_path):
    ActivationStore.open(pairs_store.directory, model=fw, hooks=[OUT], dtype="float32")  # fits
    edited = copy.deepcopy(fw)
    with torch.no_grad():
        edited.blocks[0].mlp.W_in[3, 5] += 1e-3  # one weight
    with pytest.raises(StaleStoreError, match="another model or other weights"):
        ActivationStore.open(pairs_store.directory, model=edited)
    with pytest.raises(StaleStoreError, match="holds no 'blocks.2.hook_mlp_out'"):
        ActivationStore.open(pairs_store.directory, hooks=["blocks.2.hook_mlp_out"])
    with pytest.raises(StaleStoreError, match="float32 activations, not float16"):
        ActivationStore.open(pairs_store.directory, dtype=torch.float16)
    with pytest.raises(StaleStoreError, match="holds no"):  # store_for opens a complete store: checked the same way
        store_for(fw, texts, ["blocks.2.hook_mlp_out"], pairs_store.directory)
    before = {p.name: p.stat().st_mtime_ns for p in pairs_store.directory.iterdir()}
    for other in (dict(texts=texts[:-1]), dict(model=edited), dict(hooks=[OUT]), dict(dtype="float16")):
        args = dict(model=fw, texts=texts, hooks=[IN, OUT]) | other
        with pytest.raises(StaleStoreError, match="other settings"):
            harvest(args["model"], args["texts"], args["hooks"], pairs_store.directory, shard_tokens=3000,
                    batch_size=128, dtype=other.get("dtype"), progress=False)
    assert {p.name: p.stat().st_mtime_ns for p in pairs_store.directory.iterdir()} == before  # nothing touched
    with pytest.raises(ValueError, match="one vector per token: 'blocks.0.attn.hook_z'"):
        harvest(fw, texts, ["blocks.0.attn.hook_z"], tmp_path / "per-head", progress=False)
    with pytest.raises(Exception, match="Closest valid names"):
        harvest(fw, texts, ["blocks.0.hook_mlp_outt"], tmp_path / "typo", progress=False)
    assert not (tmp_path / "per-head").exists() and not (tmp_path / "typo").exists()  # nothing written
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="holds no activation store"):
        harvest(fw, texts, [OUT], tmp_path, progress=False)
    with pytest.raises(FileNotFoundError, match="manifest.json is missing"):
        ActivationStore.open(tmp_path)


def test_an_interrupted_harvest_lists_whole_shards_and_resumes(fw, texts, pairs_store, tmp_path, monkeypatch):
    real = store_module._add_shard
    calls = []

    def crash_in_third(directory, manifest, acts, span):
        calls.append(span)
        if len(calls) == 3:  # the shard file is half-written when the process dies
            (directory / "shard-00002.safetensors.partial").write_bytes(b"\0" * 100)
            raise KeyboardInterrupt
        real(directory, manifest, acts, span)

    monkeypatch.setattr(store_module, "_add_shard", crash_in_third)
    with pytest.raises(KeyboardInterrupt):
        harvest(fw, texts, [IN, OUT], tmp_path / "st", shard_tokens=3000, batch_size=128, progress=False)
    m = json.loads((tmp_path / "st" / MANIFEST).read_text())
    assert not m["complete"] and [s["file"] for s in m["shards"]] == ["shard-00000.safetensors", "shard-00001.safetensors"]
    assert not (tmp_path / "st" / "shard-00002.safetensors").exists()
    with pytest.raises(StaleStoreError, match="incomplete"):
        ActivationStore.open(tmp_path / "st")
    monkeypatch.setattr(store_module, "_add_shard", real)
    calls.clear()
    done = harvest(fw, texts, [IN, OUT], tmp_path / "st", shard_tokens=3000, batch_size=128, progress=False)
    assert done.manifest["shards"] == pairs_store.manifest["shards"]  # the same shards as an uninterrupted run
    for i in range(done.n_shards):
        a, b = done.read_shard(i), pairs_store.read_shard(i)
        assert torch.equal(a[IN], b[IN]) and torch.equal(a[OUT], b[OUT])
    again = harvest(fw, texts, [IN, OUT], tmp_path / "st", shard_tokens=3000, batch_size=128, progress=False)
    assert again.manifest == done.manifest  # a complete store is reused, not harvested again


def test_batches_are_seeded_shuffled_and_cover_the_store(pairs_store):
    n, bs = pairs_store.tokens, 500
    shards = [pairs_store.read_shard(i) for i in range(pairs_store.n_shards)]
    rows = torch.cat([torch.cat([s[OUT], s[IN]], dim=1) for s in shards])  # a token's two hooks side by side
    first = list(pairs_store.batches(bs, hooks=[OUT, IN], seed=3, buffer_shards=2, epochs=1))
    assert all(o.shape == (bs, 128) and i.shape == (bs, 128) for o, i in first)
    got = torch.cat([torch.cat([o, i], dim=1) for o, i in first])
    assert got.shape[0] == n - n % bs  # one epoch: every row once, but for less than a batch carried over
    # the same (OUT, IN) rows as a multiset (the BOS row repeats), each at most as often as in the store
    all_rows, all_counts = torch.unique(rows, dim=0, return_counts=True)
    got_rows, got_counts = torch.unique(got, dim=0, return_counts=True)
    at = {tuple(r.tolist()): int(c) for r, c in zip(all_rows, all_counts)}
    assert all(int(c) <= at.get(tuple(r.tolist()), 0) for r, c in zip(got_rows, got_counts))
    assert not torch.equal(got[:bs], rows[:bs])  # shuffled
    same = list(pairs_store.batches(bs, hooks=[OUT, IN], seed=3, buffer_shards=2, epochs=1))
    other = next(pairs_store.batches(bs, hooks=[OUT, IN], seed=4, buffer_shards=2))
    assert all(torch.equal(a[0], b[0]) for a, b in zip(first, same)) and not torch.equal(first[0][0], other[0])
    endless = pairs_store.batches(bs, hooks=[OUT], seed=3, buffer_shards=2, dtype=torch.float64)
    assert sum(1 for _ in zip(range(3 * n // bs), endless)) == 3 * n // bs
    assert next(endless)[0].dtype == torch.float64


def test_batches_read_at_most_buffer_shards_at_a_time(pairs_store, monkeypatch):
    reads, alive = [], []
    real = ActivationStore.read_shard

    def counting(self, index, hooks=None):
        out = real(self, index, hooks)
        reads.append(index)
        alive.extend(weakref.ref(t) for t in out.values())
        return out

    monkeypatch.setattr(ActivationStore, "read_shard", counting)
    batches = pairs_store.batches(256, seed=1, buffer_shards=2)
    next(batches)
    assert len(reads) == 2  # lazily: the first group of shards only
    for _ in range(pairs_store.tokens // 256 * 2):  # two epochs
        next(batches)
        assert sum(r() is not None for r in alive) == 0  # shards are not kept once in the buffer
    assert sorted(reads[: pairs_store.n_shards]) == list(range(pairs_store.n_shards))  # each shard once per epoch


def test_fit_takes_an_iterable_of_batches_and_gives_the_buffer_path_s_numbers():
    from probes.sae import DictionaryConfig
    from probes.sae.train import _batches

    x = torch.randn(3000, 16, generator=torch.Generator().manual_seed(0))

    def trained(data):
        sae = SparseDictionary(DictionaryConfig(16, 16, 32, activation="topk", k=3, seed=2))

        def step_loss(a, b, mark_fired):
            f = sae.activate(sae.pre_acts(a), training=True)
            mark_fired((f > 0).any(0))
            return (sae.decode(f, a) - b).pow(2).sum(-1).mean()

        record = fit(sae, data, step_loss, seed=7, steps=40, batch_size=256, lr=1e-3, dead_after=1000,
                     log_every=10, progress=False, desc="fit")
        return record, sae.W_dec.detach()

    buffered = trained((x, x))
    replay = ((x[i], x[i]) for i in _batches(3000, 256, torch.Generator().manual_seed(7)))  # fit's shuffle, outside
    streamed = trained(replay)
    assert buffered[0].losses == streamed[0].losses and buffered[0].dead_fraction == streamed[0].dead_fraction
    assert torch.equal(buffered[1], streamed[1])
    with pytest.raises(ValueError, match="ran out after 2 of 40 steps"):
        trained(iter([(x[:256], x[:256])] * 2))


def test_dictionaries_train_from_a_store(fw, texts, pairs_store, tmp_path):
    tc_mem = SparseDictionary.transcoder(fw, 1, 64, k=8, seed=1)
    mem = train_dictionary(tc_mem, activation_pairs(fw, tc_mem, texts), steps=150, batch_size=512, progress=False)
    runs = []
    for _ in range(2):
        tc = SparseDictionary.transcoder(fw, 1, 64, k=8, seed=1)
        runs.append((train_dictionary(tc, pairs_store, steps=150, batch_size=512, buffer_shards=2, progress=False), tc))
    (a, tc_a), (b, tc_b) = runs
    assert a.losses == b.losses and torch.equal(tc_a.W_dec, tc_b.W_dec)  # deterministic
    assert a.losses[-1] < 0.5 * a.losses[0]
    assert a.losses[-1] == pytest.approx(mem.losses[-1], rel=0.25)  # as good as in memory
    x, y = activation_pairs(fw, tc_a, texts)
    still = SparseDictionary.transcoder(fw, 1, 64, k=8, seed=1)
    train_dictionary(still, pairs_store, steps=1, lr=0.0, batch_size=512, progress=False)
    assert torch.allclose(still.b_pre, x.mean(0), atol=1e-6) and torch.allclose(still.b_dec, y.mean(0), atol=1e-6)
    sae = SparseDictionary.sae(128, 32, hook="blocks.2.hook_resid_post", k=4)
    with pytest.raises(ValueError, match="holds .*not \\['blocks.2.hook_resid_post'\\]"):
        train_dictionary(sae, pairs_store, steps=5, batch_size=64, progress=False)


def test_train_sae_from_a_store_reuses_it(tmp_path, texts):
    from analyses.train_sae import train_sae

    args = dict(hook="blocks.0.hook_resid_post", features=64, k=4, steps=30, batch_size=256, texts=texts[:400],
                progress=False, store=tmp_path / "acts")
    first = train_sae(out=tmp_path / "a", **args)
    stamp = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "acts").iterdir()}
    second = train_sae(out=tmp_path / "b", **args)
    assert {p.name: p.stat().st_mtime_ns for p in (tmp_path / "acts").iterdir()} == stamp  # not harvested again
    assert first["tokens"] == second["tokens"] == ActivationStore.open(tmp_path / "acts").tokens
    assert first["training"]["losses"] == second["training"]["losses"]
