"""Editing at the edges: the key-statistics cache is keyed by everything its numbers depend on
(BOS, hooks, dtype, token-batch shapes) and reads tensors only; the edit optimisation leaves the
global random state alone; an edit's new answer is `new_target`; the simple calls
`rome(model, prompt, subject, new_target)` and `memit(model, [(prompt, subject, new_target)])`
work on the shipped model and ask for a corpus elsewhere; `interp evaluate-edits`."""

import json

import pytest
import torch

from analyses import factworld_edits as fe
from analyses.cli import main
from analyses.edit import evaluate_random_edits
from interp.checks import IndexRangeError
from models import Transformer, TransformerConfig, load
from models.tokenizer import WordTokenizer
from probes.edit import (
    EditReport, EditRequest, as_request, hooks_attached, key_second_moment, memit, rome,
)
from test_localise import build_stored_fact_model

WORDS = ["<pad>", "<bos>", "<eos>", "Ada", "Lovelace", "Alan", "Turing", "likes", "tea", "coffee", "chess", "math"]
TEXTS = ["Ada Lovelace likes tea", "Alan Turing likes chess", "Alan Lovelace likes math", "Ada Turing likes coffee",
         "Ada likes Alan", "Turing likes tea"]


def word_model(seed: int = 3, dtype: str = "float32") -> Transformer:
    cfg = TransformerConfig(n_layers=2, d_model=32, n_heads=4, d_mlp=64, d_vocab=len(WORDS), n_ctx=16,
                            tie_embeddings=False, dtype=dtype, seed=seed)
    return Transformer(cfg, WordTokenizer(WORDS)).eval()


def uncached(model, layer, corpus, **kw):
    return key_second_moment(model, layer, corpus, cache=False, progress=False, **kw)


def weights(model) -> dict:
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def same(model, saved: dict) -> bool:
    return all(torch.equal(p, saved[n]) for n, p in model.named_parameters())


def top1(model, prompt):
    with torch.no_grad():
        return model.tokenizer.token_str(int(model(prompt)[0, -1].argmax()))


# ============================================================ the key-statistics cache
def test_the_cache_is_keyed_by_prepend_bos(tmp_path):
    model = word_model()
    with_bos = key_second_moment(model, 0, TEXTS, directory=tmp_path, progress=False)
    model.default_prepend_bos = False
    without = key_second_moment(model, 0, TEXTS, directory=tmp_path, progress=False)
    assert torch.equal(without, uncached(model, 0, TEXTS))  # not the BOS-on file
    assert float((without - with_bos).abs().max()) > 1e-3
    assert len(list(tmp_path.iterdir())) == 2


def test_nothing_is_cached_while_hooks_are_attached(tmp_path):
    model = word_model()
    clean = key_second_moment(model, 1, TEXTS, directory=tmp_path, progress=False)
    files = sorted(tmp_path.iterdir())

    def double(x, hook):
        return 2 * x

    model.add_hook("blocks.0.hook_resid_post", double, is_permanent=True)  # survives reset_hooks, like transcoders
    model.reset_hooks()
    assert hooks_attached(model)
    hooked = key_second_moment(model, 1, TEXTS, directory=tmp_path, progress=False)
    model.reset_hooks(including_permanent=True)
    assert not hooks_attached(model)
    with model.hooks(fwd_hooks=[("blocks.0.hook_resid_post", double)]):
        expected = uncached(model, 1, TEXTS)
        assert torch.equal(key_second_moment(model, 1, TEXTS, directory=tmp_path, progress=False), expected)
    assert torch.equal(hooked, expected) and float((hooked - clean).abs().max()) > 1e-3
    handle = model.blocks[0].register_forward_hook(lambda module, args, out: 2 * out)  # a plain torch hook
    try:
        assert torch.equal(key_second_moment(model, 1, TEXTS, directory=tmp_path, progress=False),
                           uncached(model, 1, TEXTS))
    finally:
        handle.remove()
    assert sorted(tmp_path.iterdir()) == files  # nothing written while hooked
    assert torch.equal(key_second_moment(model, 1, TEXTS, directory=tmp_path, progress=False), clean)


