"""The MLP as a key-value memory (Geva et al. 2021): find the neurons that store a fact.

Neuron n of layer l has a key, W_in[:, n] with its bias b_in[n], that reads the
(normalised) residual stream, and a value, W_out[n, :], that the neuron adds to
the residual stream scaled by its activation post = act(key . x + bias). With a
ReLU the bias is a threshold: a negative bias lets the key fire only when
several features are present at once ("Michael" AND "Jordan"), not for either
part alone.

    ranked = fact_neurons(model, "Michael Jordan plays the sport of", "basketball", k=10)
    ranked[0].label, ranked[0].contribution, ranked[0].top_tokens
    and_detection(model, "Michael Jordan plays the sport of",
                  first_only="Michael Phelps plays the sport of", last_only="Alexis Jordan plays the sport of",
                  neurons=[(n.layer, n.index) for n in ranked])
    validate(model, prompt, "basketball", [(n.layer, n.index) for n in ranked])   # ablate / amplify

Contributions are direct effects on the logit at one position, read through the
final norm with its scale frozen from the run, exactly as in
`interp.attribution.direct_logit_attribution` (they are its `neurons`):
contribution = post x (W_out[n] . u), u the target's unembedding direction after the
final norm's centring, weight and frozen scale.

Gated MLPs (Llama / Qwen2 SwiGLU): a neuron's activation is post = act(gate) x up, with
gate = x . W_gate[:, n] (hook_pre) and up = x . W_in[:, n] + b_in[n] (hook_pre_linear): the
key is the product of two keys. Contributions use post exactly as above; "pre" activations
and the AND test use the gate (the non-linear part); `key_decomposition(..., which="up")`
splits the linear key.
"""

from __future__ import annotations

import random
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional, Sequence, Union

import torch
from tqdm.auto import tqdm

from interp.attribution import direct_logit_attribution
from interp.metrics import Tokens, token_ids
from interp.patching import prompt_tokens
from interp.report import str_tokens, write_json
from models import Transformer

Prompt = Union[str, torch.Tensor]
NeuronId = tuple[int, int]  # (layer, index)
FactPrompt = tuple[str, str]  # (prompt, answer word)


def _post_name(layer: int) -> str:
    return f"blocks.{layer}.mlp.hook_post"


def _pre_name(layer: int) -> str:
    return f"blocks.{layer}.mlp.hook_pre"


def _check_neurons(model: Transformer, neurons: Sequence[NeuronId]) -> list[NeuronId]:
    out = []
    for layer, index in neurons:
        if not 0 <= layer < model.cfg.n_layers or not 0 <= index < model.cfg.d_mlp:
            raise ValueError(f"neuron L{layer}N{index} does not exist: the model has {model.cfg.n_layers} layers "
                             f"of {model.cfg.d_mlp} neurons")
        out.append((int(layer), int(index)))
    return out


# ============================================================ values
@dataclass
class ValueProjection:
    """What a neuron's value W_out[n] does to the logits, per unit of activation: the value
    read through the final norm's centring and weight (scale 1) and the unembedding."""

    layer: int
    index: int
    promoted: list[tuple[str, float]]
    suppressed: list[tuple[str, float]]


def value_logits(model: Transformer, layer: int, index: int) -> torch.Tensor:
    """[d_vocab]: logit change per unit activation of neuron (layer, index), final-norm scale 1."""
    _check_neurons(model, [(layer, index)])
    with torch.no_grad():
        value = model.blocks[layer].mlp.W_out[index].detach()
        if model.cfg.final_norm:
            if model.cfg.norm == "layernorm":
                value = value - value.mean()
            value = value * model.ln_final.w.detach()
        return value @ model.W_U.detach()


def value_projection(model: Transformer, layer: int, index: int, k: int = 10) -> ValueProjection:
    logits = value_logits(model, layer, index)
    word = model.tokenizer.token_str if model.tokenizer is not None else str
    top, bottom = logits.topk(k), (-logits).topk(k)
    return ValueProjection(
        layer, index,
        [(word(int(i)), float(v)) for v, i in zip(top.values, top.indices)],
        [(word(int(i)), -float(v)) for v, i in zip(bottom.values, bottom.indices)],
    )


