"""Feature dashboards: where one feature of a sparse dictionary fires, what its key reads and
what its value writes; and a table of every feature of a dictionary at once.

    dash = feature_dashboard(model, transcoder, 134, texts, k=10)
    dash.top_examples[0]        # Context: text, tokens, pos, activation, per-token activations
    dash.value_top              # [(token, logit per unit activation), ...] the decoder row promotes
    dash.key_sources            # {"Michael@1": .., "Jordan@2": .., "position": .., "mlp L0": .., "biases": ..}
    plot_dashboard(dash, "results/features/L1F134.png")
    table = feature_table(model, transcoder, texts)      # FeatureRow per live feature

A feature f of a dictionary that reads x [..., d_in] at its `in_hook` is a key and a value,
like an MLP neuron (probes.ffn):
  key:   pre = (x - b_pre) . W_enc[:, f] + b_enc[f]  (b_pre: the pre-encoder bias, b_dec for
         an SAE); the activation is ReLU / TopK / BatchTopK of the pre-activations;
  value: W_dec[f] [d_out], added to `out_hook` (hook_mlp_out for a transcoder) per unit of
         activation, so the residual stream.
The value's logits are read through the final norm's centring and weight with scale 1 and
the unembedding, as `probes.ffn.value_logits` does for a neuron. The key's pre-activation at
one position is split by source like `probes.ffn.key_by_source`: each token of the prompt
(its embedding, if at that position, plus what every attention layer up to the read carried
from it), the position embedding, each earlier MLP's output, and the biases; for a
dictionary reading a norm's hook_normalized (x - mean) / scale, with the run's scale frozen.

Generic: texts come from the caller (the fact world's corpus lives in `analyses.features`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterable, Iterator, NamedTuple, Optional, Sequence, Union

import numpy as np
import torch

from interp import names as hook_names
from interp.cache import frozen_norm
from interp.checks import IndexRangeError, require_pre_norm, resolve_pos
from interp.tokens import cached_batches, one_prompt, token_text
from interp.views.page import View, Viewable
from models.transformer import Transformer
from probes.ffn.key_sources import residual_sources
from probes.ffn.values import direction_logits, ranked_tokens
from probes.sae.dictionary import SparseDictionary

Prompt = Union[str, torch.Tensor]


# ============================================================ checks
def check_feature(dictionary: SparseDictionary, index: int) -> int:
    """`index` as an int, or a clear error when it is not a feature of the dictionary."""
    n = dictionary.cfg.n_features
    if isinstance(index, bool) or not isinstance(index, (int, np.integer)):
        raise TypeError(f"a feature index is an int, got {type(index).__name__}")
    if not 0 <= index < n:
        raise IndexRangeError(f"feature index {index} is outside [0, {n}): the dictionary on {dictionary.in_hook} "
                              f"has {n} features")
    return int(index)


def check_texts(texts: Union[str, Sequence[str]]) -> list[str]:
    """The texts as a non-empty list (one string is one text); a clear error for none."""
    texts = [texts] if isinstance(texts, str) else list(texts)
    if not texts:
        raise ValueError("no texts given: a dashboard reads its unit's activations over at least one text")
    return texts


def dictionary_layer(dictionary: SparseDictionary) -> Optional[int]:
    """The block the dictionary writes to (or reads from, if its out_hook has none)."""
    layer = hook_names.layer_of(dictionary.out_hook)
    return layer if layer is not None else hook_names.layer_of(dictionary.in_hook)


# ============================================================ activations over texts
class Batch(NamedTuple):
    start: int  # index of the batch's first text
    tokens: torch.Tensor  # [batch, pos]
    real: torch.Tensor  # [batch, pos] bool: not padding
    acts: torch.Tensor  # [batch, pos, n_features], 0 at padding


def activation_batches(model: Transformer, dictionary: SparseDictionary, texts: Sequence[str], *, batch_size: int = 512,
                       progress: bool = True, desc: str = "feature activations") -> Iterator[Batch]:
    """The dictionary's feature activations over `texts`, one padded batch at a time (the
    forward pass stops after the block holding the dictionary's in_hook)."""
    stack, layer, _ = hook_names.split(dictionary.in_hook)
    stop = layer + 1 if not stack and layer is not None else None
    for batch, cache in cached_batches(model, texts, [dictionary.in_hook], batch_size, stop_at_layer=stop,
                                       progress=progress, desc=desc):
        with torch.no_grad():
            acts = dictionary.encode(cache[dictionary.in_hook])
        yield Batch(batch.start, batch.tokens, batch.real, acts * batch.real[..., None])


