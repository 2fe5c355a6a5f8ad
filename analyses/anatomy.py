"""The anatomy of one fact, in the order the model computes it (the first part of `interp probe`):

  1. the AND keys at the subject's last token: the neurons (whole model) that fire for the full
     subject and not for a subject sharing only its first or only its last word, each key's
     pre-activation split by source token ("Michael", "Jordan"), position, earlier MLPs and biases;
  2. what their values write: the answer's logit they reach at the last position through the
     heads of later layers (`probes.recall.moved_contributions`), and the value's own top tokens;
  3. the heads that move it: attention from the last position to the subject, and the answer's
     logit in what each head writes from the subject positions (`probes.recall.attribute_extraction`);
  4. the last-position writers (direct contribution, `probes.ffn.fact_neurons`);
  5. the localisation (`probes.ffn.localise`) with its random baseline;
  6. one figure of the chain: positions across, layers down, the sites as dots and the heads as arrows
     (OUT/chain.png, .svg), and the same as an interactive page (OUT/chain.html, `chain_view`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Optional

from matplotlib.figure import Figure

from interp import Neuron

if TYPE_CHECKING:
    from interp.views import View
    from models import Transformer
    from probes.ffn import Localisation

SUBJECT_SITES = 40  # the subject-only localisation may use more sites: a stored fact is spread over many


def anatomy(model: Transformer, prompt: str, target: str, subject: str, first_only: str, last_only: str, *,
            others: Optional[dict], n_keys: int = 3, n_heads: int = 3, out=None, plot=None) -> dict:
    """Print the six parts; return their numbers (a JSON-ready dict); save OUT/chain if `out` is given."""
    from probes import ffn
    from probes.recall import attribute_extraction, moved_contributions
    from probes.subjects import subject_span

    start, end = subject_span(model, prompt, subject)
    at = end - 1
    tokens = model.to_str_tokens(prompt)
    report: dict = {"subject_span": [start, end], "tokens": tokens}
    p_first, p_last = prompt.replace(subject, first_only), prompt.replace(subject, last_only)

    # 1. AND keys at the last subject token.
    rows = [r for r in ffn.and_detection(model, prompt, p_first, p_last, pos=at, k=4 * n_keys) if r.is_and][:n_keys]
    keys = []
    print(f"1. AND keys at the last subject token ({tokens[at]!r}, position {at}): fire for {subject!r}, "
          f"not for {first_only!r} or {last_only!r}")
    for r in rows:
        parts = {name: ffn.key_by_source(model, p, r.neuron, pos=at) for name, p in
                 ((subject, prompt), (first_only, p_first), (last_only, p_last))}
        keys.append({"neuron": r.neuron.label, "activation": [r.full, r.first_only, r.last_only], "parts": parts})
        print(f"   {r.neuron.label}: activation {r.full:.2f} / {r.first_only:.2f} / {r.last_only:.2f}; "
              "pre-activation by source:")
        for name, d in parts.items():
            print(f"     {name:>16}: {sum(d.values()):+.2f} = " + " ".join(f"{k} {v:+.2f}" for k, v in d.items()))
    report["and_keys"] = keys

    # 2. What the values write, carried to the last position.
    moved = moved_contributions(model, prompt, subject, target)  # [layer, pos, d_mlp]
    print(f"2. What their values write: logit({target}) they reach at the last position through later heads, "
          "and the value's top tokens")
    values = []
    for k in keys:
        n = Neuron.from_label(k["neuron"])
        proj = ffn.value_projection(model, n, 3)
        values.append({"neuron": k["neuron"], "moved_logit": float(moved[n.layer, at, n.index]),
                       "promotes": [w for w, _ in proj.promoted]})
        print(f"   {k['neuron']}: {float(moved[n.layer, at, n.index]):+.3f} via heads; value promotes "
              + ", ".join(w for w, _ in proj.promoted))
    flat = moved.flatten().topk(5)
    strongest = []
    for v, i in zip(flat.values.tolist(), flat.indices.tolist()):
        layer, rest = divmod(i, moved.shape[1] * moved.shape[2])
        strongest.append([Neuron(layer, rest % moved.shape[2], rest // moved.shape[2]).label, v])
    report["values"] = {"and_keys": values, "strongest_moved": strongest}
    print("   strongest over all subject sites: " + ", ".join(f"{s} {v:+.3f}" for s, v in strongest))

    # 3. Heads that move it.
    ext = attribute_extraction(model, prompt, subject, target)
    order = ext.from_subject.flatten().argsort(descending=True)[:n_heads].tolist()
    heads = []
    print(f"3. Heads that move it to the last position (attention to the subject; logit({target}) of what they "
          "write from it; its top token)")
    for i in order:
        l, h = divmod(i, model.cfg.n_heads)
        heads.append({"head": f"L{l}H{h}", "attention": float(ext.attention[l, h]),
                      "logit": float(ext.from_subject[l, h]), "top_token": ext.top_token[l][h]})
        print(f"   L{l}H{h}: attention {float(ext.attention[l, h]):.2f}, logit {float(ext.from_subject[l, h]):+.2f}, "
              f"top token {ext.top_token[l][h]!r}")
    report["heads"] = heads

    # 4. Last-position writers.
    writers = ffn.fact_neurons(model, prompt, target, 5)
    report["writers"] = [[n.label, n.contribution] for n in writers]
    print("4. Last-position writers (direct contribution to logit): "
          + ", ".join(f"{n.label} {n.contribution:+.2f}" for n in writers))

    # 5. Localisation.
    loc = localisation(model, prompt, target, subject, others, report)
    if out is not None and plot is not None:
        chain_figure(model, tokens, report, loc, ext, out, plot, target)
        chain_view(report, target, model.cfg.n_layers).save_html(out / "chain.html")
    return report


def localisation(model: Transformer, prompt: str, target: str, subject: Optional[str], others: Optional[dict],
                 report: dict) -> Optional[Localisation]:
    """Print and record the localisation anywhere and at the subject's tokens only; None (and a
    note) when the target is not the model's answer."""
    from probes import ffn

    try:
        loc = ffn.localise(model, prompt, target, subject=subject, other_facts=others)
    except ValueError as e:
        print(f"5. Localisation skipped: {e}")
        report["localisation"] = {"skipped": str(e)}
        return None
    report["localisation"] = loc.to_dict()
    check = loc.validation
    if loc.k:
        print(f"5. Localised with k = {loc.k} sites ({loc.method} ranking): " + ", ".join(
            f"{s.label} ({r})" for s, r in zip(loc.sites, check.roles)))
        print(f"   zeroing them: margin {check.margin_before:+.2f} -> {check.margin_after:+.2f}; random sites (same "
              f"layers and positions): {check.random_flips} of {len(check.random_margins)} draws move the answer, "
              f"margins {min(check.random_margins, default=0):+.2f} .. {max(check.random_margins, default=0):+.2f}; "
              + "; ".join(f"{g} top-1 {s['before']:.3f} -> {s['after']:.3f}" for g, s in check.specificity.items()))
    else:
        print(f"5. Not localised with <= 20 sites: {loc.reason}")
    if subject is not None:
        sub = ffn.localise(model, prompt, target, subject=subject, other_facts=others, roles=ffn.SUBJECT_ROLES,
                           max_sites=SUBJECT_SITES, candidates=128)
        report["localisation_at_subject"] = sub.to_dict()
        print(f"   with the sites limited to the subject's tokens (k <= {SUBJECT_SITES}): "
              + (f"k = {sub.k} (" + ", ".join(s.label for s in sub.sites) + ")" if sub.k
                 else f"not localised ({sub.reason})")
              + f"; zeroing {len(sub.sites)} subject sites: margin {sub.validation.margin_before:+.2f} -> "
                f"{sub.validation.margin_after:+.2f}; random sites: {sub.validation.random_flips} of "
                f"{len(sub.validation.random_margins)} draws move the answer")
    return loc


