"""Sparse dictionaries in SAELens 6's folder format: cfg.json + sae_weights.safetensors, as
`SAE.save_model` writes them and `SAE.load_from_disk(path)` reads them (field and tensor names
follow SAELens 6.54.12's source: sae_lens/saes/{sae,standard_sae,topk_sae,jumprelu_sae,
transcoder}.py and sae_lens/loading/pretrained_sae_loaders.py).

    save_saelens(load_transcoders("factworld")[1], "saelens/L1")   # SAE.load_from_disk("saelens/L1")
    tc = load_saelens("saelens/L1")                                # back into SparseDictionary
    load_dictionary("saelens/L1")                                  # the same: it detects the format

cfg.json (SAELens 6): d_in, d_sae, d_out (transcoders), dtype, device "cpu",
apply_b_dec_to_input, normalize_activations "none", reshape_activations "none", architecture,
k and rescale_acts_by_decoder_norm false ("topk"), metadata {sae_lens_version,
sae_lens_training_version, hook_name, hook_head_index null, hook_name_out (transcoders),
interp_toolkit {kind, activation, k, seed}: ours, kept by SAELens' metadata, read back here}.
sae_weights.safetensors: W_enc [d_in, d_sae], b_enc [d_sae], W_dec [d_sae, d_out], b_dec
[d_out], threshold [d_sae] (jumprelu*), W_skip [d_out, d_in] (skip transcoders; ours is
[d_in, d_out], used as x @ W_skip, so it is stored transposed).

How ours map (SparseDictionary: f = act((x - b_pre) W_enc + b_enc); y = f W_dec + b_dec (+ x W_skip)):

  ours                         SAELens architecture        exact?
  SAE relu                     "standard"                  yes (apply_b_dec_to_input true)
  SAE topk (k)                 "topk" (k)                  yes (see TopK below)
  SAE batchtopk (threshold t)  "jumprelu" (t per feature)  yes
  transcoder relu [+ skip]     "transcoder" / "skip_transcoder"                    to rounding (b_pre fold)
  transcoder batchtopk [+ skip] "jumprelu_transcoder" / "jumprelu_skip_transcoder" to rounding (b_pre fold)
  transcoder topk, no skip     "topk" (an SAE class; d_in == d_out needed)          to rounding (b_pre fold)
  transcoder topk + skip       refused: no SAELens class computes it

- SAE: our pre-encoder bias is b_dec, which is SAELens' apply_b_dec_to_input=true (x - b_dec),
  so the weights are written as they are and SAELens computes the same numbers bit for bit.
- Transcoders: SAELens' transcoder configs refuse apply_b_dec_to_input (b_dec is d_out-sized),
  and have no b_pre. b_pre is folded into the encoder bias, b_enc' = b_enc - b_pre @ W_enc,
  computed in float64 and rounded once to the dictionary's dtype: x @ W_enc + b_enc' is our
  pre-activation exactly in exact arithmetic, to rounding in floats (about 1e-7 relative in
  float32). Loading back gives b_pre = 0 and the folded b_enc: the same encoder.
- batchtopk at inference keeps relu(pre) where relu(pre) > t; JumpReLU keeps relu(pre) where
  pre > threshold. With threshold = t for every feature these agree for every pre and every t
  (t >= 0: relu(pre) > t iff pre > t; t < 0: both keep relu(pre)), so t is repeated, unchanged.
- TopK: SAELens takes the k largest pre-activations and ReLUs them; ours ReLUs and takes the k
  largest. The kept non-zero values are the same (they differ only in which zero entries are
  "kept", which changes nothing), so features and outputs agree (up to ties at the k-th place).
- SAELens 6.54 has no TopK transcoder class. A TopK transcoder (the shipped fact-world ones) is
  written as architecture "topk", SAELens' TopK SAE, with apply_b_dec_to_input false and
  metadata.hook_name / hook_name_out our in_hook / out_hook: `encode`, `decode` and `forward`
  of the loaded SAE compute our transcoder's features and output. That class treats it as an
  SAE, though: splicing it in with SAELens' HookedSAETransformer would replace the INPUT hook
  (hook_name) with the output estimate; use its encode/decode directly, or our `attached`.
  This needs d_in == d_out (SAELens' SAE classes have a d_in-sized decoder).

Loading (`load_saelens`) reads the architectures above ("standard", "topk", "jumprelu",
"transcoder", "skip_transcoder", "jumprelu_transcoder", "jumprelu_skip_transcoder"); any other
(gated, abstopk, temporal, matching_pursuit, ...) is a clear error, as are run-time activation
normalisation, hook_z reshaping, a head index, and JumpReLU thresholds that differ between
features (SparseDictionary has one threshold). A "topk" SAE trained with
rescale_acts_by_decoder_norm is loaded with the decoder norms n folded in (W_enc n, b_enc n,
W_dec / n: the same features and output). An SAE saved with apply_b_dec_to_input false gets
b_enc + b_dec @ W_enc (ours always subtracts b_dec first). A folder with hook_name_out different
from hook_name (or our interp_toolkit.kind "transcoder") loads as a transcoder.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional, Union

import torch

from models.checkpoint import check_empty_dir, check_not_shipped_dictionaries
from probes.sae.dictionary import DictionaryConfig, SparseDictionary

CONFIG, WEIGHTS = "cfg.json", "sae_weights.safetensors"
SAELENS_VERSION = "6.54.12"  # the SAELens release whose source this format follows
OURS = "interp_toolkit"  # our key inside SAELens' free-form metadata
DTYPES = ("float32", "float64", "float16", "bfloat16")
DEFAULT_K = DictionaryConfig.__dataclass_fields__["k"].default

SAE_ARCHITECTURES = {"standard": "relu", "topk": "topk", "jumprelu": "batchtopk"}
TRANSCODER_ARCHITECTURES = {  # architecture -> (activation, skip)
    "transcoder": ("relu", False), "skip_transcoder": ("relu", True),
    "jumprelu_transcoder": ("batchtopk", False), "jumprelu_skip_transcoder": ("batchtopk", True)}
ARCHITECTURES = tuple(SAE_ARCHITECTURES) + tuple(TRANSCODER_ARCHITECTURES)

PathLike = Union[str, Path]


# ============================================================ ours -> SAELens
def saelens_architecture(dictionary: SparseDictionary) -> str:
    """The SAELens 6 architecture `dictionary` is written as (see the module docstring), or a
    clear error where SAELens has no class that computes it."""
    if not isinstance(dictionary, SparseDictionary):
        raise TypeError(f"expected a SparseDictionary, got {type(dictionary).__name__}")
    cfg = dictionary.cfg
    if cfg.activation == "jumprelu":
        raise ValueError("a jumprelu dictionary (per-feature thresholds, read from circuit-tracer's files) is not "
                         "written in SAELens' format: save it with save_circuit_tracer_transcoders or save_dictionary")
    if cfg.kind == "sae" or (cfg.activation == "topk" and not cfg.skip):
        if cfg.kind == "transcoder" and cfg.d_in != cfg.d_out:
            raise ValueError(f"this TopK transcoder maps d_in {cfg.d_in} to d_out {cfg.d_out}: SAELens has no TopK "
                             "transcoder class, and its TopK SAE class needs d_in == d_out")
        return {"relu": "standard", "topk": "topk", "batchtopk": "jumprelu"}[cfg.activation]
    if cfg.activation == "topk":
        raise ValueError("a TopK transcoder with a skip connection: SAELens 6 has no class that computes it "
                         "(its skip transcoders are ReLU or JumpReLU)")
    base = "transcoder" if cfg.activation == "relu" else "jumprelu_transcoder"
    return base.replace("transcoder", "skip_transcoder") if cfg.skip else base


def saelens_tensors(dictionary: SparseDictionary) -> dict[str, torch.Tensor]:
    """The tensors of sae_weights.safetensors, SAELens' names and shapes."""
    architecture = saelens_architecture(dictionary)
    d = dictionary
    b_enc = d.b_enc.detach() if d.cfg.kind == "sae" else d.folded_b_enc()
    tensors = {"W_enc": d.W_enc.detach(), "b_enc": b_enc, "W_dec": d.W_dec.detach(), "b_dec": d.b_dec.detach()}
    if architecture.startswith("jumprelu"):
        tensors["threshold"] = d.threshold.detach().to(d.W_enc.dtype).expand(d.cfg.n_features)
    if d.W_skip is not None:
        tensors["W_skip"] = d.W_skip.detach().T  # ours [d_in, d_out], SAELens' [d_out, d_in]
    return {name: t.contiguous().cpu() for name, t in tensors.items()}