# ============================================================ the value
def feature_value_logits(model: Transformer, dictionary: SparseDictionary) -> torch.Tensor:
    """[n_features, d_vocab]: logit change per unit activation of each feature, its decoder row
    W_dec[f] read through the final norm (centring and weight, scale 1) and W_U."""
    if dictionary.cfg.d_out != model.cfg.d_model:
        raise ValueError(f"the dictionary writes {dictionary.out_hook} of width {dictionary.cfg.d_out}, not the "
                         f"residual stream (d_model {model.cfg.d_model}): its values have no logits")
    return direction_logits(model, dictionary.W_dec)


# ============================================================ the key, by source
class _Read(NamedTuple):
    """Which part of the residual stream a hook holds: the attention layers and MLPs written
    into it so far, and the norm (its scale hook) it has passed, if any."""

    n_attn: int
    n_mlp: int
    scale_hook: Optional[str]


def _residual_read(model: Transformer, hook: str) -> _Read:
    cfg = model.cfg
    stack, layer, tail = hook_names.split(hook)
    require_pre_norm(cfg, "a feature's key sources")
    if stack or cfg.parallel_attn_mlp:
        raise ValueError(f"key sources need a decoder with sequential attention and MLP; {hook!r} of this "
                         "model is not one")
    n_mlp_of = (lambda n: 0) if cfg.attn_only else (lambda n: n)
    if layer is None and tail == "ln_final.hook_normalized" and cfg.final_norm:
        return _Read(cfg.n_layers, n_mlp_of(cfg.n_layers), "ln_final.hook_scale")
    reads = {"hook_resid_pre": (layer, layer, None), "ln1.hook_normalized": (layer, layer, "ln1"),
             "hook_resid_mid": (layer + 1, layer, None) if layer is not None else None,
             "ln2.hook_normalized": (layer + 1, layer, "ln2") if layer is not None else None,
             "hook_resid_post": (layer + 1, layer + 1, None) if layer is not None else None}
    if layer is None or reads.get(tail) is None:
        raise ValueError(f"key sources are defined for dictionaries reading the residual stream (hook_resid_pre / "
                         f"_mid / _post) or a norm's hook_normalized; this one reads {hook!r}")
    n_attn, n_mlp, norm = reads[tail]
    return _Read(n_attn, n_mlp_of(n_mlp), hook_names.act_name("scale", layer, norm) if norm else None)


