"""The one primitive of circuit analysis: a forward pass on the clean prompts in which chosen
edges carry the corrupted run's value of their upstream node.

A downstream input d reads the residual stream, the sum of what every upstream node u wrote.
Patching the edge u -> d changes only what d reads: resid + (corrupted_u - current_u), where
current_u is what u writes in this run. Every norm's scale is frozen at its value in the clean
run, so a norm is linear in the change and only the reader sees it:

    head h's query:  q_h += (centre(delta) / scale1 * w1) W_Q[h]       (k, v likewise)
    MLP input:       ln2.hook_normalized += centre(delta) / scale2    (before ln2's weight)
    logits:          ln_final.hook_normalized += centre(delta) / scale_final

(centre only for LayerNorm.) Rows of a batch may patch different sets of edges (`masks`), and
a differentiable `extra` change per input gives the metric's gradient at every input at once
(edge attribution patching).
"""

from __future__ import annotations

from functools import partial
from typing import Callable, Optional, Sequence

import torch
from einops import einsum, rearrange

from interp import names as hook_names
from interp.cache import frozen_norm
from interp.circuits.graph import Graph
from interp.metrics import is_positional
from interp.progress import progress_bar
from models import Transformer

Metric = Callable[[torch.Tensor], torch.Tensor]


def scores_many_runs(metric: Metric) -> bool:
    """Whether the metric takes logits with leading dims [..., batch, pos, d_vocab] -> [...]: the
    position metrics of interp.metrics, or any metric that says so (`leading_dims = True`)."""
    return is_positional(metric) or getattr(metric, "leading_dims", False) is True


def row_metric(metric: Metric, logits: torch.Tensor, rows: int) -> torch.Tensor:
    """metric of each row's logits: logits [rows * batch, pos, d_vocab] -> [rows]. Metrics that
    take leading dims (`scores_many_runs`) run once; any other once per row, on [batch, pos, d_vocab]."""
    per_row = logits.reshape(rows, -1, *logits.shape[1:])
    if scores_many_runs(metric):
        return metric(per_row).reshape(rows)
    return torch.stack([torch.as_tensor(metric(per_row[r])).reshape(()) for r in range(rows)])