# The kinds of sites in the chain, in drawing order: colour, legend name, what its number is.
CHAIN_KINDS = {
    "and_key": ("#d6604d", "AND key", "activation for the full subject (first-only / last-only in the details)"),
    "carried": ("#1b7837", "carried value", "logit(target) that later heads carry to the last position"),
    "writer": ("#2166ac", "last-position writer", "direct contribution to logit(target)"),
    "localised": ("#b2182b", "localised site", "ranking score (greedy: the margin left once it and the ones "
                                               "before are zeroed)"),
    "subject_sites": ("#8c510a", "subject-only sites", "sites of the localisation limited to the subject's tokens"),
}
HEAD_COLOUR = "#542788"


def _site(label: str):
    """A Neuron or Feature from its label."""
    from interp import Feature

    try:
        return Neuron.from_label(label)
    except ValueError:
        return Feature.from_label(label)


def chain_sites(report: dict) -> list[dict]:
    """The sites of the chain figure and view, in drawing order: one dict per dot with its `kind`
    (a key of CHAIN_KINDS), `label`, `layer`, `pos`, `index`, `score` (the number the report holds
    for it), `text` (the figure's annotation) and `colour`. Positions default to the last one."""
    n_pos = len(report["tokens"])
    at = report["subject_span"][1] - 1
    items: list[dict] = []

    def add(kind: str, label: str, score: float, text: str, **extra) -> None:
        site = _site(label)
        pos = n_pos - 1 if site.pos is None else site.pos
        items.append({"kind": kind, "label": label, "layer": site.layer, "pos": pos, "index": site.index,
                      "score": float(score), "text": f"{site.UNIT[0].upper()}{site.index} {text}",
                      "colour": CHAIN_KINDS[kind][0], **extra})

    for k in report["and_keys"]:
        a = k["activation"]
        add("and_key", k["neuron"] + f"@{at}", a[0], f"AND {a[0]:.1f}/{a[1]:.1f}/{a[2]:.1f}",
            activation={"full": a[0], "first_only": a[1], "last_only": a[2]})
    for label, v in report["values"]["strongest_moved"][:3]:
        add("carried", label, v, f"carried {v:+.2f}")
    for label, v in report["writers"][:3]:
        add("writer", label, v, f"writes {v:+.2f}")
    loc = report.get("localisation") or {}
    if loc.get("k"):
        ranked = dict(zip(loc["ranking"]["sites"], loc["ranking"]["scores"]))
        roles = (loc.get("validation") or {}).get("roles") or []
        for j, label in enumerate(loc["sites"]):
            add("localised", label, ranked.get(label, float("nan")), "ablated", method=loc["method"],
                role=roles[j] if j < len(roles) else "")
    at_subject = report.get("localisation_at_subject") or {}
    if at_subject.get("k"):
        per_cell: dict[tuple[int, int], list[str]] = {}
        for label in at_subject["sites"]:
            site = _site(label)
            per_cell.setdefault((site.layer, site.pos), []).append(label)
        for (layer, pos), labels in per_cell.items():
            items.append({"kind": "subject_sites", "label": f"{len(labels)} subject-only sites at L{layer}@{pos}",
                          "layer": layer, "pos": pos, "index": None, "score": float(len(labels)),
                          "text": f"{len(labels)} subject-only sites", "colour": CHAIN_KINDS["subject_sites"][0],
                          "sites": labels})
    return items


