"""What the explorer computes: each function reads a request's fields (`Params`), calls the
package's own function, and returns JSON for the page ({"views": [payload, ...], ...}).

Quick ones (`predict`, `attention`, `logit_lens_view`, `dla`, `dashboard`, `compare`) run
inside `AppState.computing`; long ones are `job_work(state, kind, params) -> work(model)`
(`JOBS[kind](params)`, or `STATE_JOBS[kind](state, params)` for those that read the app's
transcoders or texts: the attribution graph), run by `analyses.app.jobs`. Bad input raises the library's own error (the routes turn it into HTTP
400 with that message); nothing here attaches a hook or writes a weight itself.
"""

from __future__ import annotations

from typing import Any, Callable, Optional, Sequence

import torch

from analyses.app.views import labelled_json, plain, result_view, table

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

    def words(self, key: str) -> Optional[list[str]]:
        """A list of words: a JSON list of strings, or one string split at commas and spaces (None when absent)."""
        v = self.data.get(key, None)
        if v is None or v == "" or v == []:
            return None
        if isinstance(v, str):
            v = v.replace(",", " ").split()
        if not isinstance(v, list) or not all(isinstance(x, str) and x.strip() for x in v):
            raise ValueError(f"field {key!r} must be a list of words, got {v!r}")
        return [x.strip() for x in v]

    def fraction(self, key: str, default: float) -> float:
        """A number in [0, 1] (a cumulative-influence threshold)."""
        v = self.number(key, default)
        if not 0.0 <= v <= 1.0:
            raise ValueError(f"{key} must be a number in [0, 1]; got {v!r}")
        return v

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
    """Every head's attention pattern on the prompt (`interp.views.attention.attention_patterns`)."""
    from interp.views.attention import attention_patterns

    p = Params(data, ["prompt"])
    return {"views": [attention_patterns(model, p.text("prompt")).payload()]}


def logit_lens_view(model, data: Any) -> dict:
    """`probes.logit_lens.logit_lens` at one position (default the last)."""
    from probes.logit_lens import logit_lens

    p = Params(data, ["prompt", "pos"])
    return {"views": [result_view(logit_lens(model, p.text("prompt"), pos=p.integer("pos", -1)))]}


def dla(model, data: Any) -> dict:
    """Direct logit attribution per head, neuron and layer, to the top token or a given answer
    (minus an optional counterfactual)."""
    from interp.attribution import direct_logit_attribution

    p = Params(data, ["prompt", "answer", "counterfactual"])
    prompt = p.text("prompt")
    answer = p.text("answer", None)
    if answer is None:
        answer = top_tokens(model, prompt, 1)["top"][0]["id"]
    result = direct_logit_attribution(model, prompt, answer, p.text("counterfactual", None))
    return {"views": [result_view(result)], "answer": result.answer, "heads": result.heads.tolist(),
            "logit_diff": result.logit_diff}


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
    """The head's attention pattern on the prompt, with its direct logit attribution to the top token."""
    from interp import names as hook_names
    from interp.attribution import direct_logit_attribution
    from interp.tokens import one_prompt, str_tokens
    from interp.views.attention import attention_heads

    tokens = one_prompt(model, prompt)
    name = hook_names.act_name("pattern", layer)
    with torch.no_grad():
        _, cache = model.run_with_cache(tokens[None], names_filter=[name], return_type=None)
    pattern = cache[name][0, head]  # [q_pos, k_pos]
    top = top_tokens(model, prompt, 1)["top"][0]
    attribution = float(direct_logit_attribution(model, prompt, top["id"]).heads[layer, head])
    view = attention_heads(pattern[None], str_tokens(model, tokens), [f"L{layer}H{head}"],
                           title=f"head L{layer}H{head}").payload()
    view["notes"].append(f"direct logit attribution to the top token {top['token']!r}: {attribution:+.4f}")
    return {"views": [view], "pattern": pattern.tolist(), "attribution": attribution}


def _neuron_dashboard(state, model, layer: int, index: int, prompt: Optional[str]) -> dict:
    """probes.ffn.dashboard.neuron_dashboard over the app's texts (with the prompt among them)."""
    from probes.ffn.dashboard import neuron_dashboard

    texts = ([prompt] if prompt else []) + [t for t in state.texts if t != prompt]
    dash = neuron_dashboard(model, layer, index, texts, progress=False)
    return {"views": [result_view(dash)]}