def saelens_config(dictionary: SparseDictionary) -> dict[str, Any]:
    """cfg.json's contents for `dictionary` (SAELens 6's SAEConfig.to_dict layout)."""
    architecture = saelens_architecture(dictionary)
    cfg = dictionary.cfg
    config: dict[str, Any] = {"d_in": cfg.d_in, "d_sae": cfg.n_features, "dtype": cfg.dtype, "device": "cpu",
                              "apply_b_dec_to_input": cfg.kind == "sae", "normalize_activations": "none",
                              "reshape_activations": "none"}
    if architecture == "topk":
        config |= {"k": int(cfg.k), "rescale_acts_by_decoder_norm": False}
    if cfg.kind == "transcoder" and architecture in TRANSCODER_ARCHITECTURES:
        config["d_out"] = cfg.d_out
    metadata = {"sae_lens_version": SAELENS_VERSION, "sae_lens_training_version": None,
                "hook_name": cfg.in_hook, "hook_head_index": None}
    if cfg.kind == "transcoder":
        metadata["hook_name_out"] = cfg.out_hook
    metadata[OURS] = {"kind": cfg.kind, "activation": cfg.activation, "k": int(cfg.k), "seed": int(cfg.seed)}
    return config | {"metadata": metadata, "architecture": architecture}