def chain_heads(report: dict) -> list[dict]:
    """The heads of the chain: each with its `label`, `layer`, `head`, `attention`, `logit`,
    `top_token`, the arrow's `source` (the subject's last token) and `dest` (the last position), its
    `slot` among its layer's heads and `y`, its height in layer units (a block's heads act before its
    MLP: between rows)."""
    at, n_pos = report["subject_span"][1] - 1, len(report["tokens"])
    per_layer: dict[int, int] = {}
    heads = []
    for h in report["heads"]:
        layer, head = (int(x) for x in h["head"][1:].split("H"))
        j = per_layer.get(layer, 0)
        per_layer[layer] = j + 1
        heads.append({"label": h["head"], "layer": layer, "head": head, "attention": float(h["attention"]),
                      "logit": float(h["logit"]), "top_token": h["top_token"], "source": at, "dest": n_pos - 1,
                      "slot": j, "y": layer - 0.5 + 0.1 * j})
    return heads


def _chain_title(tokens: list[str], target: str) -> str:
    return f"the recall chain of {' '.join(tokens[1:])!r} -> {target}"


def chain_figure(model: Transformer, tokens: list[str], report: dict, loc, ext, out, plot, target: str) -> list:
    """Positions across, layers down. In each cell, its sites: AND keys (orange), subject sites whose
    values the heads carry to the answer (green), last-position writers (blue), localised sites
    (red); the top heads as arrows from the subject's last token to the last position. The sites and
    heads are `chain_sites` and `chain_heads` of the report, as in `chain_view`."""
    n_layers, n_pos = model.cfg.n_layers, len(tokens)
    fig = Figure(figsize=(max(8.0, 1.45 * n_pos), 1.6 * n_layers + 1.6), layout="constrained")
    ax = fig.subplots()
    ax.set_xlim(-0.6, n_pos - 0.2)
    ax.set_ylim(n_layers - 0.35, -0.75)
    ax.set_xticks(range(n_pos), tokens)
    ax.set_yticks(range(n_layers), [f"MLP {l}" for l in range(n_layers)])
    ax.grid(alpha=0.2)
    cells: dict[tuple[int, int], list[tuple[str, str]]] = {}
    for item in chain_sites(report):
        cells.setdefault((item["layer"], item["pos"]), []).append((item["text"], item["colour"]))
    for (layer, pos), lines in cells.items():
        colours = {c for _, c in lines}
        ax.scatter([pos], [layer], s=120, color=lines[0][1] if len(colours) == 1 else "#777777", zorder=3)
        for j, (text, colour) in enumerate(lines[:6]):
            ax.text(pos + 0.08, layer - 0.12 + 0.13 * j, text, fontsize=6.5, color=colour, va="center")
    for h in chain_heads(report):
        width = 0.8 + 2.5 * max(0.0, min(1.0, h["attention"]))
        ax.annotate("", xy=(h["dest"], h["y"]), xytext=(h["source"], h["y"]),
                    arrowprops=dict(arrowstyle="->", color=HEAD_COLOUR, lw=width))
        ax.text(h["source"] + 0.1, h["y"] - 0.04, f"head {h['label']}: attn {h['attention']:.2f}, {target} "
                f"{h['logit']:+.2f}", fontsize=6.5, color=HEAD_COLOUR)
    ax.set_title(_chain_title(tokens, target), fontsize=10)
    flips = f"{loc.validation.random_flips}/{len(loc.validation.random_margins)}" if loc is not None and loc.k else "-"
    ax.set_xlabel(f"orange: AND keys (activation for the full / first-only / last-only subject); green: subject sites "
                  f"whose output later heads carry to logit({target}); purple: heads (attention to the subject, "
                  f"logit({target}) of what they write from it);\nblue: direct writers at the last position; red: the "
                  f"localised sites (zeroed together the answer leaves top-1; random sites at the same layers and "
                  f"positions: {flips} draws do); brown: the sites of the localisation limited to the subject's tokens", fontsize=7)
    return plot.save(fig, out / "chain")


