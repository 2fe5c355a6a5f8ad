"""AlphaEdit's null-space property on real keys, sequential editing (apply one after another,
revert bit-identically, AlphaEdit keeping earlier edits' keys), the shipped model's own edit
prompts, and ROME's simple call on every fact-world relation."""

import pytest
import torch

from analyses import factworld_edits as fe
from models import factworld, load
from probes.edit import (
    EditRequest, SequentialEdits, alphaedit, edit_prompts, key_second_moment, mean_key, memit, null_space_projector,
    rome, sequential_edit,
)
from test_edit import same, top1, weights


@pytest.fixture(scope="module")
def fw():
    return load("factworld")


@pytest.fixture(scope="module")
def C0(fw, tmp_path_factory):
    return key_second_moment(fw, 0, fe.stats_texts(2000), directory=tmp_path_factory.mktemp("ks"), progress=False)


def all_keys(model, texts, layer=0) -> torch.Tensor:
    """[tokens, d_mlp]: the layer's keys at every token of `texts` (float64)."""
    rows = []
    for t in texts:
        _, cache = model.run_with_cache(t, names_filter=[f"blocks.{layer}.mlp.hook_post"])
        rows.append(cache[f"blocks.{layer}.mlp.hook_post"][0].double())
    return torch.cat(rows)


def test_null_space_projector_is_the_projector_onto_the_small_eigenvectors():
    g = torch.Generator().manual_seed(0)
    K = torch.randn(5, 12, generator=g, dtype=torch.float64)  # 5 keys in 12 dimensions: rank 5
    C = K.T @ K / 5
    P = null_space_projector(C, threshold=1e-10)
    assert torch.allclose(P, P.T, atol=1e-12) and torch.allclose(P @ P, P, atol=1e-10)
    assert round(float(P.trace())) == 7  # 12 - 5 directions no key uses
    assert float((K @ P).abs().max()) < 1e-10  # every key is orthogonal to the null space
    fresh = torch.randn(12, generator=g, dtype=torch.float64)
    assert float((P @ fresh).norm()) > 0.1 * float(fresh.norm())  # a new direction is not
    with pytest.raises(ValueError, match="threshold"):
        null_space_projector(C, threshold=1.5)


def test_alphaedit_leaves_the_preserved_keys_outputs_unchanged(fw):
    # Preserved: every token of 25 sentences about other people (fewer keys than d_mlp = 512, so C has a true null space).
    texts = [s for s in fe.stats_texts(400) if "Jordan" not in s and "Michael" not in s][:25]
    K0 = all_keys(fw, texts)
    assert K0.shape[0] < fw.cfg.d_mlp
    C = K0.T @ K0 / K0.shape[0]
    request = EditRequest("Michael Jordan plays the sport of", "Michael Jordan", "soccer")
    saved = weights(fw)
    edit = alphaedit(fw, [request], layers=[0], stats={0: C}, threshold=1e-10, steps=40, progress=False)
    assert same(fw, saved)
    delta = edit.deltas["blocks.0.mlp.W_out"].double()
    # k0 (W_out + delta) = k0 W_out for every preserved key, to float precision (delta is stored as float32).
    moved = (K0 @ delta).norm(dim=-1) / (K0.norm(dim=-1) * delta.norm()).clamp_min(1e-30)
    assert float(moved.max()) < 1e-6
    with torch.no_grad():
        before = [fw.run_with_cache(t, names_filter=["blocks.0.hook_mlp_out"])[1]["blocks.0.hook_mlp_out"] for t in texts]
        with edit.applied(fw):
            after = [fw.run_with_cache(t, names_filter=["blocks.0.hook_mlp_out"])[1]["blocks.0.hook_mlp_out"]
                     for t in texts]
            edited_answer = top1(fw, request.prompt)
    assert max(float((a - b).abs().max()) for a, b in zip(after, before)) < 1e-5
    key = mean_key(fw, 0, [request.prompt], request.subject)
    assert float((key @ delta).norm()) > 1.0  # the edited subject's key does get a new value
    assert edited_answer == "soccer"
    # MEMIT's update on the same request moves the preserved keys' outputs: the property is AlphaEdit's own.
    plain = memit(fw, [request], layers=[0], stats={0: C + 1e-6 * torch.eye(fw.cfg.d_mlp, dtype=torch.float64)},
                  weight=1.0, progress=False)
    plain_moved = (K0 @ plain.deltas["blocks.0.mlp.W_out"].double()).norm(dim=-1)
    assert float(plain_moved.max()) > 1e3 * float((K0 @ delta).norm(dim=-1).max())
    with pytest.raises(ValueError, match="l2"):
        alphaedit(fw, [request], layers=[0], stats={0: C}, l2=0.0)
    with pytest.raises(ValueError, match="preserved"):
        alphaedit(fw, [request], layers=[0], stats={0: C}, preserved={0: torch.eye(3)})
    assert same(fw, saved)


