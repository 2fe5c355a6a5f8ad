"""The recall chain of a fact (Geva et al. 2023, "Dissecting Recall of Factual Associations"):
the subject's representation is enriched with its attributes by early MLPs at the subject's
last token, and attention heads at the last position extract the asked-for attribute from it.

    enrich = subject_enrichment(model, "Michael Jordan plays the sport of", "Michael Jordan",
                                attributes=["basketball", "USA", "athlete"])
    enrich.rate            # per residual point (embeddings, after layer 0, ...): attribute rate
    moved = moved_contributions(model, prompt, subject, "basketball")   # [layer, pos, d_mlp]
    ext = attribute_extraction(model, prompt, "Michael Jordan", "basketball")
    ext.from_subject       # [layer, head]: what each head writes from the subject positions, read as logit(basketball)

One prompt at a time (a list of prompts is refused: average `Extraction`s with `extraction_rate`).

Definitions (all from one run, norms' scales frozen from it, `interp.unembedding`):
  attribute rate    the share of the top-k tokens of the logit lens (ln_final and W_U applied to
                    the residual) at the last subject token that are the subject's attributes,
                    k = the number of attributes;
  moved contribution of a neuron site (layer l, subject position s): its output (activation x
                    W_out[n]) carried to the last position by every head of a later layer
                    (attention(last -> s) x through ln1, W_V, W_O) and read through ln_final
                    and W_U as a logit of the answer;
  extraction        a head extracts the answer when the answer's token is the top token of its output at
                    the last position from the subject positions (attention-weighted values
                    of those positions through W_O, read through ln_final and W_U).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Optional, Sequence, Union

import torch

from interp import names as hook_names
from interp.checks import require_pre_norm, resolve_layer, resolve_pos
from interp.unembedding import Readout, final_scale, norm_of
from interp.tokens import answer_token, one_prompt, str_tokens, token_text
from models import Transformer
from probes.logit_lens import logit_lens
from probes.subjects import last_subject_pos, subject_span

Prompt = Union[str, torch.Tensor]


def _one_prompt(model: Transformer, prompt: Prompt) -> torch.Tensor:
    """The prompt's token ids [pos]; a clear error for several prompts (never silently the first)."""
    if isinstance(prompt, (list, tuple)) or (isinstance(prompt, torch.Tensor) and prompt.dim() == 2
                                             and prompt.shape[0] > 1):
        n = len(prompt)
        raise ValueError(f"the recall chain reads one prompt at a time, got {n} prompts: call it once per prompt "
                         "(extraction_rate averages the Extractions)")
    return one_prompt(model, prompt)


def _run(model: Transformer, tokens: torch.Tensor):
    with torch.no_grad():
        return model.run_with_cache(tokens[None])


def _final(model: Transformer, cache, pos: int) -> Readout:
    """Vectors written at position `pos` -> logits (ln_final's scale frozen from the run)."""
    return Readout(model, final_scale(model, cache, pos, 0))


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


def subject_enrichment(model: Transformer, prompt: Prompt, subject: str, attributes: Sequence[str],
                       k: Optional[int] = None, candidates: Optional[Sequence[str]] = None) -> Enrichment:
    """How much the residual at the subject's last token encodes the subject's attributes after
    each layer: the share of the logit lens' top-k tokens (k: the number of attributes) that are
    attributes, and each attribute's rank; among `candidates` (e.g. every object of every
    relation, attributes included) instead of the whole vocabulary if given."""
    if not attributes:
        raise ValueError("give the subject's attributes (its objects in the knowledge base), e.g. ['basketball']")
    tokens = _one_prompt(model, prompt)
    pos = last_subject_pos(model, tokens, subject)
    points, logits = logit_lens(model, tokens, pos)
    ids = [answer_token(model, a) for a in attributes]
    if candidates is not None:
        pool = sorted({answer_token(model, c) for c in candidates} | set(ids))
        vocab = torch.arange(logits.shape[-1], device=logits.device)
        logits = logits.masked_fill(~torch.isin(vocab, torch.tensor(pool, device=logits.device)), -torch.inf)
    k = k or len(ids)
    top = logits.topk(k, dim=-1).indices
    rate = [len(set(row.tolist()) & set(ids)) / k for row in top]
    ranks = {a: (logits > logits[:, i:i + 1]).sum(-1).tolist() for a, i in zip(attributes, ids)}
    text = prompt if isinstance(prompt, str) else " ".join(str_tokens(model, tokens))
    return Enrichment(text, subject, pos, list(attributes), points, rate, ranks,
                      [[token_text(model, int(t)) for t in row] for row in top])


def _head_maps(model: Transformer, cache, src: int, dst: int) -> torch.Tensor:
    """[layer, head, d_model, d_model]: what a vector added to the residual at `src` becomes in
    each head's output at `dst` (attention dst -> src x ln1 (frozen) x W_V W_O)."""
    n_heads = model.cfg.n_heads
    ov = model.OV.AB.detach()  # [layer, head, d_model, d_model]
    out = []
    for l in range(model.cfg.n_layers):
        scale = cache[hook_names.act_name("scale", l, "ln1")][0, src]
        norm = norm_of(model, hook_names.param_name("ln1", l), scale).matrix(model.cfg.d_model, ov.dtype, ov.device)
        attn = cache["pattern", l][0, :, dst, src]  # [head]
        out.append(attn[:, None, None] * (norm[None] @ ov[l]))
    return torch.stack(out).reshape(model.cfg.n_layers, n_heads, model.cfg.d_model, model.cfg.d_model)


