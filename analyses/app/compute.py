"""What the explorer computes: each function reads a request's fields (`Params`), calls the
package's own function, and returns JSON for the page ({"views": [payload, ...], ...}).

Quick ones (`predict`, `attention`, `logit_lens_view`, `dla`, `dashboard`, `compare`) run
inside `AppState.computing`; long ones are `JOBS[kind](params) -> work(model)`, run by
`analyses.app.jobs`. Bad input raises the library's own error (the routes turn it into HTTP
400 with that message); nothing here attaches a hook or writes a weight itself.
"""

from __future__ import annotations

from typing import Any, Callable, Optional, Sequence

import torch

from analyses.app.views import labelled_json, own_view, plain, result_view, table

MISSING = object()


class Params:
    """The fields of a JSON request body, read with clear errors for missing or mistyped ones."""

    def __init__(self, data: Any, allowed: Sequence[str]) -> None:
        if not isinstance(data, dict):
            raise ValueError(f"the request body must be a JSON object, got {type(data).__name__}")
        unknown = sorted(set(data) - set(allowed))
        if unknown:
            raise ValueError(f"unknown field(s) {unknown}; this request takes {sorted(allowed)}")
        self.data = data

    def text(self, key: str, default: Any = MISSING) -> Any:
        v = self.data.get(key, None)
        if v is None or v == "":
            if default is MISSING:
                raise ValueError(f"field {key!r} is required")
            return default
        if not isinstance(v, str):
            raise ValueError(f"field {key!r} must be a string, got {v!r}")
        return v

    def integer(self, key: str, default: Any = MISSING) -> Any:
        v = self.data.get(key, None)
        if v is None or v == "":
            if default is MISSING:
                raise ValueError(f"field {key!r} is required")
            return default
        if isinstance(v, bool) or not isinstance(v, (int, str)):
            raise ValueError(f"field {key!r} must be an integer, got {v!r}")
        try:
            return int(v)
        except ValueError:
            raise ValueError(f"field {key!r} must be an integer, got {v!r}") from None

    def number(self, key: str, default: float) -> float:
        v = self.data.get(key, None)
        if v is None or v == "":
            return default
        try:
            return float(v)
        except (TypeError, ValueError):
            raise ValueError(f"field {key!r} must be a number, got {v!r}") from None

    def integers(self, key: str) -> Optional[list[int]]:
        v = self.data.get(key, None)
        if v is None or v == "" or v == []:
            return None
        if isinstance(v, str):
            v = [x for x in v.replace(",", " ").split()]
        if not isinstance(v, list):
            raise ValueError(f"field {key!r} must be a list of integers, got {v!r}")
        out = []
        for x in v:
            try:
                out.append(int(x))
            except (TypeError, ValueError):
                raise ValueError(f"field {key!r} must be a list of integers, got {v!r}") from None
        return out

    def texts(self, key: str) -> list[str]:
        v = self.data.get(key, None)
        if isinstance(v, str):
            v = [line for line in v.splitlines() if line.strip()]
        if not isinstance(v, list) or not v or not all(isinstance(x, str) for x in v):
            raise ValueError(f"field {key!r} must be a non-empty list of prompts")
        return v


# ============================================================ quick views
def top_tokens(model, prompt: str, k: int = 10) -> dict:
    """The prompt's tokens and the k most likely next tokens with their probabilities."""
    from interp.tokens import one_prompt, str_tokens
    from interp.words import token_text

    tokens = one_prompt(model, prompt)
    if not 1 <= k <= model.cfg.d_vocab:
        raise ValueError(f"k must be in 1..{model.cfg.d_vocab}, got {k}")
    with torch.no_grad():
        probs = model(tokens[None])[0, -1].double().softmax(-1)
    top = probs.topk(k)
    rows = [{"token": token_text(model, int(i)), "id": int(i), "prob": float(p)}
            for p, i in zip(top.values, top.indices)]
    return {"tokens": str_tokens(model, tokens), "top": rows}


def predict(model, data: Any) -> dict:
    p = Params(data, ["prompt", "k"])
    out = top_tokens(model, p.text("prompt"), p.integer("k", 10))
    out["views"] = [table("next token", ["rank", "token", "probability"],
                          [[i + 1, r["token"], r["prob"]] for i, r in enumerate(out["top"])],
                          numeric=[True, False, True])]
    return out