def test_sequential_edits_apply_in_turn_and_revert_bit_identically(fw, C0):
    requests = [fe.request("Michael Jordan", "sport", "soccer"), fe.request("Tom Brady", "sport", "tennis"),
                fe.request("Serena Williams", "sport", "golf")]
    saved = weights(fw)
    seen = []

    def on_step(done, run):
        seen.append((done, len(run), top1(fw, requests[done - 1].prompt)))

    run = sequential_edit(fw, requests, "rome", layer=0, stats=C0, on_step=on_step, progress=False)
    assert [s[:2] for s in seen] == [(1, 1), (2, 2), (3, 3)]
    assert [s[2] for s in seen] == ["soccer", "tennis", "golf"]  # each edit took when it was made
    assert not same(fw, saved) and len(run) == 3
    second = run.edits[1].deltas["blocks.0.mlp.W_out"]
    run.revert()
    assert same(fw, saved) and len(run) == 0
    # The second edit was computed on the model with the first applied, not on the unedited model.
    fresh = rome(fw, requests[1], layer=0, stats=C0)
    assert not torch.allclose(fresh.deltas["blocks.0.mlp.W_out"], second, atol=1e-4)
    # An error in the middle reverts what was applied before it propagates.
    def boom(done, run):
        if done == 2:
            raise RuntimeError("stop")

    with pytest.raises(RuntimeError, match="stop"):
        sequential_edit(fw, requests, "rome", layer=0, stats=C0, on_step=boom, progress=False)
    assert same(fw, saved)
    # A request the model already answers with its new target when its turn comes is not edited again.
    twice = sequential_edit(fw, [requests[0], requests[0]], "rome", layer=0, stats=C0, progress=False)
    assert len(twice) == 1 and twice.skipped == [requests[0]]
    twice.revert()
    assert same(fw, saved)
    with pytest.raises(ValueError, match="method"):
        sequential_edit(fw, requests, "ft")
    with pytest.raises(ValueError, match="batch_size"):
        sequential_edit(fw, requests, "rome", batch_size=2)
    assert same(fw, saved)


def test_sequential_alphaedit_keeps_the_keys_of_earlier_edits(fw, C0):
    first = [fe.request("Michael Jordan", "sport", "soccer"), fe.request("Tom Brady", "sport", "tennis")]
    second = [fe.request("Serena Williams", "sport", "golf"), fe.request("Lionel Messi", "sport", "basketball")]
    saved = weights(fw)
    run = SequentialEdits(fw)
    a = alphaedit(fw, first, layers=[0], stats={0: C0}, progress=False)
    run.add(a)
    K1 = a.keys[0]
    assert torch.allclose(run.preserved[0], K1.T @ K1)
    kept = alphaedit(fw, second, layers=[0], stats={0: C0}, preserved=run.preserved, progress=False)
    blind = alphaedit(fw, second, layers=[0], stats={0: C0}, progress=False)
    # With the earlier keys preserved, the second update moves them less than without.
    moved_kept = float((K1 @ kept.deltas["blocks.0.mlp.W_out"].double()).norm())
    moved_blind = float((K1 @ blind.deltas["blocks.0.mlp.W_out"].double()).norm())
    assert moved_kept < 0.5 * moved_blind
    run.add(kept)
    assert [top1(fw, r.prompt) for r in first + second] == ["soccer", "tennis", "golf", "basketball"]
    run.revert()
    assert same(fw, saved)