def carry_map(model: Transformer, prompt: Prompt, pos: int, after_layer: int) -> torch.Tensor:
    """[d_model, d_vocab]: what a vector added to the residual at `pos` after block `after_layer`
    (an MLP output there; negative layers count from the end) adds to the last position's logits
    through the heads of the later layers (attention and every norm's scale as in the run).
    Rows: residual directions."""
    require_pre_norm(model.cfg, "the recall chain (each head's input read through ln1)")
    tokens = _one_prompt(model, prompt)
    pos = resolve_pos(pos, tokens.shape[0])
    after_layer = resolve_layer(after_layer, model.cfg.n_layers, "after_layer")
    _, cache = _run(model, tokens)
    last = tokens.shape[0] - 1
    with torch.no_grad():
        unembed = _final(model, cache, last).logits(torch.eye(model.cfg.d_model, dtype=model.W_U.dtype,
                                                              device=model.device))
        return _head_maps(model, cache, pos, last)[after_layer + 1:].sum((0, 1)) @ unembed


def moved_contributions(model: Transformer, prompt: Prompt, subject: str, answer: Union[str, int]) -> torch.Tensor:
    """[layer, pos, d_mlp]: each neuron site's output at a subject position, carried to the last
    position by the heads of later layers and read as logit(answer) (zero outside the subject)."""
    require_pre_norm(model.cfg, "the recall chain (each head's input read through ln1)")
    tokens = _one_prompt(model, prompt)
    start, end = subject_span(model, tokens, subject)
    answer_id = answer_token(model, answer)
    _, cache = _run(model, tokens)
    n_layers, n_pos, d_mlp = model.cfg.n_layers, tokens.shape[0], model.cfg.d_mlp
    last = n_pos - 1
    eye = torch.eye(model.cfg.d_model, dtype=model.W_U.dtype, device=model.device)
    unembed = _final(model, cache, last).logits(eye)[:, answer_id]
    out = torch.zeros(n_layers, n_pos, d_mlp, dtype=torch.float64, device=model.device)
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
    extracts: torch.Tensor  # [layer, head] bool: the top token is the answer's token

    def to_dict(self) -> dict:
        return {"prompt": self.prompt, "subject": self.subject, "answer": self.answer,
                "attention": self.attention.tolist(), "from_subject": self.from_subject.tolist(),
                "top_token": self.top_token, "extracts": self.extracts.tolist()}


def _candidate_mask(model: Transformer, candidates: Optional[Sequence[str]], answer_id: int) -> Optional[torch.Tensor]:
    """[d_vocab] bool: the candidates' tokens and the answer's (None: the whole vocabulary)."""
    if candidates is None:
        return None
    allowed = torch.zeros(model.W_U.shape[1], dtype=torch.bool, device=model.W_U.device)
    allowed[[answer_token(model, c) for c in candidates] + [answer_id]] = True
    return allowed


def _from_subject(model: Transformer, cache, layer: int, start: int, end: int, last: int) -> tuple[torch.Tensor, ...]:
    """(attention [head] from the last position to the subject, summed; what each head writes
    there from the subject positions [head, d_model])."""
    cfg = model.cfg
    pattern = cache["pattern", layer][0, :, last, start:end]  # [head, subject pos]
    v = cache["v", layer][0, start:end].repeat_interleave(cfg.n_heads // cfg.n_kv_heads, dim=1)  # [pos, head, d_head]
    w_o = model.get_parameter(hook_names.param_name("attn.W_O", layer)).detach()  # [head, d_head, d_model]
    z = torch.einsum("hs,shd->hd", pattern, v)
    return pattern.sum(-1), torch.einsum("hd,hdm->hm", z, w_o)


def attribute_extraction(model: Transformer, prompt: Prompt, subject: str, answer: Union[str, int],
                         candidates: Optional[Sequence[str]] = None) -> Extraction:
    """Per head: how much the last position attends to the subject, and what the head writes there
    from the subject positions, read through ln_final and W_U (see the module docstring); the top
    token among `candidates` (e.g. the relation's objects) instead of the whole vocabulary if given.
    The answer (a word or id, `interp.tokens.answer_token`) is compared with the top token by id."""
    require_pre_norm(model.cfg, "the recall chain (each head's input read through ln1)")
    tokens = _one_prompt(model, prompt)
    start, end = subject_span(model, tokens, subject)
    answer_id = answer_token(model, answer)
    _, cache = _run(model, tokens)
    last = tokens.shape[0] - 1
    readout, allowed = _final(model, cache, last), _candidate_mask(model, candidates, answer_id)
    attention, logit, top_ids = [], [], []
    with torch.no_grad():
        for l in range(model.cfg.n_layers):
            attn, out = _from_subject(model, cache, l, start, end, last)
            logits = readout.logits(out)  # [head, d_vocab]
            if allowed is not None:
                logits = logits.masked_fill(~allowed, -torch.inf)
            attention.append(attn)
            logit.append(logits[:, answer_id].clone())
            top_ids.append(logits.argmax(-1).cpu())
    top_ids = torch.stack(top_ids)  # [layer, head]
    tops = [[token_text(model, int(i)) for i in row] for row in top_ids]
    answer_text = answer if isinstance(answer, str) else token_text(model, answer_id)
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