def save_saelens(dictionary: SparseDictionary, path: PathLike, *, overwrite: bool = False) -> Path:
    """Write `dictionary` into directory `path` as SAELens 6 writes an SAE (cfg.json +
    sae_weights.safetensors; `sae_lens.SAE.load_from_disk(path)` loads it). A directory with
    something in it is refused unless `overwrite`, and the shipped transcoder folder always;
    every check (including whether SAELens can express the dictionary) runs before anything is
    written. Returns the path."""
    from safetensors.torch import save_file

    config, tensors = saelens_config(dictionary), saelens_tensors(dictionary)
    check_not_shipped_dictionaries(path)
    path = check_empty_dir(path, overwrite)
    path.mkdir(parents=True, exist_ok=True)
    tmp = path / f".{WEIGHTS}.tmp"
    save_file(tensors, str(tmp))
    tmp.replace(path / WEIGHTS)
    tmp = path / f".{CONFIG}.tmp"
    tmp.write_text(json.dumps(config, indent=1) + "\n")
    tmp.replace(path / CONFIG)
    return path


# ============================================================ SAELens -> ours
def is_saelens_config(meta: dict) -> bool:
    """Whether a cfg.json's contents are SAELens' (d_sae) rather than ours (n_features)."""
    return isinstance(meta, dict) and "d_sae" in meta and "n_features" not in meta


def _version(config: dict) -> Optional[str]:
    metadata = config.get("metadata") if isinstance(config.get("metadata"), dict) else {}
    return config.get("sae_lens_version") or metadata.get("sae_lens_version")


