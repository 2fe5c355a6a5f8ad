"""Feature interventions (probes.graph.intervene): free mode propagates through the MLPs, frozen
mode gives the attribution graph's direct effects (checked against a backward pass through
the frozen linear model), generation under an intervention, bad input, the view."""

from __future__ import annotations

import pytest
import torch

from conftest import make_model
from interp import Feature
from interp.checks import IndexRangeError
from models import load
from probes.graph.intervene import (InterventionResult, feature_intervention, generate_with_intervention, scale,
                                    set_to, zero)
from probes.sae import SparseDictionary, attached, load_transcoders

PROMPT = "Michael Jordan plays the sport of"
JORDAN = 2  # <bos> Michael Jordan ...


@pytest.fixture(scope="module")
def fw():
    return load("factworld")


@pytest.fixture(scope="module")
def tcs():
    return load_transcoders("factworld")


@pytest.fixture(scope="module")
def clean_acts(fw, tcs):
    """{layer: [pos, n_features]} read with the plain attached transcoders, not the code under test."""
    with torch.no_grad(), attached(fw, tcs):
        _, cache = fw.run_with_cache(PROMPT)
    return {l: cache[f"blocks.{l}.transcoder.hook_feature_acts"][0] for l in range(fw.cfg.n_layers)}


def _untouched(model, names_before):
    assert list(model.hook_dict) == names_before
    assert not any(hp.has_hooks for hp in model.hook_dict.values())
    assert not any(hasattr(b, "transcoder") for b in model.blocks)


def _p(logits, token):
    return float(logits[-1].double().softmax(-1)[token])


# ============================================================ the fact-world model
def test_no_intervention_is_the_plain_model(fw, tcs, clean_acts):
    names = list(fw.hook_dict)
    with torch.no_grad():
        plain = fw(PROMPT)[0]
    for mode in ("free", "frozen"):
        for freeze in (True, False):
            res = feature_intervention(fw, PROMPT, tcs, [], mode=mode, freeze_attention=freeze)
            assert res.logits.shape == plain.shape == (7, fw.cfg.d_vocab)
            assert (res.logits - plain).abs().max() < 1e-5
            assert (res.clean_logits - plain).abs().max() < 1e-5
            for l in range(4):
                assert torch.allclose(res.activations[l], clean_acts[l], atol=1e-5)
    assert res.top_before[0][0] == res.top_after[0][0] == "basketball"
    assert feature_intervention(fw, PROMPT, tcs, [], return_activations=False).activations is None
    _untouched(fw, names)


def test_setting_a_feature_to_its_own_value_changes_nothing(fw, tcs, clean_acts):
    bases = {mode: feature_intervention(fw, PROMPT, tcs, [], mode=mode) for mode in ("free", "frozen")}
    for layer in (0, 2):
        f = int(clean_acts[layer][JORDAN].argmax())
        own = float(clean_acts[layer][JORDAN, f])
        assert own > 0.5
        for mode in ("free", "frozen"):
            # the value as a number (read in another run: equal up to float32 rounding) ...
            ivs = [(layer, JORDAN, f, own), set_to(Feature(layer, f, JORDAN), own)]
            res = feature_intervention(fw, PROMPT, tcs, ivs, mode=mode)
            assert (res.logits - bases[mode].logits).abs().max() < 1e-5
            assert float(res.activations[layer][JORDAN, f]) == own
            # ... and as the op x1 on the run's own activation: bit for bit
            res = feature_intervention(fw, PROMPT, tcs, [scale(layer, JORDAN, f, 1.0)], mode=mode)
            assert torch.equal(res.logits, bases[mode].logits)