# ============================================================ keys
def neuron_activations(model: Transformer, prompts: Union[Prompt, Sequence[str]], neurons: Sequence[NeuronId],
                       pos: int = -1, pre: bool = False) -> torch.Tensor:
    """Activations [n_prompts, n_neurons] at `pos` (post non-linearity, or pre with pre=True)."""
    neurons = _check_neurons(model, neurons)
    tokens = prompt_tokens(model, prompts)
    layers = sorted({l for l, _ in neurons})
    names = [(_pre_name if pre else _post_name)(l) for l in layers]
    with torch.no_grad():
        _, cache = model.run_with_cache(tokens, names_filter=names, return_type=None)
    return torch.stack([cache[(_pre_name if pre else _post_name)(l)][:, pos, n] for l, n in neurons], dim=-1)


def key_decomposition(model: Transformer, prompt: Prompt, layer: int, index: int, pos: int = -1,
                      which: str = "gate") -> dict[str, float]:
    """The neuron's pre-activation at `pos` split into what each residual component contributes
    through the MLP's norm (scale frozen from the run) and the key, plus the bias
    (b_in[n] + ln2.b . W_in[:, n]). The values sum to the pre-activation. Labels: "embed",
    "pos_embed", "0_attn_out", "0_mlp_out", ..., "bias".

    Gated MLPs (SwiGLU: post = act(x . W_gate[:, n]) * (x . W_in[:, n] + b_in[n])) have two
    keys: which="gate" decomposes the gate's pre-activation (hook_pre), which="up" the linear
    one (hook_pre_linear). Ungated MLPs have one key; `which` is ignored."""
    _check_neurons(model, [(layer, index)])
    if which not in ("gate", "up"):
        raise ValueError(f"which must be 'gate' or 'up', got {which!r}")
    tokens = prompt_tokens(model, prompt)[:1]
    mlp, ln2 = model.blocks[layer].mlp, model.blocks[layer].ln2
    gate = model.cfg.gated_mlp and which == "gate"
    key = (mlp.W_gate if gate else mlp.W_in).detach()[:, index]
    with torch.no_grad():
        _, cache = model.run_with_cache(tokens)
        stack, labels = cache.decompose_resid(layer, mlp_input=True, apply_ln=True, pos_slice=pos, return_labels=True)
        parts = stack[:, 0] @ key  # [component]
        bias = (ln2.b.detach() @ key) if hasattr(ln2, "b") else torch.zeros((), dtype=key.dtype)
        if not gate:
            bias = bias + mlp.b_in.detach()[index]
    out = {label: float(v) for label, v in zip(labels, parts)}
    out["bias"] = float(bias)
    return out


# ============================================================ per fact
@dataclass
class NeuronContribution:
    layer: int
    index: int
    activation: float  # post non-linearity, at the position read
    pre_activation: float
    contribution: float  # direct effect on the target logit (minus the counterfactual's)
    value_score: float  # logit change per unit activation, with this run's final-norm scale
    top_tokens: list[str]  # what the value promotes most

    @property
    def label(self) -> str:
        return f"L{self.layer}N{self.index}"


class RankedNeurons(list):
    """`fact_neurons`' answer: a list of NeuronContribution, largest contribution first, that also
    knows the total direct contribution of all MLP neurons (`total`) and the share the listed
    ones explain (`explained`)."""

    def __init__(self, items: Sequence[NeuronContribution], total: float, target: str, prompt: str) -> None:
        super().__init__(items)
        self.total, self.target, self.prompt = total, target, prompt

    @property
    def explained(self) -> float:
        return sum(n.contribution for n in self) / self.total if self.total else float("nan")

    @property
    def ids(self) -> list[NeuronId]:
        return [(n.layer, n.index) for n in self]

    def to_dict(self) -> dict:
        return {"prompt": self.prompt, "target": self.target, "total_mlp_contribution": self.total,
                "explained": self.explained, "neurons": [asdict(n) | {"label": n.label} for n in self]}


def neuron_contributions(model: Transformer, prompt: Prompt, target: Tokens, counterfactual: Optional[Tokens] = None,
                         pos: int = -1) -> torch.Tensor:
    """[n_layers, d_mlp]: each neuron's direct contribution to logit(target) (- logit(counterfactual))."""
    return direct_logit_attribution(model, prompt_tokens(model, prompt)[:1], target, counterfactual, pos).neurons