def _feature_dashboard(state, model, layer: int, index: int) -> dict:
    """probes.sae.dashboard.feature_dashboard of the layer's transcoder over the app's texts."""
    from interp.checks import resolve_layer
    from probes.sae.dashboard import feature_dashboard

    if not state.transcoders:
        raise ValueError("this app has no transcoders loaded, so there are no features: start it with the "
                         "fact-world model (its shipped transcoders) or give create_app(transcoders=DIR)")
    layer = resolve_layer(layer, len(state.transcoders), "transcoder layer")
    dash = feature_dashboard(model, state.transcoders[layer], index, state.texts, k=10, progress=False)
    return {"views": [result_view(dash)]}


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
        view = table(f"localisation of {target!r} (click a neuron for its dashboard)",
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
        view = result_view(comparison_)
        return edit, {"views": [view], "layer": edit.info["layer"], "before": before["top"], "after": after["top"]}

    return work


def graph_job(state, data: Any) -> Work:
    """probes.graph.attribution_graph of a prompt over the app's transcoders, pruned at
    (node_threshold, edge_threshold), with the dashboards of the `GRAPH_DASHBOARDS` most
    influential kept features (analyses.graph.graph_page over the app's texts); the result holds
    the graph browser's payload, the node counts, the pruned counts, the targets and the scores.
    targets: words to explain (default: the top logits up to 95% probability)."""
    p = Params(data, ["prompt", "targets", "node_threshold", "edge_threshold", "max_feature_nodes", "batch_size"])
    prompt, targets = p.text("prompt"), p.words("targets")
    node_threshold, edge_threshold = p.fraction("node_threshold", 0.8), p.fraction("edge_threshold", 0.98)
    max_feature_nodes, batch_size = p.integer("max_feature_nodes", None), p.integer("batch_size", 64)
    if not state.transcoders:
        raise ValueError("this app has no transcoders loaded, so there is no attribution graph: start it with the "
                         "fact-world model (its shipped transcoders) or give create_app(transcoders=DIR)")
    transcoders, texts = list(state.transcoders), list(state.texts) or [prompt]

    def work(model) -> dict:
        from analyses.graph import graph_page
        from probes.graph import attribution_graph

        graph = attribution_graph(model, prompt, transcoders, targets=targets, max_feature_nodes=max_feature_nodes,
                                  batch_size=batch_size, progress=False)
        pruned = graph.prune(node_threshold=node_threshold, edge_threshold=edge_threshold)
        page = graph_page(model, graph, pruned, transcoders, dashboards=GRAPH_DASHBOARDS, texts=texts)
        return {"views": [page.payload()], "tokens": list(graph.tokens),
                "counts": {"features": graph.n_features, "errors": graph.n_errors, "tokens": graph.n_pos,
                           "targets": graph.n_targets, "nodes": graph.n_nodes,
                           "active_features": graph.settings.get("n_active_features")},
                "pruned": {"nodes": pruned.n_nodes, "edges": pruned.n_edges},
                "targets": [{"label": t.label, "token": t.token, "prob": t.prob} for t in graph.targets],
                "scores": graph.scores(), "seconds": graph.settings.get("seconds")}

    return work


GRAPH_DASHBOARDS = 8  # feature dashboards shipped with the graph (the most influential kept features)


def comparison(prompts: list[str], before: list[dict], after: list[dict], title: str) -> dict:
    rows = [[pr, b["top"][0]["token"], b["top"][0]["prob"], a["top"][0]["token"], a["top"][0]["prob"]]
            for pr, b, a in zip(prompts, before, after)]
    return table(title, ["prompt", "top before", "p before", "top after", "p after"], rows,
                 numeric=[False, False, True, False, True])


JOBS: dict[str, Callable[[Any], Work]] = {"sweep": sweep_job, "trace": trace_job, "localise": localise_job,
                                          "edit": edit_job}
STATE_JOBS: dict[str, Callable[[Any, Any], Work]] = {"graph": graph_job}


def job_work(state, kind: Any, data: Any) -> Work:
    """The work of a job of `kind` with request params `data` (checked now: bad input raises here)."""
    if isinstance(kind, str) and kind in JOBS:
        return JOBS[kind](data)
    if isinstance(kind, str) and kind in STATE_JOBS:
        return STATE_JOBS[kind](state, data)
    raise ValueError(f"unknown job kind {kind!r}; choose from {', '.join([*JOBS, *STATE_JOBS])}")


__all__ = ["Params", "top_tokens", "predict", "attention", "logit_lens_view", "dla", "dashboard", "comparison",
           "JOBS", "STATE_JOBS", "job_work", "sweep_job", "trace_job", "localise_job", "edit_job", "graph_job"]
