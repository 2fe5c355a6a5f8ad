"""Build the attribution graph of one prompt over transcoders (circuit-tracer's method).

    tcs = load_transcoders("factworld")               # per-layer transcoders, or a cross-layer one:
    graph = attribution_graph(model, "Michael Jordan plays the sport of", tcs)   # load_clt("factworld")
    graph.adjacency[graph.target_node(0)]           # direct effects on the top logit
    target = logit_difference_target(model, "basketball", "football", prompt=...)
    graph = attribution_graph(model, prompt, tcs, targets=[target])

How (see probes.graph.replacement for the frozen local replacement model):
  1. One forward pass of `batch_size` copies of the prompt through the replacement model gives
     the feature activations (active = nonzero), pre-activations, errors (MLP output minus its
     reconstruction), token embeddings, and the differentiable graph of the frozen model.
  2. Targets: the logit targets (below) and the active features, one row of the adjacency each.
     A backward pass handles `batch_size` rows at once, row b's direction injected in copy b: a
     logit target's vector at the final residual stream after ln_final (last position), a feature
     (l, p, f)'s encoder column `W_enc[l][:, f]` at encoder l's input at position p (so it flows
     back through the frozen ln2 into the residual stream).
  3. From the gradients g_l at each MLP output and g_emb at the token embeddings:
        A[t, feature (l, p, f)] = a * sum_{l' >= l} `W_dec[l -> l'][f]` . g_l'[p]
        A[t, error (l, p)]      = e[l, p] . g_l[p]
        A[t, token p]           = embed[p] . g_emb[p]    (W_E[token], times any embedding scale)
     (a per-layer transcoder's features write only to their own layer, l' = l; a cross-layer
     transcoder's to every later MLP: one code path, `probes.sae.clt.as_cross_layer`). Positions
     before `zero_positions` (BOS) have no feature nodes and zero error vectors: what their MLPs
     write is part of the constants, as are biases and position embeddings.
`values` are each feature's pre-activation (b_enc included) and each target's value (its vector
applied to ln_final's output at the last position), NaN for errors and tokens; so
`graph.constants` (values minus row sums) is the part no node explains.

Logit targets (`targets=`):
  * None: circuit-tracer's choice: the most probable next tokens until their cumulative
    probability reaches `desired_logit_prob`, at most `max_n_logits`; probabilities are the
    model's, not renormalised. Each vector is W_U[:, v] - W_U.mean(1) (the demeaned logit:
    logit_v - mean(logits), b_U excluded).
  * a list of words (read with interp.words.answer_token: a word gets its leading space) or token
    ids (same vector, prob = the model's probability), and/or `Target` objects (their vector used
    as given; see `logit_difference_target`).

`max_feature_nodes`: if set and below the number of active features, only that many features
get rows, chosen greedily as circuit-tracer does: the target rows first, then repeatedly the
unvisited features of highest influence on the targets through the rows computed so far
(weights: the targets' probabilities, or 1 each if they are all 0), `update_interval` x
`batch_size` at a time (circuit-tracer's default schedule: 4 backward passes per ranking; the
batch size asked for, also when a memory bound lowers the rows per pass, so that a bound changes
which features are chosen only by how many). Only
the chosen features are nodes; the other active features' columns are dropped, so their direct
effects are neither edges nor errors: they move into `constants`.

The adjacency is in the model's dtype (float64 for a double model: exact to rounding), on the CPU.
"""

from __future__ import annotations

import math
import time
import warnings
from dataclasses import asdict
from typing import Optional, Sequence, Union

import torch
from einops import einsum

from interp.progress import progress_bar
from interp.words import answer_token
from models import Transformer
from probes.graph.graph import AttributionGraph, Target
from probes.graph.memory import MemoryPlan, memory_limit, plan_memory, saved_bytes
from probes.graph.replacement import ReplacementRun, check_replacement, frozen_parameters, replacement_forward
from probes.sae.clt.model import CrossLayerTranscoder, Layered
from probes.sae.dictionary import SparseDictionary

TargetSpec = Union[str, int, Target]