def test_zeroing_the_strongest_layer0_features_at_jordan_lowers_basketball(fw, tcs, clean_acts):
    basketball = fw.to_single_token(" basketball")
    top = clean_acts[0][JORDAN].topk(10)
    assert bool((top.values > 0.5).all())
    res = feature_intervention(fw, PROMPT, tcs, [zero(0, JORDAN, int(i)) for i in top.indices])
    with torch.no_grad():
        p_clean = _p(fw(PROMPT)[0], basketball)
    p_after = _p(res.logits, basketball)
    print(f"P(basketball): {p_clean:.6f} -> {p_after:.6f} (zeroing the 10 strongest L0 features at 'Jordan')")
    assert p_after < p_clean - 1e-3
    assert bool((res.activations[0][JORDAN, top.indices] == 0).all())
    assert not torch.allclose(res.activations[1][JORDAN], clean_acts[1][JORDAN], atol=1e-3)  # effects propagate
    assert torch.allclose(res.activations[1][:JORDAN], clean_acts[1][:JORDAN], atol=1e-5)  # causal: not before
    # frozen mode: only the direct effects, the later layers' features do not feed back
    frozen = feature_intervention(fw, PROMPT, tcs, [zero(0, JORDAN, int(i)) for i in top.indices], mode="frozen")
    assert not torch.allclose(frozen.logits, res.logits, atol=1e-3)
    assert res.top_before[0][2] == pytest.approx(p_clean, abs=1e-6)


def test_generation_under_an_intervention(fw, tcs, clean_acts):
    plain = fw.generate(PROMPT, max_new_tokens=6)
    text, tokens = generate_with_intervention(fw, PROMPT, tcs, [], max_new_tokens=6)
    assert text == plain and tokens.shape == (13,)
    # Michael Phelps' features moved into "Jordan": every feature of every layer there set to its Phelps value
    with torch.no_grad(), attached(fw, tcs):
        _, cache = fw.run_with_cache("Michael Phelps plays the sport of")
    phelps = {l: cache[f"blocks.{l}.transcoder.hook_feature_acts"][0, JORDAN] for l in range(4)}
    ivs = [(l, JORDAN, int(i), float(phelps[l][i])) for l in range(4)
           for i in (phelps[l] != clean_acts[l][JORDAN]).nonzero().flatten()]
    text, _ = generate_with_intervention(fw, PROMPT, tcs, ivs, max_new_tokens=6)
    print(f"plain: {plain!r}; with Phelps' features at 'Jordan' ({len(ivs)} set): {text!r}")
    assert text != plain and text.startswith(PROMPT + " swimming")
    # slice positions reach the new tokens: from the first new position on, the prompt's next token is untouched
    n = 7
    strong = [set_to(Feature(0, int(i), pos=slice(n, None)), 30.0) for i in clean_acts[0][-1].topk(4).indices]
    text, tokens = generate_with_intervention(fw, PROMPT, tcs, strong, max_new_tokens=4)
    plain_tokens = fw.generate(fw.to_tokens(PROMPT), max_new_tokens=4)[0]
    assert int(tokens[n]) == int(plain_tokens[n])  # predicted from positions < n: no intervention there
    assert tokens[n + 1:].tolist() != plain_tokens[n + 1:].tolist()
    for mode, freeze in (("frozen", True), ("free", True)):  # nothing changed: the model's own continuation
        assert torch.equal(generate_with_intervention(fw, PROMPT, tcs, [], max_new_tokens=4, mode=mode,
                                                      freeze_attention=freeze)[1], plain_tokens)
    _untouched(fw, list(fw.hook_dict))


def test_bad_input_is_refused_and_the_model_is_unchanged(fw, tcs):
    names = list(fw.hook_dict)
    with torch.no_grad():
        before = fw(PROMPT)
    cases = [
        (tcs[:2], [(3, 2, 5, 0.0)], ValueError, "no transcoder for layer 3"),
        (tcs, [(1, 2, 512, 0.0)], IndexRangeError, "512 out of range.*512 features"),
        (tcs, [(1, 7, 5, 0.0)], IndexRangeError, "position 7 is outside a prompt of 7 tokens"),
        (tcs, [(1, slice(9, None), 5, 0.0)], IndexRangeError, "select none"),
        (tcs, [(9, 2, 5, 0.0)], IndexRangeError, "layer 9 does not exist"),
        (tcs, [(1, 2, 5)], TypeError, "an intervention is"),
        (tcs, [(1, True, 5, 0.0)], TypeError, "a position is"),
        (tcs, [(1, 2, 5, "big")], TypeError, "a value is"),
    ]
    for dictionaries, ivs, error, match in cases:
        with pytest.raises(error, match=match):
            feature_intervention(fw, PROMPT, dictionaries, ivs)
        _untouched(fw, names)
    with pytest.raises(ValueError, match="mode must be one of"):
        feature_intervention(fw, PROMPT, tcs, [], mode="direct")

    def broken(a):
        raise RuntimeError("op failed")

    with pytest.raises(RuntimeError, match="op failed"):
        feature_intervention(fw, PROMPT, tcs, [(1, 2, 5, broken)])
    with pytest.raises(RuntimeError, match="op failed"):
        generate_with_intervention(fw, PROMPT, tcs, [(1, 2, 5, broken)], max_new_tokens=2)
    with pytest.raises(IndexRangeError, match="position 7"):
        generate_with_intervention(fw, PROMPT, tcs, [(1, 7, 5, 0.0)], max_new_tokens=2)
    _untouched(fw, names)
    with torch.no_grad():
        assert torch.equal(fw(PROMPT), before)