class EdgeRun:
    """Runs of `model` on `clean` token ids [batch, pos] with edges patched to `corrupted`'s values.

    outputs_clean / outputs_corrupted [U, batch, pos, d_model]: what each upstream node writes;
    clean_logits / corrupted_logits: the two unpatched runs. With clean_pass=False the clean run
    is not made up front: the first `run` (with no edges patched and one row) is the clean run
    and records them (edge attribution patching needs no other: two passes in all).
    """

    def __init__(self, model: Transformer, graph: Graph, clean: torch.Tensor, corrupted: torch.Tensor,
                 clean_pass: bool = True) -> None:
        self.model, self.graph, self.cfg = model, graph, model.cfg
        self.clean, self.corrupted = clean, corrupted
        L = self.cfg.n_layers
        # (layer, "q" | "k" | "v") -> the indices of that layer's query / key / value inputs, by head
        self.head_inputs = {(l, kind): [d for d, i in enumerate(graph.inputs) if i.layer == l and i.kind == kind]
                            for l in range(L) for kind in ("q", "k", "v")}
        self.scale_names = [hook_names.act_name("scale", l, "ln1") for l in range(L)]
        if not self.cfg.attn_only:
            self.scale_names += [hook_names.act_name("scale", l, "ln2") for l in range(L)]
        if self.cfg.final_norm:
            self.scale_names.append(hook_names.act_name("scale"))
        self.scales: Optional[dict[str, torch.Tensor]] = None
        self.outputs_clean: Optional[torch.Tensor] = None
        self.clean_logits: Optional[torch.Tensor] = None
        with torch.no_grad():
            if clean_pass:
                self.clean_logits, cache = model.run_with_cache(clean, names_filter=self.scale_names + self._output_names())
                self.scales = {n: cache[n] for n in self.scale_names}
                self.outputs_clean = self._outputs(cache)
            self.corrupted_logits, cache = model.run_with_cache(corrupted, names_filter=self._output_names())
            self.outputs_corrupted = self._outputs(cache)

    # ------------------------------------------------------------ what the nodes write
    def _output_names(self) -> list[str]:
        names = [hook_names.act_name("resid_pre", 0)]
        for l in range(self.cfg.n_layers):
            names.append(hook_names.act_name("z", l))
            if not self.cfg.attn_only:
                names.append(hook_names.act_name("mlp_out", l))
        return names

    def _head_results(self, z: torch.Tensor, layer: int) -> torch.Tensor:
        """z [batch, pos, head, d_head] -> [head, batch, pos, d_model]."""
        W_O = self.model.get_parameter(hook_names.param_name("attn.W_O", layer))
        return einsum(z, W_O, "b p h k, h k m -> h b p m")

    def _outputs(self, cache) -> torch.Tensor:
        out = [cache[hook_names.act_name("resid_pre", 0)][None]]
        for l in range(self.cfg.n_layers):
            out.append(self._head_results(cache[hook_names.act_name("z", l)], l))
            if not self.cfg.attn_only:
                out.append(cache[hook_names.act_name("mlp_out", l)][None])
        return torch.cat(out)

    # ------------------------------------------------------------ the patched run
    def run(self, masks: Optional[torch.Tensor] = None, *, extra: Optional[torch.Tensor] = None,
            embed: Optional[torch.Tensor] = None, rows: Optional[int] = None) -> torch.Tensor:
        """Logits [rows * batch, pos, d_vocab] of the clean prompts, row r with the edges of
        masks[r] ([rows, U, D] bool) patched to the corrupted values.

        extra [D, batch, pos, d_model]: added to what each input reads, in every row (zeros that
        require grad give the metric's gradient at every input). embed [rows * batch, pos,
        d_model] replaces what `embed` writes (integrated gradients over the inputs).
        """
        if rows is None:
            rows = masks.shape[0] if masks is not None else (embed.shape[0] // self.batch if embed is not None else 1)
        recording = self.scales is None  # this is the clean run: freeze each norm at its own scale, record it
        if recording and (masks is not None or embed is not None or rows != 1):
            raise ValueError("the first run of an EdgeRun made with clean_pass=False must be the clean run: "
                             "no masks, no embed, one row")
        patched = _PatchedPass(self, rows, masks, extra, embed, recording)
        with self.model.hooks(fwd_hooks=patched.hooks()):
            logits = self.model(self.clean.repeat(rows, 1))
        if recording:
            self.scales, self.clean_logits = patched.scales, logits.detach()
            self.outputs_clean = torch.stack([c[0] for c in patched.current]).detach()
        return logits

    @property
    def batch(self) -> int:
        return self.clean.shape[0]

    def metrics(self, patched: Sequence[torch.Tensor], metric: Metric, batch_size: int = 256, *,
                progress: bool = False, desc: str = "patched runs") -> torch.Tensor:
        """metric of one run per edge set in `patched` (each [U, D] bool: the edges that carry the
        corrupted value), rows batched so that rows x prompts <= batch_size sequences per forward
        pass: [len(patched)] float64."""
        out = []
        per_chunk = max(1, batch_size // self.batch)
        for lo in progress_bar(range(0, len(patched), per_chunk), progress, desc=desc):
            masks = torch.stack(list(patched[lo: lo + per_chunk]))
            with torch.no_grad():
                out.append(row_metric(metric, self.run(masks), len(masks)).double().cpu())
        return torch.cat(out) if out else torch.zeros(0, dtype=torch.float64)


class _PatchedPass:
    """The hooks of one patched forward pass of an EdgeRun (`EdgeRun.run`): each writer's output
    is captured as the pass makes it (`current`), and each reader gets what its patched edges
    change, through its norm with the scale frozen at the clean run's value."""

    def __init__(self, run: EdgeRun, rows: int, masks: Optional[torch.Tensor], extra: Optional[torch.Tensor],
                 embed: Optional[torch.Tensor], recording: bool) -> None:
        self.run, self.graph, self.rows = run, run.graph, rows
        self.extra, self.embed, self.recording = extra, embed, recording
        self.scales: dict[str, torch.Tensor] = {} if recording else run.scales
        self.current: list[Optional[torch.Tensor]] = [None] * len(self.graph.upstream)  # [rows, batch, pos, d_model]
        self.centre = run.cfg.norm == "layernorm"
        out = run.outputs_corrupted
        # Only real edges: a mask entry for a writer that is not upstream of the reader is ignored.
        self.maskf = None if masks is None else (masks & self.graph.edges).to(out.device, out.dtype)

    def hooks(self) -> list[tuple[str, Callable]]:
        cfg, g = self.run.cfg, self.graph
        hooks: list[tuple[str, Callable]] = [(n, self.freeze) for n in self.run.scale_names]
        if self.embed is not None:
            hooks.append((hook_names.act_name("resid_pre", 0), self.set_embed))
        hooks.append((hook_names.act_name("resid_pre", 0), self.capture_embed))
        for l in range(cfg.n_layers):
            for kind in ("q", "k", "v"):
                hooks.append((hook_names.act_name(kind, l), partial(self.head_input, l, kind)))
            hooks.append((hook_names.act_name("z", l), partial(self.capture_z, l)))
            if not cfg.attn_only:
                hooks.append((hook_names.act_name("normalized", l, "ln2"),
                              partial(self.residual_input, g._d[f"MLP{l}"], hook_names.act_name("scale", l, "ln2"))))
                hooks.append((hook_names.act_name("mlp_out", l), partial(self.capture_mlp, l)))
        if cfg.final_norm:
            last, scale = hook_names.act_name("normalized"), hook_names.act_name("scale")
        else:
            last, scale = hook_names.act_name("resid_post", cfg.n_layers - 1), None
        hooks.append((last, partial(self.residual_input, g._d["logits"], scale)))
        return hooks

    # ------------------------------------------------------------ what the readers read
    def delta(self, ds: list[int]) -> Optional[torch.Tensor]:
        """What inputs ds read on top of the residual stream: [rows, len(ds), batch, pos, d_model]."""
        out = None
        if self.maskf is not None:
            patched = self.maskf[:, :, ds].any(-1).any(0)  # [U]: writers with a patched edge into ds
            avail = [u for u, c in enumerate(self.current) if c is not None and patched[u]]
            if avail:
                diff = self.run.outputs_corrupted[avail][:, None] - torch.stack([self.current[u] for u in avail])
                out = einsum(self.maskf[:, avail][:, :, ds], diff, "r u d, u r b p m -> r d b p m")
        if self.extra is not None:
            e = self.extra[ds][None].expand(self.rows, *self.extra[ds].shape)
            out = e if out is None else out + e
        return out

    def head_input(self, layer: int, kind: str, x: torch.Tensor, hook) -> Optional[torch.Tensor]:
        """Hook on hook_q / _k / _v of `layer`: each head's input change through ln1 and W_{Q,K,V}."""
        dl = self.delta(self.run.head_inputs[layer, kind])  # [rows, head, batch, pos, d_model]
        if dl is None:
            return None
        model = self.run.model
        W = model.get_parameter(hook_names.param_name(f"attn.W_{kind.upper()}", layer))  # [head, d_model, d_head]
        w = model.get_parameter(hook_names.param_name("ln1.w", layer))
        normed = frozen_norm(dl, self.scales[hook_names.act_name("scale", layer, "ln1")], w, self.centre)
        add = einsum(normed, W, "r h b p m, h m k -> r b p h k")
        return x + rearrange(add, "r b p h k -> (r b) p h k")

    def residual_input(self, d: int, scale_name: Optional[str], x: torch.Tensor, hook) -> Optional[torch.Tensor]:
        """Hook on what input d (an MLP or the logits) reads: its norm's output before the weight
        ((x - mean) / scale), or the residual itself without a norm."""
        dl = self.delta([d])
        if dl is None:
            return None
        add = frozen_norm(dl[:, 0], self.scales[scale_name], None, self.centre) if scale_name else dl[:, 0]
        return x + rearrange(add, "r b p m -> (r b) p m")

    # ------------------------------------------------------------ norms and writers
    def freeze(self, x: torch.Tensor, hook) -> torch.Tensor:
        if self.recording:
            self.scales[hook.name] = x.detach()
        return self.scales[hook.name].repeat(self.rows, 1, 1)

    def by_row(self, x: torch.Tensor) -> torch.Tensor:
        return rearrange(x, "(r b) p m -> r b p m", r=self.rows)

    def set_embed(self, x: torch.Tensor, hook) -> torch.Tensor:
        return self.embed

    def capture_embed(self, x: torch.Tensor, hook) -> None:
        self.current[0] = self.by_row(x)

    def capture_z(self, layer: int, z: torch.Tensor, hook) -> None:
        for h, r in enumerate(self.run._head_results(z, layer)):
            self.current[self.graph._u[f"L{layer}H{h}"]] = self.by_row(r)

    def capture_mlp(self, layer: int, x: torch.Tensor, hook) -> None:
        self.current[self.graph._u[f"MLP{layer}"]] = self.by_row(x)


__all__ = ["EdgeRun", "row_metric"]
