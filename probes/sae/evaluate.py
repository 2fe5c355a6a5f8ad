"""Splicing a dictionary into the forward pass, and how good it is.

    with model.hooks(fwd_hooks=splice_hooks(tc)):               # the MLP output replaced by the transcoder's
        logits = model(tokens)
    with model.hooks(fwd_hooks=splice_hooks(tc, keep_error=True)):   # + the reconstruction error: exact
        ...
    scores = evaluate_dictionary(model, tc, texts, focus=[...])

`evaluate_dictionary` reports, over the real tokens of `texts`:
  l0                 mean number of active features per token;
  variance_explained 1 - sum |y - y_hat|^2 / sum |y - mean(y)|^2 (the mean-centred formula);
  ce_clean / ce_spliced / ce_zero   next-token loss of the model, with the reconstruction
                     spliced in, and with the out_hook activation zero-ablated;
  ce_recovered       (ce_zero - ce_spliced) / (ce_zero - ce_clean);
  kl                 mean KL(clean || spliced) of the next-token distributions;
  dead / dense       share of features never active / active on more than 10% of tokens;
and the same three losses and ce_recovered at the `focus` positions only (one token index
per text, e.g. the object of a fact sentence), where whole-sentence loss barely depends on
the layer.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Optional, Sequence

import torch

from interp.tokens import padded_batches
from models.transformer import Transformer
from probes.sae.dictionary import SparseDictionary


def splice_hooks(dictionary: SparseDictionary, *, keep_error: bool = False, store: Optional[dict] = None) -> list:
    """Hooks that replace the out_hook activation by the dictionary's reconstruction from the
    in_hook activation of the same pass (keep_error: add back what it misses, so the pass is
    exact). `store`, if given, receives "features" [batch, pos, n_features] and "error"."""
    seen: dict[str, torch.Tensor] = {}

    def read(x: torch.Tensor, hook) -> None:
        seen["x"] = x

    def write(y: torch.Tensor, hook) -> torch.Tensor:
        x = seen["x"]
        f = dictionary.encode(x)
        recon = dictionary.decode(f, x).to(y.dtype)
        if store is not None:
            store["features"], store["error"] = f, y - recon
        return recon + (y - recon) if keep_error else recon

    if dictionary.in_hook == dictionary.out_hook:
        def both(y: torch.Tensor, hook) -> torch.Tensor:
            read(y, hook)
            return write(y, hook)
        return [(dictionary.out_hook, both)]
    return [(dictionary.in_hook, read), (dictionary.out_hook, write)]


@dataclass
class LossScores:
    """The losses of a run with dictionaries spliced in (`LossTally.scores()`), shared by
    DictionaryScores (one dictionary) and LayersScores (every layer at once)."""

    ce_clean: float = float("nan")
    ce_spliced: float = float("nan")
    ce_zero: float = float("nan")
    ce_recovered: float = float("nan")
    kl: float = float("nan")
    focus_ce_clean: float = float("nan")
    focus_ce_spliced: float = float("nan")
    focus_ce_zero: float = float("nan")
    focus_ce_recovered: float = float("nan")
    tokens: int = 0

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class DictionaryScores(LossScores):
    l0: float = float("nan")
    variance_explained: float = float("nan")
    dead: float = float("nan")
    dense: float = float("nan")


def _recovered(clean: float, spliced: float, zero: float) -> float:
    return (zero - spliced) / (zero - clean) if zero != clean else float("nan")


class LossTally:
    """The loss part of an evaluation, batch by batch: next-token loss of the clean, spliced and
    zero-ablated runs over every predicted real token, mean KL(clean || spliced), and with
    `focus` (one token index per text) the three losses at those tokens only (the loss of token t
    is read at t - 1). `scores()` gives ce_clean, ce_spliced, ce_zero, ce_recovered, kl, tokens
    and the focus_ce_* fields, as DictionaryScores and LayersScores name them."""

    RUNS = ("clean", "spliced", "zero")

    def __init__(self, focus: Optional[Sequence[int]] = None) -> None:
        self.focus = focus
        self.sums = {k: 0.0 for k in ("kl",) + self.RUNS + tuple("f_" + r for r in self.RUNS)}
        self.n_tok = self.n_focus = 0

    def add(self, model: Transformer, batch, clean: torch.Tensor, spliced: torch.Tensor,
            zeroed: torch.Tensor) -> None:
        """One batch of `padded_batches`: its logits [batch, pos, d_vocab] in the three runs."""
        target_ok = batch.real[:, 1:]
        nll = {}
        for name, logits in zip(self.RUNS, (clean, spliced, zeroed)):
            nll[name] = model.loss_fn(logits.double(), batch.tokens, batch.mask, per_token=True)
            self.sums[name] += float(nll[name][target_ok].sum())
        p_clean = clean[:, :-1].double().log_softmax(-1)
        kl = (p_clean.exp() * (p_clean - spliced[:, :-1].double().log_softmax(-1))).sum(-1)
        self.sums["kl"] += float(kl[target_ok].sum())
        self.n_tok += int(target_ok.sum())
        if self.focus is not None:
            n = len(batch.texts)
            where = nll[self.RUNS[0]].device
            idx = torch.as_tensor(list(self.focus[batch.start: batch.start + n]), device=where) - 1
            for name in self.RUNS:
                self.sums["f_" + name] += float(nll[name][torch.arange(n, device=where), idx].sum())
            self.n_focus += n

    def scores(self) -> dict:
        ce = {k: self.sums[k] / self.n_tok for k in self.RUNS}
        out = dict(ce_clean=ce["clean"], ce_spliced=ce["spliced"], ce_zero=ce["zero"],
                   ce_recovered=_recovered(ce["clean"], ce["spliced"], ce["zero"]), kl=self.sums["kl"] / self.n_tok,
                   tokens=self.n_tok)
        if self.focus is not None:
            f = {k: self.sums["f_" + k] / self.n_focus for k in self.RUNS}
            out.update(focus_ce_clean=f["clean"], focus_ce_spliced=f["spliced"], focus_ce_zero=f["zero"],
                       focus_ce_recovered=_recovered(f["clean"], f["spliced"], f["zero"]))
        return out


def evaluate_dictionary(model: Transformer, dictionary: SparseDictionary, texts: Sequence[str], *,
                        focus: Optional[Sequence[int]] = None, batch_size: int = 256) -> DictionaryScores:
    """See the module docstring. focus: per text, the index of one target token (its loss is
    read at the position before it)."""
    if focus is not None and len(focus) != len(texts):
        raise ValueError(f"{len(texts)} texts but {len(focus)} focus positions")
    tally, sq_err = LossTally(focus), 0.0
    ys, active = [], []

    def zero(y: torch.Tensor, hook) -> torch.Tensor:
        return torch.zeros_like(y)

    for batch in padded_batches(model, texts, batch_size):
        tokens, mask, real = batch.tokens, batch.mask, batch.real
        store: dict = {}
        with torch.no_grad():
            clean, cache = model.run_with_cache(tokens, attention_mask=mask, names_filter=[dictionary.out_hook])
            with model.hooks(fwd_hooks=splice_hooks(dictionary, store=store)):
                spliced = model(tokens, attention_mask=mask)
            with model.hooks(fwd_hooks=[(dictionary.out_hook, zero)]):
                zeroed = model(tokens, attention_mask=mask)
        tally.add(model, batch, clean, spliced, zeroed)
        y = cache[dictionary.out_hook][real].double()
        ys.append(y)
        recon = y - store["error"][real].double()
        sq_err += float((y - recon).pow(2).sum())
        active.append((store["features"][real] > 0))
    y_all = torch.cat(ys)
    fired = torch.cat(active)
    total_var = float((y_all - y_all.mean(0)).pow(2).sum())
    per_feature = fired.double().mean(0)
    return DictionaryScores(
        l0=float(fired.sum(-1).double().mean()), variance_explained=1 - sq_err / total_var,
        dead=float((per_feature == 0).double().mean()), dense=float((per_feature > 0.1).double().mean()),
        **tally.scores())


__all__ = ["splice_hooks", "evaluate_dictionary", "DictionaryScores", "LossScores", "LossTally"]