def test_the_view_is_a_table_of_next_tokens(fw, tcs, clean_acts, browser, tmp_path):
    ivs = [zero(0, JORDAN, int(i)) for i in clean_acts[0][JORDAN].topk(20).indices]
    res = feature_intervention(fw, PROMPT, tcs, ivs, freeze_attention=False)
    assert isinstance(res, InterventionResult)
    view = res.to_view()
    assert view.kind == "table"
    with torch.no_grad():
        probs = fw(PROMPT)[0, -1].double().softmax(-1)
    first = view.data["rows"][0]
    assert first[1] == "basketball" and first[2] == pytest.approx(float(probs.max()), abs=1e-6)
    assert first[3] == pytest.approx(_p(res.logits, fw.to_single_token(" basketball")), abs=1e-12)
    page = browser.open(res.save_html(tmp_path / "intervention.html"))
    cells = page.locator(".iv-table tbody tr").first.locator("td").all_inner_texts()
    assert cells[1] == "basketball" and len(cells) == len(view.data["columns"])
    assert browser.problems(page) == []
    page.context.close()


# ============================================================ frozen mode = the graph's direct effects
def _random_transcoders(model, skip: bool, seed: int):
    out = []
    gen = torch.Generator().manual_seed(seed)
    for layer in range(model.cfg.n_layers):
        tc = SparseDictionary.transcoder(model, layer, 16, activation="relu", skip=skip, seed=seed + layer)
        with torch.no_grad():
            for p in (tc.W_enc, tc.W_dec, tc.b_dec, tc.b_pre) + ((tc.W_skip,) if skip else ()):
                p.copy_(0.3 * torch.randn(p.shape, generator=gen, dtype=torch.float64))
            tc.b_enc.copy_(0.2 + 0.1 * torch.randn(tc.b_enc.shape, generator=gen, dtype=torch.float64))
        out.append(tc)
    return out


def _direct_effects(model, tokens, tcs, layer, pos, vec, targets):
    """d(demeaned logit of each target at the last position) / d(MLP `layer` output at `pos`) . vec,
    in the frozen linear model: a backward pass with stop-gradients on the attention patterns, the
    norm scales and every MLP output except the transcoders' skip paths (circuit-tracer's way)."""
    leaf = torch.zeros(1, tokens.shape[1], model.cfg.d_model, dtype=torch.float64, requires_grad=True)
    seen = {}
    hooks = [(n, lambda x, hook: x.detach()) for n in model.hook_dict
             if n.endswith("attn.hook_pattern") or n.endswith("hook_scale")]
    for l, tc in enumerate(tcs):
        hooks.append((tc.in_hook, lambda x, hook, l=l: seen.__setitem__(l, x)))

        def out(y, hook, l=l, tc=tc):
            skip = seen[l] @ tc.W_skip if tc.W_skip is not None else torch.zeros_like(y)
            return skip + (y - skip).detach() + (leaf if l == layer else 0)

        hooks.append((f"blocks.{l}.hook_mlp_out", out))
    with model.hooks(fwd_hooks=hooks):
        logits = model(tokens)[0, -1]
    demeaned = logits - logits.mean()
    return torch.stack([torch.autograd.grad(demeaned[t], leaf, retain_graph=True)[0][0, pos] @ vec for t in targets])