def attention(model, data: Any) -> dict:
    """Every head's attention pattern on the prompt (the package's attention view when it exists)."""
    from interp import names as hook_names
    from interp.tokens import one_prompt, str_tokens

    p = Params(data, ["prompt"])
    prompt = p.text("prompt")
    tokens = one_prompt(model, prompt)
    try:
        from interp.views.attention import attention_patterns
    except ImportError:
        attention_patterns = None
    if attention_patterns is not None:
        view = attention_patterns(model, prompt)
        return {"views": [view.payload() if hasattr(view, "payload") else own_view(view)]}
    n_layers, n_heads = model.cfg.n_layers, model.cfg.n_heads
    names = [hook_names.act_name("pattern", l) for l in range(n_layers)]
    with torch.no_grad():
        _, cache = model.run_with_cache(tokens[None], names_filter=names, return_type=None)
    words = str_tokens(model, tokens)
    rows, sites = [], []
    for l in range(n_layers):
        pattern = cache[names[l]][0]  # [head, q_pos, k_pos]
        for h in range(n_heads):
            rows.append([f"L{l}H{h}"] + pattern[h, -1].tolist())
            sites.append({"unit": "head", "layer": l, "index": h})
    cols = ["head"] + [f"{w} ({i})" for i, w in enumerate(words)]
    return {"views": [table("attention from the last position (click a head for its pattern)", cols, rows)]}


def logit_lens_view(model, data: Any) -> dict:
    from interp.words import token_text
    from probes.logit_lens import logit_lens

    p = Params(data, ["prompt", "pos"])
    result = logit_lens(model, p.text("prompt"), pos=p.integer("pos", -1))
    view = own_view(result)
    if view is not None:
        return {"views": [view]}
    labels, logits = result
    probs = logits.double().softmax(-1)
    rows = []
    for label, row in zip(labels, probs):
        top = row.topk(5)
        words = [token_text(model, int(i)) for i in top.indices]
        rows.append([label, words[0], float(top.values[0]), ", ".join(f"{w} {float(v):.3f}" for w, v in
                                                                       zip(words[1:], top.values[1:]))])
    return {"views": [table("logit lens", ["state", "top token", "probability", "next 4"], rows)]}


def dla(model, data: Any) -> dict:
    """Direct logit attribution per head and per layer, to the top token or a given answer."""
    from interp.attribution import direct_logit_attribution

    p = Params(data, ["prompt", "answer", "counterfactual"])
    prompt = p.text("prompt")
    answer = p.text("answer", None)
    if answer is None:
        answer = top_tokens(model, prompt, 1)["top"][0]["id"]
    result = direct_logit_attribution(model, prompt, answer, p.text("counterfactual", None))
    heads = result.head_result()
    n_layers, n_heads = result.heads.shape
    order = result.heads.flatten().abs().argsort(descending=True).tolist()
    rows, sites = [], []
    for i in order:
        l, h = divmod(int(i), n_heads)
        rows.append([f"L{l}H{h}", float(result.heads[l, h])])
        sites.append({"unit": "head", "layer": l, "index": h})
    layer_rows = [[f"L{l}", float(result.attn[l]), float(result.mlp[l])] for l in range(n_layers)]
    neuron_rows, neuron_sites = [], []
    for l, n in _top_pairs(result.neurons, 15):
        neuron_rows.append([f"L{l}N{n}", float(result.neurons[l, n])])
        neuron_sites.append({"unit": "neuron", "layer": l, "index": n})
    notes = [f"logit {result.metric_name[len('direct logit attribution to '):]}: {result.logit_diff:.4f} "
             f"(sum of parts {result.total():.4f})"]
    view = own_view(result)
    views = [view] if view is not None else [
        table(f"{result.title}: heads (click one for its dashboard)", ["head", "attribution"], rows, notes=notes),
        table("per layer", ["layer", "attention", "MLP"], layer_rows),
        table("top neurons (click one for its dashboard)", ["neuron", "attribution"], neuron_rows)]
    return {"views": views, "answer": result.answer, "heads": result.heads.tolist(), "logit_diff": result.logit_diff}


