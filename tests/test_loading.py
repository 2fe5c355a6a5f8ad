"""Loading: HF-format directories, the local HF cache, our own format, clear errors offline."""

import shutil

import pytest
import torch

from helpers import build_hf_tokenizer
from interp.crosscheck import random_gpt2
from models import Transformer, from_hf, load
from models.loading import ModelNotFoundError, save


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("gpt2_tiny")
    hf = random_gpt2(n_layers=2, d_model=32, n_heads=4, d_vocab=300, n_ctx=64)
    hf.save_pretrained(str(path))
    build_hf_tokenizer(path, vocab_size=300)
    return path, hf


def test_load_hf_directory_gives_same_logits(hf_dir):
    path, hf = hf_dir
    model = load(path)
    assert isinstance(model, Transformer) and model.cfg.n_layers == 2
    tokens = torch.randint(0, 300, (2, 10))
    with torch.no_grad():
        torch.testing.assert_close(model(tokens), hf(tokens).logits, atol=1e-4, rtol=0)


def test_tokenizer_roundtrip_and_text_input(hf_dir):
    path, hf = hf_dir
    model = load(path)
    text = "the cat sat on a mat"
    tokens = model.to_tokens(text)
    assert tokens[0, 0] == model.tokenizer.bos_token_id  # BOS prepended by default
    assert model.to_string(tokens[0, 1:]) == text
    strs = model.to_str_tokens(text)
    assert "".join(strs[1:]) == text and len(strs) == tokens.shape[1]
    torch.testing.assert_close(model(text), model(tokens))
    batch = model.to_tokens(["the cat", "the dog ran to the park"])
    assert batch.shape[0] == 2
    # Padded batch: the short prompt's logits equal its own unpadded run.
    n = model.to_tokens("the cat").shape[1]
    torch.testing.assert_close(model(["the cat", "the dog ran to the park"])[0, :n], model("the cat")[0],
                               atol=1e-5, rtol=0)
    out = model.generate(text, max_new_tokens=5)
    assert isinstance(out, str) and out.startswith(text)
    assert model.to_single_token(" cat") == model.tokenizer.encode(" cat")[0]
    with pytest.raises(ValueError, match="not a single token"):
        model.to_single_token(" basketballs and more")


def test_load_from_local_hf_cache(hf_dir, tmp_path):
    path, hf = hf_dir
    snap = tmp_path / "models--someone--tiny-gpt2" / "snapshots" / "abc123"
    shutil.copytree(path, snap)
    (tmp_path / "models--someone--tiny-gpt2" / "refs").mkdir()
    (tmp_path / "models--someone--tiny-gpt2" / "refs" / "main").write_text("abc123")
    model = load("someone/tiny-gpt2", cache_dir=tmp_path)
    tokens = torch.randint(0, 300, (1, 6))
    with torch.no_grad():
        torch.testing.assert_close(model(tokens), hf(tokens).logits, atol=1e-4, rtol=0)


def test_missing_model_offline_says_what_to_download(tmp_path):
    with pytest.raises(ModelNotFoundError) as err:
        load("openai-community/gpt2", cache_dir=tmp_path)
    msg = str(err.value)
    assert "huggingface-cli download openai-community/gpt2" in msg and str(tmp_path) in msg
    assert "never downloads" in msg
    with pytest.raises(ModelNotFoundError, match="no config.json"):
        load(tmp_path)


def test_save_and_load_our_format(tmp_path, hf_dir):
    path, hf = hf_dir
    model = load(path)
    save(model, tmp_path / "ours")
    again = load(tmp_path / "ours")
    for (n, a), (_, b) in zip(model.named_parameters(), again.named_parameters()):
        assert torch.equal(a, b), n
    assert again.to_tokens("the cat").tolist() == model.to_tokens("the cat").tolist()
    assert load(tmp_path / "ours", dtype="float64").embed.W_E.dtype == torch.float64


def test_from_hf_float64_and_unsupported():
    hf = random_gpt2(n_layers=1, d_model=16, n_heads=2, d_vocab=30, dtype=torch.float64)
    model = from_hf(hf)
    assert model.embed.W_E.dtype == torch.float64
    with pytest.raises(NotImplementedError, match="GPT2LMHeadModel"):
        from_hf(torch.nn.Linear(2, 2))