# ============================================================ targets
def _token_label(model: Transformer, token: int) -> str:
    return model.tokenizer.token_str(token) if model.tokenizer is not None else str(token)


def demeaned_unembedding(model: Transformer, token: int) -> torch.Tensor:
    """[d_model] W_U[:, token] - W_U.mean(1): the direction whose product with ln_final's output is
    logit_token - mean(logits) (b_U excluded)."""
    W_U = model.W_U.detach()
    return W_U[:, token] - W_U.mean(1)


def logit_difference_target(model: Transformer, answer: Union[str, int], counterfactual: Union[str, int], *,
                            prompt: Optional[Union[str, torch.Tensor]] = None) -> Target:
    """A custom target: logit(answer) - logit(counterfactual), i.e. vector W_U[:, a] - W_U[:, b]
    applied to ln_final's output at the last position (the difference of the b_U entries is a
    constant left out). Its `prob` (its weight in influence and pruning) is 0, unless `prompt`
    is given: then the model's probability of the answer after the prompt."""
    a, b = answer_token(model, answer), answer_token(model, counterfactual)
    if a == b:
        raise ValueError(f"answer {answer!r} and counterfactual {counterfactual!r} are the same token ({a})")
    prob = 0.0
    if prompt is not None:
        with torch.no_grad():
            logits = model(_prompt_tokens(model, prompt)[None])[0, -1]
        prob = float(logits.double().softmax(-1)[a])
    W_U = model.W_U.detach()
    return Target(label=f"{_token_label(model, a)} - {_token_label(model, b)}", token=None, prob=prob,
                  vector=(W_U[:, a] - W_U[:, b]).clone())


def _explicit_targets(model: Transformer, targets) -> list[Union[int, Target]]:
    """Token ids and Target objects, checked (before any forward pass)."""
    if isinstance(targets, (str, int, Target)) or (isinstance(targets, torch.Tensor) and targets.dim() == 0):
        targets = [targets]
    if isinstance(targets, torch.Tensor):
        targets = targets.tolist()
    if not isinstance(targets, (list, tuple)) or len(targets) == 0:
        raise ValueError("targets must be None (automatic), or a non-empty list of words, token ids and Target "
                         f"objects; got {targets!r}")
    out: list[Union[int, Target]] = []
    d = model.cfg.d_model
    for i, t in enumerate(targets):
        if isinstance(t, Target):
            v = t.vector
            if not isinstance(v, torch.Tensor) or v.shape != (d,) or not bool(torch.isfinite(v).all()):
                raise ValueError(f"targets[{i}] ({t.label!r}): vector must be a finite tensor [d_model={d}], got "
                                 f"{tuple(v.shape) if isinstance(v, torch.Tensor) else type(v).__name__}")
            if not 0.0 <= float(t.prob) <= 1.0:
                raise ValueError(f"targets[{i}] ({t.label!r}): prob must be in [0, 1], got {t.prob}")
            out.append(t)
        elif isinstance(t, (str, int)) and not isinstance(t, bool):
            out.append(answer_token(model, t))
        else:
            raise TypeError(f"targets[{i}] is a {type(t).__name__}: give words, token ids or Target objects")
    ids = [t for t in out if isinstance(t, int)]
    if len(set(ids)) != len(ids):
        dup = sorted({t for t in ids if ids.count(t) > 1})
        raise ValueError(f"targets name token(s) {dup} more than once")
    return out


def _salient_tokens(probs: torch.Tensor, max_n_logits: int, desired_logit_prob: float) -> list[int]:
    """circuit-tracer's auto choice: the top tokens until cumulative prob >= desired, at most max_n_logits."""
    top_p, top_i = probs.topk(min(max_n_logits, probs.numel()))
    cutoff = int(torch.searchsorted(top_p.cumsum(0), torch.tensor(desired_logit_prob, dtype=top_p.dtype,
                                                                      device=top_p.device))) + 1
    return top_i[: min(cutoff, top_p.numel())].tolist()


