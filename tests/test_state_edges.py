"""The user's state is the user's: a model owns its configuration (dtype and device follow its
weights, the caller's config is never changed), library calls leave torch's global RNG alone,
nothing overwrites a directory the user did not name, evaluations build no autograd graph, and
out-of-range layers raise the toolkit's IndexRangeError. The shipped checkpoint and transcoders
are never written here (their hashes and modification times are checked)."""

import hashlib
import os

import pytest
import torch

from models import Transformer, TransformerConfig, load, to_hf
from models.factworld import checkpoint_dir
from models.loading import save
from models.tokenizer import WordTokenizer

WORDS = ["<bos>", "<pad>", "a", "b", "c", "d", "e", "f"]


def small_cfg(**kw) -> TransformerConfig:
    return TransformerConfig(**dict(n_layers=2, d_model=16, n_heads=2, d_vocab=len(WORDS), n_ctx=8, seed=0) | kw)


def small_model(**kw) -> Transformer:
    model = Transformer(small_cfg(**kw), WordTokenizer(WORDS)).eval()
    with torch.no_grad():  # non-trivial norms and biases (b_U stays 0: GPT-2 has none)
        g = torch.Generator().manual_seed(3)
        for name, p in model.named_parameters():
            if name != "unembed.b_U" and (name.endswith((".w", ".b")) or name.split(".")[-1].startswith("b_")):
                p.add_((0.2 * torch.randn(p.shape, generator=g, dtype=torch.float64)).to(p.dtype))
    return model


TOKENS = torch.tensor([[0, 2, 3, 4, 5], [0, 5, 4, 3, 2]])


def folder_state(folder) -> dict:
    """{relative path: (sha256, mtime_ns)} of every file under `folder`."""
    out = {}
    for root, _, files in os.walk(folder):
        for f in files:
            p = os.path.join(root, f)
            with open(p, "rb") as fh:
                out[os.path.relpath(p, folder)] = (hashlib.sha256(fh.read()).hexdigest(), os.stat(p).st_mtime_ns)
    return out


@pytest.fixture
def shipped_untouched():
    """Checks, after the test, that the shipped checkpoint and transcoders are byte- and mtime-identical."""
    from models.loading import shipped_dictionaries

    from models.checkpoint import SHIPPED_DICTIONARY_FOLDERS

    folders = [checkpoint_dir()] + [shipped_dictionaries("factworld").parent / n for n in SHIPPED_DICTIONARY_FOLDERS]
    before = [folder_state(f) for f in folders]
    assert before[0], "the shipped checkpoint is missing"
    yield
    assert [folder_state(f) for f in folders] == before, "a shipped folder was written"


# ============================================================ a model owns its config
def test_double_model_saves_loads_and_exports_float64(tmp_path):
    model = small_model().double()
    assert model.cfg.dtype == "float64"
    save(model, tmp_path / "m")
    again = load(tmp_path / "m")
    assert again.W_E.dtype == torch.float64 and again.cfg.dtype == "float64"
    torch.testing.assert_close(again(TOKENS), model(TOKENS), rtol=0, atol=0)
    hf = to_hf(model)
    assert {p.dtype for p in hf.parameters()} == {torch.float64}
    torch.testing.assert_close(hf(TOKENS).logits, model(TOKENS), rtol=1e-12, atol=1e-12)


def test_process_weights_and_transcoder_follow_a_double_model():
    from models.processing import process_weights
    from probes.sae import SparseDictionary

    model = small_model().to(torch.float64)
    folded = process_weights(model, fold_value_biases=True)
    logp = lambda m: m(TOKENS).log_softmax(-1)  # noqa: E731
    torch.testing.assert_close(logp(folded), logp(model), rtol=0, atol=1e-12)
    tc = SparseDictionary.transcoder(model, 1, 8, k=2)
    assert {p.dtype for p in tc.parameters()} == {torch.float64}


