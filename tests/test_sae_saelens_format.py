"""SAELens 6 folder format (probes/sae/saelens_format.py): ours -> SAELens -> ours round trips,
the b_pre fold, the fields SAELens' loader needs, folders as SAELens writes them, the shipped
fact-world transcoders. SAELens itself is not installed here: `saelens_outputs` below computes
what SAELens 6.54.12's classes compute from a folder, written from its source (cited per line)."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

import models
from models.checkpoint import shipped_dictionaries
from probes.sae import SparseDictionary, load_dictionary, load_transcoders, save_dictionary
from probes.sae.dictionary import DictionaryConfig
from probes.sae.saelens_format import load_saelens, save_saelens

D, N = 12, 40

# SAELens 6.54.12 (the sae_lens-6.54.12 wheel), what its loader needs in cfg.json:
#   sae_lens/saes/sae.py:153-154        SAEConfig.d_in, d_sae (no defaults: required)
#   sae_lens/saes/sae.py:157            apply_b_dec_to_input (default True)
#   sae_lens/saes/sae.py:158-165        normalize_activations, reshape_activations, metadata
#   sae_lens/saes/sae.py:179            from_dict reads config_dict["architecture"]
#   sae_lens/loading/pretrained_sae_loaders.py:217-223  metadata.sae_lens_version (or top-level);
#                                       missing or < 6.0.0 -> the pre-6 conversion path
#   sae_lens/saes/transcoder.py:21      TranscoderConfig.d_out
#   sae_lens/saes/transcoder.py:57-59   transcoders: apply_b_dec_to_input must be False
#   sae_lens/saes/topk_sae.py:144-145   TopKSAEConfig.k, rescale_acts_by_decoder_norm
#   sae_lens/__init__.py:158-183        the registered architecture names
#   sae_lens/loading/pretrained_sae_loaders.py:32-50  metadata keys hook_name, hook_name_out, ...
# and in sae_weights.safetensors (strict load_state_dict, sae.py:641-645):
#   sae.py:414-425 b_dec [d_in], W_dec [d_sae, d_in], W_enc [d_in, d_sae]; topk_sae.py:580 b_enc [d_sae]
#   transcoder.py:84-105 b_dec [d_out], W_dec [d_sae, d_out]; jumprelu_sae.py:137 threshold [d_sae]
#   transcoder.py:231-238 W_skip [d_out, d_in], used as x @ W_skip.T (transcoder.py:257)
REQUIRED = {"d_in": int, "d_sae": int, "architecture": str, "apply_b_dec_to_input": bool, "dtype": str,
            "normalize_activations": str, "reshape_activations": str, "metadata": dict}
REGISTERED = {"standard", "gated", "topk", "abstopk", "jumprelu", "transcoder", "skip_transcoder",
              "jumprelu_transcoder", "jumprelu_skip_transcoder", "temporal", "matching_pursuit"}


def saelens_outputs(folder, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(features, output) as SAELens 6.54.12's class for `folder` computes them (encode, forward)."""
    cfg = json.loads((folder / "cfg.json").read_text())
    w = load_file(str(folder / "sae_weights.safetensors"))
    arch = cfg["architecture"]
    x = x.to(w["W_enc"].dtype)
    sae_in = x - w["b_dec"] * cfg["apply_b_dec_to_input"]  # sae.py:531-533; transcoders skip it (transcoder.py:108-120)
    hidden_pre = sae_in @ w["W_enc"] + w["b_enc"]  # standard_sae.py:65, topk_sae.py:257, transcoder.py:130
    if arch == "topk":  # topk_sae.py:68-69: top k of the pre-activations, then ReLU
        top = hidden_pre.topk(cfg["k"], dim=-1)
        feats = torch.zeros_like(hidden_pre).scatter(-1, top.indices, top.values.relu())
    elif arch.startswith("jumprelu"):  # jumprelu_sae.py:154-161, transcoder.py:359-367
        feats = hidden_pre.relu() * (hidden_pre > w["threshold"]).to(hidden_pre.dtype)
    else:
        feats = hidden_pre.relu()
    out = feats @ w["W_dec"] + w["b_dec"]
    if "skip" in arch:
        out = out + x @ w["W_skip"].T  # transcoder.py:257
    return feats, out