def feature_key_sources(model: Transformer, dictionary: SparseDictionary, index: int, prompt: Prompt,
                        pos: int = -1) -> dict[str, float]:
    """Feature `index`'s pre-activation at `pos` of one prompt split by source (see
    `residual_sources`), read through the norm of the dictionary's in_hook with this run's scale
    frozen; "biases" also holds b_enc[f] - b_pre . W_enc[:, f]. The values sum to the
    pre-activation (the activation itself where the feature fires)."""
    index = check_feature(dictionary, index)
    read = _residual_read(model, dictionary.in_hook)
    tokens = one_prompt(model, prompt)[None]  # [1, pos]
    pos = resolve_pos(pos, tokens.shape[1])
    words = [token_text(model, int(t)) for t in tokens[0]]
    key = dictionary.W_enc.detach()[:, index]  # [d_in]
    with torch.no_grad():
        names = ["hook_embed", "hook_pos_embed"] + [hook_names.act_name(a, l) for l in range(read.n_attn)
                                                    for a in ("pattern", "v")]
        names += [hook_names.act_name("mlp_out", l) for l in range(read.n_mlp)] + ([read.scale_hook] if
                                                                                    read.scale_hook else [])
        _, cache = model.run_with_cache(tokens, names_filter=lambda name: name in names, return_type=None)
        parts = residual_sources(model, cache, words, pos, read.n_attn, read.n_mlp)
        stack = torch.stack(list(parts.values()))  # [source, d_model]
        if read.scale_hook is not None:  # hook_normalized: (x - mean) / scale, before the norm's weight
            stack = frozen_norm(stack, cache[read.scale_hook][0, pos], None, model.cfg.norm == "layernorm")
        contributions = stack.to(key.dtype) @ key  # [source]
        constant = dictionary.b_enc.detach()[index] - dictionary.pre_bias.detach() @ key
    out = {label: float(v) for label, v in zip(parts, contributions)}
    out["biases"] += float(constant)
    return out


# ============================================================ the dashboard
@dataclass
class Context:
    """One (text, position) where the feature fires."""

    text: str
    tokens: list[str]
    pos: int
    activation: float
    activations: list[float]  # [pos]: the feature at every token of the text

    @property
    def token(self) -> str:
        return self.tokens[self.pos]

    def marked(self) -> str:
        """The tokens with the one at `pos` in brackets: "Michael [Jordan] plays the sport of"."""
        return " ".join(f"[{t}]" if p == self.pos else t for p, t in enumerate(self.tokens))


@dataclass
class FeatureDashboard(Viewable):
    """One unit's dashboard: a dictionary's feature (unit "feature", label "L1F134") or an MLP
    neuron (unit "neuron", label "L1N7", from `probes.ffn.neuron_dashboard`). `show()` /
    `save_html(path)` / inline in Jupyter: the interactive view (kind "dashboard");
    `plot_dashboard` draws the same as a PNG."""

    layer: Optional[int]
    index: int
    hook: str  # where the activations are read: the dictionary's in_hook, or the neuron's mlp.hook_post
    top_examples: list[Context]  # highest activation first; only where the feature fires
    value_top: list[tuple[str, float]]  # tokens the value promotes most, logit per unit activation
    value_bottom: list[tuple[str, float]]  # ... and suppresses most (most negative first)
    key_sources: Optional[dict[str, float]]  # at the top example; None: it never fires, or no decomposition
    key_pre_activation: Optional[float]  # the dictionary's pre-activation there (what key_sources sum to)
    histogram: dict[str, list]  # "counts" [bins], "edges" [bins + 1] of the nonzero activations
    frequency: float  # fraction of the tokens where the feature fires
    n_tokens: int
    n_texts: int
    notes: list[str] = field(default_factory=list)
    unit: str = "feature"  # "feature" or "neuron"

    @property
    def label(self) -> str:
        letter = "N" if self.unit == "neuron" else "F"
        return f"{letter}{self.index}" if self.layer is None else f"L{self.layer}{letter}{self.index}"

    @property
    def max_activation(self) -> float:
        return self.top_examples[0].activation if self.top_examples else 0.0

    def to_dict(self) -> dict:
        out = asdict(self)
        out["top_examples"] = [asdict(c) | {"token": c.token} for c in self.top_examples]
        return {"label": self.label, "max_activation": self.max_activation, **out}

    def to_view(self) -> View:
        """The interactive dashboard (kind "dashboard", drawn by interp/views/static/dashboard.js)."""
        contexts = [{"text": c.text, "tokens": c.tokens, "pos": c.pos, "activation": c.activation,
                     "activations": c.activations} for c in self.top_examples]
        data = {"unit": self.unit, "label": self.label, "layer": self.layer, "index": self.index, "hook": self.hook,
                "frequency": self.frequency, "max_activation": self.max_activation, "n_tokens": self.n_tokens,
                "n_texts": self.n_texts, "contexts": contexts,
                "value_top": [[t, v] for t, v in self.value_top], "value_bottom": [[t, v] for t, v in self.value_bottom],
                # pairs, not an object: the sources keep their order (tokens by position, then the rest)
                "key_sources": None if self.key_sources is None else [[s, v] for s, v in self.key_sources.items()],
                "key_pre_activation": self.key_pre_activation, "histogram": self.histogram}
        return View("dashboard", data, notes=list(self.notes))