def _major(version: str) -> int:
    head = str(version).lstrip("v").split(".")[0]
    return int(head) if head.isdigit() else -1


def _read_config(path: Path) -> dict:
    if not (path / CONFIG).is_file() or not (path / WEIGHTS).is_file():
        raise FileNotFoundError(f"{path} holds no SAELens dictionary: expected {CONFIG} and {WEIGHTS}")
    config = json.loads((path / CONFIG).read_text())
    if not is_saelens_config(config):
        raise ValueError(f"{path / CONFIG} is not a SAELens config (no d_sae)"
                         + ("; it is ours: use load_dictionary" if isinstance(config, dict) and "n_features" in config else ""))
    version = _version(config)
    if not version or _major(version) < 6:
        raise ValueError(f"{path / CONFIG} was written by SAELens {version or '< 6 (no sae_lens_version)'}: only SAELens 6 "
                         "folders are read; load it with SAELens 6 (SAE.load_from_disk) and save_model it again")
    architecture = config.get("architecture")
    if architecture not in ARCHITECTURES:
        raise ValueError(f"{path / CONFIG} has architecture {architecture!r}: SparseDictionary holds {list(ARCHITECTURES)}")
    for key, allowed in (("normalize_activations", "none"), ("reshape_activations", "none")):
        if config.get(key, allowed) != allowed:
            raise ValueError(f"{path / CONFIG} has {key} {config[key]!r}: SparseDictionary has no run-time activation "
                             f"normalisation or reshaping (only {allowed!r} loads)")
    metadata = config.get("metadata") or {}
    if metadata.get("hook_head_index") is not None or metadata.get("hook_head_index_out") is not None:
        raise ValueError(f"{path / CONFIG} reads one attention head (hook_head_index): SparseDictionary hooks whole activations")
    dtype = str(config.get("dtype", "float32")).removeprefix("torch.")
    if dtype not in DTYPES:
        raise ValueError(f"{path / CONFIG} has dtype {config.get('dtype')!r}: allowed {list(DTYPES)}")
    return config | {"dtype": dtype}


def _expect(tensors: dict, shapes: dict[str, tuple], where: Path) -> None:
    missing = sorted(set(shapes) - set(tensors))
    if missing:
        raise ValueError(f"{where} lacks {missing}")
    unknown = sorted(set(tensors) - set(shapes))
    if unknown:
        raise ValueError(f"{where} has tensors {unknown} that SparseDictionary cannot hold")
    for name, shape in shapes.items():
        if tuple(tensors[name].shape) != shape:
            raise ValueError(f"{where}: {name} has shape {tuple(tensors[name].shape)}, expected {shape}")


def _scalar_threshold(threshold: torch.Tensor, where: Path) -> torch.Tensor:
    if threshold.numel() and not bool((threshold == threshold[0]).all()):
        lo, hi = threshold.min().item(), threshold.max().item()
        raise ValueError(f"{where}: JumpReLU thresholds differ between features ({lo:g} .. {hi:g}); SparseDictionary "
                         "has one threshold for all features, so this dictionary cannot be held exactly")
    return threshold[0]


def _our_config(config: dict) -> DictionaryConfig:
    """The DictionaryConfig of a SAELens config (checked by _read_config)."""
    architecture, metadata = config["architecture"], config.get("metadata") or {}
    ours = metadata.get(OURS) if isinstance(metadata.get(OURS), dict) else {}
    d_in, n = int(config["d_in"]), int(config["d_sae"])
    in_hook = metadata.get("hook_name") or ""
    if architecture in TRANSCODER_ARCHITECTURES:
        activation, skip = TRANSCODER_ARCHITECTURES[architecture]
        kind, d_out = "transcoder", int(config.get("d_out", 768))  # 768: TranscoderConfig's default
        out_hook = metadata.get("hook_name_out") or ""
    else:  # an SAE class; ours as a transcoder when it names another output hook
        activation, skip, d_out = SAE_ARCHITECTURES[architecture], False, d_in
        out_hook = metadata.get("hook_name_out") or in_hook
        kind = "transcoder" if ours.get("kind") == "transcoder" or out_hook != in_hook else "sae"
    k = int(config["k"]) if architecture == "topk" else int(ours.get("k", min(DEFAULT_K, n)))
    return DictionaryConfig(d_in, d_out, n, activation=activation, k=k, skip=skip, in_hook=in_hook, out_hook=out_hook,
                            kind=kind, dtype=config["dtype"], seed=int(ours.get("seed", 0)))