def _top_pairs(x: torch.Tensor, k: int) -> list[tuple[int, int]]:
    flat = x.flatten().abs().argsort(descending=True)[:k]
    return [(int(i) // x.shape[1], int(i) % x.shape[1]) for i in flat]


def dashboard(state, model, data: Any) -> dict:
    """A head's, neuron's or feature's dashboard."""
    from interp.checks import resolve_index, resolve_layer

    p = Params(data, ["unit", "layer", "index", "prompt"])
    unit = p.text("unit")
    if unit not in ("head", "neuron", "feature"):
        raise ValueError(f"unit must be 'head', 'neuron' or 'feature', got {unit!r}")
    layer, index = p.integer("layer"), p.integer("index")
    prompt = p.text("prompt", None)
    if unit == "head":
        layer = resolve_layer(layer, model.cfg.n_layers)
        index = resolve_index(index, model.cfg.n_heads, "head")
        return _head_dashboard(model, layer, index, p.text("prompt"))
    if unit == "neuron":
        return _neuron_dashboard(state, model, layer, index, prompt)
    return _feature_dashboard(state, model, layer, index)


def _head_dashboard(model, layer: int, head: int, prompt: str) -> dict:
    from interp import names as hook_names
    from interp.tokens import one_prompt, str_tokens

    tokens = one_prompt(model, prompt)
    name = hook_names.act_name("pattern", layer)
    with torch.no_grad():
        _, cache = model.run_with_cache(tokens[None], names_filter=[name], return_type=None)
    pattern = cache[name][0, head]  # [q_pos, k_pos]
    words = str_tokens(model, tokens)
    try:
        from interp.views.attention import attention_heads
    except ImportError:
        attention_heads = None
    if attention_heads is not None:
        view = attention_heads(pattern[None], words, [f"L{layer}H{head}"], title=f"head L{layer}H{head}")
        return {"views": [view.payload()], "pattern": pattern.tolist()}
    cols = ["query \\ key"] + [f"{w} ({i})" for i, w in enumerate(words)]
    rows = [[f"{w} ({q})"] + pattern[q].tolist() for q, w in enumerate(words)]
    return {"views": [table(f"head L{layer}H{head}: attention pattern", cols, rows)],
            "pattern": pattern.tolist()}


def _neuron_dashboard(state, model, layer: int, index: int, prompt: Optional[str]) -> dict:
    """probes.ffn.dashboard.neuron_dashboard over the app's texts (with the prompt among them)."""
    from probes.ffn.dashboard import neuron_dashboard

    texts = ([prompt] if prompt else []) + [t for t in state.texts if t != prompt]
    dash = neuron_dashboard(model, layer, index, texts, progress=False)
    return {"views": [own_view(dash) or table(f"neuron {dash.label}", ["activation", "context"],
                                              [[c.activation, c.marked()] for c in dash.top_examples])]}


def _feature_dashboard(state, model, layer: int, index: int) -> dict:
    """probes.sae.dashboard.feature_dashboard of the layer's transcoder over the app's texts."""
    from interp.checks import resolve_layer
    from probes.sae.dashboard import feature_dashboard

    if not state.transcoders:
        raise ValueError("this app has no transcoders loaded, so there are no features: start it with the "
                         "fact-world model (its shipped transcoders) or give create_app(transcoders=DIR)")
    layer = resolve_layer(layer, len(state.transcoders), "transcoder layer")
    dash = feature_dashboard(model, state.transcoders[layer], index, state.texts, k=10, progress=False)
    return {"views": [own_view(dash) or table(f"feature {dash.label}", ["activation", "context"],
                                              [[c.activation, c.marked()] for c in dash.top_examples])]}


# ============================================================ jobs: params -> work(model)
Work = Callable[[Any], Any]


def sweep_job(data: Any) -> Work:
    """interp.patching.sweep of a prompt pair by logit_diff(answer, counterfactual)
    (probability(answer) without a counterfactual)."""
    p = Params(data, ["clean", "corrupted", "answer", "counterfactual", "site", "direction", "layers",
                      "positions", "batch_size"])
    clean, corrupted, answer = p.text("clean"), p.text("corrupted"), p.text("answer")
    counterfactual = p.text("counterfactual", None)
    site, direction = p.text("site", "resid_pre"), p.text("direction", "denoise")
    layers, positions, batch_size = p.integers("layers"), p.integers("positions"), p.integer("batch_size", None)

    def work(model) -> dict:
        from interp import metrics
        from interp.patching import sweep

        metric = (metrics.logit_diff(model, answer, counterfactual) if counterfactual is not None
                  else metrics.probability(model, answer))
        result = sweep(model, clean, corrupted, metric, site, direction=direction, layers=layers,
                       positions=positions, batch_size=batch_size, progress=False)
        return labelled_json(result) | {"clean_value": result.clean_value, "corrupted_value": result.corrupted_value}

    return work


def trace_job(data: Any) -> Work:
    """probes.causal_trace.trace of a prompt's subject."""
    p = Params(data, ["prompt", "subject", "answer", "kind", "window", "noise", "n_samples", "seed"])
    prompt, subject, answer = p.text("prompt"), p.text("subject"), p.text("answer", None)
    kind, window = p.text("kind", "resid"), p.integer("window", 10)
    noise, n_samples, seed = p.number("noise", 3.0), p.integer("n_samples", 10), p.integer("seed", 0)

    def work(model) -> dict:
        from probes.causal_trace import trace

        result = trace(model, prompt, subject, answer, kind=kind, window=window, noise=noise, n_samples=n_samples,
                       seed=seed, progress=False)
        return labelled_json(result) | {"clean_prob": result.clean_prob, "corrupted_prob": result.corrupted_prob}

    return work


def localise_job(data: Any) -> Work:
    """probes.ffn.localise: the fewest neuron sites whose zero ablation moves the answer off top-1."""
    p = Params(data, ["prompt", "target", "subject", "max_sites"])
    prompt, target, subject, max_sites = p.text("prompt"), p.text("target"), p.text("subject", None), \
        p.integer("max_sites", 20)

    def work(model) -> dict:
        from probes.ffn import localise

        loc = localise(model, prompt, target, subject=subject, max_sites=max_sites)
        roles = loc.validation.roles if loc.validation else [""] * len(loc.sites)
        rows = [[s.label, s.layer, s.index, s.pos, role] for s, role in zip(loc.sites, roles)]
        notes = [f"k = {loc.k}" if loc.k else f"not localised: {loc.reason}"]
        if loc.validation:
            v = loc.validation
            notes.append(f"margin {v.margin_before:+.3f} -> {v.margin_after:+.3f}; random draws that also flip it: "
                         f"{v.random_flips} of {len(v.random_margins)}")
        view = own_view(loc) or table(f"localisation of {target!r} (click a neuron for its dashboard)",
                                      ["site", "layer", "neuron", "position", "role"], rows, notes=notes)
        return {"views": [view], "k": loc.k, "sites": [s.label for s in loc.sites],
                "localisation": plain(loc.to_dict())}

    return work


def edit_job(data: Any) -> Work:
    """probes.edit.rome of (prompt, subject, new_target); returns (edit, JSON comparing the prompt,
    and the `check` prompts that should keep their answers, before and after)."""
    p = Params(data, ["prompt", "subject", "new_target", "layer", "check"])
    prompt, subject, new_target, layer = p.text("prompt"), p.text("subject"), p.text("new_target"), \
        p.integer("layer", None)
    check = p.texts("check") if p.data.get("check") else []

    def work(model) -> tuple[Any, dict]:
        from probes.edit import EditRequest, rome
        from probes.edit.evaluate import compare_edit

        edit = rome(model, prompt, subject, new_target, layer=layer, progress=False)
        old = top_tokens(model, prompt, 1)["top"][0]["token"]
        groups = {"edited prompt": [(prompt, new_target)]}
        if check:
            groups["should keep"] = [(c, top_tokens(model, c, 1)["top"][0]["token"]) for c in check]
        comparison_ = compare_edit(model, edit, EditRequest(prompt, subject, new_target), old, groups,
                                   keep=["should keep"] if check else [], layer=edit.info["layer"])
        before = top_tokens(model, prompt, 5)
        with edit.applied(model):
            after = top_tokens(model, prompt, 5)
        view = own_view(comparison_) or comparison([prompt], [before], [after], f"ROME at layer {edit.info['layer']}")
        return edit, {"views": [view], "layer": edit.info["layer"], "before": before["top"], "after": after["top"]}

    return work


def comparison(prompts: list[str], before: list[dict], after: list[dict], title: str) -> dict:
    rows = [[pr, b["top"][0]["token"], b["top"][0]["prob"], a["top"][0]["token"], a["top"][0]["prob"]]
            for pr, b, a in zip(prompts, before, after)]
    return table(title, ["prompt", "top before", "p before", "top after", "p after"], rows,
                 numeric=[False, False, True, False, True])


JOBS: dict[str, Callable[[Any], Work]] = {"sweep": sweep_job, "trace": trace_job, "localise": localise_job,
                                          "edit": edit_job}

__all__ = ["Params", "top_tokens", "predict", "attention", "logit_lens_view", "dla", "dashboard", "comparison",
           "JOBS", "sweep_job", "trace_job", "localise_job", "edit_job"]