def _finish_targets(model: Transformer, run: ReplacementRun, specs, max_n_logits: int,
                    desired_logit_prob: float) -> list[Target]:
    probs = run.logits[-1].double().softmax(-1)
    if specs is None:
        specs = _salient_tokens(probs, max_n_logits, desired_logit_prob)
    dtype, device = model.W_E.dtype, model.device
    out = []
    for t in specs:
        if isinstance(t, Target):
            out.append(Target(t.label, t.token, float(t.prob), t.vector.detach().to(device=device, dtype=dtype)))
        else:
            out.append(Target(_token_label(model, t), t, float(probs[t]), demeaned_unembedding(model, t).to(dtype)))
    return out


# ============================================================ input checks
def _prompt_tokens(model: Transformer, prompt) -> torch.Tensor:
    """[pos] token ids of a text (BOS prepended as the model does) or of ids [pos] / [1, pos]."""
    if isinstance(prompt, str):
        if not prompt:
            raise ValueError("the prompt is empty")
        return model.to_tokens(prompt)[0]
    if isinstance(prompt, torch.Tensor):
        ids = prompt[0] if prompt.dim() == 2 and prompt.shape[0] == 1 else prompt
        if ids.dim() != 1 or ids.numel() == 0 or ids.dtype not in (torch.long, torch.int32, torch.int64):
            raise ValueError(f"a prompt given as token ids must be an integer tensor [pos] or [1, pos], got "
                             f"{tuple(prompt.shape)} {prompt.dtype}")
        if ids.min() < 0 or ids.max() >= model.cfg.d_vocab:
            raise ValueError(f"token ids must be in [0, {model.cfg.d_vocab}); got [{int(ids.min())}, {int(ids.max())}]")
        return ids.long().to(model.device)
    raise TypeError(f"prompt must be a string or token ids, got {type(prompt).__name__}")