def _our_state(config: dict, cfg: DictionaryConfig, state: dict[str, torch.Tensor], where: Path) -> dict:
    """Our state dict (float64) from SAELens' tensors (float64), per the module docstring."""
    architecture = config["architecture"]
    b_dec_on_input = bool(config.get("apply_b_dec_to_input", True))
    if architecture in TRANSCODER_ARCHITECTURES and b_dec_on_input:
        raise ValueError(f"{where}: a transcoder with apply_b_dec_to_input true (SAELens refuses it too)")
    W_enc, b_enc, W_dec, b_dec = (state[name] for name in ("W_enc", "b_enc", "W_dec", "b_dec"))
    if architecture == "topk" and config.get("rescale_acts_by_decoder_norm", False):
        norms = W_dec.norm(dim=-1)  # SAELens: topk(pre * n), decoded as (f / n) @ W_dec
        W_enc, b_enc, W_dec = W_enc * norms, b_enc * norms, W_dec / norms[:, None]
    if cfg.kind == "sae" and not b_dec_on_input:  # ours subtracts b_dec first: add it back into b_enc
        b_enc = b_enc + b_dec @ W_enc
    ours = {"W_enc": W_enc, "b_enc": b_enc, "W_dec": W_dec, "b_dec": b_dec,
            "threshold": (_scalar_threshold(state["threshold"], where) if cfg.activation == "batchtopk"
                          else torch.zeros((), dtype=torch.float64))}
    if cfg.kind == "transcoder":  # an SAE class subtracting b_dec: that is our b_pre; else none
        on_input = b_dec_on_input and architecture in SAE_ARCHITECTURES
        ours["b_pre"] = b_dec if on_input else torch.zeros(cfg.d_in, dtype=torch.float64)
    if cfg.skip:
        ours["W_skip"] = state["W_skip"].T  # SAELens' [d_out, d_in] -> ours [d_in, d_out]
    return ours


def load_saelens(path: PathLike) -> SparseDictionary:
    """The dictionary (eval mode) in the SAELens 6 folder `path` (see the module docstring for
    what loads and how it maps)."""
    from safetensors.torch import load_file

    path = Path(path)
    config = _read_config(path)
    cfg = _our_config(config)
    shapes = {"W_enc": (cfg.d_in, cfg.n_features), "b_enc": (cfg.n_features,), "W_dec": (cfg.n_features, cfg.d_out),
              "b_dec": (cfg.d_out,)}
    if cfg.activation == "batchtopk":
        shapes["threshold"] = (cfg.n_features,)
    if cfg.skip:
        shapes["W_skip"] = (cfg.d_out, cfg.d_in)
    state = load_file(str(path / WEIGHTS))
    _expect(state, shapes, path / WEIGHTS)
    ours = _our_state(config, cfg, {name: t.double() for name, t in state.items()}, path / WEIGHTS)
    dictionary = SparseDictionary(cfg)
    dtype = dictionary.W_enc.dtype
    dictionary.load_state_dict({name: t.to(dtype).contiguous() for name, t in ours.items()})
    return dictionary.eval()


__all__ = ["save_saelens", "load_saelens", "saelens_config", "saelens_tensors", "saelens_architecture",
           "is_saelens_config", "SAELENS_VERSION", "ARCHITECTURES"]