def randomised(d: SparseDictionary, seed: int = 0, threshold: float = 0.3) -> SparseDictionary:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in d.named_parameters():
            p.copy_((torch.randn(p.shape, generator=g, dtype=torch.float64) * (0.5 if name.startswith("b") else 1)).to(p.dtype))
        d.normalise_decoder()
        d.threshold.fill_(threshold)
    return d.eval()


def make(kind: str, activation: str, skip: bool = False, dtype: str = "float32", seed: int = 0) -> SparseDictionary:
    hooks = ({"in_hook": "blocks.1.hook_resid_pre", "out_hook": "blocks.1.hook_resid_pre"} if kind == "sae" else
             {"in_hook": "blocks.1.ln2.hook_normalized", "out_hook": "blocks.1.hook_mlp_out"})
    cfg = DictionaryConfig(D, D, N, activation=activation, k=7, skip=skip, kind=kind, dtype=dtype, seed=seed, **hooks)
    return randomised(SparseDictionary(cfg), seed)


def close(a: torch.Tensor, b: torch.Tensor, rel: float) -> bool:
    return (a - b).abs().max().item() <= rel * max(b.abs().max().item(), 1.0)


CASES = [("sae", "relu", False, "standard"), ("sae", "topk", False, "topk"), ("sae", "batchtopk", False, "jumprelu"),
         ("transcoder", "relu", False, "transcoder"), ("transcoder", "topk", False, "topk"),
         ("transcoder", "batchtopk", False, "jumprelu_transcoder"), ("transcoder", "relu", True, "skip_transcoder"),
         ("transcoder", "batchtopk", True, "jumprelu_skip_transcoder")]


@pytest.mark.parametrize("kind,activation,skip,arch", CASES)
def test_round_trip_and_what_saelens_computes(tmp_path, kind, activation, skip, arch):
    d = make(kind, activation, skip)
    x = 2 * torch.randn(64, D, generator=torch.Generator().manual_seed(5))
    f, y = d.encode(x).detach(), d(x).detach()
    assert (f > 0).sum(-1).float().mean() > 2  # features do fire

    save_saelens(d, tmp_path / "s")
    cfg = json.loads((tmp_path / "s" / "cfg.json").read_text())
    assert cfg["architecture"] == arch
    for key, typ in REQUIRED.items():
        assert isinstance(cfg[key], typ), key
    assert cfg["architecture"] in REGISTERED and cfg["d_in"] == D and cfg["d_sae"] == N
    assert int(cfg["metadata"]["sae_lens_version"].split(".")[0]) >= 6
    assert cfg["metadata"]["hook_name"] == d.in_hook and cfg["normalize_activations"] == "none"
    assert cfg["apply_b_dec_to_input"] is (kind == "sae")
    if "transcoder" in arch:
        assert cfg["d_out"] == D
    if kind == "transcoder":
        assert cfg["metadata"]["hook_name_out"] == d.out_hook
    if arch == "topk":
        assert cfg["k"] == 7 and cfg["rescale_acts_by_decoder_norm"] is False
    w = load_file(str(tmp_path / "s" / "sae_weights.safetensors"))
    names = {"W_enc", "b_enc", "W_dec", "b_dec"} | ({"threshold"} if "jumprelu" in arch else set()) | (
        {"W_skip"} if skip else set())
    assert set(w) == names
    if "threshold" in w:
        assert w["threshold"].shape == (N,) and torch.equal(w["threshold"], torch.full((N,), 0.3))
    if skip:
        assert w["W_skip"].shape == (D, D) and torch.equal(w["W_skip"], d.W_skip.detach().T)

    f_sl, y_sl = saelens_outputs(tmp_path / "s", x)
    back = load_saelens(tmp_path / "s")
    assert back.cfg.kind == kind and back.cfg.activation == activation and back.cfg.skip == skip
    assert (back.in_hook, back.out_hook) == (d.in_hook, d.out_hook) and not back.training
    if kind == "sae":  # written as they are, apply_b_dec_to_input: bit for bit
        for got in (f_sl, back.encode(x)):
            assert torch.equal(got, f)
        assert torch.equal(back(x), y) and torch.equal(y_sl, y)
        same = [name for name, t in d.state_dict().items() if torch.equal(back.state_dict()[name], t)]
        assert same == [name for name in d.state_dict() if name != "threshold" or activation == "batchtopk"]
    else:  # b_pre folded: to float32 rounding
        for got_f, got_y in ((f_sl, y_sl), (back.encode(x), back(x))):
            assert torch.equal(got_f > 0, f > 0)
            assert close(got_f, f, 1e-6) and close(got_y, y, 1e-6)
        assert torch.equal(back.b_pre, torch.zeros(D))
    assert torch.equal(load_dictionary(tmp_path / "s")(x), back(x))