def _check_int(value, name: str, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    return value


# ============================================================ rows of the adjacency
class _Rows:
    """Computes adjacency rows (over the columns [active features | errors | tokens]) by batched
    backward passes through one replacement run."""

    def __init__(self, run: ReplacementRun, layers: Layered, feats: torch.Tensor, zero_positions: int,
                 keep_decoders: bool = True) -> None:
        self.run, self.layers, self.feats = run, layers, feats
        dtype = run.embed.dtype
        self.n_layers, self.n_pos = layers.n_layers, run.embed.shape[1]
        # Output vectors: activation x decoder rows per active feature, errors (zeroed before
        # zero_positions), token embeddings.
        self.layer_idx = [(feats[:, 0] == l).nonzero().flatten() for l in range(self.n_layers)]
        # Per (layer, position): which columns, which features, their activations, and (kept, or
        # gathered anew in each backward pass when `keep_decoders` is False, to save memory) their
        # decoder rows to the layers l, l + 1, ... they write [n_out, n_lp, d_model] (n_out = 1
        # for a per-layer transcoder).
        self.decoders = [layers.decoders(l).detach().to(dtype) for l in range(self.n_layers)]
        self.groups: list[tuple[int, int, torch.Tensor, torch.Tensor, torch.Tensor]] = []
        self.kept: list[torch.Tensor] = []
        for l, idx in enumerate(self.layer_idx):
            for p in feats[idx, 1].unique().tolist():
                cols = idx[feats[idx, 1] == p]
                f = feats[cols, 2]
                self.groups.append((l, p, cols, f, run.activations[l][p, f]))
                if keep_decoders:
                    self.kept.append(self.decoders[l][:, f])
        self.errors = torch.stack(run.errors).clone()  # [layer, pos, d_model]
        self.errors[:, :zero_positions] = 0
        self.embed = run.embed[0].detach()  # [pos, d_model]
        self.batch = run.embed.shape[0]

    @property
    def n_cols(self) -> int:
        return self.feats.shape[0] + (self.n_layers + 1) * self.n_pos

    def compute(self, specs: list) -> torch.Tensor:
        """[len(specs), n_cols] rows; a spec is ("target", vector [d_model]) or ("feature", l, p, f)."""
        run, B = self.run, self.batch
        if not 0 < len(specs) <= B:
            raise AssertionError(len(specs))
        dtype = run.embed.dtype
        objective = torch.zeros((), dtype=dtype, device=run.embed.device)
        final_inject = torch.zeros(B, run.final.shape[-1], dtype=dtype, device=run.embed.device)
        layer_inject: dict[int, torch.Tensor] = {}
        target_rows = [b for b, spec in enumerate(specs) if spec[0] == "target"]
        if target_rows:
            final_inject[target_rows] = torch.stack([specs[b][1] for b in target_rows]).to(final_inject)
        features = [(b, *spec[1:]) for b, spec in enumerate(specs) if spec[0] != "target"]
        if features:  # one indexed write per layer: row b gets W_enc[:, f] at position p
            rows_lpf = torch.tensor(features, device=run.embed.device)  # [n, 4]: batch row, layer, pos, feature
            for l in rows_lpf[:, 1].unique().tolist():
                b, p, f = rows_lpf[rows_lpf[:, 1] == l][:, [0, 2, 3]].unbind(1)
                inject = torch.zeros_like(run.x_in[l])
                inject[b, p] = self.layers.encoder(l).detach()[:, f].T.to(dtype)
                layer_inject[l] = inject
        if any(s[0] == "target" for s in specs):
            objective = objective + (run.final[:, -1] * final_inject).sum()
        for l, inject in layer_inject.items():
            objective = objective + (run.x_in[l] * inject).sum()
        inputs = [run.embed] + run.mlp_out
        grads = torch.autograd.grad(objective, inputs, retain_graph=True, allow_unused=True)
        grads = [torch.zeros_like(x) if g is None else g for x, g in zip(inputs, grads)]
        g_emb, g_mlp = grads[0], grads[1:]
        g_all = torch.stack(g_mlp)  # [layer, batch, pos, d_model]
        feat_cols = torch.zeros(B, self.feats.shape[0], dtype=dtype, device=run.embed.device)
        for i, (l, p, cols, f, a) in enumerate(self.groups):  # one product per (layer, position)
            decoders = self.kept[i] if self.kept else self.decoders[l][:, f]
            written = g_all[l: l + decoders.shape[0], :, p]  # the gradients at the MLPs it writes
            feat_cols[:, cols] = einsum(written, decoders, "out batch d, out n d -> batch n") * a
        err_cols = einsum(g_all, self.errors, "layer batch pos d, layer pos d -> batch layer pos")
        tok_cols = einsum(g_emb, self.embed, "batch pos d, pos d -> batch pos")
        rows = torch.cat([feat_cols, err_cols.flatten(1), tok_cols], dim=1)  # "batch layer pos -> batch (layer pos)"
        return rows[: len(specs)].detach().cpu()


def _normalised(rows: torch.Tensor) -> torch.Tensor:
    """[k, n_cols] |rows| divided by each row's absolute sum (circuit-tracer's row normalisation)."""
    norm = rows.abs()
    return norm.div_(norm.sum(1, keepdim=True).clamp_min(1e-10))


def _partial_influence(norm: torch.Tensor, row_cols: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """[n_cols] influence of each column on the weighted target rows through the rows known so far
    (circuit-tracer's compute_partial_influences): norm [k, n_cols] the rows `_normalised`;
    row_cols [k] the column of each row's own node (-1 for targets); weights [k]."""
    has_col = row_cols >= 0
    current, total = weights.clone(), torch.zeros(norm.shape[1], dtype=norm.dtype, device=norm.device)
    for _ in range(128):
        if not bool((current > 1e-8).any()):
            break
        spread = current @ norm
        total += spread
        current = torch.zeros_like(current)
        current[has_col] = spread[row_cols[has_col]]
    return total


# ============================================================ the graph
def attribution_graph(model: Transformer, prompt: Union[str, torch.Tensor],
                      transcoders: Union[Sequence[SparseDictionary], CrossLayerTranscoder], *,
                      targets: Optional[Union[Sequence[TargetSpec], TargetSpec]] = None, max_n_logits: int = 10,
                      desired_logit_prob: float = 0.95, max_feature_nodes: Optional[int] = None, batch_size: int = 64,
                      zero_positions: int = 1, update_interval: int = 4, max_memory_mb: Optional[float] = None,
                      progress: bool = True) -> AttributionGraph:
    """The attribution graph of `prompt` (text or token ids [pos]) over `transcoders` (one per
    layer, or a `CrossLayerTranscoder`); see the module docstring. The model is left as it was
    (no hooks, same requires_grad).

    `max_memory_mb` bounds what the build allocates beyond the weights (probes.graph.memory):
    the batch size is lowered first, then the number of feature nodes (chosen by influence, as
    with `max_feature_nodes`; a warning says so and `graph.settings["memory_plan"]` records it)."""
    started = time.perf_counter()
    tokens = _prompt_tokens(model, prompt)
    layers = check_replacement(model, transcoders)
    batch_size = _check_int(batch_size, "batch_size", 1)
    update_interval = _check_int(update_interval, "update_interval", 1)
    max_n_logits = _check_int(max_n_logits, "max_n_logits", 1)
    if max_feature_nodes is not None:
        _check_int(max_feature_nodes, "max_feature_nodes", 0)
    if isinstance(desired_logit_prob, bool) or not isinstance(desired_logit_prob, (int, float)) or not (
            0 < desired_logit_prob <= 1):
        raise ValueError(f"desired_logit_prob must be a number in (0, 1], got {desired_logit_prob!r}")
    n_pos = int(tokens.shape[0])
    if isinstance(zero_positions, bool) or not isinstance(zero_positions, int) or not 0 <= zero_positions < n_pos:
        raise ValueError(f"zero_positions must be an integer in [0, {n_pos}) for this {n_pos}-token prompt, got "
                         f"{zero_positions!r}")
    specs = None if targets is None else _explicit_targets(model, targets)
    max_memory_mb = memory_limit(max_memory_mb)

    with torch.enable_grad(), frozen_parameters(model, *layers.torch_modules):
        plan, rows_per_ranking = None, update_interval * batch_size
        if max_memory_mb is not None:
            plan = _memory_plan(model, tokens, layers, specs, max_memory_mb, batch_size=batch_size,
                                max_feature_nodes=max_feature_nodes, zero_positions=zero_positions,
                                max_n_logits=max_n_logits, desired_logit_prob=desired_logit_prob)
            batch_size = plan.batch
            if plan.limited:
                max_feature_nodes = plan.n_rows
        # A backward pass needs no more copies than the most rows one batch can have.
        most_targets = max_n_logits if specs is None else len(specs)
        most_features = sum(layers.n_features(l) for l in range(layers.n_layers)) * (n_pos - zero_positions)
        if max_feature_nodes is not None:
            most_features = min(most_features, max_feature_nodes)
        run = replacement_forward(model, tokens, layers, batch=min(batch_size, max(most_targets, most_features)))
        graph_targets = _finish_targets(model, run, specs, max_n_logits, desired_logit_prob)
        feats = _active_features(run, zero_positions)
        n_active = feats.shape[0]
        n_rows = n_active if max_feature_nodes is None else min(max_feature_nodes, n_active)
        rows = _Rows(run, layers, feats.to(model.device), zero_positions, keep_decoders=plan is None)
        bar = progress_bar(total=len(graph_targets) + n_rows, desc="attribution graph", progress=progress)
        try:
            target_rows = []
            for i in range(0, len(graph_targets), batch_size):
                chunk = [("target", t.vector) for t in graph_targets[i: i + batch_size]]
                target_rows.append(rows.compute(chunk))
                bar.update(len(chunk))
            target_rows = torch.cat(target_rows)
            feature_rows, selected = _feature_rows(rows, feats, n_rows, target_rows, graph_targets, batch_size, bar,
                                                   rows_per_ranking)
        finally:
            bar.close()
        act_all, pre_all = _feature_values(run, feats)
        target_values = torch.stack([t.vector for t in graph_targets]) @ run.final[0, -1].detach()
        del run, rows

    order = selected.argsort()  # feature nodes in ascending (layer, pos, index) order
    selected = selected[order]
    n_layers = layers.n_layers
    # the graph is assembled on the CPU (its size is what the memory bound is about)
    columns = torch.cat([selected, torch.arange(n_active, n_active + (n_layers + 1) * n_pos, device=selected.device)])
    n_sel, n_targets = selected.numel(), len(graph_targets)
    n_nodes = n_sel + (n_layers + 1) * n_pos + n_targets
    dtype = model.W_E.dtype
    adjacency = torch.zeros(n_nodes, n_nodes, dtype=dtype, device="cpu")
    for i in range(0, n_sel, 256):  # gathered a block at a time: no full reordered copy of the rows
        block = order[i: i + 256]
        adjacency[i: i + block.numel(), : columns.numel()] = feature_rows[block][:, columns]
    del feature_rows
    adjacency[n_nodes - n_targets:, : columns.numel()] = target_rows[:, columns]
    values = torch.full((n_nodes,), math.nan, dtype=dtype, device="cpu")
    values[:n_sel] = pre_all[selected]
    values[n_nodes - n_targets:] = target_values.cpu()
    return AttributionGraph(
        prompt=prompt if isinstance(prompt, str) else (model.to_string(tokens) if model.tokenizer is not None else ""),
        token_ids=tokens.cpu(),
        tokens=(model.to_str_tokens(tokens) if model.tokenizer is not None else [str(int(t)) for t in tokens]),
        n_layers=n_layers, features=feats[selected], activations=act_all[selected],
        targets=[Target(t.label, t.token, t.prob, t.vector.detach().cpu()) for t in graph_targets],
        adjacency=adjacency, values=values, zero_positions=zero_positions,
        transcoders=layers.describe(),
        settings=dict(max_n_logits=max_n_logits, desired_logit_prob=desired_logit_prob,
                      max_feature_nodes=max_feature_nodes, batch_size=batch_size, update_interval=update_interval,
                      n_active_features=n_active, max_memory_mb=max_memory_mb,
                      memory_plan=None if plan is None else asdict(plan),
                      dtype=str(dtype).removeprefix("torch."), seconds=round(time.perf_counter() - started, 3)))


def _active_features(run: ReplacementRun, zero_positions: int) -> torch.Tensor:
    """[n_active, 3] (layer, pos, index) of the active (nonzero) features, sorted; none before
    zero_positions (CPU)."""
    found = []
    for l, a in enumerate(run.activations):
        pos, idx = (a[zero_positions:] != 0).nonzero(as_tuple=True)
        found.append(torch.stack([torch.full_like(pos, l), pos + zero_positions, idx], 1))
    return torch.cat(found).cpu()


def _memory_plan(model: Transformer, tokens: torch.Tensor, layers: Layered, specs,
                 max_memory_mb: float, *, batch_size: int, max_feature_nodes: Optional[int], zero_positions: int,
                 max_n_logits: int, desired_logit_prob: float) -> MemoryPlan:
    """probes.graph.memory's plan for this prompt, from forward passes of one and two copies (the
    bytes each saves for backward, the number of active features and of targets)."""
    saved = []
    for copies in (1, 2):
        with saved_bytes() as count:
            probe = replacement_forward(model, tokens, layers, batch=copies)
        saved.append(count[0])
    feats = _active_features(probe, zero_positions)
    n_active = feats.shape[0]
    # Under a bound the decoder rows are gathered one (layer, position) at a time: the most rows held
    # at once are the largest group's, times the layers its features write (one for a per-layer transcoder).
    decoder_rows = max([int(((feats[:, 0] == l) & (feats[:, 1] == p)).sum()) * layers.decoders(l).shape[0]
                        for l, p in feats[:, :2].unique(dim=0).tolist()], default=0)
    n_targets = len(_finish_targets(model, probe, specs, max_n_logits, desired_logit_prob))
    # What the run keeps of copy 0 whatever the batch: activations, pre-activations, errors, skips, logits.
    kept = sum(t.numel() * t.element_size() for field in (probe.activations, probe.pre_acts, probe.errors,
                                                          probe.skips, [probe.logits]) for t in field)
    del probe
    n_rows = n_active if max_feature_nodes is None else min(max_feature_nodes, n_active)
    plan = plan_memory(max_memory_mb, batch_size=batch_size, n_rows=n_rows, n_active=n_active, n_targets=n_targets,
                       n_layers=layers.n_layers, n_pos=int(tokens.shape[0]), d_model=model.cfg.d_model,
                       saved_per_copy=max(saved[1] - saved[0], 0), itemsize=model.W_E.element_size(),
                       decoder_rows=decoder_rows, run_bytes=kept)
    if plan.limited:
        warnings.warn(f"max_memory_mb={max_memory_mb:g}: the graph keeps {plan.n_rows} of the {n_active} active "
                      f"features (chosen by influence) and computes {plan.batch} rows per backward pass",
                      stacklevel=3)
    return plan


def _feature_values(run: ReplacementRun, feats: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """[n_active] activations and pre-activations of the active features (CPU)."""
    acts = torch.zeros(feats.shape[0], dtype=run.embed.dtype, device="cpu")
    pres = torch.zeros_like(acts)
    for l in range(len(run.activations)):
        idx = (feats[:, 0] == l).nonzero().flatten()
        pos, f = feats[idx, 1], feats[idx, 2]
        acts[idx] = run.activations[l].cpu()[pos, f]
        pres[idx] = run.pre_acts[l].cpu()[pos, f]
    return acts, pres


def _feature_rows(rows: _Rows, feats: torch.Tensor, n_rows: int, target_rows: torch.Tensor, targets: list[Target],
                  batch_size: int, bar, rows_per_ranking: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows of `n_rows` active features ([n_rows, n_cols], in the order computed) and which
    features they are ([n_rows] indices into feats): all of them in order, or (n_rows below the
    number of active features) chosen greedily by influence (module docstring). The rows are
    written into one buffer (no concatenated copies; probes.graph.memory counts on it)."""
    n_active, dtype = feats.shape[0], target_rows.dtype
    if n_rows == n_active:
        out = torch.empty(n_active, rows.n_cols, dtype=dtype, device="cpu")  # rows are kept on the CPU
        for i in range(0, n_active, batch_size):
            chunk = torch.arange(i, min(i + batch_size, n_active), device="cpu")
            out[chunk] = rows.compute([("feature", *row) for row in feats[chunk].tolist()])
            bar.update(len(chunk))
        return out, torch.arange(n_active, device="cpu")
    n_t = target_rows.shape[0]
    weights = torch.zeros(n_t + n_rows, dtype=dtype, device="cpu")
    weights[:n_t] = torch.tensor([t.prob for t in targets], dtype=dtype, device="cpu")
    if not bool((weights > 0).any()):
        weights[:n_t] = 1
    known = torch.empty(n_t + n_rows, rows.n_cols, dtype=dtype, device="cpu")  # target rows, then feature rows
    norm = torch.empty_like(known)
    known[:n_t], norm[:n_t] = target_rows, _normalised(target_rows)
    known_cols = torch.full((n_t + n_rows,), -1, device="cpu")
    visited = torch.zeros(n_active, dtype=torch.bool, device="cpu")
    filled = n_t
    while filled < n_t + n_rows:
        influence = _partial_influence(norm[:filled], known_cols[:filled], weights[:filled])[:n_active]
        influence[visited] = -math.inf
        ranked = influence.argsort(descending=True, stable=True)
        chunk = ranked[: min(rows_per_ranking, n_t + n_rows - filled)]
        for i in range(0, len(chunk), batch_size):  # backward passes of batch_size rows per ranking
            part = chunk[i: i + batch_size]
            done = rows.compute([("feature", *row) for row in feats[part].tolist()])
            known[filled: filled + len(part)], norm[filled: filled + len(part)] = done, _normalised(done)
            known_cols[filled: filled + len(part)] = part
            filled += len(part)
            bar.update(len(part))
        visited[chunk] = True
    return known[n_t:], known_cols[n_t:]


__all__ = ["attribution_graph", "logit_difference_target", "demeaned_unembedding"]