def _free_by_hand(model, tokens, w_dec, a_s, pos, freeze_attention):
    """Free mode for zeroing one layer-0 feature, with plain hooks and no transcoder attached: the
    real MLPs run, -a_s w_dec is added to MLP 0's output at pos, the patterns (optionally) clean.
    Returns (logits [pos, d_vocab], MLP 1's input [pos, d_model])."""
    with torch.no_grad():
        _, cache = model.run_with_cache(tokens, names_filter=lambda n: n.endswith("hook_pattern"))

        def add(y, hook):
            y = y.clone()
            y[0, pos] -= a_s * w_dec
            return y

        hooks = [("blocks.0.hook_mlp_out", add)]
        if freeze_attention:
            hooks += [(n, lambda x, hook: cache[hook.name]) for n in cache]
        with model.hooks(fwd_hooks=hooks):
            logits, run = model.run_with_cache(tokens, names_filter="blocks.1.ln2.hook_normalized")
    return logits[0], run["blocks.1.ln2.hook_normalized"][0]


def _lively(model):
    """The test models' weight matrices (std 0.02) scaled up, so attention is far from uniform and
    effects are of order one (an absolute tolerance of 1e-9 then means something)."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.split(".")[-1].startswith("W_"):
                p.mul_(20.0)
    return model


@pytest.mark.parametrize("arch, skip", [("gpt2", False), ("llama_gqa", True), ("neox_partial_rotary", True)])
def test_frozen_mode_gives_the_direct_effects(arch, skip):
    model = _lively(make_model(arch, dtype="float64", seed=3))
    tcs = _random_transcoders(model, skip, seed=11)
    tokens = torch.randint(0, 50, (1, 8), generator=torch.Generator().manual_seed(5))
    names = list(model.hook_dict)
    base = feature_intervention(model, tokens, tcs, [], mode="frozen")
    clean = base.clean_logits[-1] - base.clean_logits[-1].mean()
    targets = clean.topk(3).indices.tolist()
    worst = 0.0
    last = tokens.shape[1] - 1
    # layer 0 before the last position (its effect goes through attention, the layer-1 norm and skip
    # path) and at it; the last layer at the last position (nothing else reaches the logits)
    for layer, first, stop in ((0, 1, last), (0, last, last + 1), (1, last, last + 1)):
        acts = base.clean_activations[layer]
        assert int((acts[1:] > 0).sum()) > 10  # the random transcoders are not trivial
        pos, s = divmod(int(acts[first:stop].argmax()), acts.shape[1])
        pos += first
        a_s = float(acts[pos, s])
        edge = _direct_effects(model, tokens, tcs, layer, pos, tcs[layer].W_dec[s].detach(), targets)
        for ivs, factor in (([zero(layer, pos, s)], -1.0), ([scale(Feature(layer, s, pos), 3.0)], 2.0)):
            res = feature_intervention(model, tokens, tcs, ivs, mode="frozen")
            after = res.logits[-1] - res.logits[-1].mean()
            gap = float((after[targets] - clean[targets] - factor * a_s * edge).abs().max())
            assert gap < 1e-9
            worst = max(worst, gap)
        print(f"{arch} skip={skip} L{layer}F{s}@{pos} (a={a_s:.3f}): edges to the top-3 targets "
              f"{[round(e, 5) for e in edge.tolist()]}, largest gap so far {worst:.1e}")
        assert float(edge.abs().max()) > 1e-3
        if layer == 0 and pos < last:  # free mode: the layer-1 features depend on s, the effect is not the direct one
            for freeze in (True, False):
                free = feature_intervention(model, tokens, tcs, [zero(layer, pos, s)], freeze_attention=freeze)
                expected, x1 = _free_by_hand(model, tokens, tcs[0].W_dec[s].detach(), a_s, pos, freeze)
                assert float((free.logits - expected).abs().max()) < 1e-10
                assert float((free.activations[1] - tcs[1].encode(x1).detach()).abs().max()) < 1e-10
                changed = (free.activations[1][pos:] - base.clean_activations[1][pos:]).abs().max()
                assert float(changed) > 1e-4
                free_change = (free.logits[-1] - free.logits[-1].mean())[targets] - clean[targets]
                assert float((free_change + a_s * edge).abs().max()) > 1e-6
                if freeze:
                    frozen_attention = free.logits
            assert float((free.logits - frozen_attention).abs().max()) > 1e-6
    _untouched(model, names)