def test_b_pre_fold_in_float64_and_float32(tmp_path):
    for dtype in ("float64", "float32"):
        d = make("transcoder", "relu", skip=True, dtype=dtype, seed=3)
        save_saelens(d, tmp_path / dtype)
        w = load_file(str(tmp_path / dtype / "sae_weights.safetensors"))
        b_enc, b_pre, W = (t.detach().double() for t in (d.b_enc, d.b_pre, d.W_enc))
        fold = b_enc - torch.einsum("i,if->f", b_pre, W)  # b_enc' = b_enc - b_pre @ W_enc
        x = torch.randn(50, D, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
        back = load_saelens(tmp_path / dtype)
        if dtype == "float64":
            assert (w["b_enc"] - fold).abs().max() < 1e-13
            assert (back.pre_acts(x) - d.pre_acts(x)).abs().max() < 1e-12
            assert (back(x) - d(x)).abs().max() < 1e-12
        else:  # the fold is computed in float64 and rounded once: within half a float32 ulp of the exact fold
            assert ((w["b_enc"].double() - fold).abs() <= fold.abs() * 2.0 ** -24 * 1.001 + 1e-30).all()
            assert (b_enc - fold).abs().max() > 0.1  # b_pre did matter


def test_topk_skip_transcoder_and_unequal_widths_refused(tmp_path):
    with pytest.raises(ValueError, match="TopK transcoder with a skip"):
        save_saelens(make("transcoder", "topk", skip=True), tmp_path / "a")
    wide = randomised(SparseDictionary(DictionaryConfig(D, D + 3, N, activation="topk", k=4, kind="transcoder")))
    with pytest.raises(ValueError, match="d_in == d_out"):
        save_saelens(wide, tmp_path / "b")
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "x").write_text("keep")
    with pytest.raises(FileExistsError):
        save_saelens(make("sae", "relu"), tmp_path / "c")
    with pytest.raises(ValueError, match="shipped"):
        save_saelens(make("sae", "relu"), shipped_dictionaries("factworld") / "L0")
    assert sorted(p.name for p in (tmp_path / "c").iterdir()) == ["x"]


def saelens_folder(path, arch: str, cfg_extra: dict, tensors: dict, version: str = "6.54.12") -> None:
    """A folder as SAELens' save_model writes it (json.dump of cfg.to_dict(), sae.py:585-602)."""
    path.mkdir()
    cfg = {"d_in": D, "d_sae": N, "dtype": "float32", "device": "cpu", "apply_b_dec_to_input": True,
           "normalize_activations": "none", "reshape_activations": "none",
           "metadata": {"sae_lens_version": version, "sae_lens_training_version": version, "model_name": "gpt2",
                        "hook_name": "blocks.3.hook_resid_post", "hook_head_index": None, "prepend_bos": True,
                        "context_size": 128, "neuronpedia_id": None},
           "architecture": arch} | cfg_extra
    (path / "cfg.json").write_text(json.dumps(cfg))
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(path / "sae_weights.safetensors"))