def fact_neurons(model: Transformer, prompt: Prompt, target: Tokens, k: int = 20, *,
                 counterfactual: Optional[Tokens] = None, pos: int = -1, n_tokens: int = 5) -> RankedNeurons:
    """The k neurons that contribute most to the target's logit at `pos`, largest first."""
    tokens = prompt_tokens(model, prompt)[:1]
    dla = direct_logit_attribution(model, tokens, target, counterfactual, pos)
    contrib = dla.neurons
    order = contrib.flatten().argsort(descending=True)[:k]
    with torch.no_grad():
        _, cache = model.run_with_cache(tokens, names_filter=lambda n: n.endswith(("mlp.hook_post", "mlp.hook_pre"))
                                        or n == "ln_final.hook_scale", return_type=None)
    scale = float(cache["ln_final.hook_scale"][0, pos]) if model.cfg.final_norm else 1.0
    target_id = int(token_ids(target, model)[0])
    cf_id = int(token_ids(counterfactual, model)[0]) if counterfactual is not None else None
    out = []
    for flat in order.tolist():
        layer, index = divmod(flat, model.cfg.d_mlp)
        logits = value_logits(model, layer, index)
        per_unit = logits[target_id] - (logits[cf_id] if cf_id is not None else 0.0)
        proj = value_projection(model, layer, index, n_tokens)
        out.append(NeuronContribution(
            layer, index, float(cache[_post_name(layer)][0, pos, index]), float(cache[_pre_name(layer)][0, pos, index]),
            float(contrib[layer, index]), float(per_unit) / scale, [w for w, _ in proj.promoted],
        ))
    what = dla.answer if dla.counterfactual is None else f"{dla.answer} - {dla.counterfactual}"
    text = prompt if isinstance(prompt, str) else " ".join(str_tokens(model, tokens))
    return RankedNeurons(out, float(contrib.sum()), what, text)


# ============================================================ AND detection
@dataclass
class AndRow:
    """One neuron's key on the full subject and on prompts sharing only one of its parts.

    full / first_only / last_only: activation after the non-linearity (partials: mean over
    the prompts given); pre_*: before it; bias: b_in[n] + ln2.b . W_in[:, n], the part of the
    pre-activation that does not depend on the input. is_and: fires for the full subject and
    at most `ratio` x as much for either part. bias_gates: the bias is negative and decides
    it: without the bias each part alone would fire, with it neither does. silenced_by_bias:
    the parts for which that holds on their own."""

    layer: int
    index: int
    full: float
    first_only: float
    last_only: float
    pre_full: float
    pre_first_only: float
    pre_last_only: float
    bias: float
    is_and: bool
    bias_gates: bool
    silenced_by_bias: list[str] = field(default_factory=list)  # parts ("first", "last") that fire only without the bias

    @property
    def label(self) -> str:
        return f"L{self.layer}N{self.index}"

    @property
    def and_score(self) -> float:
        return self.full - max(self.first_only, self.last_only)


def _bias_term(model: Transformer, layer: int, index: int) -> float:
    mlp, ln2 = model.blocks[layer].mlp, model.blocks[layer].ln2
    key = (mlp.W_gate if model.cfg.gated_mlp else mlp.W_in).detach()[:, index]
    bias = (ln2.b.detach() @ key) if hasattr(ln2, "b") else torch.zeros(())
    if not model.cfg.gated_mlp:
        bias = bias + mlp.b_in.detach()[index]
    return float(bias)


