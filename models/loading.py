"""Moving weights between our Transformer, HF transformers and files on disk.

- `from_hf(hf_model, tokenizer=None)`: an HF model -> our `Transformer` (same weights).
- `to_hf(model)`: the reverse, for configurations an HF architecture can express.
- `save(model, dir)` / `load(dir)`: our own format (config.json + model.safetensors
  + tokenizer files).
- `load(name_or_path)`: "factworld", one of our directories, an HF-format
  directory, or a model id already in the local HF cache. Never downloads and
  never returns a randomly initialised model.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Optional

import torch
from einops import rearrange

from interp.names import param_name
from models.config import TransformerConfig, dtype_name
from models.tokenizer import HFTokenizer, Tokenizer, WordTokenizer
from models.transformer import Transformer

FORMAT_KEY = "interp_format"
WEIGHTS_FILE = "model.safetensors"
# The tokenizer kinds a checkpoint may name. Loading never imports a module the file names.
TOKENIZER_KINDS = {"word": WordTokenizer, "models.tokenizer:WordTokenizer": WordTokenizer}  # + "hf"


class ModelNotFoundError(FileNotFoundError):
    """Raised by `load` when nothing local matches; the message says what to fetch and where."""


# ============================================================ weights by name
def load_weights(model: Transformer, weights: dict[str, torch.Tensor]) -> None:
    """Copy TransformerLens-named tensors into the model, checking names and shapes first."""
    params = dict(model.named_parameters())
    missing = sorted(set(params) - set(weights))
    unknown = sorted(set(weights) - set(params))
    if missing or unknown:
        raise ValueError(f"weights do not match the model: missing {missing[:8]}, unexpected {unknown[:8]}")
    bad = [(n, tuple(w.shape), tuple(params[n].shape)) for n, w in weights.items() if w.shape != params[n].shape]
    if bad:
        raise ValueError("shape mismatch (name, given, expected): " + "; ".join(map(str, bad[:8])))
    with torch.no_grad():
        for name, w in weights.items():
            params[name].copy_(w)


# ============================================================ GPT-2
def _gpt2_config(hf_cfg: Any, dtype: str) -> TransformerConfig:
    unsupported = {
        "scale_attn_by_inverse_layer_idx": getattr(hf_cfg, "scale_attn_by_inverse_layer_idx", False),
        "add_cross_attention": getattr(hf_cfg, "add_cross_attention", False),
        "scale_attn_weights=False": not getattr(hf_cfg, "scale_attn_weights", True),
    }
    bad = [k for k, v in unsupported.items() if v]
    if bad:
        raise NotImplementedError(f"GPT-2 options not supported: {bad}")
    act = hf_cfg.activation_function
    if act not in ("gelu_new", "gelu", "relu", "silu"):
        raise NotImplementedError(f"GPT-2 activation_function={act!r} is not supported")
    return TransformerConfig(
        n_layers=hf_cfg.n_layer, d_model=hf_cfg.n_embd, n_heads=hf_cfg.n_head, d_vocab=hf_cfg.vocab_size,
        n_ctx=hf_cfg.n_positions, d_mlp=hf_cfg.n_inner or 4 * hf_cfg.n_embd, act_fn=act,
        norm="layernorm", norm_position="pre", positional="learned", norm_eps=hf_cfg.layer_norm_epsilon,
        tie_embeddings=bool(getattr(hf_cfg, "tie_word_embeddings", True)), dtype=dtype,
    )


def _gpt2_weights(hf_model: Any, cfg: TransformerConfig) -> dict[str, torch.Tensor]:
    sd = {k: v.detach() for k, v in hf_model.state_dict().items()}
    d, h = cfg.d_model, cfg.n_heads
    w: dict[str, torch.Tensor] = {"embed.W_E": sd["transformer.wte.weight"], "pos_embed.W_pos": sd["transformer.wpe.weight"]}
    for l in range(cfg.n_layers):
        p, o = f"transformer.h.{l}.", param_name("", l)
        qkv_w, qkv_b = sd[p + "attn.c_attn.weight"], sd[p + "attn.c_attn.bias"]  # Conv1D: x @ W + b, W [d, 3d]
        for i, X in enumerate("QKV"):
            w[o + f"attn.W_{X}"] = rearrange(qkv_w[:, i * d : (i + 1) * d], "m (h k) -> h m k", h=h)
            w[o + f"attn.b_{X}"] = rearrange(qkv_b[i * d : (i + 1) * d], "(h k) -> h k", h=h)
        w[o + "attn.W_O"] = rearrange(sd[p + "attn.c_proj.weight"], "(h k) m -> h k m", h=h)
        w[o + "attn.b_O"] = sd[p + "attn.c_proj.bias"]
        for ours, theirs in [("ln1", "ln_1"), ("ln2", "ln_2")]:
            w[o + f"{ours}.w"], w[o + f"{ours}.b"] = sd[p + f"{theirs}.weight"], sd[p + f"{theirs}.bias"]
        w[o + "mlp.W_in"], w[o + "mlp.b_in"] = sd[p + "mlp.c_fc.weight"], sd[p + "mlp.c_fc.bias"]
        w[o + "mlp.W_out"], w[o + "mlp.b_out"] = sd[p + "mlp.c_proj.weight"], sd[p + "mlp.c_proj.bias"]
    w["ln_final.w"], w["ln_final.b"] = sd["transformer.ln_f.weight"], sd["transformer.ln_f.bias"]
    if not cfg.tie_embeddings:
        w["unembed.W_U"] = sd["lm_head.weight"].T
    w["unembed.b_U"] = torch.zeros(cfg.d_vocab, dtype=w["embed.W_E"].dtype)
    return w


def _rope(hf_cfg: Any) -> tuple[float, float]:
    """(rope_theta, partial_rotary_factor) of an HF config; only plain ("default") rotary is supported."""
    params = dict(getattr(hf_cfg, "rope_parameters", None) or {})
    kind = params.get("rope_type", "default")
    if kind != "default":
        raise NotImplementedError(f"rotary scaling rope_type={kind!r} is not supported (only plain rotary)")
    theta = params.get("rope_theta", getattr(hf_cfg, "rope_theta", 10000.0))
    return float(theta), float(params.get("partial_rotary_factor", 1.0))


def _act(name: str, arch: str) -> str:
    act = {"gelu": "gelu", "gelu_new": "gelu_new", "gelu_pytorch_tanh": "gelu_new", "relu": "relu", "silu": "silu"}.get(name)
    if act is None:
        raise NotImplementedError(f"{arch}: hidden_act={name!r} is not supported")
    return act


def _neox_config(hf_cfg: Any, dtype: str) -> TransformerConfig:
    theta, partial = _rope(hf_cfg)
    d_head = hf_cfg.hidden_size // hf_cfg.num_attention_heads
    return TransformerConfig(
        n_layers=hf_cfg.num_hidden_layers, d_model=hf_cfg.hidden_size, n_heads=hf_cfg.num_attention_heads,
        d_vocab=hf_cfg.vocab_size, n_ctx=hf_cfg.max_position_embeddings, d_mlp=hf_cfg.intermediate_size,
        act_fn=_act(hf_cfg.hidden_act, "GPT-NeoX"), norm="layernorm", positional="rotary",
        rotary_dim=int(d_head * partial), rotary_base=theta, parallel_attn_mlp=bool(hf_cfg.use_parallel_residual),
        norm_eps=hf_cfg.layer_norm_eps, tie_embeddings=bool(getattr(hf_cfg, "tie_word_embeddings", False)), dtype=dtype,
    )


def _neox_weights(hf_model: Any, cfg: TransformerConfig) -> dict[str, torch.Tensor]:
    sd = {k: v.detach() for k, v in hf_model.state_dict().items()}
    h = cfg.n_heads
    w: dict[str, torch.Tensor] = {"embed.W_E": sd["gpt_neox.embed_in.weight"]}
    for l in range(cfg.n_layers):
        p, o = f"gpt_neox.layers.{l}.", param_name("", l)
        # query_key_value: nn.Linear, output laid out per head as [q | k | v] (each d_head).
        qkv_w = rearrange(sd[p + "attention.query_key_value.weight"], "(h three k) m -> three h m k", h=h, three=3)
        qkv_b = rearrange(sd[p + "attention.query_key_value.bias"], "(h three k) -> three h k", h=h, three=3)
        for i, X in enumerate("QKV"):
            w[o + f"attn.W_{X}"], w[o + f"attn.b_{X}"] = qkv_w[i], qkv_b[i]
        w[o + "attn.W_O"] = rearrange(sd[p + "attention.dense.weight"], "m (h k) -> h k m", h=h)
        w[o + "attn.b_O"] = sd[p + "attention.dense.bias"]
        for ours, theirs in [("ln1", "input_layernorm"), ("ln2", "post_attention_layernorm")]:
            w[o + f"{ours}.w"], w[o + f"{ours}.b"] = sd[p + f"{theirs}.weight"], sd[p + f"{theirs}.bias"]
        w[o + "mlp.W_in"], w[o + "mlp.b_in"] = sd[p + "mlp.dense_h_to_4h.weight"].T, sd[p + "mlp.dense_h_to_4h.bias"]
        w[o + "mlp.W_out"], w[o + "mlp.b_out"] = sd[p + "mlp.dense_4h_to_h.weight"].T, sd[p + "mlp.dense_4h_to_h.bias"]
    w["ln_final.w"], w["ln_final.b"] = sd["gpt_neox.final_layer_norm.weight"], sd["gpt_neox.final_layer_norm.bias"]
    if not cfg.tie_embeddings:
        w["unembed.W_U"] = sd["lm_head.weight"].T
    w["unembed.b_U"] = torch.zeros(cfg.d_vocab, dtype=w["embed.W_E"].dtype)
    return w


def _llama_config(hf_cfg: Any, dtype: str) -> TransformerConfig:
    """LlamaForCausalLM and Qwen2ForCausalLM (Qwen2 adds biases to q, k, v)."""
    theta, partial = _rope(hf_cfg)
    d_head = getattr(hf_cfg, "head_dim", None) or hf_cfg.hidden_size // hf_cfg.num_attention_heads
    if getattr(hf_cfg, "mlp_bias", False):
        raise NotImplementedError("Llama with mlp_bias=True is not supported")
    if getattr(hf_cfg, "use_sliding_window", False):
        raise NotImplementedError("sliding-window attention is not supported")
    return TransformerConfig(
        n_layers=hf_cfg.num_hidden_layers, d_model=hf_cfg.hidden_size, n_heads=hf_cfg.num_attention_heads,
        d_head=d_head, n_kv_heads=hf_cfg.num_key_value_heads or hf_cfg.num_attention_heads,
        d_vocab=hf_cfg.vocab_size, n_ctx=hf_cfg.max_position_embeddings, d_mlp=hf_cfg.intermediate_size,
        act_fn=_act(hf_cfg.hidden_act, "Llama"), gated_mlp=True, norm="rmsnorm", positional="rotary",
        rotary_dim=int(d_head * partial), rotary_base=theta, norm_eps=hf_cfg.rms_norm_eps,
        tie_embeddings=bool(getattr(hf_cfg, "tie_word_embeddings", False)), dtype=dtype,
    )


def _llama_weights(hf_model: Any, cfg: TransformerConfig) -> dict[str, torch.Tensor]:
    sd = {k: v.detach() for k, v in hf_model.state_dict().items()}
    zeros = lambda *shape: torch.zeros(*shape, dtype=sd["model.embed_tokens.weight"].dtype)  # noqa: E731
    w: dict[str, torch.Tensor] = {"embed.W_E": sd["model.embed_tokens.weight"]}
    for l in range(cfg.n_layers):
        p, o = f"model.layers.{l}.", param_name("", l)
        for X, proj, heads in [("Q", "q_proj", cfg.n_heads), ("K", "k_proj", cfg.n_kv_heads), ("V", "v_proj", cfg.n_kv_heads)]:
            w[o + f"attn.W_{X}"] = rearrange(sd[p + f"self_attn.{proj}.weight"], "(h k) m -> h m k", h=heads)
            bias = sd.get(p + f"self_attn.{proj}.bias")
            w[o + f"attn.b_{X}"] = rearrange(bias, "(h k) -> h k", h=heads) if bias is not None else zeros(heads, cfg.d_head)
        w[o + "attn.W_O"] = rearrange(sd[p + "self_attn.o_proj.weight"], "m (h k) -> h k m", h=cfg.n_heads)
        w[o + "attn.b_O"] = sd.get(p + "self_attn.o_proj.bias", zeros(cfg.d_model))
        w[o + "ln1.w"], w[o + "ln2.w"] = sd[p + "input_layernorm.weight"], sd[p + "post_attention_layernorm.weight"]
        # SwiGLU: post = act(x W_gate) * (x W_in); the gate is hook_pre, the up projection hook_pre_linear.
        w[o + "mlp.W_gate"] = sd[p + "mlp.gate_proj.weight"].T
        w[o + "mlp.W_in"], w[o + "mlp.b_in"] = sd[p + "mlp.up_proj.weight"].T, zeros(cfg.d_mlp)
        w[o + "mlp.W_out"], w[o + "mlp.b_out"] = sd[p + "mlp.down_proj.weight"].T, zeros(cfg.d_model)
    w["ln_final.w"] = sd["model.norm.weight"]
    if not cfg.tie_embeddings:
        w["unembed.W_U"] = sd["lm_head.weight"].T
    w["unembed.b_U"] = zeros(cfg.d_vocab)
    return w


# HF architecture -> (config converter, weight converter)
ARCHITECTURES = {
    "GPT2LMHeadModel": (_gpt2_config, _gpt2_weights),
    "GPTNeoXForCausalLM": (_neox_config, _neox_weights),
    "LlamaForCausalLM": (_llama_config, _llama_weights),
    "Qwen2ForCausalLM": (_llama_config, _llama_weights),
}


def from_hf(hf_model: Any, tokenizer: Any = None, dtype: Optional[str] = None) -> Transformer:
    """Our `Transformer` with the weights of an HF model: GPT2LMHeadModel, GPTNeoXForCausalLM
    (Pythia), LlamaForCausalLM or Qwen2ForCausalLM.

    tokenizer: an HF tokenizer or one of ours (optional). dtype defaults to the HF model's.
    """
    arch = type(hf_model).__name__
    if arch not in ARCHITECTURES:
        raise NotImplementedError(f"from_hf supports {', '.join(ARCHITECTURES)}; got {arch}")
    if dtype is None:
        dtype = dtype_name(next(hf_model.parameters()).dtype)
    to_config, to_weights = ARCHITECTURES[arch]
    cfg = to_config(hf_model.config, dtype)
    weights = to_weights(hf_model, cfg)
    if tokenizer is not None and not isinstance(tokenizer, Tokenizer):
        tokenizer = HFTokenizer(tokenizer)
    model = Transformer(cfg, tokenizer=tokenizer)
    load_weights(model, {k: v.to(cfg.torch_dtype) for k, v in weights.items()})
    return model.to(hf_model.device)


def to_hf(model: Transformer) -> Any:
    """An HF `GPT2LMHeadModel` with our weights, for GPT-2-layout configurations.

    Raises a clear error for configurations GPT-2 cannot express.
    """
    from transformers import GPT2Config, GPT2LMHeadModel

    cfg = model.cfg
    problems = [
        msg for cond, msg in [
            (cfg.norm != "layernorm", f"norm={cfg.norm!r} (GPT-2 uses layernorm)"),
            (cfg.norm_position != "pre", "post-norm blocks"),
            (not cfg.final_norm, "no final norm"),
            (cfg.positional != "learned", f"positional={cfg.positional!r} (GPT-2 learns positions)"),
            (cfg.gated_mlp, "gated MLP"),
            (cfg.parallel_attn_mlp, "parallel attention and MLP"),
            (cfg.attn_only, "attention-only blocks (no MLP)"),
            (cfg.n_kv_heads != cfg.n_heads, "grouped-query attention"),
            (cfg.d_head * cfg.n_heads != cfg.d_model, f"d_head * n_heads = {cfg.d_head * cfg.n_heads} != d_model"),
            (cfg.scale_embeddings, "scaled embeddings"),
            (bool(model.unembed.b_U.abs().max() > 0), "a non-zero unembedding bias b_U"),
        ] if cond
    ]
    if problems:
        raise ValueError("this model cannot be exported to GPT-2: " + "; ".join(problems))
    hf_cfg = GPT2Config(
        vocab_size=cfg.d_vocab, n_positions=cfg.n_ctx, n_embd=cfg.d_model, n_layer=cfg.n_layers,
        n_head=cfg.n_heads, n_inner=cfg.d_mlp, activation_function=cfg.act_fn,
        layer_norm_epsilon=cfg.norm_eps, tie_word_embeddings=cfg.tie_embeddings,
        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
        bos_token_id=getattr(model.tokenizer, "bos_token_id", None) or 0,
        eos_token_id=getattr(model.tokenizer, "eos_token_id", None) or 0,
    )
    hf = GPT2LMHeadModel(hf_cfg).to(cfg.torch_dtype).eval()
    p = {n: t.detach() for n, t in model.named_parameters()}
    sd: dict[str, torch.Tensor] = {"transformer.wte.weight": p["embed.W_E"], "transformer.wpe.weight": p["pos_embed.W_pos"]}
    for l in range(cfg.n_layers):
        o, t = param_name("", l), f"transformer.h.{l}."
        sd[t + "attn.c_attn.weight"] = torch.cat(
            [rearrange(p[o + f"attn.W_{X}"], "h m k -> m (h k)") for X in "QKV"], dim=1)
        sd[t + "attn.c_attn.bias"] = torch.cat([rearrange(p[o + f"attn.b_{X}"], "h k -> (h k)") for X in "QKV"])
        sd[t + "attn.c_proj.weight"] = rearrange(p[o + "attn.W_O"], "h k m -> (h k) m")
        sd[t + "attn.c_proj.bias"] = p[o + "attn.b_O"]
        for ours, theirs in [("ln1", "ln_1"), ("ln2", "ln_2")]:
            sd[t + f"{theirs}.weight"], sd[t + f"{theirs}.bias"] = p[o + f"{ours}.w"], p[o + f"{ours}.b"]
        sd[t + "mlp.c_fc.weight"], sd[t + "mlp.c_fc.bias"] = p[o + "mlp.W_in"], p[o + "mlp.b_in"]
        sd[t + "mlp.c_proj.weight"], sd[t + "mlp.c_proj.bias"] = p[o + "mlp.W_out"], p[o + "mlp.b_out"]
    sd["transformer.ln_f.weight"], sd["transformer.ln_f.bias"] = p["ln_final.w"], p["ln_final.b"]
    sd["lm_head.weight"] = p["embed.W_E"] if cfg.tie_embeddings else p["unembed.W_U"].T
    missing, unexpected = hf.load_state_dict({k: v.contiguous() for k, v in sd.items()}, strict=False)
    missing = [m for m in missing if not m.endswith("attn.bias") and not m.endswith("masked_bias")]
    if missing or unexpected:
        raise RuntimeError(f"to_hf: missing {missing}, unexpected {unexpected}")
    return hf


# ============================================================ our format on disk
def shipped_dictionaries(name: str) -> Path:
    """The folder of the sparse dictionaries shipped with a model ("factworld": one transcoder per
    layer, trained by `interp train-transcoders`)."""
    if name != "factworld":
        raise ValueError(f"no dictionaries are shipped for {name!r}; give a directory instead")
    from models.factworld import checkpoint_dir

    return checkpoint_dir().parent / "transcoders"


def check_not_shipped(path: str | Path) -> None:
    """A clear error for a path inside the shipped fact-world checkpoint's folder."""
    from models.factworld import checkpoint_dir

    shipped = checkpoint_dir().resolve()
    resolved = Path(path).resolve()
    if resolved == shipped or shipped in resolved.parents:
        raise ValueError(f"refusing to write into the shipped fact-world checkpoint folder {shipped}; "
                         "save elsewhere (training it anew: `interp train-factworld`)")


