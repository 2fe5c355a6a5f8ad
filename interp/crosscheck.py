"""Cross-check our Transformer against HF transformers and TransformerLens 4.

The same weights run in three places: an HF model, our `Transformer`, and a
TransformerLens `TransformerBridge` wrapped around (a copy of) the HF model.
We compare the logits with HF's and every hook that both we and the bridge
expose, and report the largest absolute difference per hook.

The bridge replaces submodules of the model it wraps, so it always gets a
deep copy; the HF model passed in is left as it was.
"""

from __future__ import annotations

import copy
import warnings
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any, Iterator, Optional

import torch

from interp import names as hook_names
from models import Transformer, from_hf, to_hf

DEFAULT_TOL = {torch.float32: 1e-4, torch.float64: 1e-9}
# HF computes rotary tables (and Llama / Qwen2 RMSNorm) in float32 even in a float64 model, so in
# float64 those architectures agree to ~1e-7, not ~1e-12.
FLOAT32_INSIDE = ("GPTNeoXForCausalLM", "LlamaForCausalLM", "Qwen2ForCausalLM")


def default_tol(hf_model: Any, dtype: torch.dtype) -> float:
    if dtype == torch.float64 and type(hf_model).__name__ in FLOAT32_INSIDE:
        return 1e-6
    return DEFAULT_TOL.get(dtype, 1e-2)


@dataclass
class HookDiff:
    hook: str
    shape: tuple[int, ...]
    max_abs_diff: float
    tol: float

    @property
    def passed(self) -> bool:
        return self.max_abs_diff <= self.tol

    @property
    def family(self) -> str:
        """The hook name without its layer: 'blocks.3.attn.hook_z' -> 'attn.hook_z'."""
        prefix, layer, rest = hook_names.split(self.hook)
        return self.hook if layer is None else prefix + rest


@dataclass
class CrossCheckReport:
    dtype: str
    tol: float
    logits_vs_hf: float
    logits_vs_bridge: float
    rows: list[HookDiff] = field(default_factory=list)
    bridge_only: list[str] = field(default_factory=list)  # names the bridge has and we do not compare
    ours_only: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return (
            self.logits_vs_hf <= self.tol and self.logits_vs_bridge <= self.tol and all(r.passed for r in self.rows)
        )

    def worst_by_family(self) -> dict[str, float]:
        worst: dict[str, float] = {}
        for r in self.rows:
            worst[r.family] = max(worst.get(r.family, 0.0), r.max_abs_diff)
        return worst

    def table(self, by_family: bool = False) -> str:
        lines = [f"dtype {self.dtype}, tolerance {self.tol:g}"]
        lines.append(f"{'logits vs HF transformers':44s} {'':18s} {self.logits_vs_hf:10.2e}  "
                     f"{'pass' if self.logits_vs_hf <= self.tol else 'FAIL'}")
        lines.append(f"{'logits vs TransformerLens bridge':44s} {'':18s} {self.logits_vs_bridge:10.2e}  "
                     f"{'pass' if self.logits_vs_bridge <= self.tol else 'FAIL'}")
        lines.append(f"{'hook (vs TransformerLens bridge)':44s} {'shape':18s} {'max |diff|':>10s}  result")
        if by_family:
            shapes = {r.family: r.shape for r in self.rows}
            layered = {r.family for r in self.rows if r.family != r.hook}  # shown as "*.attn.hook_z"
            for fam, worst in self.worst_by_family().items():
                label = "*." + fam if fam in layered else fam
                lines.append(f"{label:44s} {str(shapes[fam]):18s} {worst:10.2e}  {'pass' if worst <= self.tol else 'FAIL'}")
        else:
            for r in self.rows:
                lines.append(f"{r.hook:44s} {str(r.shape):18s} {r.max_abs_diff:10.2e}  {'pass' if r.passed else 'FAIL'}")
        n_fail = sum(not r.passed for r in self.rows)
        lines.append(f"{len(self.rows)} hooks compared, {n_fail} failed; overall: {'PASS' if self.passed else 'FAIL'}")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["passed"] = self.passed
        d["worst_by_family"] = self.worst_by_family()
        return d


# ============================================================ models to compare
def random_gpt2(
    n_layers: int = 2, d_model: int = 60, n_heads: int = 5, d_vocab: int = 100, n_ctx: int = 64,
    d_mlp: Optional[int] = None, act_fn: str = "gelu_new", seed: int = 0, dtype: torch.dtype = torch.float32,
    perturb: bool = True,
) -> Any:
    """A randomly initialised HF GPT2LMHeadModel (eval mode).

    perturb: GPT-2's initialisation sets every norm weight to 1 and every bias to
    0, which would hide mistakes in how they are used; add noise to all of them.
    """
    from transformers import GPT2Config, GPT2LMHeadModel

    cfg = GPT2Config(
        n_layer=n_layers, n_embd=d_model, n_head=n_heads, vocab_size=d_vocab, n_positions=n_ctx,
        n_inner=d_mlp, activation_function=act_fn, bos_token_id=0, eos_token_id=0,
        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
    )
    with _seeded(seed):
        hf = GPT2LMHeadModel(cfg).eval()
    if perturb:
        gen = torch.Generator().manual_seed(seed + 1)
        with torch.no_grad():
            for name, p in hf.named_parameters():
                if ".ln_" in name or "ln_f" in name:
                    p.add_(0.3 * torch.randn(p.shape, generator=gen))
                elif name.endswith("bias"):
                    p.add_(0.05 * torch.randn(p.shape, generator=gen))
    return hf.to(dtype)


RANDOM_ARCHS = ("gpt2", "neox", "llama", "qwen2")


