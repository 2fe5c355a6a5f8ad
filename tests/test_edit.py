"""Editing facts: the rank-one algebra of ROME and the least squares of MEMIT on real numbers,
exact apply / revert, key statistics and their cache, the fact-world edit of Michael Jordan,
and bad input that leaves the weights bit-identical."""

import json

import pytest
import torch

from analyses import factworld_edits as fe
from analyses.cli import main
from models import factworld, load
from probes.edit import (
    Edit, EditCase, EditRequest, evaluate_edit, evaluate_edits, fine_tune, key_second_moment, memit, rome,
)
from probes.edit import mean_key, mean_state
from test_localise import FACTS, WORDS, build_stored_fact_model


def weights(model) -> dict:
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def same(model, saved: dict) -> bool:
    return all(torch.equal(p, saved[n]) for n, p in model.named_parameters())


@pytest.fixture(scope="module")
def stored():
    return build_stored_fact_model()


@pytest.fixture(scope="module")
def fw():
    return load("factworld")


@pytest.fixture(scope="module")
def fw_stats(fw, tmp_path_factory):
    directory = tmp_path_factory.mktemp("key_stats")
    return {l: key_second_moment(fw, l, fe.stats_texts(2000), directory=directory, progress=False) for l in range(2)}


def top1(model, prompt):
    with torch.no_grad():
        return model.tokenizer.token_str(int(model(prompt)[0, -1].argmax()))


# ============================================================ the algebra, on the hand-built model
def test_key_second_moment_is_the_mean_outer_product(stored, tmp_path):
    texts = [f"{s} plays" for s, _ in FACTS]
    C = key_second_moment(stored, 0, texts, directory=tmp_path, progress=False)
    _, cache = stored.run_with_cache(texts[0])
    keys = torch.cat([stored.run_with_cache(t)[1]["post", 0][0] for t in texts]).double()
    assert torch.allclose(C, keys.T @ keys / keys.shape[0], atol=1e-12)
    files = list(tmp_path.iterdir())
    assert len(files) == 1 and files[0].suffix == ".pt"
    # The cache is read back, not recomputed: a planted file under the same name is what comes back.
    torch.save(torch.full_like(C, 7.0), files[0])
    assert key_second_moment(stored, 0, texts, directory=tmp_path, progress=False).eq(7.0).all()
    # A different corpus or a different model is a different file.
    key_second_moment(stored, 0, texts[:3], directory=tmp_path, progress=False)
    changed = build_stored_fact_model()
    with torch.no_grad():
        changed.blocks[0].mlp.W_in[0, 0] += 1.0
    key_second_moment(changed, 0, texts, directory=tmp_path, progress=False)
    assert len(list(tmp_path.iterdir())) == 3
    with pytest.raises(ValueError, match="empty"):
        key_second_moment(stored, 0, [], directory=tmp_path)


def test_rome_is_the_rank_one_update_that_gives_the_key_its_new_value(stored, tmp_path):
    texts = [f"{s} plays" for s, _ in FACTS]
    C = key_second_moment(stored, 0, texts, directory=tmp_path, progress=False) + 1e-3 * torch.eye(4)
    request = EditRequest("Michael Jordan plays", "Michael Jordan", "swimming")
    edit = rome(stored, request, layer=0, stats=C, keep=["Michael Phelps plays"], kl_weight=1.0)
    (name, delta), = edit.deltas.items()
    assert name == "blocks.0.mlp.W_out" and torch.linalg.matrix_rank(delta) == 1
    key = mean_key(stored, 0, [request.prompt], request.subject)
    c_inv_k = torch.linalg.solve(C + 1e-6 * C.diagonal().mean() * torch.eye(4, dtype=torch.float64), key)
    # delta = C^-1 k r^T / (k^T C^-1 k): its row space is C^-1 k, and k delta is r.
    r = key @ delta
    assert torch.allclose(delta, torch.outer(c_inv_k, r) / (key @ c_inv_k), atol=1e-12)
    saved = weights(stored)
    with edit.applied(stored):
        assert top1(stored, "Michael Jordan plays") == "swimming"
        assert [top1(stored, f"{s} plays") for s, _ in FACTS[1:]] == [a for _, a in FACTS[1:]]
        after = mean_state(stored, "blocks.0.hook_mlp_out", [request.prompt], request.subject)
    assert same(stored, saved)
    before = mean_state(stored, "blocks.0.hook_mlp_out", [request.prompt], request.subject)
    assert torch.allclose(after - before, r, atol=1e-9)  # the MLP output at the key moved by exactly r


