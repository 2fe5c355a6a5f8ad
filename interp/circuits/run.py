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

from typing import Callable, Optional, Sequence

import torch
from einops import einsum, rearrange
from tqdm.auto import tqdm

from interp import names as hook_names
from interp.cache import frozen_norm
from interp.circuits.graph import Graph
from interp.metrics import is_positional

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

    def __init__(self, model, graph: Graph, clean: torch.Tensor, corrupted: torch.Tensor,
                 clean_pass: bool = True) -> None:
        self.model, self.graph, self.cfg = model, graph, model.cfg
        self.clean, self.corrupted = clean, corrupted
        L = self.cfg.n_layers
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
        g, cfg = self.graph, self.cfg
        if rows is None:
            rows = masks.shape[0] if masks is not None else (embed.shape[0] // self.clean.shape[0] if embed is not None else 1)
        recording = self.scales is None  # this is the clean run: freeze each norm at its own scale, record it
        if recording and (masks is not None or embed is not None or rows != 1):
            raise ValueError("the first run of an EdgeRun made with clean_pass=False must be the clean run: "
                             "no masks, no embed, one row")
        scales = {} if recording else self.scales
        current: list[Optional[torch.Tensor]] = [None] * len(g.upstream)  # [rows, batch, pos, d_model] each
        ups = {n.name: i for i, n in enumerate(g.upstream)}
        # Only real edges: a mask entry for a writer that is not upstream of the reader is ignored.
        maskf = None if masks is None else (masks & g.edges).to(self.outputs_corrupted.device,
                                                                 self.outputs_corrupted.dtype)

        def by_row(x: torch.Tensor) -> torch.Tensor:
            return rearrange(x, "(r b) p m -> r b p m", r=rows)

        def delta(ds: list[int]) -> Optional[torch.Tensor]:
            """What inputs ds read on top of the residual stream: [rows, len(ds), batch, pos, d_model]."""
            out = None
            if maskf is not None:
                patched = maskf[:, :, ds].any(-1).any(0)  # [U]: writers with a patched edge into ds
                avail = [u for u in range(len(g.upstream)) if current[u] is not None and patched[u]]
                if avail:
                    diff = self.outputs_corrupted[avail][:, None] - torch.stack([current[u] for u in avail])
                    out = einsum(maskf[:, avail][:, :, ds], diff, "r u d, u r b p m -> r d b p m")
            if extra is not None:
                e = extra[ds][None].expand(rows, *extra[ds].shape)
                out = e if out is None else out + e
            return out

        centre = cfg.norm == "layernorm"

        def freeze(x: torch.Tensor, hook) -> torch.Tensor:
            if recording:
                scales[hook.name] = x.detach()
            return scales[hook.name].repeat(rows, 1, 1)

        def set_embed(x: torch.Tensor, hook) -> torch.Tensor:
            return embed

        def capture_embed(x: torch.Tensor, hook) -> None:
            current[0] = by_row(x)

        def capture_z(layer: int) -> Callable:
            def hook(z: torch.Tensor, hook) -> None:
                for h, r in enumerate(self._head_results(z, layer)):
                    current[ups[f"L{layer}H{h}"]] = by_row(r)
            return hook

        def capture_mlp(layer: int) -> Callable:
            def hook(x: torch.Tensor, hook) -> None:
                current[ups[f"MLP{layer}"]] = by_row(x)
            return hook

        def head_input(layer: int, kind: str) -> Callable:
            ds = [d for d, i in enumerate(g.inputs) if i.layer == layer and i.kind == kind]
            W = self.model.get_parameter(hook_names.param_name(f"attn.W_{kind.upper()}", layer))  # [head, d_model, d_head]
            w = self.model.get_parameter(hook_names.param_name("ln1.w", layer))
            scale_name = hook_names.act_name("scale", layer, "ln1")

            def hook(x: torch.Tensor, hook) -> Optional[torch.Tensor]:
                dl = delta(ds)  # [rows, head, batch, pos, d_model]
                if dl is None:
                    return None
                add = einsum(frozen_norm(dl, scales[scale_name], w, centre), W, "r h b p m, h m k -> r b p h k")
                return x + rearrange(add, "r b p h k -> (r b) p h k")
            return hook

        def residual_input(d: int, scale_name: Optional[str]) -> Callable:
            def hook(x: torch.Tensor, hook) -> Optional[torch.Tensor]:
                dl = delta([d])
                if dl is None:
                    return None
                # before the norm's weight: hook_normalized is (x - mean) / scale
                add = frozen_norm(dl[:, 0], scales[scale_name], None, centre) if scale_name else dl[:, 0]
                return x + rearrange(add, "r b p m -> (r b) p m")
            return hook

        hooks = [(n, freeze) for n in self.scale_names]
        if embed is not None:
            hooks.append((hook_names.act_name("resid_pre", 0), set_embed))
        hooks.append((hook_names.act_name("resid_pre", 0), capture_embed))
        for l in range(cfg.n_layers):
            for kind in ("q", "k", "v"):
                hooks.append((hook_names.act_name(kind, l), head_input(l, kind)))
            hooks.append((hook_names.act_name("z", l), capture_z(l)))
            if not cfg.attn_only:
                d = g._d[f"MLP{l}"]
                hooks.append((hook_names.act_name("normalized", l, "ln2"),
                              residual_input(d, hook_names.act_name("scale", l, "ln2"))))
                hooks.append((hook_names.act_name("mlp_out", l), capture_mlp(l)))
        last = (hook_names.act_name("normalized"), hook_names.act_name("scale")) if cfg.final_norm else \
            (hook_names.act_name("resid_post", cfg.n_layers - 1), None)
        hooks.append((last[0], residual_input(g._d["logits"], last[1])))
        tokens = self.clean.repeat(rows, 1)
        with self.model.hooks(fwd_hooks=hooks):
            logits = self.model(tokens)
        if recording:
            self.scales, self.clean_logits = scales, logits.detach()
            self.outputs_clean = torch.stack([c[0] for c in current]).detach()
        return logits

    @property
    def batch(self) -> int:
        return self.clean.shape[0]

    def metrics(self, patched: Sequence[torch.Tensor], metric: Metric, batch_rows: int = 256, *,
                progress: bool = False, desc: str = "patched runs") -> torch.Tensor:
        """metric of one run per edge set in `patched` (each [U, D] bool: the edges that carry the
        corrupted value), rows batched so that rows x prompts <= batch_rows: [len(patched)] float64."""
        out = []
        per_chunk = max(1, batch_rows // self.batch)
        for lo in tqdm(range(0, len(patched), per_chunk), desc=desc, disable=not progress):
            masks = torch.stack(list(patched[lo: lo + per_chunk]))
            with torch.no_grad():
                out.append(row_metric(metric, self.run(masks), len(masks)).double().cpu())
        return torch.cat(out) if out else torch.zeros(0, dtype=torch.float64)


__all__ = ["EdgeRun", "row_metric"]