def test_bfloat16_models_are_hashed_and_keyed_apart(tmp_path):
    model = word_model()
    as_float = key_second_moment(model, 0, TEXTS, directory=tmp_path, progress=False)
    model.to(torch.bfloat16)
    as_bf16 = key_second_moment(model, 0, TEXTS, directory=tmp_path, progress=False)
    assert torch.equal(as_bf16, uncached(model, 0, TEXTS)) and not torch.equal(as_bf16, as_float)
    assert len(list(tmp_path.iterdir())) == 2


def test_token_batches_are_hashed_with_their_shape(tmp_path):
    model = word_model()
    ids = torch.tensor([[1, 3, 4, 7, 8, 5], [1, 5, 6, 7, 10, 3]])
    wide = key_second_moment(model, 0, [ids], directory=tmp_path, progress=False)
    narrow = ids.reshape(3, 4)  # the same bytes, other sequences
    assert torch.equal(key_second_moment(model, 0, [narrow], directory=tmp_path, progress=False),
                       uncached(model, 0, [narrow]))
    assert not torch.allclose(wide, uncached(model, 0, [narrow]))
    with pytest.raises(ValueError, match="integer token ids"):
        key_second_moment(model, 0, [ids.double()], directory=tmp_path)


RAN = []


def _payload():
    RAN.append("unpickled code ran")
    return torch.full((64, 64), 7.0, dtype=torch.float64)


class _Evil:
    def __reduce__(self):
        return (_payload, ())


def test_cached_files_are_read_weights_only(tmp_path, monkeypatch):
    """As torch < 2.6 does by default (here forced by torch's own switch): a planted pickle in
    the cache folder is not executed, and the statistics are recomputed."""
    model = word_model()
    C = key_second_moment(model, 0, TEXTS, directory=tmp_path, progress=False)
    (path,) = tmp_path.iterdir()
    torch.save(_Evil(), path)
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    again = key_second_moment(model, 0, TEXTS, directory=tmp_path, progress=False)
    assert RAN == [] and torch.equal(again, C)


def test_an_out_of_range_layer_is_an_index_range_error(tmp_path):
    model = word_model()
    with pytest.raises(IndexRangeError):
        key_second_moment(model, 2, TEXTS, directory=tmp_path)
    saved = weights(model)
    with pytest.raises(IndexRangeError, match="out of range"):
        rome(model, "Alan likes Ada Lovelace", "Ada Lovelace", "tea", layer=-3, stats=torch.eye(64))
    assert same(model, saved) and list(tmp_path.iterdir()) == []


# ============================================================ the global random state
def test_edits_leave_the_global_rng_alone_and_repeat_exactly():
    stored = build_stored_fact_model()
    texts = [f"{s} plays" for s in ("Michael Jordan", "Michael Phelps", "Alexis Jordan")]
    C = uncached(stored, 0, texts) + 1e-3 * torch.eye(4)
    request = EditRequest("Michael Jordan plays", "Michael Jordan", "swimming")
    torch.manual_seed(1234)
    torch.rand(3)
    state = torch.get_rng_state()
    first = rome(stored, request, layer=0, stats=C, keep=["Michael Phelps plays"], kl_weight=1.0, steps=6)
    assert torch.equal(torch.get_rng_state(), state)
    many = memit(stored, [request], layers=[0], stats={0: C}, weight=0.5, steps=6, progress=False)
    assert torch.equal(torch.get_rng_state(), state)
    second = rome(stored, request, layer=0, stats=C, keep=["Michael Phelps plays"], kl_weight=1.0, steps=6)
    assert torch.equal(first.deltas["blocks.0.mlp.W_out"], second.deltas["blocks.0.mlp.W_out"])
    again = memit(stored, [request], layers=[0], stats={0: C}, weight=0.5, steps=6, progress=False)
    assert torch.equal(many.deltas["blocks.0.mlp.W_out"], again.deltas["blocks.0.mlp.W_out"])