class UnitActivations(NamedTuple):
    """One unit (feature or neuron) over every token of some texts."""

    examples: list[Context]  # the k top contexts, highest first, only where it fires (> 0)
    histogram: dict[str, list]  # of the activations > 0 (see `_histogram`)
    frequency: float  # fraction of the tokens where it fires
    n_tokens: int


def unit_activations(model: Transformer, texts: list[str], batches: Iterable[tuple[torch.Tensor, torch.Tensor, torch.Tensor]],
                     k: int, bins: int) -> UnitActivations:
    """Summarise one unit from `batches` of (tokens [batch, pos], real [batch, pos] (not padding,
    real tokens first), activations [batch, pos]) covering `texts` in order: top contexts,
    histogram and frequency, as every dashboard shows them."""
    rows, nonzero, n_tokens = [], [], 0
    for tokens, real, acts in batches:
        acts = acts.clone()  # [batch, pos]: not a view that would keep every unit alive
        n_tokens += int(real.sum())
        nonzero.append(acts[(acts > 0) & real])
        for b in range(acts.shape[0]):
            n = int(real[b].sum())
            rows.append((tokens[b, :n], acts[b, :n]))
    fired = torch.cat(nonzero)
    return UnitActivations(_top_contexts(model, texts, rows, k), _histogram(fired, bins), fired.numel() / n_tokens,
                           n_tokens)


def feature_dashboard(model: Transformer, dictionary: SparseDictionary, index: int, texts: Union[str, Sequence[str]], *,
                      k: int = 10, bins: int = 40, batch_size: int = 512, progress: bool = True) -> FeatureDashboard:
    """Feature `index` over every token of `texts` (see the module docstring): the k top
    contexts, the k tokens its value promotes and suppresses most, its key by source at the
    top context, a histogram of its nonzero activations in `bins` bins, and how often it fires.
    Activations are computed in batches of `batch_size` texts, with a progress bar unless
    progress=False."""
    index = check_feature(dictionary, index)
    texts = check_texts(texts)
    batches = ((b.tokens, b.real, b.acts[..., index]) for b in
               activation_batches(model, dictionary, texts, batch_size=batch_size, progress=progress,
                                  desc=f"feature {index}"))
    summary = unit_activations(model, texts, batches, k, bins)
    notes = []
    examples = summary.examples
    key_sources = key_pre = None
    if examples:
        try:
            key_sources = feature_key_sources(model, dictionary, index, examples[0].text, examples[0].pos)
            key_pre = _pre_activation(model, dictionary, index, examples[0].text, examples[0].pos)
        except ValueError as e:
            notes.append(f"no key sources: {e}")
    else:
        notes.append("the feature never fires on these texts")
    try:
        value_top, value_bottom = ranked_tokens(model, feature_value_logits(model, dictionary)[index], k)
    except ValueError as e:
        value_top, value_bottom = [], []
        notes.append(f"no value logits: {e}")
    return FeatureDashboard(dictionary_layer(dictionary), index, dictionary.in_hook, examples, value_top, value_bottom,
                            key_sources, key_pre, summary.histogram, summary.frequency, summary.n_tokens, len(texts),
                            notes)