def save(model: Transformer, path: str | Path, *, allow_shipped: bool = False) -> Path:
    """Write config.json, model.safetensors and the tokenizer (if any) into directory `path`.
    The shipped fact-world checkpoint's folder is refused unless `allow_shipped` (training it).

    The tokenizer must be an HF or a word-level one (checkpoints name a known kind, never
    code to import); anything else is refused before a file is written."""
    from safetensors.torch import save_file

    tok = model.tokenizer
    kind = None
    if isinstance(tok, HFTokenizer):
        kind = "hf"
    elif isinstance(tok, WordTokenizer):
        kind = "word"
    elif tok is not None:
        raise TypeError(f"cannot save a {type(tok).__name__}: checkpoints hold HF or word-level tokenizers "
                        "(loading never imports code a checkpoint names)")
    path = Path(path)
    if not allow_shipped:
        check_not_shipped(path)
    path.mkdir(parents=True, exist_ok=True)
    if tok is not None:
        tok.save(path)
    meta = {FORMAT_KEY: 1, "config": model.cfg.to_dict(), "tokenizer": kind}
    (path / "config.json").write_text(json.dumps(meta, indent=2) + "\n")
    save_file({n: t.detach().contiguous().cpu() for n, t in model.named_parameters()}, str(path / WEIGHTS_FILE))
    return path


