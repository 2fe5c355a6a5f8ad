"""Edges of attribution and of "residual direction -> logits" (issue 21): attribution patching
laid out exactly as `sweep` for every site, one answer-word policy in the cache, the recall chain
with a BPE tokenizer, one read-out, one integrated-gradients and one gradient x delta."""

import pytest
import torch

from conftest import perturb_
from interp import metrics
from interp.attribution import (
    agreement, attribution_patch, direct_logit_attribution, gradient_times_delta, integrated_gradients,
)
from interp.checks import IndexRangeError
from interp.patching import SITES, sweep
from interp.unembedding import FrozenNorm, Readout, final_scale, norm_of
from interp.words import answer_token
from models import Transformer, TransformerConfig
from models.tokenizer import HFTokenizer

N_POS = 4  # = n_heads below, so a [pos, head] result mislabelled [head, pos] keeps its shape


def square_model() -> Transformer:
    cfg = TransformerConfig(n_layers=2, d_model=16, n_heads=N_POS, d_vocab=40, n_ctx=16, dtype="float64",
                            final_norm=False, parallel_attn_mlp=True, seed=3)
    model = Transformer(cfg).eval()
    perturb_(model, 3)
    with torch.no_grad():  # weights of order 1 (not GPT-2's 0.02), so that every patch matters
        for p in model.parameters():
            if p.dim() >= 2:
                p.mul_(20)
    return model


def pair():
    gen = torch.Generator().manual_seed(7)
    clean = torch.randint(0, 40, (2, N_POS), generator=gen)
    corrupted = clean.clone()
    corrupted[:, 1] = torch.randint(0, 40, (2,), generator=gen)
    return clean, corrupted


# Without a final norm, and with attention and MLP side by side, the logits are linear in these
# last-layer sites, so the estimate is exact there. (A parallel block has no resid_mid.)
LINEAR = ("resid_post", "attn_out", "mlp_out", "head_z_by_pos", "head_z", "head_v_by_pos", "head_v",
          "head_pattern_by_pos", "head_pattern", "neuron_post_by_pos", "neuron_post")


@pytest.mark.parametrize("site", [s for s in SITES if not s.startswith("feature") and s != "resid_mid"])
def test_attribution_patch_is_laid_out_as_sweep(site):
    model = square_model()
    clean, corrupted = pair()
    metric = metrics.logit_diff(model, [3, 8], [5, 9])
    est = attribution_patch(model, clean, corrupted, metric, site, layers=[1])
    real = sweep(model, clean, corrupted, metric, site, layers=[1], progress=False)
    assert est.axes == real.axes and est.labels == real.labels and est.values.shape == real.values.shape
    assert real.effect.abs().max() > 1e-3  # effects large enough for a mislabelled cell to show
    if site in LINEAR:
        assert torch.allclose(est.effect, real.effect, rtol=1e-7, atol=1e-12), site
    else:
        assert agreement(est, real).n == real.values.numel()


def test_attribution_patch_default_site_is_sweeps():
    model = square_model()
    clean, corrupted = pair()
    metric = metrics.logit_diff(model, [3], [5])
    est, real = attribution_patch(model, clean, corrupted, metric), sweep(model, clean, corrupted, metric, progress=False)
    assert est.site == real.site == "resid_pre" and agreement(est, real).n == real.values.numel()