def test_models_built_from_one_config_stay_independent(tmp_path):
    from models.processing import fold_layer_norm

    cfg = small_cfg()
    snapshot = dict(vars(cfg))
    a, b = Transformer(cfg), Transformer(cfg)
    assert vars(cfg) == snapshot and cfg.device is None  # the caller's object is not written
    fold_layer_norm(a)  # unties a's embeddings: a's config only
    a.double()
    assert (a.cfg.tie_embeddings, a.cfg.dtype) == (False, "float64")
    assert (b.cfg.tie_embeddings, b.cfg.dtype) == (True, "float32")
    assert vars(cfg) == snapshot
    save(b, tmp_path / "b")
    torch.testing.assert_close(load(tmp_path / "b")(TOKENS), b(TOKENS), rtol=0, atol=0)


def test_bfloat16_model_roundtrips(tmp_path):
    for model in (small_model(dtype="bfloat16"), small_model().to(torch.bfloat16)):
        assert model.cfg.dtype == "bfloat16"
        logits = model(TOKENS)
        assert logits.dtype == torch.bfloat16
        path = save(model, tmp_path / f"m{len(list(tmp_path.iterdir()))}")
        again = load(path)
        assert again.cfg.dtype == "bfloat16"
        for (n, p), (_, q) in zip(model.named_parameters(), again.named_parameters()):
            assert q.dtype == torch.bfloat16 and torch.equal(p, q), n
        torch.testing.assert_close(again(TOKENS), logits, rtol=0, atol=0)


# ============================================================ the global RNG
def _global_rng_kept(fn):
    torch.manual_seed(1234)
    torch.rand(3)  # a state no library call would reseed to
    state = torch.get_rng_state()
    out = fn()
    assert torch.equal(torch.get_rng_state(), state), "the global RNG was reseeded or drawn from"
    return out


def test_induction_training_uses_its_own_generator():
    from probes.induction import train_induction_model

    run = lambda: train_induction_model(steps=3, d_vocab=16, max_half=3, d_model=8, batch=4, seed=5)  # noqa: E731
    (m1, r1), (m2, r2) = _global_rng_kept(run), _global_rng_kept(run)
    assert r1.losses == r2.losses
    for (n, p), (_, q) in zip(m1.named_parameters(), m2.named_parameters()):
        assert torch.equal(p, q), n


def test_factworld_training_uses_its_own_generator():
    from models.factworld.train import TrainConfig, train

    result = _global_rng_kept(lambda: train(TrainConfig.tiny(steps=2, batch_size=4), progress=False))
    assert len(result.losses) == 2
    _global_rng_kept(lambda: Transformer(small_cfg(seed=7)))  # a seeded initialisation, likewise


# ============================================================ nothing overwritten unless asked
def test_save_refuses_a_non_empty_directory(tmp_path):
    model = small_model()
    save(model, tmp_path / "m")
    before = folder_state(tmp_path / "m")
    with pytest.raises(FileExistsError, match="not empty"):
        save(small_model(seed=1), tmp_path / "m")
    assert folder_state(tmp_path / "m") == before
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError):
        save(model, tmp_path / "other")
    assert sorted(p.name for p in (tmp_path / "other").iterdir()) == ["notes.txt"]
    save(small_model(seed=1), tmp_path / "m", overwrite=True)
    assert not torch.equal(load(tmp_path / "m").W_E, model.W_E)


def test_save_dictionary_refuses_a_non_empty_directory_and_the_shipped_folder(tmp_path, shipped_untouched):
    from models.loading import shipped_dictionaries
    from probes.sae import DictionaryConfig, SparseDictionary, load_dictionary, save_dictionary

    a = SparseDictionary(DictionaryConfig(4, 4, 8, k=2, seed=0))
    b = SparseDictionary(DictionaryConfig(4, 4, 8, k=2, seed=1))
    save_dictionary(a, tmp_path / "d")
    with pytest.raises(FileExistsError, match="not empty"):
        save_dictionary(b, tmp_path / "d")
    assert torch.equal(load_dictionary(tmp_path / "d").W_dec, a.W_dec)
    save_dictionary(b, tmp_path / "d", overwrite=True)
    assert torch.equal(load_dictionary(tmp_path / "d").W_dec, b.W_dec)
    new = shipped_dictionaries("factworld") / "L_test_never_written"
    with pytest.raises(ValueError, match="shipped"):
        save_dictionary(a, new)
    assert not new.exists()
    for folder in ("transcoders-wide", "clt"):  # every shipped dictionary folder, even with overwrite
        inside = shipped_dictionaries("factworld").parent / folder / "L0"
        with pytest.raises(ValueError, match=f"shipped fact-world .* folder .*{folder}"):
            save_dictionary(a, inside, overwrite=True)