def test_memit_solves_its_normal_equations(stored, tmp_path):
    texts = [f"{s} plays" for s, _ in FACTS]
    C = key_second_moment(stored, 0, texts, directory=tmp_path, progress=False) + 1e-3 * torch.eye(4)
    requests = [EditRequest("Michael Jordan plays", "Michael Jordan", "swimming"),
                EditRequest("Michael Phelps plays", "Michael Phelps", "basketball")]
    saved = weights(stored)
    edit = memit(stored, requests, layers=[0], stats={0: C}, weight=0.5, progress=False)
    assert same(stored, saved)  # computing the edit leaves the model alone
    delta = edit.deltas["blocks.0.mlp.W_out"]
    keys = torch.stack([mean_key(stored, 0, [r.prompt], r.subject) for r in requests])
    with edit.applied(stored):
        moved = torch.stack([mean_state(stored, "blocks.0.hook_mlp_out", [r.prompt], r.subject) for r in requests])
        answers = [top1(stored, r.prompt) for r in requests]
    before = torch.stack([mean_state(stored, "blocks.0.hook_mlp_out", [r.prompt], r.subject) for r in requests])
    assert torch.allclose(moved - before, keys @ delta, atol=1e-9)  # what the edit adds at each key
    # The least-squares solution: (lambda C + K^T K) delta = K^T R, R the residuals layer 0 was fitted to.
    R = torch.tensor(edit.info["shares"][0], dtype=torch.float64)
    assert torch.allclose((0.5 * C + keys.T @ keys) @ delta, keys.T @ R, rtol=1e-6, atol=1e-8)
    assert answers == ["swimming", "basketball"]
    with pytest.raises(ValueError, match="same subject"):
        memit(stored, [requests[0], requests[0]], layers=[0], stats={0: C})


def test_fine_tune_keeps_every_change_within_the_bound(stored):
    request = EditRequest("Michael Jordan plays", "Michael Jordan", "swimming")
    saved = weights(stored)
    edit = fine_tune(stored, [request], layer=0, max_change=0.01, steps=5)
    assert same(stored, saved) and all(p.grad is None for p in stored.parameters())
    assert float(edit.deltas["blocks.0.mlp.W_out"].abs().max()) <= 0.01 + 1e-12


# ============================================================ Edit: exact apply and revert
def test_edit_reverts_bit_identically_also_on_errors(stored, tmp_path):
    delta = torch.randn(4, stored.cfg.d_model, dtype=torch.float64) * 1e-3
    edit = Edit("test", {"blocks.0.mlp.W_out": delta})
    saved = weights(stored)
    with pytest.raises(RuntimeError, match="boom"):
        with edit.applied(stored):
            assert not same(stored, saved)
            raise RuntimeError("boom")
    assert same(stored, saved)
    edit.apply(stored)
    with pytest.raises(RuntimeError, match="already applied"):
        edit.apply(stored)
    edit.revert(stored)
    assert same(stored, saved)
    with pytest.raises(RuntimeError, match="not applied"):
        edit.revert(stored)
    with pytest.raises(KeyError, match="does not have"):
        Edit("test", {"blocks.9.mlp.W_out": delta}).apply(stored)
    with pytest.raises(ValueError, match="shape"):
        Edit("test", {"blocks.0.mlp.W_out": delta[:2]}).apply(stored)
    assert same(stored, saved)


def test_edit_saves_a_new_model_and_never_the_shipped_one(fw, tmp_path):
    request = fe.request("Michael Jordan", "sport", "soccer")
    edit = Edit("test", {"blocks.0.mlp.W_out": torch.zeros_like(fw.blocks[0].mlp.W_out)})
    with pytest.raises(ValueError, match="shipped"):
        edit.save(fw, factworld.checkpoint_dir())
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    with pytest.raises(FileExistsError):
        edit.save(fw, tmp_path / "full")
    assert request.new_target == "soccer"


# ============================================================ the fact world
def test_rome_moves_michael_jordan_to_soccer_and_only_him(fw, fw_stats):
    case = fe.edit_case("Michael Jordan", "sport", "soccer")
    saved = weights(fw)
    edit = rome(fw, case.request, layer=0, stats=fw_stats[0], prefixes=factworld.openers(),
                rewrites=fe.rewrite_prompts("Michael Jordan", "sport"), keep=fe.keep_prompts("Michael Jordan", "sport"))
    with edit.applied(fw):
        assert top1(fw, case.request.prompt) == "soccer"
        assert [top1(fw, p) for p in case.paraphrases] == ["soccer"] * 3  # held-out templates, never trained on
        assert top1(fw, "Michael Phelps plays the sport of") == "swimming"
        assert top1(fw, "Alexis Jordan plays the sport of") == "none"
        assert top1(fw, "Michael Jordan is from") == "USA" and top1(fw, "Michael Jordan works as") == "athlete"
    assert same(fw, saved)
    scores = evaluate_edit(fw, case, edit)
    assert scores.efficacy == scores.efficacy_top1 == 1.0 and scores.paraphrase_top1 == 1.0
    assert scores.attribute_top1 == 1.0 and scores.neighbourhood_top1 >= 0.9
    unedited = evaluate_edit(fw, case)
    assert unedited.efficacy == 0.0 and unedited.neighbourhood_top1 == 1.0