def _top_contexts(model: Transformer, texts: list[str], rows: list[tuple[torch.Tensor, torch.Tensor]], k: int) -> list[Context]:
    """The k (text, position) pairs with the highest positive activation; ties: earlier first.
    rows: per text, its tokens [pos] and the feature's activations [pos]."""
    text_of = torch.cat([torch.full((len(a),), i, device=a.device) for i, (_, a) in enumerate(rows)])  # [all tokens]
    pos_of = torch.cat([torch.arange(len(a), device=a.device) for _, a in rows])
    acts = torch.cat([a for _, a in rows])
    order = acts.sort(descending=True, stable=True).indices[:k]
    out = []
    for j in order.tolist():
        if acts[j] <= 0:
            break
        tokens, row = rows[int(text_of[j])]
        out.append(Context(texts[int(text_of[j])], [token_text(model, int(t)) for t in tokens], int(pos_of[j]),
                           float(acts[j]), row.tolist()))
    return out


def _pre_activation(model: Transformer, dictionary: SparseDictionary, index: int, prompt: Prompt, pos: int) -> float:
    """The dictionary's pre-activation of feature `index` at `pos` of one prompt, from its own run."""
    with torch.no_grad():
        _, cache = model.run_with_cache(one_prompt(model, prompt)[None], names_filter=[dictionary.in_hook],
                                        return_type=None)
        return float(dictionary.pre_acts(cache[dictionary.in_hook][0, pos].to(dictionary.W_enc.dtype))[index])


def _histogram(values: torch.Tensor, bins: int) -> dict[str, list]:
    """Counts [bins] over edges [bins + 1] from 0 to the largest value."""
    if bins < 1:
        raise ValueError(f"bins must be >= 1, got {bins}")
    top = float(values.max()) if values.numel() else 1.0
    counts, edges = np.histogram(values.double().numpy(), bins=bins, range=(0.0, top))
    return {"counts": counts.tolist(), "edges": edges.tolist()}


# ============================================================ every feature at once
@dataclass
class FeatureRow:
    index: int
    frequency: float  # fraction of the tokens where it fires
    max_activation: float
    text: str  # the context of the largest activation
    pos: int
    token: str
    promotes: str  # the token its value promotes most
    promotes_logit: float

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class FeatureTable:
    hook: str
    layer: Optional[int]
    n_features: int
    n_texts: int
    n_tokens: int
    rows: list[FeatureRow]  # live features (firing at least once), by index

    @property
    def n_dead(self) -> int:
        return self.n_features - len(self.rows)

    def to_dict(self) -> dict:
        return {**{k: v for k, v in asdict(self).items() if k != "rows"}, "n_live": len(self.rows),
                "n_dead": self.n_dead, "features": [r.to_dict() for r in self.rows]}