def chain_view(report: dict, target: str, n_layers: int) -> View:
    """The recall chain as an interactive page (kind "chain"): the anatomy `report`'s sites
    (`chain_sites`) as dots at (layer, position) sized by their number, its heads (`chain_heads`)
    as arrows from the subject's last token to the last position; hover for a site's numbers,
    click for its details. The same numbers as `chain_figure`."""
    from interp.views import View

    tokens = report["tokens"]
    if not isinstance(n_layers, int) or n_layers < 1:
        raise ValueError(f"n_layers must be a positive int (the model's layers), got {n_layers!r}")
    items, heads = chain_sites(report), chain_heads(report)
    bad = [i["label"] for i in items if not 0 <= i["layer"] < n_layers] + \
          [h["label"] for h in heads if not 0 <= h["layer"] < n_layers]
    if bad:
        raise ValueError(f"sites outside the model's {n_layers} layers: {bad}")
    loc = report.get("localisation") or {}
    check = loc.get("validation") or {}
    data = {"tokens": tokens, "n_layers": n_layers, "target": target, "subject_span": report["subject_span"],
            "sites": items, "heads": heads, "head_colour": HEAD_COLOUR,
            "kinds": {k: {"colour": c, "name": n, "score": s} for k, (c, n, s) in CHAIN_KINDS.items()},
            "localisation": {"k": loc.get("k"), "method": loc.get("method"), "reason": loc.get("reason"),
                             "skipped": loc.get("skipped"), "margin_before": check.get("margin_before"),
                             "margin_after": check.get("margin_after"), "random_flips": check.get("random_flips"),
                             "random_draws": len(check.get("random_margins") or [])}}
    notes = ["dots: sites at (layer, position), sized by their number within their kind; arrows: heads moving the "
             "subject to the last position (width: attention). Hover for numbers, click for details."]
    return View("chain", data, title=_chain_title(tokens, target), notes=notes)


__all__ = ["CHAIN_KINDS", "anatomy", "chain_figure", "chain_heads", "chain_sites", "chain_view"]
