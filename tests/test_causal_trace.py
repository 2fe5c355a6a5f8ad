"""Causal tracing and attention knockout: batched results against slow per-cell references."""

import json
import math

import pytest
import torch

from conftest import ARCHS, make_model
from models import load
from analyses.factworld_facts import triples as fact_triples
from models.factworld import Fact
from models.tokenizer import WordTokenizer
from probes.causal_trace import trace, trace_with_patch, window_layers
from probes.knockout import attention_knockout, attention_knockout_all
from probes.subjects import CATEGORIES, last_subject_pos, position_categories, subject_span
from probes.trace_average import average_trace

MJ = "Michael Jordan plays the sport of"


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """These models are tiny: one intra-op thread is as fast, and avoids the thread pool's spin-waits
    (seconds per test) when other processes share the cores. Restored afterwards."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def fw():
    return load("factworld")


def tiny(arch: str):
    """A 2-layer random float64 model with a word tokenizer, its weights scaled up so that
    attention is sharp and outputs peaked: restoring different states gives clearly different numbers."""
    model = make_model(arch, dtype="float64")
    model.tokenizer = WordTokenizer(["<pad>", "<bos>", "<eos>"] + [f"w{i}" for i in range(47)])
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(("W_Q", "W_K", "W_V", "W_O", "W_in", "W_out", "W_gate")):
                p.mul_(10.0)
            if name.endswith("W_U") or (model.cfg.tie_embeddings and name.endswith("W_E")):
                p.mul_(20.0)
    return model


TINY_PROMPT = "w5 w9 w13 w2 w30 w7 w11"  # tokens: <bos> w5 w9 w13 w2 ... -> subject "w9 w13" at [2, 4)
TINY_SUBJECT = "w9 w13"


def no_hooks(model) -> bool:
    return not any(hp.has_hooks for hp in model.hook_dict.values())


# ---------------------------------------------------------------- slow references
def ref_window(L, window, n_layers):
    return list(range(max(0, L - window // 2), min(n_layers, L - window // 2 + window)))


def answer_prob(logits, answer_id):
    return float(logits[0, -1].softmax(-1)[answer_id])


def reference_trace(model, prompt, subject, answer_id, cells, *, kind, window=1, noise=3.0, n_samples=1, seed=0,
                    replacement=None):
    """Scores at `cells` [(L, p)], one run_with_hooks per (cell, noise sample), restoring the clean
    state(s) at (L, p) exactly as the docs describe."""
    tokens = model.to_tokens(prompt)
    start, end = subject_span(model, prompt, subject)
    site = {"resid": "hook_resid_post", "mlp": "hook_mlp_out", "attn": "hook_attn_out"}[kind]
    _, clean = model.run_with_cache(tokens, names_filter=lambda n: n.endswith(site))
    if replacement is not None:
        corrupt_tokens = tokens.clone()
        corrupt_tokens[0, start:end] = torch.tensor(model.tokenizer.encode(replacement))
        samples = [None]
    else:
        corrupt_tokens = tokens
        std = noise * model.embed.W_E.double().std().item() * model.embed.scale
        eps = torch.randn(n_samples, end - start, model.cfg.d_model, generator=torch.Generator().manual_seed(seed),
                          dtype=model.embed.W_E.dtype) * std
        samples = list(eps)
    out = []
    for L, p in cells:
        layers = [L] if kind == "resid" else ref_window(L, window, model.cfg.n_layers)
        names = [f"blocks.{l}.{site}" for l in layers]
        probs = []
        for e in samples:
            hooks = []
            if e is not None:
                def add(x, hook, e=e):
                    x = x.clone()
                    x[0, start:end] += e
                    return x
                hooks.append(("hook_embed", add))
            for name in names:
                def restore(x, hook, name=name):
                    x = x.clone()
                    x[0, p] = clean[name][0, p]
                    return x
                hooks.append((name, restore))
            with torch.no_grad():
                probs.append(answer_prob(model.run_with_hooks(corrupt_tokens, fwd_hooks=hooks), answer_id))
        out.append(sum(probs) / len(probs))
    return out


# ---------------------------------------------------------------- subject span
def test_subject_span_factworld(fw):
    assert fw.to_str_tokens(MJ) == ["<bos>", "Michael", "Jordan", "plays", "the", "sport", "of"]
    assert subject_span(fw, MJ, "Michael Jordan") == (1, 3)
    assert last_subject_pos(fw, MJ, "Michael Jordan") == 2
    assert subject_span(fw, "the sport that Michael Jordan plays is", "Michael Jordan") == (4, 6)
    assert subject_span(fw, MJ, "Jordan") == (2, 3)


def test_subject_span_errors(fw):
    with pytest.raises(ValueError, match="'Michael Phelps' not found") as e:
        subject_span(fw, MJ, "Michael Phelps")
    assert "'plays'" in str(e.value) and "'<bos>'" in str(e.value)  # the prompt's tokens are shown
    with pytest.raises(ValueError, match=r"'Michael Jordan' occurs 2 times .*\[1, 3\).*\[7, 9\)"):
        subject_span(fw, MJ + " Michael Jordan", "Michael Jordan")
    with pytest.raises(ValueError, match="Zorblax"):
        subject_span(fw, MJ, "Zorblax")
    with pytest.raises(ValueError, match=r"replacement subject 'Michael' has 1 tokens.*'Michael Jordan' has 2"):
        trace(fw, MJ, "Michael Jordan", corruption="replace", replacement_subject="Michael", progress=False)
    with pytest.raises(ValueError, match="replacement_subject"):
        trace(fw, MJ, "Michael Jordan", corruption="replace", progress=False)
    with pytest.raises(ValueError, match="kind"):
        trace(fw, MJ, "Michael Jordan", kind="heads", progress=False)
    assert no_hooks(fw)


def test_subject_span_bpe_leading_space(tmp_path):
    from helpers import build_hf_tokenizer
    from models import Transformer, TransformerConfig
    from models.tokenizer import HFTokenizer

    tok = HFTokenizer(build_hf_tokenizer(tmp_path, vocab_size=400))
    model = Transformer(TransformerConfig(n_layers=1, d_model=16, n_heads=2, d_vocab=tok.vocab_size, n_ctx=64, seed=0),
                        tokenizer=tok)
    prompt = "the cat sat Michael Jordan plays"
    start, end = subject_span(model, prompt, "Michael Jordan")  # tokenised as " Michael Jordan" mid-sentence
    assert "".join(model.to_str_tokens(prompt)[start:end]) == " Michael Jordan"
    start, end = subject_span(model, "Michael Jordan plays", "Michael Jordan")  # at the start: no leading space
    assert start == 1 and "".join(model.to_str_tokens("Michael Jordan plays")[start:end]) == "Michael Jordan"
    with pytest.raises(ValueError, match="'Michael Jordan' not found"):
        subject_span(model, "the cat sat on a mat", "Michael Jordan")


def test_window_layers():
    assert window_layers(0, 1, 4) == [0]
    assert window_layers(3, 2, 4) == [2, 3]
    assert window_layers(0, 10, 4) == [0, 1, 2, 3] == window_layers(3, 10, 4)
    assert window_layers(20, 10, 48) == list(range(15, 25))
    assert window_layers(1, 4, 4) == [0, 1, 2]
    with pytest.raises(ValueError):
        window_layers(0, 0, 4)


# ---------------------------------------------------------------- batched == reference
CONFIGS = {
    "resid_noise": dict(kind="resid", n_samples=3, seed=1),
    "mlp_noise_window2": dict(kind="mlp", window=2, n_samples=2, seed=2),
    "attn_noise_window1": dict(kind="attn", window=1, n_samples=2, noise=5.0),
    "resid_replace": dict(kind="resid", corruption="replace", replacement_subject="w40 w41"),
    "mlp_replace_window3": dict(kind="mlp", window=3, corruption="replace", replacement_subject="w40 w41"),
    "attn_replace_window10": dict(kind="attn", window=10, corruption="replace", replacement_subject="w40 w41"),
}


EVERY_ARCH = ("resid_noise", "mlp_noise_window2", "attn_replace_window10")
TINY_CASES = [(a, c) for a in ARCHS for c in EVERY_ARCH] + [("gpt2", c) for c in CONFIGS if c not in EVERY_ARCH]


@pytest.mark.parametrize("arch, config", TINY_CASES)
def test_trace_equals_reference_tiny(arch, config):
    model = tiny(arch)
    kw = dict(CONFIGS[config])
    result = trace(model, TINY_PROMPT, TINY_SUBJECT, batch_size=5, progress=False, **kw)  # chunks split groups
    n_layers, n_pos = model.cfg.n_layers, len(result.tokens)
    assert result.scores.shape == (n_layers, n_pos) and result.subject_span == (2, 4)
    replacement = kw.pop("replacement_subject", None)
    kw.pop("corruption", None)
    cells = [(L, p) for L in range(n_layers) for p in range(n_pos)]
    expected = torch.tensor(reference_trace(model, TINY_PROMPT, TINY_SUBJECT, result.answer_id, cells,
                                            replacement=replacement, **kw), dtype=torch.float64)
    expected = expected.reshape(n_layers, n_pos)
    assert float(expected.max() - expected.min()) > 1e-3  # the restorations differ: the comparison is not vacuous
    torch.testing.assert_close(result.scores.double(), expected, atol=1e-9, rtol=0)
    assert no_hooks(model)


def test_trace_equals_reference_factworld(fw):
    answer = fw.to_single_token("basketball")
    cells = [(0, 2), (1, 6), (3, 6), (2, 1), (0, 4)]
    for kw in (dict(kind="resid", n_samples=10), dict(kind="mlp", window=2, n_samples=4, seed=3),
               dict(kind="attn", window=1, n_samples=4),
               dict(kind="mlp", window=1, replacement_subject="Michael Phelps")):
        replacement = kw.pop("replacement_subject", None)
        corruption = "replace" if replacement else "noise"
        result = trace(fw, MJ, "Michael Jordan", "basketball", corruption=corruption,
                       replacement_subject=replacement, progress=False, **kw)
        assert result.answer_id == answer
        refs = reference_trace(fw, MJ, "Michael Jordan", answer, cells, replacement=replacement, **kw)
        for (L, p), ref in zip(cells, refs):
            assert abs(float(result.scores[L, p]) - ref) < 1e-5, (kw, L, p, float(result.scores[L, p]), ref)


def test_trace_consistency(fw):
    r = trace(fw, MJ, "Michael Jordan", progress=False)
    # The last layer's residual at the last position determines the logits: restoring it gives the clean run.
    assert abs(float(r.scores[-1, -1]) - r.clean_prob) < 1e-5
    # BOS precedes the noised subject, so it is the same in the corrupted run: restoring it changes nothing.
    torch.testing.assert_close(r.scores[:, 0], torch.full((fw.cfg.n_layers,), r.corrupted_prob), atol=1e-5, rtol=0)
    # Deterministic given the seed; another seed gives other noise.
    again = trace(fw, MJ, "Michael Jordan", progress=False, batch_size=13)
    torch.testing.assert_close(again.scores, r.scores, atol=1e-6, rtol=0)
    other = trace(fw, MJ, "Michael Jordan", progress=False, seed=1)
    assert other.corrupted_prob != r.corrupted_prob
    # Restoring the same clean states at every layer of the window at once: window >= 2 n_layers -> every row equal.
    w = trace(fw, MJ, "Michael Jordan", kind="mlp", window=2 * fw.cfg.n_layers, n_samples=3, progress=False)
    assert w.restored_layers == [list(range(fw.cfg.n_layers))] * fw.cfg.n_layers
    torch.testing.assert_close(w.scores, w.scores[:1].expand_as(w.scores), atol=1e-6, rtol=0)
    # Labelled like a patching result, JSON-able.
    assert r.axes == ("layer", "pos") and r.values is r.scores
    assert r.values.shape == tuple(len(r.labels[a]) for a in r.axes)
    assert r.labels["pos"][2] == "Jordan (2)" and r.labels["layer"][0] == "L0"
    d = json.loads(json.dumps(r.to_dict()))
    assert d["values"][3][6] == pytest.approx(float(r.scores[3, 6]))
    torch.testing.assert_close(r.indirect_effect, r.scores - r.corrupted_prob)
    assert r.total_effect == pytest.approx(r.clean_prob - r.corrupted_prob)


def test_michael_jordan_trace(fw):
    r = trace(fw, MJ, "Michael Jordan", progress=False)
    ie = r.indirect_effect
    print(f"\nclean {r.clean_prob:.4f} corrupted {r.corrupted_prob:.4f}\nresid indirect effect\n{ie}")
    assert r.answer == "basketball"
    assert r.clean_prob > 0.5 and r.corrupted_prob < r.clean_prob / 2
    last_subj, last = 2, 6
    # Early site: the last subject token in layer 0; late site: the last token in the last layers.
    assert float(ie[0, last_subj]) > 0.5 * r.total_effect
    assert int(ie[0].argmax()) == last_subj
    assert all(int(ie[L].argmax()) == last for L in range(1, fw.cfg.n_layers))
    assert float(ie[-1, last]) > 0.9 * r.total_effect
    # The replaced subject (Michael Phelps -> swimming) makes basketball all but impossible.
    rep = trace(fw, MJ, "Michael Jordan", corruption="replace", replacement_subject="Michael Phelps", progress=False)
    assert rep.corrupted_prob < 0.01 and rep.n_samples == 1


# ---------------------------------------------------------------- average over facts
def test_average_trace_alignment(fw):
    template = "{subject} plays the sport of"
    f = Fact("Michael Jordan", "sport", "basketball")
    single = average_trace(fw, fact_triples([f], template), n_samples=3, progress=False)
    r = trace(fw, MJ, "Michael Jordan", "basketball", n_samples=3, seed=0, progress=False)
    ie = r.indirect_effect
    expected = torch.stack([ie[:, 1], torch.full((4,), float("nan")), ie[:, 2], ie[:, 3], ie[:, 4:6].mean(-1),
                            ie[:, 6]], dim=1)
    torch.testing.assert_close(single.indirect_effect, expected, atol=1e-6, rtol=0, equal_nan=True)
    assert single.categories == list(CATEGORIES) and single.counts == [1, 0, 1, 1, 1, 1]
    assert position_categories(7, (1, 3))["further tokens"] == [4, 5]
    assert position_categories(8, (1, 5))["middle subject tokens"] == [2, 3]

    facts = [Fact("Michael Jordan", "sport", "basketball"), Fact("Michael Phelps", "sport", "swimming"),
             Fact("Michael Jordan", "sport", "tennis")]  # the last one is wrong: skipped
    avg = average_trace(fw, fact_triples(facts, template), n_samples=2, progress=False)
    assert (avg.n_facts, avg.n_skipped) == (2, 1) and avg.skipped[0][1:] == ("tennis", "basketball")
    assert avg.values.shape == (fw.cfg.n_layers, len(CATEGORIES)) == tuple(len(avg.labels[a]) for a in avg.axes)
    assert avg.total_effect > 0.5
    json.dumps(avg.to_dict())  # NaN becomes null
    kept = average_trace(fw, fact_triples(facts, template), n_samples=2, only_correct=False, progress=False)
    assert (kept.n_facts, kept.n_skipped) == (3, 0)
    triples = average_trace(fw, [(MJ, "Michael Jordan", "basketball")], n_samples=3, progress=False)
    torch.testing.assert_close(triples.indirect_effect, single.indirect_effect, equal_nan=True)


# ---------------------------------------------------------------- attention knockout
def reference_knockout(model, prompt, answer_id, layers, positions, target):
    def knock(x, hook):
        x = x.clone()
        x[:, :, target, positions] = float("-inf")
        return x

    with torch.no_grad():
        logits = model.run_with_hooks(model.to_tokens(prompt),
                                      fwd_hooks=[(f"blocks.{l}.attn.hook_attn_scores", knock) for l in layers])
    return answer_prob(logits, answer_id)


def test_knockout_equals_reference(fw):
    res = attention_knockout_all(fw, MJ, "Michael Jordan", window=2, progress=False)
    assert res.sources == ["subject", "relation", "last"]
    assert res.source_positions == [[1, 2], [3, 4, 5], [6]]
    assert res.axes == ("sources", "layer") and res.values.shape == (3, fw.cfg.n_layers)
    assert res.blocked_layers == [[0], [0, 1], [1, 2], [2, 3]]
    for i, positions in enumerate(res.source_positions):
        for L, layers in enumerate(res.blocked_layers):
            ref = reference_knockout(fw, MJ, res.answer_id, layers, positions, 6)
            assert abs(float(res.probs[i, L]) - ref) < 1e-6
    torch.testing.assert_close(res.relative_change, (res.probs - res.clean_prob) / res.clean_prob * 100)
    json.dumps(res.to_dict())
    assert no_hooks(fw)


def test_knockout_effects(fw):
    n = fw.cfg.n_layers
    clean = trace(fw, MJ, "Michael Jordan", n_samples=1, progress=False).clean_prob
    empty = attention_knockout(fw, MJ, "Michael Jordan", sources=[], progress=False)
    assert empty.axes == ("layer",) and empty.probs.shape == (n,)
    assert (empty.probs - clean).abs().max() < 1e-6 and empty.clean_prob == pytest.approx(clean, abs=1e-7)
    assert empty.window == min(9, n)
    # Everything into the last position (itself included: it then attends to nothing), in all layers.
    everything = attention_knockout(fw, MJ, "Michael Jordan", sources=list(range(7)), window=2 * n, progress=False)
    assert torch.isfinite(everything.probs).all() and (everything.probs < 0.1 * clean).all()
    others = attention_knockout(fw, MJ, "Michael Jordan", sources=list(range(6)), window=2 * n, progress=False)
    assert (others.probs < 0.1 * clean).all()
    # One layer at a time: cutting subject -> last somewhere removes most of the answer.
    subj = attention_knockout(fw, MJ, "Michael Jordan", sources="subject", window=1, progress=False)
    print(f"\nsubject -> last knockout, window 1: {subj.relative_change.tolist()}")
    assert float(subj.relative_change.min()) < -50
    with pytest.raises(ValueError, match="sources"):
        attention_knockout(fw, MJ, "Michael Jordan", sources="object", progress=False)


# ---------------------------------------------------------------- hooks never stay attached
def test_hooks_removed_on_error(fw, monkeypatch):
    """An error inside a hooked forward pass (the corrupted run with its noise hook, or a restored
    run) leaves no hook attached; the model works afterwards."""
    original = fw.unembed.forward
    hooked_calls = {"n": 0, "fail_at": 1}

    def flaky(x):
        if not no_hooks(fw):  # only forward passes run with hooks attached count
            hooked_calls["n"] += 1
            if hooked_calls["n"] == hooked_calls["fail_at"]:
                raise RuntimeError("boom")
        return original(x)

    monkeypatch.setattr(fw.unembed, "forward", flaky)
    for fail_at in (1, 2):
        hooked_calls.update(n=0, fail_at=fail_at)
        with pytest.raises(RuntimeError, match="boom"):
            trace(fw, MJ, "Michael Jordan", kind="mlp", window=2, n_samples=2, batch_size=8, progress=False)
        assert hooked_calls["n"] == fail_at and no_hooks(fw)
    hooked_calls.update(n=0, fail_at=1)
    with pytest.raises(RuntimeError, match="boom"):
        attention_knockout(fw, MJ, "Michael Jordan", progress=False)
    assert no_hooks(fw)
    monkeypatch.undo()
    assert not math.isnan(trace(fw, MJ, "Michael Jordan", n_samples=1, progress=False).clean_prob)


# ---------------------------------------------------------------- any set of states (ROME's states_to_patch)
def test_trace_with_patch_restores_any_set_of_states():
    model = tiny("gpt2")
    tokens = model.to_tokens(TINY_PROMPT)
    with torch.no_grad():
        answer = int(model(tokens)[0, -1].argmax())  # the clean prediction: restoring states brings it back
    states = [[("resid", 0, 2)], [("mlp", 0, 3), ("attn", 1, 6)], [], [("blocks.1.hook_resid_mid", 6), ("mlp", 1, 5)],
              [("resid", 1, 7)]]
    got = trace_with_patch(model, TINY_PROMPT, TINY_SUBJECT, answer, states=states, n_samples=3, seed=4)
    start, end = subject_span(model, TINY_PROMPT, TINY_SUBJECT)
    _, clean = model.run_with_cache(tokens)
    std = 3.0 * model.embed.W_E.double().std().item() * model.embed.scale
    eps = torch.randn(3, end - start, model.cfg.d_model, generator=torch.Generator().manual_seed(4),
                      dtype=model.embed.W_E.dtype) * std
    names = {"resid": "hook_resid_post", "mlp": "hook_mlp_out", "attn": "hook_attn_out"}
    for group, value in zip(states, got):
        probs = []
        for e in eps:
            def add(x, hook, e=e):
                x = x.clone()
                x[0, start:end] += e
                return x
            hooks = [("hook_embed", add)]
            for state in group:
                name, pos = (f"blocks.{state[1]}.{names[state[0]]}", state[2]) if len(state) == 3 else state
                def restore(x, hook, name=name, pos=pos):
                    x = x.clone()
                    x[0, pos] = clean[name][0, pos]
                    return x
                hooks.append((name, restore))
            with torch.no_grad():
                probs.append(answer_prob(model.run_with_hooks(tokens, fwd_hooks=hooks), answer))
        assert float(value) == pytest.approx(sum(probs) / 3, abs=1e-10), group
    assert float(got.max() - got.min()) > 0.01  # the sets restore different amounts: not vacuous
    with pytest.raises(ValueError, match="kind must be one of"):
        trace_with_patch(model, TINY_PROMPT, TINY_SUBJECT, states=[[("heads", 0, 1)]])
    assert no_hooks(model)