def test_folders_saelens_wrote_load(tmp_path):
    g = torch.Generator().manual_seed(9)
    r = lambda *s: torch.randn(*s, generator=g)  # noqa: E731
    x = torch.randn(30, D, generator=g)
    base = {"W_enc": r(D, N), "b_enc": 0.3 * r(N), "W_dec": r(N, D), "b_dec": 0.3 * r(D)}
    cases = [("jumprelu", {}, base | {"threshold": torch.full((N,), 0.4)}),
             ("standard", {"apply_b_dec_to_input": False}, base),
             ("topk", {"k": 5, "rescale_acts_by_decoder_norm": True}, base),
             ("skip_transcoder", {"apply_b_dec_to_input": False, "d_out": D}, base | {"W_skip": r(D, D)})]
    for arch, extra, tensors in cases:
        saelens_folder(tmp_path / arch, arch, extra, tensors)
        d = load_dictionary(tmp_path / arch)
        f_sl, y_sl = saelens_outputs(tmp_path / arch, x)
        if arch == "topk":  # rescale_acts_by_decoder_norm: SAELens ranks pre * |W_dec row| and decodes f / |row|
            n = tensors["W_dec"].norm(dim=-1)
            pre = (x - tensors["b_dec"]) @ tensors["W_enc"] * n + tensors["b_enc"] * n
            top = pre.topk(5, dim=-1)
            f_sl = torch.zeros_like(pre).scatter(-1, top.indices, top.values.relu())
            y_sl = (f_sl / n) @ tensors["W_dec"] + tensors["b_dec"]
        assert d.cfg.kind == ("transcoder" if "transcoder" in arch else "sae"), arch
        assert torch.equal(d.encode(x) > 0, f_sl > 0), arch
        assert close(d.encode(x), f_sl, 1e-6) and close(d(x), y_sl, 1e-6), arch
    assert load_dictionary(tmp_path / "jumprelu").cfg.activation == "batchtopk"


def test_clear_errors_for_what_cannot_load(tmp_path):
    w = {"W_enc": torch.zeros(D, N), "b_enc": torch.zeros(N), "W_dec": torch.zeros(N, D), "b_dec": torch.zeros(D)}
    saelens_folder(tmp_path / "gated", "gated", {}, w | {"b_gate": torch.zeros(N), "r_mag": torch.zeros(N)})
    with pytest.raises(ValueError, match="architecture 'gated'"):
        load_dictionary(tmp_path / "gated")
    saelens_folder(tmp_path / "thr", "jumprelu", {}, w | {"threshold": torch.linspace(0, 1, N)})
    with pytest.raises(ValueError, match="thresholds differ"):
        load_dictionary(tmp_path / "thr")
    saelens_folder(tmp_path / "old", "standard", {}, w, version="5.9.1")
    with pytest.raises(ValueError, match="SAELens 6"):
        load_saelens(tmp_path / "old")
    saelens_folder(tmp_path / "norm", "standard", {"normalize_activations": "layer_norm"}, w)
    with pytest.raises(ValueError, match="normalize_activations"):
        load_saelens(tmp_path / "norm")
    saelens_folder(tmp_path / "miss", "standard", {}, {k: v for k, v in w.items() if k != "b_enc"})
    with pytest.raises(ValueError, match="lacks"):
        load_saelens(tmp_path / "miss")
    save_dictionary(make("sae", "relu"), tmp_path / "ours")
    cfg = json.loads((tmp_path / "ours" / "cfg.json").read_text())
    (tmp_path / "ours" / "cfg.json").write_text(json.dumps(cfg | {"hook_point": "x"}))
    with pytest.raises(ValueError, match="hook_point"):  # ValueError naming the key, not a bare TypeError
        load_dictionary(tmp_path / "ours")


def test_shipped_factworld_transcoders_convert(tmp_path):
    factworld = models.load("factworld")
    transcoders = load_transcoders("factworld")
    _, cache = factworld.run_with_cache(["Michael Jordan plays the sport of", "Michael Jordan plays the sport of basketball"])
    for layer, tc in enumerate(transcoders):
        save_saelens(tc, tmp_path / f"L{layer}")
        cfg = json.loads((tmp_path / f"L{layer}" / "cfg.json").read_text())
        assert (cfg["architecture"], cfg["k"], cfg["apply_b_dec_to_input"]) == ("topk", tc.cfg.k, False)
        assert cfg["metadata"]["hook_name_out"] == f"blocks.{layer}.hook_mlp_out"
        back = load_dictionary(tmp_path / f"L{layer}")
        x = torch.cat([cache[tc.in_hook].reshape(-1, tc.cfg.d_in),
                       torch.randn(100, tc.cfg.d_in, generator=torch.Generator().manual_seed(layer))])
        f, y = tc.encode(x).detach(), tc(x).detach()
        f_sl, y_sl = saelens_outputs(tmp_path / f"L{layer}", x)
        for got_f, got_y in ((back.encode(x).detach(), back(x).detach()), (f_sl, y_sl)):
            assert torch.equal(got_f > 0, f > 0)
            assert close(got_f, f, 1e-6) and close(got_y, y, 1e-6)
        assert back.cfg.kind == "transcoder" and back.out_hook == tc.out_hook and back.cfg.seed == tc.cfg.seed