# ---------------------------------------------------------------- one answer-word policy
def paris_model(tmp_path) -> Transformer:
    """A tiny model over a byte-level BPE vocabulary holding both "Paris" and " Paris"."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=320, special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(["Paris is the capital of France", "the capital of France is Paris"] * 20, trainer)
    hf = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|endoftext|>", eos_token="<|endoftext|>")
    hf.save_pretrained(str(tmp_path))
    tokenizer = HFTokenizer(hf)
    cfg = TransformerConfig(n_layers=2, d_model=16, n_heads=2, d_vocab=tokenizer.vocab_size, n_ctx=32,
                            dtype="float64", seed=0)
    model = Transformer(cfg, tokenizer=tokenizer).eval()
    perturb_(model)
    return model


def test_cache_reads_answer_words_with_the_toolkits_policy(tmp_path):
    model = paris_model(tmp_path)
    bare, spaced = model.to_single_token("Paris"), model.to_single_token(" Paris")
    assert bare != spaced and answer_token(model, "Paris") == spaced
    prompt = "the capital of France is"
    with torch.no_grad():
        logits, cache = model.run_with_cache(prompt)
    stack = cache.decompose_resid(apply_ln=False)
    with pytest.raises(ValueError, match="'Paris'.*' Paris'"):
        cache.logit_attrs(stack, "Paris", ln_weight=True)
    with pytest.raises(ValueError, match="'Paris'.*' Paris'"):
        model.tokens_to_residual_directions("Paris")
    attrs = cache.logit_attrs(stack, " Paris", ln_weight=True)  # [component, batch, pos]
    assert torch.equal(attrs, cache.logit_attrs(stack, spaced, ln_weight=True))
    # The parts add up to the logit of the token logit_diff measures for "Paris".
    total = attrs.sum(0)[0, -1] + cache.logit_bias(" Paris")
    metric = metrics.logit_diff(model, "Paris", "France")
    assert float(total - logits[0, -1, answer_token(model, "France")]) == pytest.approx(float(metric(logits)), abs=1e-10)
    assert float(total) == pytest.approx(float(logits[0, -1, spaced]), abs=1e-10)


# ---------------------------------------------------------------- the recall chain with BPE
@pytest.fixture
def bpe_model(tmp_path):
    from helpers import build_hf_tokenizer

    tok = HFTokenizer(build_hf_tokenizer(tmp_path, vocab_size=400))
    model = Transformer(TransformerConfig(n_layers=2, d_model=16, n_heads=4, d_vocab=tok.vocab_size, n_ctx=64,
                                          dtype="float64", seed=1), tokenizer=tok).eval()
    perturb_(model, 1)
    return model


def test_attribute_extraction_compares_token_ids_with_bpe(bpe_model):
    from probes.recall import attribute_extraction

    prompt, subject = "the cat sat Michael Jordan plays the sport of", "Michael Jordan"
    words = ["basketball", "cat", "dog", "park", "tree", "bird"]
    first = attribute_extraction(bpe_model, prompt, subject, words[0], candidates=words)
    found = 0
    for word in {t.strip() for row in first.top_token for t in row}:
        ext = attribute_extraction(bpe_model, prompt, subject, word, candidates=words)
        expected = torch.tensor([[t == " " + word for t in row] for row in ext.top_token])
        assert torch.equal(ext.extracts, expected)
        found += int(ext.extracts.sum())
    assert found == 2 * 4  # every head extracts its own top token


def test_recall_refuses_several_prompts(bpe_model):
    from probes.recall import attribute_extraction, moved_contributions, subject_enrichment

    prompts = ["the cat sat Michael Jordan plays", "the dog ran Michael Jordan plays"]
    with pytest.raises(ValueError, match="one prompt at a time, got 2"):
        attribute_extraction(bpe_model, prompts, "Michael Jordan", "basketball")
    with pytest.raises(ValueError, match="one prompt at a time, got 2"):
        moved_contributions(bpe_model, bpe_model.to_tokens(prompts), "Michael Jordan", "basketball")
    with pytest.raises(ValueError, match="one prompt at a time, got 2"):
        subject_enrichment(bpe_model, prompts, "Michael Jordan", ["basketball"])


# ---------------------------------------------------------------- positions
def test_positions_out_of_range_raise_the_one_error(bpe_model):
    from probes.logit_lens import logit_lens

    prompt = "the cat sat on a mat"
    n_pos = bpe_model.to_tokens(prompt).shape[1]
    with pytest.raises(IndexRangeError):
        direct_logit_attribution(bpe_model, prompt, "dog", pos=n_pos)
    with pytest.raises(IndexRangeError):
        logit_lens(bpe_model, prompt, pos=n_pos)
    assert direct_logit_attribution(bpe_model, prompt, "dog", pos=-n_pos).heads.shape == (2, 4)


# ---------------------------------------------------------------- one read-out
def test_readout_adds_up_to_the_logits(bpe_model):
    with torch.no_grad():
        logits, cache = bpe_model.run_with_cache("the cat sat on a mat")
    parts = cache.decompose_resid()[:, 0, -1]  # [component, d_model]
    readout = Readout(bpe_model, final_scale(bpe_model, cache, -1, 0))
    b = bpe_model.ln_final.b.detach() @ bpe_model.W_U.detach() + bpe_model.b_U.detach()
    assert torch.allclose(readout.logits(parts).sum(0) + b, logits[0, -1], atol=1e-10)
    norm = norm_of(bpe_model, "blocks.1.ln1", cache["blocks.1.ln1.hook_scale"][0, 2])
    x = parts[1]
    assert torch.allclose(x @ norm.matrix(16, x.dtype), norm(x), atol=1e-12)
    assert torch.equal(FrozenNorm(identity=True)(x), x)


# ---------------------------------------------------------------- one gradient x delta, one IG
def test_gradient_times_delta_pairwise_is_every_pair():
    gen = torch.Generator().manual_seed(0)
    delta, grad = torch.randn(3, 2, 5, generator=gen), torch.randn(4, 2, 5, generator=gen)
    pairs = gradient_times_delta(grad, delta, pairwise=True)
    assert pairs.shape == (3, 4)
    assert torch.allclose(pairs[2, 1], gradient_times_delta(grad[1], delta[2]).sum())
    with pytest.raises(ValueError, match="agree"):
        gradient_times_delta(grad[:, :1], delta, pairwise=True)


def test_integrated_gradients_is_complete():
    model = square_model()
    tokens = pair()[0][:1]
    metric = metrics.Logit(-1, torch.tensor([3]))
    name = "blocks.0.mlp.hook_post"
    _, cache = model.run_with_cache(tokens, names_filter=[name])
    (attr,), outputs = integrated_gradients(model, tokens, [(name, (2,), cache[name][0, 2])], metric, 200,
                                            with_baseline=True)
    assert attr.dtype == torch.float64 and attr.shape == cache[name][0, 2].shape
    with torch.no_grad():
        full, zeroed = float(metric(model(tokens))), float(outputs[0, -1])
    assert float(outputs[0, -2]) == pytest.approx(full, abs=1e-10)
    assert float(attr.sum()) == pytest.approx(full - zeroed, abs=2e-2 * abs(full - zeroed) + 1e-6)