def and_detection(model: Transformer, full: str, first_only: Union[str, Sequence[str]],
                  last_only: Union[str, Sequence[str]], neurons: Optional[Sequence[NeuronId]] = None,
                  pos: int = -1, ratio: float = 0.25, k: int = 20) -> list[AndRow]:
    """Which neurons fire for the full subject but not for its parts alone, at `pos`.

    full: a prompt with the full subject ("Michael Jordan plays the sport of");
    first_only / last_only: prompts (or lists) sharing only the first / last part
    ("Michael Phelps ...", "Alexis Jordan ..."), with the same number of tokens.
    neurons: the ones to report, in that order; default: the k neurons with the
    largest AND score (full minus the larger partial) over the whole model.
    """
    groups = {"full": [full], "first": [first_only] if isinstance(first_only, str) else list(first_only),
              "last": [last_only] if isinstance(last_only, str) else list(last_only)}
    all_prompts = [p for g in groups.values() for p in g]
    prompt_tokens(model, all_prompts, "prompts of the AND test")  # same lengths, or a clear error
    candidates = _check_neurons(model, neurons) if neurons is not None else [
        (l, n) for l in range(model.cfg.n_layers) for n in range(model.cfg.d_mlp)]
    post = neuron_activations(model, all_prompts, candidates, pos)
    pre = neuron_activations(model, all_prompts, candidates, pos, pre=True)
    i_first = slice(1, 1 + len(groups["first"]))
    i_last = slice(1 + len(groups["first"]), None)
    rows = []
    for j, (layer, index) in enumerate(candidates):
        f, a, b = float(post[0, j]), float(post[i_first, j].mean()), float(post[i_last, j].mean())
        pf, pa, pb = float(pre[0, j]), float(pre[i_first, j].mean()), float(pre[i_last, j].mean())
        bias = _bias_term(model, layer, index)
        is_and = f > 0 and max(a, b) <= ratio * f
        gates = bias < 0 and pf > 0 and pa <= 0 and pb <= 0 and pa - bias > 0 and pb - bias > 0
        silenced = [part for part, p in (("first", pa), ("last", pb)) if p <= 0 < p - bias]
        rows.append(AndRow(layer, index, f, a, b, pf, pa, pb, bias, is_and, gates, silenced))
    if neurons is None:
        rows = sorted(rows, key=lambda r: -r.and_score)[:k]
    return rows


def related_subjects(subject: str, subjects: Sequence[str]) -> tuple[list[str], list[str]]:
    """For a two-word subject: the subjects sharing only its first word, and only its last word."""
    parts = subject.split()
    if len(parts) != 2:
        raise ValueError(f"the AND test needs a two-word subject, got {subject!r}")
    first, last = parts
    first_only = [s for s in subjects if s.split()[0] == first and s.split()[-1] != last]
    last_only = [s for s in subjects if s.split()[-1] == last and s.split()[0] != first]
    return first_only, last_only


# ============================================================ trigger examples
@dataclass
class Trigger:
    prompt: str
    pos: int
    token: str
    activation: float


def factworld_prompts(templates_per_relation: int = 3) -> list[str]:
    """Prompts from the fact-world knowledge base: every subject in the first few templates of each relation."""
    from models import factworld

    out = []
    for relation in factworld.relations():
        for template in factworld.templates(relation, heldout=False)[:templates_per_relation]:
            out += [template.format(subject=s) for s in factworld.subjects()]
    return out


def trigger_examples(model: Transformer, layer: int, index: int, prompts: Optional[Sequence[str]] = None,
                     k: int = 10, batch_size: int = 512) -> list[Trigger]:
    """The k (prompt, position) pairs on which the neuron's key fires most (default prompts:
    the fact-world knowledge base in three templates per relation)."""
    _check_neurons(model, [(layer, index)])
    prompts = list(prompts) if prompts is not None else factworld_prompts()
    best: list[Trigger] = []
    with torch.no_grad():
        for i in range(0, len(prompts), batch_size):
            chunk = prompts[i: i + batch_size]
            tokens, mask = model._tokenize(chunk)
            _, cache = model.run_with_cache(tokens, attention_mask=mask, names_filter=_post_name(layer), return_type=None)
            act = cache[_post_name(layer)][..., index]  # [batch, pos]
            if mask is not None:
                act = act.masked_fill(mask == 0, float("-inf"))
            top = act.flatten().topk(min(k, act.numel()))
            for v, flat in zip(top.values.tolist(), top.indices.tolist()):
                b, p = divmod(flat, act.shape[1])
                best.append(Trigger(chunk[b], p, model.tokenizer.token_str(int(tokens[b, p])), v))
            best = sorted(best, key=lambda t: -t.activation)[:k]
    return best