# ============================================================ one name for the new answer
def test_the_new_answer_is_new_target_and_old_files_still_read():
    request = EditRequest("Michael Jordan plays the sport of", "Michael Jordan", new_target="soccer")
    assert request.to_dict() == {"prompt": request.prompt, "subject": "Michael Jordan", "new_target": "soccer"}
    assert EditRequest.from_dict(request.to_dict()) == request
    old_file = {"prompt": request.prompt, "subject": "Michael Jordan", "target": "soccer"}  # before the rename
    assert EditRequest.from_dict(old_file) == request
    with pytest.raises(KeyError, match="new_target"):
        EditRequest.from_dict({"prompt": request.prompt, "subject": "Michael Jordan"})
    assert as_request(request.prompt, "Michael Jordan", "soccer") == as_request(tuple(old_file.values())) == request
    with pytest.raises(TypeError, match="new_target"):
        as_request(request.prompt, "Michael Jordan")


# ============================================================ the simple calls
def test_the_shipped_model_brings_its_corpus():
    assert load("factworld").default_corpus() == fe.stats_texts()


def test_rome_and_memit_with_defaults_on_the_shipped_model(tmp_path, monkeypatch):
    monkeypatch.setenv("INTERP_CACHE", str(tmp_path))
    model = load("factworld")
    model.default_corpus = lambda: fe.stats_texts(500)  # the shipped default, smaller for speed
    saved = weights(model)
    edit = rome(model, "Michael Jordan plays the sport of", "Michael Jordan", "soccer", progress=False)
    assert edit.info["layer"] == 0 and edit.info["why_layer"].startswith("causal trace")
    assert edit.info["request"]["new_target"] == "soccer"
    with edit.applied(model):
        assert top1(model, "Michael Jordan plays the sport of") == "soccer"
    files = list((tmp_path / "key_stats").iterdir())
    assert len(files) == 1  # computed over the default corpus and cached
    assert torch.equal(torch.load(files[0], weights_only=True),
                       key_second_moment(model, 0, fe.stats_texts(500), cache=False, progress=False))
    both = memit(model, [("Michael Jordan plays the sport of", "Michael Jordan", "soccer"),
                         ("Tom Brady plays the sport of", "Tom Brady", "golf")], progress=False)
    assert both.info["layers"] == [0] and "causal traces" in both.info["why_layers"]
    with both.applied(model):
        assert [top1(model, "Michael Jordan plays the sport of"), top1(model, "Tom Brady plays the sport of")] \
            == ["soccer", "golf"]
    assert same(model, saved) and len(list((tmp_path / "key_stats").iterdir())) == 1


def test_other_models_are_asked_for_a_corpus(tmp_path, monkeypatch):
    monkeypatch.setenv("INTERP_CACHE", str(tmp_path))
    model = word_model()
    with torch.no_grad():
        model.unembed.W_U.mul_(30.0)  # a random init's logits are nearly flat: let the residual matter
    saved = weights(model)
    prompt = "Alan likes Ada Lovelace"
    new_target = next(w for w in ("tea", "coffee", "chess", "math") if w != top1(model, prompt))
    with pytest.raises(ValueError, match="corpus="):
        rome(model, prompt, "Ada Lovelace", new_target, layer=0)
    with pytest.raises(ValueError, match="corpus="):
        memit(model, [(prompt, "Ada Lovelace", new_target)], layers=[0], progress=False)
    assert same(model, saved) and not (tmp_path / "key_stats").exists()
    edit = rome(model, prompt, "Ada Lovelace", new_target, layer=0, corpus=TEXTS, steps=80, stop_at=0.9,
                progress=False)
    with edit.applied(model):
        assert top1(model, prompt) == new_target


# ============================================================ interp evaluate-edits
def test_evaluate_edits_command_and_function(tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["evaluate-edits", "--method", "ft", "-n", "1", "--layer", "0", "--fluency", "10", "--seed", "3",
                 "--out", str(out), "--quiet"]) == 0
    report = json.loads((out / "evaluate_edits.json").read_text())
    assert report["n_cases"] == 1 and report["layers"] == [0] and len(report["cases"]) == 1
    assert "efficacy" in capsys.readouterr().out
    result = evaluate_random_edits(method="ft", n=1, layer=0, fluency=10, seed=3, progress=False)
    assert isinstance(result.results["report"], EditReport) and result.files == []
    assert result["cases"] == report["cases"] and result["means"] == report["means"]
    assert 0.0 <= result["means"]["efficacy"] <= 100.0