def _load_ours(path: Path, meta: dict[str, Any], dtype: Optional[str] = None) -> Transformer:
    from safetensors.torch import load_file

    cfg = TransformerConfig.from_dict(meta["config"] | ({"dtype": dtype} if dtype else {}))
    tokenizer: Optional[Tokenizer] = None
    kind = meta.get("tokenizer")
    if kind == "hf":
        tokenizer = HFTokenizer.from_pretrained(path)
    elif kind in TOKENIZER_KINDS:
        tokenizer = TOKENIZER_KINDS[kind].load(path)
    elif kind:
        raise ValueError(f"{path}/config.json names tokenizer {kind!r}, which is not a known kind "
                         f"({', '.join(['hf', *TOKENIZER_KINDS])}); loading never imports code a checkpoint names")
    model = Transformer(cfg, tokenizer=tokenizer)
    load_weights(model, load_file(str(path / WEIGHTS_FILE)))
    return model.eval()


MODEL_TYPES = {"gpt2": "GPT2LMHeadModel", "gpt_neox": "GPTNeoXForCausalLM", "llama": "LlamaForCausalLM",
               "qwen2": "Qwen2ForCausalLM"}


def hf_model_from_dir(path: Path) -> Any:
    """The HF model (eval mode) saved in a local HF-format directory, for the supported architectures."""
    import transformers
    from transformers import AutoConfig

    hf_cfg = AutoConfig.from_pretrained(str(path), local_files_only=True)
    if hf_cfg.model_type not in MODEL_TYPES:
        raise NotImplementedError(f"{path}: model_type={hf_cfg.model_type!r}; load() supports "
                                  f"{', '.join(MODEL_TYPES)} checkpoints")
    cls = getattr(transformers, MODEL_TYPES[hf_cfg.model_type])
    return cls.from_pretrained(str(path), local_files_only=True).eval()