# ============================================================ interventions
def intervention_hooks(neurons: Sequence[NeuronId], mode: str, means: Optional[dict[NeuronId, float]] = None,
                       factor: float = 2.0) -> list:
    """Hooks that set the neurons' activations at every position: "zero", "mean" (needs
    means), or "scale" (x factor)."""
    by_layer: dict[int, list[int]] = defaultdict(list)
    for layer, index in neurons:
        by_layer[layer].append(index)
    hooks = []
    for layer, idx in by_layer.items():
        ids = torch.tensor(idx)

        def hook(x: torch.Tensor, hook, ids=ids, layer=layer) -> torch.Tensor:
            x = x.clone()
            if mode == "zero":
                x[..., ids] = 0.0
            elif mode == "mean":
                x[..., ids] = torch.tensor([means[(layer, i)] for i in ids.tolist()], dtype=x.dtype, device=x.device)
            elif mode == "scale":
                x[..., ids] = x[..., ids] * factor
            else:
                raise ValueError(f"mode must be 'zero', 'mean' or 'scale', got {mode!r}")
            return x

        hooks.append((_post_name(layer), hook))
    return hooks


def mean_activations(model: Transformer, neurons: Sequence[NeuronId], prompts: Sequence[str]) -> dict[NeuronId, float]:
    """Each neuron's mean activation over all real tokens of `prompts`."""
    layers = sorted({l for l, _ in neurons})
    with torch.no_grad():
        tokens, mask = model._tokenize(list(prompts))
        _, cache = model.run_with_cache(tokens, attention_mask=mask, names_filter=[_post_name(l) for l in layers],
                                        return_type=None)
    weight = (mask if mask is not None else torch.ones(tokens.shape)).to(cache[_post_name(layers[0])].dtype)
    out = {}
    for layer, index in neurons:
        act = cache[_post_name(layer)][..., index]
        out[(layer, index)] = float((act * weight).sum() / weight.sum())
    return out


def answer_stats(model: Transformer, facts: Sequence[FactPrompt], hooks: Sequence = (),
                 batch_size: int = 512) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """For each (prompt, answer): probability of the answer, its rank (0 = top-1) and whether it is top-1."""
    from models.factworld.evaluate import next_word_logits

    if not facts:
        empty = torch.zeros(0)
        return empty, empty.long(), empty.bool()
    ids = torch.tensor([model.to_single_token(a) for _, a in facts])
    with torch.no_grad(), model.hooks(fwd=list(hooks)):
        logits = next_word_logits(model, [p for p, _ in facts], batch_size)
    probs = logits.softmax(-1)
    p = probs[torch.arange(len(facts)), ids]
    rank = (logits > logits[torch.arange(len(facts)), ids][:, None]).sum(-1)
    return p, rank, rank == 0


@dataclass
class Intervention:
    mode: str  # "zero", "mean" or "x2"
    p_before: float
    p_after: float
    rank_before: int
    rank_after: int
    random_p_after: list[float]  # the same number of random neurons from the same layers, per draw
    random_rank_after: list[int]

    @property
    def p_change(self) -> float:
        return self.p_after - self.p_before


@dataclass
class Validation:
    prompt: str
    target: str
    neurons: list[NeuronId]
    interventions: list[Intervention]
    specificity: dict[str, dict[str, float]]  # group -> {"n", "before", "after"} top-1 accuracy, zero ablation
    localised: bool  # zero ablation moves the answer off top-1 and the others keep >= 95% of their accuracy

    def to_dict(self) -> dict:
        return {"prompt": self.prompt, "target": self.target, "neurons": [f"L{l}N{n}" for l, n in self.neurons],
                "interventions": [asdict(i) for i in self.interventions], "specificity": self.specificity,
                "localised": self.localised}


def factworld_other_facts(exclude_subject: str, relation: str, template: int = 0) -> dict[str, list[FactPrompt]]:
    """The fact-world facts other than `exclude_subject`'s, as prompts: {"same relation": ...,
    "other relations": ...} in each relation's template `template`."""
    from models import factworld

    groups: dict[str, list[FactPrompt]] = {"same relation": [], "other relations": []}
    for fact in factworld.facts():
        if fact.subject == exclude_subject:
            continue
        prompt = factworld.prompt(fact.subject, fact.relation, template)
        groups["same relation" if fact.relation == relation else "other relations"].append((prompt, fact.object))
    return groups


