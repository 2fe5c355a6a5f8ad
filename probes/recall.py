"""The recall chain of a fact (Geva et al. 2023, "Dissecting Recall of Factual Associations"):
the subject's representation is enriched with its attributes by early MLPs at the subject's
last token, and attention heads at the last position extract the asked-for attribute from it.

    enrich = subject_enrichment(model, "Michael Jordan plays the sport of", "Michael Jordan",
                                attributes=["basketball", "USA", "athlete"])
    enrich.rate            # per residual point (embeddings, after layer 0, ...): attribute rate
    moved = moved_contributions(model, prompt, subject, "basketball")   # [layer, pos, d_mlp]
    ext = attribute_extraction(model, prompt, "Michael Jordan", "basketball")
    ext.from_subject       # [layer, head]: what each head writes from the subject positions, read as logit(basketball)

Definitions (all from one run, norms' scales frozen from it, `interp.cache.frozen_norm`):
  attribute rate    the share of the top-k tokens of the logit lens (ln_final and W_U applied to
                    the residual) at the last subject token that are the subject's attributes,
                    k = the number of attributes;
  moved contribution of a neuron site (layer l, subject position s): its output (activation x
                    W_out[n]) carried to the last position by every head of a later layer
                    (attention(last -> s) x through ln1, W_V, W_O) and read through ln_final
                    and W_U as a logit of the answer;
  extraction        a head extracts the answer when the answer is the top token of its output at
                    the last position from the subject positions (attention-weighted values
                    of those positions through W_O, read through ln_final and W_U).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Optional, Sequence, Union

import torch

from interp import names as hook_names
from interp.cache import frozen_norm
from interp.tokens import answer_token, one_prompt, str_tokens, token_text
from probes.logit_lens import logit_lens
from probes.subjects import subject_span

Prompt = Union[str, torch.Tensor]


def _check_pre_norm(model) -> None:
    if model.cfg.norm_position != "pre":
        raise ValueError("the recall chain reads each head's input through ln1: it needs a pre-norm model "
                         f"(norm_position='pre'), this one is {model.cfg.norm_position!r}")


def _run(model, tokens: torch.Tensor):
    with torch.no_grad():
        return model.run_with_cache(tokens[None])


def _final(model, cache, x: torch.Tensor, pos: int) -> torch.Tensor:
    """x [..., d_model] written at position `pos` -> logits [..., d_vocab] (ln_final's scale frozen)."""
    if model.cfg.final_norm:
        w = model.get_parameter("ln_final.w").detach()
        x = frozen_norm(x, cache["ln_final.hook_scale"][0, pos], w, model.cfg.norm == "layernorm")
    return x @ model.W_U.detach()


@dataclass
class Enrichment:
    prompt: str
    subject: str
    pos: int  # the last subject token
    attributes: list[str]
    points: list[str]  # residual points: "embed", "L0" (after layer 0), ...
    rate: list[float]  # attribute rate at each point
    ranks: dict[str, list[int]]  # attribute -> its rank in the logit lens at each point (0 = top)
    top_tokens: list[list[str]]  # the top-k tokens at each point

    def to_dict(self) -> dict:
        return asdict(self)


def subject_enrichment(model, prompt: Prompt, subject: str, attributes: Sequence[str],
                       k: Optional[int] = None, candidates: Optional[Sequence[str]] = None) -> Enrichment:
    """How much the residual at the subject's last token encodes the subject's attributes after
    each layer: the share of the logit lens' top-k tokens (k: the number of attributes) that are
    attributes, and each attribute's rank; among `candidates` (e.g. every object of every
    relation, attributes included) instead of the whole vocabulary if given."""
    if not attributes:
        raise ValueError("give the subject's attributes (its objects in the knowledge base), e.g. ['basketball']")
    pos = subject_span(model, prompt, subject)[1] - 1
    points, logits = logit_lens(model, prompt, pos)
    ids = [answer_token(model, a) for a in attributes]
    if candidates is not None:
        pool = sorted({answer_token(model, c) for c in candidates} | set(ids))
        logits = logits.masked_fill(~torch.isin(torch.arange(logits.shape[-1]), torch.tensor(pool)), -torch.inf)
    k = k or len(ids)
    top = logits.topk(k, dim=-1).indices
    rate = [len(set(row.tolist()) & set(ids)) / k for row in top]
    ranks = {a: (logits > logits[:, i:i + 1]).sum(-1).tolist() for a, i in zip(attributes, ids)}
    text = prompt if isinstance(prompt, str) else " ".join(str_tokens(model, one_prompt(model, prompt)))
    return Enrichment(text, subject, pos, list(attributes), points, rate, ranks,
                      [[token_text(model, int(t)) for t in row] for row in top])


def _head_maps(model, cache, src: int, dst: int) -> torch.Tensor:
    """[layer, head, d_model, d_model]: what a vector added to the residual at `src` becomes in
    each head's output at `dst` (attention dst -> src x ln1 (frozen) x W_V W_O)."""
    n_heads = model.cfg.n_heads
    ov = model.OV.AB.detach()  # [layer, head, d_model, d_model]
    out = []
    for l in range(model.cfg.n_layers):
        w = model.get_parameter(hook_names.param_name("ln1.w", l)).detach()
        scale = cache[hook_names.act_name("scale", l, "ln1")][0, src]
        centre = torch.eye(model.cfg.d_model, dtype=ov.dtype)
        if model.cfg.norm == "layernorm":
            centre = centre - 1.0 / model.cfg.d_model
        norm = centre / scale * w[None, :]  # x -> frozen ln1(x) as a matrix (row vectors)
        attn = cache["pattern", l][0, :, dst, src]  # [head]
        out.append(attn[:, None, None] * (norm[None] @ ov[l]))
    return torch.stack(out).reshape(model.cfg.n_layers, n_heads, model.cfg.d_model, model.cfg.d_model)


def carry_map(model, prompt: Prompt, pos: int, after_layer: int) -> torch.Tensor:
    """[d_model, d_vocab]: what a vector added to the residual at `pos` after block `after_layer`
    (an MLP output there) adds to the last position's logits through the heads of the later
    layers (attention and every norm's scale as in the run). Rows: residual directions."""
    _check_pre_norm(model)
    tokens = one_prompt(model, prompt)
    _, cache = _run(model, tokens)
    last = tokens.shape[0] - 1
    with torch.no_grad():
        unembed = _final(model, cache, torch.eye(model.cfg.d_model, dtype=model.W_U.dtype), last)
        return _head_maps(model, cache, pos, last)[after_layer + 1:].sum((0, 1)) @ unembed


def moved_contributions(model, prompt: Prompt, subject: str, answer: Union[str, int]) -> torch.Tensor:
    """[layer, pos, d_mlp]: each neuron site's output at a subject position, carried to the last
    position by the heads of later layers and read as logit(answer) (zero outside the subject)."""
    _check_pre_norm(model)
    tokens = one_prompt(model, prompt)
    start, end = subject_span(model, tokens, subject)
    answer_id = answer_token(model, answer)
    _, cache = _run(model, tokens)
    n_layers, n_pos, d_mlp = model.cfg.n_layers, tokens.shape[0], model.cfg.d_mlp
    last = n_pos - 1
    unembed = _final(model, cache, torch.eye(model.cfg.d_model, dtype=model.W_U.dtype), last)[:, answer_id]
    out = torch.zeros(n_layers, n_pos, d_mlp, dtype=torch.float64)
    with torch.no_grad():
        for s in range(start, end):
            maps = _head_maps(model, cache, s, last)  # [layer, head, d_model, d_model]
            for l in range(n_layers - 1):
                carried = maps[l + 1:].sum((0, 1)) @ unembed  # [d_model]: a vector at s -> logit(answer)
                w_out = model.get_parameter(hook_names.param_name("mlp.W_out", l)).detach()
                out[l, s] = (cache["post", l][0, s] * (w_out @ carried)).double()
    return out


@dataclass
class Extraction:
    prompt: str
    subject: str
    answer: str
    attention: torch.Tensor  # [layer, head]: attention from the last position to the subject tokens (summed)
    from_subject: torch.Tensor  # [layer, head]: logit(answer) of the head's output from the subject positions
    top_token: list[list[str]]  # [layer][head]: the top token of that output
    extracts: torch.Tensor  # [layer, head] bool: top_token == answer

    def to_dict(self) -> dict:
        return {"prompt": self.prompt, "subject": self.subject, "answer": self.answer,
                "attention": self.attention.tolist(), "from_subject": self.from_subject.tolist(),
                "top_token": self.top_token, "extracts": self.extracts.tolist()}


def attribute_extraction(model, prompt: Prompt, subject: str, answer: Union[str, int],
                         candidates: Optional[Sequence[str]] = None) -> Extraction:
    """Per head: how much the last position attends to the subject, and what the head writes there
    from the subject positions, read through ln_final and W_U (see the module docstring); the top
    token among `candidates` (e.g. the relation's objects) instead of the whole vocabulary if given."""
    _check_pre_norm(model)
    tokens = one_prompt(model, prompt)
    start, end = subject_span(model, tokens, subject)
    answer_id = answer_token(model, answer)
    _, cache = _run(model, tokens)
    cfg, last = model.cfg, tokens.shape[0] - 1
    per_kv = cfg.n_heads // cfg.n_kv_heads
    allowed = None
    if candidates is not None:
        allowed = torch.zeros(model.W_U.shape[1], dtype=torch.bool)
        allowed[[answer_token(model, c) for c in candidates] + [answer_id]] = True
    attention, logit, tops = [], [], []
    with torch.no_grad():
        for l in range(cfg.n_layers):
            pattern = cache["pattern", l][0, :, last, start:end]  # [head, subject pos]
            v = cache["v", l][0, start:end].repeat_interleave(per_kv, dim=1)  # [subject pos, head, d_head]
            w_o = model.get_parameter(hook_names.param_name("attn.W_O", l)).detach()  # [head, d_head, d_model]
            z = torch.einsum("hs,shd->hd", pattern, v)
            out = torch.einsum("hd,hdm->hm", z, w_o)  # [head, d_model]
            logits = _final(model, cache, out, last)  # [head, d_vocab]
            if allowed is not None:
                logits = logits.masked_fill(~allowed, -torch.inf)
            attention.append(pattern.sum(-1))
            logit.append(logits[:, answer_id].clone())
            tops.append([token_text(model, int(i)) for i in logits.argmax(-1)])
    answer_text = answer if isinstance(answer, str) else token_text(model, answer_id)
    top_ids = torch.tensor([[answer_token(model, t) if t == answer_text else -1 for t in row] for row in tops])
    text = prompt if isinstance(prompt, str) else " ".join(str_tokens(model, tokens))
    return Extraction(text, subject, answer_text, torch.stack(attention).double(), torch.stack(logit).double(), tops,
                      top_ids == answer_id)


def extraction_rate(extractions: Sequence[Extraction]) -> torch.Tensor:
    """[layer, head]: the share of facts for which each head extracts the answer."""
    if not extractions:
        raise ValueError("no extractions given")
    return torch.stack([e.extracts for e in extractions]).double().mean(0)


__all__ = ["Enrichment", "subject_enrichment", "carry_map", "moved_contributions", "Extraction",
           "attribute_extraction", "extraction_rate"]