def _load_hf_dir(path: Path, dtype: Optional[str]) -> Transformer:
    hf = hf_model_from_dir(path)
    tokenizer = None
    if any((path / f).exists() for f in ("tokenizer.json", "vocab.json", "tokenizer_config.json")):
        tokenizer = HFTokenizer.from_pretrained(path)
    return from_hf(hf, tokenizer, dtype=dtype).eval()


def _hf_cache_dir() -> str:
    try:
        from huggingface_hub import constants

        return str(constants.HF_HUB_CACHE)
    except Exception:  # pragma: no cover - very old huggingface_hub
        return os.path.expanduser("~/.cache/huggingface/hub")


def load(name_or_path: str | Path, dtype: Optional[str] = None, cache_dir: Optional[str | Path] = None) -> Transformer:
    """Load a model without touching the network.

    "factworld": the shipped fact-world model. A directory: ours (from `save`)
    or HF format (config.json + model.safetensors / pytorch_model.bin, tokenizer
    files optional). Anything else is taken as an HF model id and looked up in
    the local HF cache only (`cache_dir`, default the HF hub cache).
    """
    name = str(name_or_path)
    if name == "factworld":
        from models.factworld import checkpoint_dir

        ckpt = checkpoint_dir()
        if not (ckpt / "config.json").exists():
            raise ModelNotFoundError(
                f"the fact-world checkpoint is missing from {ckpt}; train it with `interp train-factworld`"
            )
        path = ckpt
    else:
        path = Path(name).expanduser()
    if path.is_dir():
        cfg_file = path / "config.json"
        if not cfg_file.exists():
            raise ModelNotFoundError(f"{path} has no config.json: not a model directory")
        meta = json.loads(cfg_file.read_text())
        if FORMAT_KEY in meta:
            return _load_ours(path, meta, dtype)
        return _load_hf_dir(path, dtype)
    if path.exists():
        raise ModelNotFoundError(f"{path} is a file; give the directory that holds config.json and the weights")
    # Not a path: an HF model id, from the local cache only.
    try:
        from huggingface_hub import snapshot_download

        local = snapshot_download(repo_id=name, local_files_only=True,
                                  cache_dir=str(cache_dir) if cache_dir is not None else None)
    except Exception as e:  # LocalEntryNotFoundError, invalid id, ...
        raise ModelNotFoundError(
            f"{name!r} is neither a local directory nor a model in the local Hugging Face cache "
            f"({cache_dir or _hf_cache_dir()}), and this toolkit never downloads. On a machine with internet run "
            f"`huggingface-cli download {name}` and copy the cache folder models--{name.replace('/', '--')} "
            f"into {_hf_cache_dir()}, or save the model with `save_pretrained(DIR)` and pass DIR. "
            f"({type(e).__name__})"
        ) from None
    return _load_hf_dir(Path(local), dtype)