def _random_like(model: Transformer, neurons: Sequence[NeuronId], rng: random.Random) -> list[NeuronId]:
    """As many random neurons per layer as `neurons` has, avoiding them."""
    taken = set(neurons)
    out = []
    for layer, count in Counter(l for l, _ in neurons).items():
        pool = [n for n in range(model.cfg.d_mlp) if (layer, n) not in taken]
        out += [(layer, n) for n in rng.sample(pool, count)]
    return out


def validate(model: Transformer, prompt: str, target: str, neurons: Sequence[NeuronId], *,
             other_facts: Optional[dict[str, list[FactPrompt]]] = None, n_random: int = 5, seed: int = 0,
             factor: float = 2.0, keep: float = 0.95) -> Validation:
    """Ablate (zero, mean) and amplify (x factor) the neurons at every position; report the
    target's probability and rank against random neurons from the same layers, and the
    top-1 accuracy of the other facts before and after zero ablation.

    other_facts: {group: [(prompt, answer)]}; default (fact-world): the same relation and
    the other relations, without this subject. Means for "mean" ablation are taken over
    all tokens of the other facts' prompts (or of this prompt if there are none).
    """
    neurons = _check_neurons(model, neurons)
    if not neurons:
        raise ValueError("no neurons to validate")
    if other_facts is None:
        other_facts = _default_others(model, prompt)
    rng = random.Random(seed)
    randoms = [_random_like(model, neurons, rng) for _ in range(n_random)]
    reference = [p for group in other_facts.values() for p, _ in group] or [prompt]
    means = mean_activations(model, neurons + [n for r in randoms for n in r], reference)
    fact = [(prompt, target)]
    p0, r0, _ = answer_stats(model, fact)
    interventions = []
    for mode, label in (("zero", "zero"), ("mean", "mean"), ("scale", f"x{factor:g}")):
        p1, r1, _ = answer_stats(model, fact, intervention_hooks(neurons, mode, means, factor))
        rand = [answer_stats(model, fact, intervention_hooks(r, mode, means, factor)) for r in randoms]
        interventions.append(Intervention(label, float(p0), float(p1), int(r0), int(r1),
                                          [float(p) for p, _, _ in rand], [int(r) for _, r, _ in rand]))
    specificity = {}
    hooks = intervention_hooks(neurons, "zero")
    for group, facts in other_facts.items():
        before = answer_stats(model, facts)[2].double().mean()
        after = answer_stats(model, facts, hooks)[2].double().mean()
        specificity[group] = {"n": len(facts), "before": float(before), "after": float(after)}
    kept = all(s["after"] >= keep * s["before"] for s in specificity.values() if s["n"])
    zero = interventions[0]
    return Validation(prompt, target, neurons, interventions, specificity, zero.rank_after > 0 and kept)


def factworld_subject(prompt: str) -> Optional[tuple[str, str, int]]:
    """(subject, relation, template index) if `prompt` is a fact-world prompt, else None."""
    from models import factworld

    for relation in factworld.relations():
        for template_index, template in enumerate(factworld.templates(relation)):
            head, _, tail = template.partition("{subject}")
            if prompt.startswith(head) and prompt.endswith(tail):
                subject = prompt[len(head): len(prompt) - len(tail)]
                if subject in factworld.subjects():
                    return subject, relation, template_index
    return None


def _default_others(model: Transformer, prompt: str) -> dict[str, list[FactPrompt]]:
    found = factworld_subject(prompt) if isinstance(prompt, str) else None
    if found is None:
        raise ValueError(f"{prompt!r} is not a fact-world prompt: pass other_facts={{group: [(prompt, answer), ...]}} "
                         "to check specificity")
    return factworld_other_facts(*found)


# ============================================================ localisation
@dataclass
class Localisation:
    prompt: str
    target: str
    k: Optional[int]  # fewest top neurons whose zero ablation localises the fact (None: none of ks did)
    neurons: list[NeuronId]  # the top-k neurons used (the largest k tried if not localised)
    validation: Optional[Validation]