@dataclass
class TableScan:
    """Per feature, over the batches scanned so far: how often it fires, its largest activation
    and where it is (the first, on ties): text index, position, token id (-1: never fires). On the
    CPU. Scans of consecutive parts of a corpus merge in order (`merge`) into the whole's scan."""

    fires: torch.Tensor  # [n_features] long
    best: torch.Tensor  # [n_features] (the dictionary's dtype)
    best_text: torch.Tensor  # [n_features] long
    best_pos: torch.Tensor  # [n_features] long
    best_token: torch.Tensor  # [n_features] long
    n_tokens: int = 0

    @classmethod
    def empty(cls, n_features: int, dtype: torch.dtype) -> "TableScan":
        return cls(torch.zeros(n_features, dtype=torch.long), torch.zeros(n_features, dtype=dtype),
                   *(torch.full((n_features,), -1, dtype=torch.long) for _ in range(3)))

    def add(self, batch: Batch, offset: int = 0) -> None:
        """Scan one batch (its texts start at `offset` + batch.start of the corpus)."""
        self.n_tokens += int(batch.real.sum())
        self.fires += (batch.acts > 0).sum((0, 1)).cpu()
        top, where = batch.acts.flatten(0, 1).max(0)  # [n_features]: first largest, so earlier texts win ties
        width = batch.tokens.shape[1]
        top, where = top.cpu(), where.cpu()
        self._keep(top, offset + batch.start + where // width, where % width, batch.tokens.flatten().cpu()[where])

    def merge(self, later: "TableScan") -> None:
        """Add the scan of the texts that come after this one's."""
        self.n_tokens += later.n_tokens
        self.fires += later.fires
        self._keep(later.best, later.best_text, later.best_pos, later.best_token)

    def _keep(self, top: torch.Tensor, text: torch.Tensor, pos: torch.Tensor, token: torch.Tensor) -> None:
        better = top > self.best  # strictly: the earlier place keeps a tie
        self.best = torch.where(better, top, self.best)
        self.best_text = torch.where(better, text, self.best_text)
        self.best_pos = torch.where(better, pos, self.best_pos)
        self.best_token = torch.where(better, token, self.best_token)

    def to_json(self) -> dict:
        """Exact: the activations as Python floats (float64 holds every float32 / bfloat16 / float16)."""
        return {"fires": self.fires.tolist(), "best": self.best.double().tolist(), "dtype": str(self.best.dtype),
                "best_text": self.best_text.tolist(), "best_pos": self.best_pos.tolist(),
                "best_token": self.best_token.tolist(), "n_tokens": self.n_tokens}

    @classmethod
    def from_json(cls, d: dict) -> "TableScan":
        dtype = getattr(torch, d["dtype"].removeprefix("torch."))
        return cls(torch.tensor(d["fires"], dtype=torch.long), torch.tensor(d["best"], dtype=torch.float64).to(dtype),
                   *(torch.tensor(d[k], dtype=torch.long) for k in ("best_text", "best_pos", "best_token")),
                   n_tokens=d["n_tokens"])


def feature_table(model: Transformer, dictionary: SparseDictionary, texts: Union[str, Sequence[str]], *, batch_size: int = 512,
                  progress: bool = True) -> FeatureTable:
    """Every feature of the dictionary over every token of `texts`, streamed: how often it
    fires, its largest activation and where, and the token its value promotes most."""
    texts = check_texts(texts)
    scan = TableScan.empty(dictionary.cfg.n_features, dictionary.W_enc.dtype)
    for batch in activation_batches(model, dictionary, texts, batch_size=batch_size, progress=progress,
                                    desc="features"):
        scan.add(batch)
    return table_of_scan(model, dictionary, texts, scan)


def table_of_scan(model: Transformer, dictionary: SparseDictionary, texts: Sequence[str], scan: TableScan) -> FeatureTable:
    """The `FeatureTable` of a scan of `texts`: its live features, with the token each one's value promotes most."""
    n = dictionary.cfg.n_features
    try:
        value = feature_value_logits(model, dictionary).max(-1)
        promotes = [(token_text(model, int(i)), float(v)) for v, i in zip(value.values, value.indices)]
    except ValueError:
        promotes = [("", float("nan"))] * n
    rows = [FeatureRow(f, int(scan.fires[f]) / scan.n_tokens, float(scan.best[f]), texts[int(scan.best_text[f])],
                       int(scan.best_pos[f]), token_text(model, int(scan.best_token[f])), *promotes[f])
            for f in range(n) if scan.fires[f] > 0]
    return FeatureTable(dictionary.in_hook, dictionary_layer(dictionary), n, len(texts), scan.n_tokens, rows)


# ============================================================ the figure
def plot_dashboard(dash: FeatureDashboard, path: Union[str, Path], n_sources: int = 12) -> Path:
    """A PNG of the dashboard: the top examples (each token shaded by the feature's activation,
    the maximum boxed), the value's promoted / suppressed tokens, the key by source at the top
    example, and the histogram of nonzero activations. Returns the file written."""
    from matplotlib.figure import Figure

    from interp import plot

    n_rows = max(len(dash.top_examples), 1)
    fig = Figure(figsize=(15, 4.2 + 0.32 * n_rows), layout="constrained")
    grid = fig.add_gridspec(2, 3, height_ratios=[0.32 * n_rows + 0.6, 3.6])
    _draw_examples(fig.add_subplot(grid[0, :]), dash)
    ax_value, ax_key, ax_hist = (fig.add_subplot(grid[1, i]) for i in range(3))
    values = dash.value_top + dash.value_bottom
    if values:
        plot.top_k_bar([v for _, v in values], [t for t, _ in values], k=len(values), by_abs=False, ax=ax_value,
                       title="value: logits per unit activation", xlabel="logit (final-norm scale 1)")
    else:
        _empty(ax_value, "no value logits")
    if dash.key_sources:
        plot.top_k_bar(list(dash.key_sources.values()), list(dash.key_sources), k=n_sources, ax=ax_key,
                       title=f"key at the top example ({dash.key_pre_activation:.3g}) by source",
                       xlabel="contribution to the pre-activation")
    else:
        _empty(ax_key, "no key sources")
    edges, counts = np.asarray(dash.histogram["edges"]), np.asarray(dash.histogram["counts"])
    ax_hist.stairs(counts, edges, fill=True, color=plot.POSITIVE_COLOR)
    ax_hist.set_title(f"nonzero activations: fires on {dash.frequency:.2%} of {dash.n_tokens} tokens")
    ax_hist.set_xlabel("activation")
    ax_hist.set_ylabel("tokens")
    fig.suptitle(f"{dash.unit} {dash.label} ({dash.hook})")
    return plot.save(fig, path, formats=("png",))[0]


def _empty(ax, message: str) -> None:
    ax.text(0.5, 0.5, message, ha="center", va="center", transform=ax.transAxes)
    ax.set_axis_off()


def _draw_examples(ax, dash: FeatureDashboard, width: int = 14, cell_chars: int = 11) -> None:
    """One row per top example: up to `width` tokens ending 3 after the top token, each a cell
    shaded by its activation / the feature's maximum, the top token boxed and bold."""
    from matplotlib import colormaps
    from matplotlib.patches import Rectangle

    if not dash.top_examples:
        _empty(ax, f"the {dash.unit} never fires on these texts")
        return
    cmap, top, used = colormaps["Blues"], dash.max_activation, 1
    for r, c in enumerate(dash.top_examples):
        first = max(0, min(c.pos + 4, len(c.tokens)) - width)
        shown = range(first, min(first + width, len(c.tokens)))
        used = max(used, len(shown))
        for col, p in enumerate(shown):
            shade = max(c.activations[p], 0.0) / top
            ax.add_patch(Rectangle((col, r), 1, 1, facecolor=cmap(0.85 * shade), edgecolor="black" if p == c.pos else
                                   "0.85", linewidth=1.6 if p == c.pos else 0.5, zorder=2 if p == c.pos else 1))
            word = c.tokens[p] if len(c.tokens[p]) <= cell_chars else c.tokens[p][: cell_chars - 1] + "…"
            ax.text(col + 0.5, r + 0.5, word, ha="center", va="center", fontsize=7, zorder=3,
                    color="white" if shade > 0.6 else "black", fontweight="bold" if p == c.pos else "normal")
    ax.set_xlim(0, used)
    ax.set_ylim(len(dash.top_examples), 0)
    ax.set_yticks([r + 0.5 for r in range(len(dash.top_examples))],
                  [f"{c.activation:.3g}" for c in dash.top_examples])
    ax.set_xticks([])
    ax.set_ylabel("activation")
    ax.set_title(f"top {len(dash.top_examples)} contexts (shade: activation / max {top:.3g}; box: the top token)")


__all__ = ["check_feature", "check_texts", "dictionary_layer", "Batch", "activation_batches", "feature_value_logits",
           "feature_key_sources", "Context", "FeatureDashboard", "UnitActivations", "unit_activations",
           "feature_dashboard",
           "FeatureRow", "FeatureTable", "TableScan", "feature_table", "table_of_scan", "plot_dashboard"]