def random_hf(
    arch: str = "gpt2", n_layers: int = 2, d_model: int = 48, n_heads: int = 4, d_vocab: int = 97, n_ctx: int = 64,
    seed: int = 0, dtype: torch.dtype = torch.float32, n_kv_heads: Optional[int] = None, **overrides: Any,
) -> Any:
    """A small randomly initialised HF causal LM of one architecture, norm weights and biases
    perturbed so that mistakes in using them show.

    arch: "gpt2"; "neox" (GPTNeoXForCausalLM, Pythia layout: parallel attention + MLP,
    rotary on a quarter of each head); "llama" (RMSNorm, rotary, SwiGLU, grouped-query
    attention with n_kv_heads, default n_heads // 2); "qwen2" (Llama with q/k/v biases).
    overrides: extra HF config fields.
    """
    if arch == "gpt2":
        return random_gpt2(n_layers, d_model, n_heads, d_vocab, n_ctx, seed=seed, dtype=dtype)
    import transformers

    common = dict(vocab_size=d_vocab, hidden_size=d_model, num_hidden_layers=n_layers, num_attention_heads=n_heads,
                  max_position_embeddings=n_ctx, intermediate_size=4 * d_model, tie_word_embeddings=False)
    if arch == "neox":
        cfg = transformers.GPTNeoXConfig(**(common | dict(rotary_pct=0.25, use_parallel_residual=True) | overrides))
        cls = transformers.GPTNeoXForCausalLM
    elif arch in ("llama", "qwen2"):
        kv = dict(num_key_value_heads=n_kv_heads or max(1, n_heads // 2))
        name = "Llama" if arch == "llama" else "Qwen2"
        cfg = getattr(transformers, f"{name}Config")(**(common | kv | overrides))
        cls = getattr(transformers, f"{name}ForCausalLM")
    else:
        raise ValueError(f"arch must be one of {RANDOM_ARCHS}, got {arch!r}")
    with _seeded(seed):
        hf = cls(cfg)
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, p in hf.named_parameters():
            if "norm" in name or name.endswith("bias"):
                p.add_(0.2 * torch.randn(p.shape, generator=gen))
    return hf.to(dtype).eval()


@contextmanager
def _seeded(seed: int) -> Iterator[None]:
    """HF models initialise their weights from the global torch RNG: seed it for the block,
    then put the caller's RNG state back (a library call must not reseed the user's RNG)."""
    state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        yield
    finally:
        torch.random.set_rng_state(state)


def bridge_for(hf_model: Any) -> Any:
    """A TransformerLens 4 TransformerBridge around a deep copy of an HF model (no tokenizer, nothing
    downloaded: the bridge is built from the model object and its config)."""
    from transformer_lens.model_bridge.sources._bridge_builder import build_bridge_from_module

    arch = type(hf_model).__name__
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        bridge = build_bridge_from_module(copy.deepcopy(hf_model), architecture=arch, hf_config=hf_model.config)
    return bridge.eval()


# ============================================================ comparison
def _compare(ours: torch.Tensor, theirs: torch.Tensor, name: str) -> float:
    if ours.shape != theirs.shape:
        return float("inf")
    ours, theirs = ours.double(), theirs.double()
    if name.endswith("hook_attn_scores"):
        # Masked entries hold -inf here and a large negative number in the bridge: compare the causal part.
        causal = torch.ones(ours.shape[-2:], dtype=torch.bool, device=ours.device).tril()
        ours, theirs = ours[..., causal], theirs[..., causal]
    return (ours - theirs).abs().max().item() if ours.numel() else 0.0


def crosscheck(
    hf_model: Any,
    tokens: torch.Tensor,
    model: Optional[Transformer] = None,
    tol: Optional[float] = None,
) -> CrossCheckReport:
    """Compare HF, our Transformer and the TransformerLens bridge on the same weights.

    hf_model: an HF model (e.g. GPT2LMHeadModel); model: ours with the same
    weights (default: `from_hf(hf_model)`). tokens [batch, pos].
    """
    model = model if model is not None else from_hf(hf_model)
    dtype = next(hf_model.parameters()).dtype
    tol = default_tol(hf_model, dtype) if tol is None else tol
    bridge = bridge_for(hf_model)
    bridge.set_use_attn_result(True)
    flags = {m: m.use_attn_result for m in model.modules() if hasattr(m, "use_attn_result")}
    model.set_use_attn_result(True)
    try:
        with torch.no_grad():
            hf_logits = hf_model(tokens).logits
            our_logits, cache = model.run_with_cache(tokens)
            bridge_logits, bcache = bridge.run_with_cache(tokens)
    finally:
        for module, flag in flags.items():  # as they were, module by module
            module.use_attn_result = flag
    report = CrossCheckReport(
        dtype=str(dtype).removeprefix("torch."), tol=tol,
        logits_vs_hf=_compare(our_logits, hf_logits, "logits"),
        logits_vs_bridge=_compare(our_logits, bridge_logits, "logits"),
    )
    bridge_names = set(bcache.keys())
    for name, act in cache.items():
        if name in bridge_names:
            report.rows.append(HookDiff(name, tuple(act.shape), _compare(act, bcache[name], name), tol))
        else:
            report.ours_only.append(name)
    report.bridge_only = sorted(bridge_names - set(cache.keys()))
    return report


def crosscheck_model(model: Transformer, tokens: torch.Tensor, tol: Optional[float] = None) -> CrossCheckReport:
    """Cross-check one of our models: export it to HF (`to_hf`), then compare all three."""
    return crosscheck(to_hf(model).to(model.device), tokens, model=model, tol=tol)