def _train_factworld(*args):
    from analyses.cli import main

    tiny = ["--steps", "1", "--batch-size", "2", "--n-layers", "1", "--d-model", "8", "--n-heads", "1",
            "--d-mlp", "8", "--warmup", "1", "--quiet"]
    return main(["train-factworld", *tiny, *args])


def test_train_factworld_needs_an_explicit_output(tmp_path, shipped_untouched):
    with pytest.raises(ValueError, match="--out"):
        _train_factworld()
    with pytest.raises(ValueError, match="shipped"):
        _train_factworld("--out", str(checkpoint_dir()))
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("mine")
    with pytest.raises(FileExistsError):
        _train_factworld("--out", str(tmp_path / "full"))
    assert [p.name for p in (tmp_path / "full").iterdir()] == ["keep.txt"]
    from models.factworld.train import output_dir

    assert output_dir(None, force=True) == checkpoint_dir()  # --force alone: the shipped folder (not run here)


def test_train_transcoders_never_writes_the_shipped_folder_for_another_model(tmp_path, shipped_untouched):
    from analyses.cli import main

    save(small_model(), tmp_path / "other")
    for extra in ([], ["--force"]):
        with pytest.raises(ValueError, match="--out"):
            main(["train-transcoders", "--model", str(tmp_path / "other"), "--steps", "1", "--features", "8",
                  "--k", "2", "--quiet", *extra])
    with pytest.raises(ValueError, match="--force"):
        main(["train-transcoders", "--steps", "1", "--out", str(checkpoint_dir().parent / "transcoders")])
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("mine")
    with pytest.raises(FileExistsError):
        main(["train-transcoders", "--steps", "1", "--out", str(tmp_path / "full")])


def test_models_exports_save(tmp_path):
    import models

    assert models.save(small_model(), tmp_path / "m") == tmp_path / "m"
    from models import from_hf, load as load_, to_hf as to_hf_  # noqa: F401 (the old names still import)


# ============================================================ evaluations, layers, dead code
def test_last_token_logits_builds_no_graph():
    from models.transformer import last_token_logits

    model = small_model().train()
    logits = last_token_logits(model, ["a b c", "d e", "f"], batch_size=2)
    assert logits.shape == (3, len(WORDS)) and not logits.requires_grad and logits.grad_fn is None
    with torch.no_grad():
        full = model(model.to_tokens(["a b c"]))[0, -1]
    torch.testing.assert_close(logits[0], full)
    import models.factworld.evaluate as evaluate

    assert not hasattr(evaluate, "next_word_logits")


def test_layer_arguments_out_of_range_raise_index_range_error():
    from interp.checks import IndexRangeError
    from probes.sae import SparseDictionary

    model = small_model()
    with torch.no_grad():
        resid = model(TOKENS, stop_at_layer=-1)  # TransformerLens: every block but the last
        torch.testing.assert_close(resid, model(TOKENS, stop_at_layer=1))
        torch.testing.assert_close(model(resid, start_at_layer=-1), model(TOKENS))
        for kwargs in (dict(stop_at_layer=3), dict(stop_at_layer=-3)):
            with pytest.raises(IndexRangeError, match="stop_at_layer"):
                model(TOKENS, **kwargs)
        with pytest.raises(IndexRangeError, match="start_at_layer"):
            model(resid, start_at_layer=5)
        with pytest.raises(IndexRangeError, match="after"):
            model(resid, start_at_layer=2, stop_at_layer=1)
    with pytest.raises(IndexRangeError):
        SparseDictionary.transcoder(model, 2, 8)
    assert not hasattr(model, "W_E_pos")