def localise(model: Transformer, prompt: str, target: str, ks: Sequence[int] = (1, 2, 3, 5, 10, 20, 50), *,
             other_facts: Optional[dict[str, list[FactPrompt]]] = None, counterfactual: Optional[str] = None,
             keep: float = 0.95) -> Localisation:
    """The smallest k in ks for which zero-ablating the top-k `fact_neurons` moves the answer
    off top-1 while every other group of facts keeps >= `keep` of its top-1 accuracy."""
    ranked = fact_neurons(model, prompt, target, max(ks), counterfactual=counterfactual).ids
    if other_facts is None:
        other_facts = _default_others(model, prompt)
    fact = [(prompt, target)]
    base = {g: float(answer_stats(model, f)[2].double().mean()) for g, f in other_facts.items() if f}
    for k in sorted(ks):
        hooks = intervention_hooks(ranked[:k], "zero")
        if int(answer_stats(model, fact, hooks)[1][0]) == 0:
            continue
        after = {g: float(answer_stats(model, f, hooks)[2].double().mean()) for g, f in other_facts.items() if f}
        if all(after[g] >= keep * base[g] for g in base):
            return Localisation(prompt, target, k, ranked[:k], None)
    return Localisation(prompt, target, None, ranked, None)


@dataclass
class RelationView:
    relation: str
    n_facts: int
    localised: dict[str, Optional[int]]  # subject -> k (None if not localised)
    layer_histogram: dict[int, int]  # layer -> how many of the localising neurons (over localised facts) are there
    shared: list[tuple[str, int, list[str]]]  # neuron label, facts served, objects of those facts
    by_object: dict[str, list[tuple[str, int]]]  # object -> neurons in the top-k of most of its facts
    ks: list[int] = field(default_factory=list)

    @property
    def n_localised(self) -> int:
        return sum(k is not None for k in self.localised.values())

    def to_dict(self) -> dict:
        return asdict(self) | {"n_localised": self.n_localised}

    def save_json(self, path: Union[str, Path]) -> Path:
        return write_json(path, self.to_dict())


def relation_view(model: Transformer, relation: str, *, template: int = 0, top: int = 10,
                  ks: Sequence[int] = (1, 2, 3, 5, 10, 20, 50), include_none: bool = False,
                  limit: Optional[int] = None, progress: bool = True) -> RelationView:
    """Localise every fact of a fact-world relation; count neurons per layer and neurons
    shared across facts (in each fact's top-`top` by contribution)."""
    from models import factworld

    facts = [f for f in factworld.facts(relation) if include_none or f.object != "none"][:limit]
    localised: dict[str, Optional[int]] = {}
    serve: dict[NeuronId, list[str]] = defaultdict(list)
    layers: Counter = Counter()
    objects: dict[NeuronId, list[str]] = defaultdict(list)
    for fact in tqdm(facts, desc=f"localising {relation} facts", disable=not progress):
        prompt = factworld.prompt(fact.subject, relation, template)
        others = factworld_other_facts(fact.subject, relation, template)
        loc = localise(model, prompt, fact.object, ks, other_facts=others)
        localised[fact.subject] = loc.k
        if loc.k is not None:
            for neuron in loc.neurons[: loc.k]:
                layers[neuron[0]] += 1
        for neuron in fact_neurons(model, prompt, fact.object, top).ids:
            serve[neuron].append(fact.subject)
            objects[neuron].append(fact.object)
    shared = sorted(((f"L{l}N{n}", len(s), sorted(set(objects[(l, n)]))) for (l, n), s in serve.items()),
                    key=lambda x: -x[1])[:30]
    count_by_object = Counter(f.object for f in facts)
    by_object: dict[str, list[tuple[str, int]]] = {}
    for obj, n_obj in count_by_object.items():
        hits = [(f"L{l}N{n}", objects[(l, n)].count(obj)) for (l, n) in serve if objects[(l, n)].count(obj) > n_obj / 2]
        by_object[obj] = sorted(hits, key=lambda x: -x[1])[:10]
    return RelationView(relation, len(facts), localised, dict(sorted(layers.items())), shared, by_object, list(ks))


__all__ = [
    "NeuronContribution", "RankedNeurons", "fact_neurons", "neuron_contributions", "value_projection",
    "value_logits", "ValueProjection", "key_decomposition", "neuron_activations", "and_detection", "AndRow",
    "trigger_examples", "Trigger", "intervention_hooks", "mean_activations", "answer_stats", "validate",
    "Validation", "Intervention", "localise", "Localisation", "relation_view", "RelationView",
    "factworld_other_facts", "factworld_prompts", "factworld_subject", "related_subjects",
]