def test_the_shipped_model_brings_its_own_edit_prompts(fw):
    request = fe.request("Michael Jordan", "sport", "soccer")
    prefixes, rewrites, keep, source = edit_prompts(fw, request)
    assert source == "the model's edit_prompts" and prefixes == factworld.openers()
    assert request.prompt not in rewrites and len(rewrites) == 10
    assert all("Michael Jordan" in p for p in rewrites + keep)
    sport = {t.format(subject="Michael Jordan") for t in factworld.templates("sport")}
    assert "Michael Jordan is from" in keep and not sport & set(keep) and set(rewrites) <= sport
    # Given ones win; a prompt that is not a fact-world fact gets the generic defaults.
    assert edit_prompts(fw, request, prefixes=[""], keep=[])[0::2] == ([""], [])
    odd = EditRequest("yesterday Michael Jordan said", "Michael Jordan", "soccer")
    assert edit_prompts(fw, odd) == ([""], [], [], "generic defaults")


@pytest.mark.parametrize("relation, subject, new_target", [
    ("sport", "Michael Jordan", "soccer"), ("country", "Michael Jordan", "France"),
    ("occupation", "Marie Curie", "painter"),
])
def test_rome_simple_call_edits_every_relation(fw, relation, subject, new_target):
    """rome(model, prompt, subject, new_target) on the shipped model: traced layer, key statistics,
    contexts and kept prompts all found by the call; the new answer on a held-out template and
    the subject's other relations kept."""
    prompt = factworld.prompt(subject, relation)
    others = {r: factworld.prompt(subject, r) for r in factworld.relations() if r != relation}
    before = {r: top1(fw, p) for r, p in others.items()}
    assert all(before[r] == factworld.lookup(subject, r) for r in others)
    edit = rome(fw, prompt, subject, new_target, progress=False)
    assert edit.info["prompts_from"] == "the model's edit_prompts" and "causal trace" in edit.info["why_layer"]
    with edit.applied(fw):
        assert top1(fw, prompt) == new_target
        assert top1(fw, factworld.prompt(subject, relation, 0, heldout=True)) == new_target
        assert {r: top1(fw, p) for r, p in others.items()} == before


def test_interp_edit_alphaedit_then_more_edits_in_sequence(tmp_path, capsys):
    import json

    from analyses.cli import main

    out = tmp_path / "out"
    assert main(["edit", "Michael Jordan plays the sport of", "soccer", "--method", "alphaedit", "--layer", "0",
                 "--sequential", "3", "--seed", "4", "--out", str(out), "--quiet"]) == 0
    report = json.loads((out / "edit.json").read_text())
    assert report["method"] == "alphaedit" and report["restored"]
    sq = report["sequential"]
    assert sq["edits"] == 4 and len(sq["requests"]) == 4 and 0 <= sq["held"] <= 4
    assert sq["first_held"] == (report["table"]["edited prompt"]["after"] == 1.0)
    assert "4 edits one after another" in capsys.readouterr().out
    assert top1(load("factworld"), "Michael Jordan plays the sport of") == "basketball"
    with pytest.raises(SystemExit, match="sequential"):
        main(["edit", "Michael Jordan plays the sport of", "soccer", "--method", "ft", "--sequential", "2", "--quiet",
              "--out", str(tmp_path / "no")])


def test_editing_makes_its_tensors_on_the_model_s_device_in_its_dtype():
    """Every tensor the editing methods create says its device, and floats follow a float64 model
    (the placement recorder of tests/placement.py, which flags a factory without device=)."""
    from placement import placement, report

    from probes.edit import evaluate_edit, fine_tune

    m = load("factworld").double()
    C = key_second_moment(m, 0, fe.stats_texts(300), cache=False, progress=False)
    request = fe.request("Michael Jordan", "sport", "soccer")
    case = fe.edit_case("Michael Jordan", "sport", "soccer")
    with placement(torch.float64) as rec:
        e = rome(m, request, layer=0, stats=C, steps=3, progress=False)
        evaluate_edit(m, case, e)
        alphaedit(m, [request], layers=[0], stats={0: C}, steps=3, progress=False)
        memit(m, [request], layers=[0], stats={0: C}, steps=3, progress=False)
        fine_tune(m, [request], layer=0, steps=2)
        sequential_edit(m, [request], "alphaedit", layers=[0], stats={0: C}, steps=3, progress=False).revert()
    assert rec.calls > 0
    assert not rec.findings, report(rec.findings)