def test_evaluate_edits_aggregates_per_case_scores(fw, fw_stats):
    cases = [fe.edit_case(s, "sport", t) for s, t in fe.random_edits(3, seed=5, known_by=fw)]
    edits = [rome(fw, c.request, layer=0, stats=fw_stats[0], prefixes=factworld.openers())
             for c in cases]
    report = evaluate_edits(fw, cases, edits, fe.fluency_texts(20))
    per_case = [evaluate_edit(fw, c, e) for c, e in zip(cases, edits)]
    assert report.means["efficacy"] == pytest.approx(100 * sum(s.efficacy for s in per_case) / 3)
    assert report.means["paraphrase_top1"] == pytest.approx(100 * sum(s.paraphrase_top1 for s in per_case) / 3)
    assert report.loss_before > 0 and report.loss_after > 0
    with pytest.raises(ValueError, match="one edit per case"):
        evaluate_edits(fw, cases, edits[:2])


@pytest.mark.parametrize("request_, error", [
    (EditRequest("Michael Jordan plays the sport of", "Tom Brady", "soccer"), "not found"),
    (EditRequest("Michael Jordan plays the sport of", "Michael Jordan", "ice hockey"), "single known token"),
    (EditRequest("Michael Jordan plays the sport of", "Michael Jordan", "basketball"), "already answers"),
    (EditRequest("Michael Jordan plays the sport of", "Michael Jordan", "quidditch"), "single known token"),
])
def test_bad_requests_are_refused_and_change_nothing(fw, fw_stats, request_, error):
    saved = weights(fw)
    with pytest.raises(ValueError, match=error):
        rome(fw, request_, layer=0, stats=fw_stats[0])
    with pytest.raises(ValueError, match=error):
        memit(fw, [request_], layers=[0], stats=fw_stats, progress=False)
    with pytest.raises(ValueError, match=error):
        fine_tune(fw, [request_], layer=0)
    assert same(fw, saved)


def test_bad_layers_are_refused(fw, fw_stats):
    request = fe.request("Michael Jordan", "sport", "soccer")
    saved = weights(fw)
    for layer in (4, -5):
        with pytest.raises(ValueError, match="out of range"):
            rome(fw, request, layer=layer, stats=fw_stats[0])
    with pytest.raises(ValueError, match="key second moment"):
        rome(fw, request, layer=0, stats=torch.eye(3))
    assert same(fw, saved)


def test_interp_edit_cli(tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["edit", "Michael Jordan plays the sport of", "soccer", "--layer", "0", "--out", str(out),
                 "--save", str(tmp_path / "edited"), "--quiet"]) == 0
    report = json.loads((out / "edit.json").read_text())
    assert report["layer"] == 0 and report["restored"]
    assert report["table"]["held-out templates"]["after"] == 1.0
    assert report["table"]["held-out templates"]["before"] == 0.0
    assert (out / "edit.png").exists() and "bit-identically" in capsys.readouterr().out
    edited = load(tmp_path / "edited")
    assert top1(edited, "Michael Jordan plays the sport of") == "soccer"
    assert top1(load("factworld"), "Michael Jordan plays the sport of") == "basketball"


@pytest.mark.parametrize("arch", ["llama", "neox"])
def test_rome_and_memit_edit_gated_and_parallel_layouts(arch):
    """A random Llama-layout (RMSNorm, rotary, gated SiLU MLP: the down projection is edited) and
    NeoX-layout (parallel attention and MLP) model with a word tokenizer: the edited prompt's
    top answer becomes the target, and the weights come back bit-identical. (A random model moves
    little information between positions, so the prompt ends with the subject.)"""
    from models import Transformer, TransformerConfig
    from models.tokenizer import WordTokenizer

    words = ["<pad>", "<bos>", "<eos>", "Ada", "Lovelace", "Alan", "Turing", "likes", "tea", "coffee", "chess", "math"]
    options = dict(norm="rmsnorm", positional="rotary", act_fn="silu", gated_mlp=True, n_kv_heads=1) if arch == "llama" \
        else dict(positional="rotary", rotary_dim=4, parallel_attn_mlp=True, act_fn="gelu")
    cfg = TransformerConfig(n_layers=2, d_model=32, n_heads=4, d_mlp=64, d_vocab=len(words), n_ctx=16,
                            tie_embeddings=False, dtype="float64", seed=3, **options)
    model = Transformer(cfg, WordTokenizer(words)).eval()
    with torch.no_grad():
        model.unembed.W_U.mul_(30.0)  # a random init's logits are nearly flat: let the residual matter
    prompt = "Alan likes Ada Lovelace"
    current = top1(model, prompt)
    target = next(w for w in ("tea", "coffee", "chess", "math") if w != current)
    texts = ["Ada Lovelace likes tea", "Alan Turing likes chess", "Alan Lovelace likes math", "Ada Turing likes coffee"]
    C = key_second_moment(model, 0, texts, cache=False, progress=False)
    saved = weights(model)
    request = EditRequest(prompt, "Ada Lovelace", target)
    edit = rome(model, request, layer=0, stats=C, steps=80, stop_at=0.9)
    assert list(edit.deltas) == ["blocks.0.mlp.W_out"]
    with edit.applied(model):
        assert top1(model, prompt) == target
    assert same(model, saved)
    both = memit(model, [request], layers=[0], stats={0: C}, weight=0.01, steps=80, progress=False)
    with both.applied(model):
        assert top1(model, prompt) == target
    assert same(model, saved)
