"""The recall chain over every fact of a relation (Geva et al. 2023).

    interp recall sport
    python -m analyses.recall country --out results/recall

For the facts of the relation (template 0, "none" answers left out):
  - subject enrichment: at the subject's last token, after each layer, the attribute rate of the
    logit lens (the share of its top-k tokens that are the subject's attributes, k = their number)
    and the decoding accuracy of linear probes trained on other subjects;
  - which subject sites enrich: the neuron site whose output the later heads carry to the answer
    most (`probes.recall.moved_contributions`), counted per layer and position role;
  - attribute extraction: per head, the share of facts for which the answer is the top token of
    what the head writes at the last position from the subject positions (extraction rate), and
    its mean attention to the subject;
  - linear probes (`probes.linear`) per residual point at the last subject token and the last
    token, tested on held-out subjects (every 5th subject; training templates) and on held-out
    templates (all subjects).
OUT/RELATION.json and OUT/RELATION.png, with the figure's numbers as interactive pages:
OUT/RELATION.html (extraction rate per head), RELATION_curves.html (enrichment and probes per
residual point) and RELATION_sites.html (the carried subject sites).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Optional, Sequence, Union

import torch
from matplotlib.figure import Figure

from analyses.common import (
    AnalysisResult, ModelArg, Outputs, add_model_arguments, add_out_argument, as_model, main_for,
)
from interp.progress import progress_bar

RELATIONS = ("sport", "country", "occupation")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("relation", nargs="?", default="sport", help="sport, country or occupation")
    p.add_argument("--limit", type=int, default=None, help="only the first N facts")
    add_model_arguments(p)
    add_out_argument(p, "results/recall")


def probe_splits(relation: str, limit: Optional[int] = None) -> dict[str, tuple[list, list]]:
    """{"held-out subjects": (train, test), "held-out templates": (train, test)} as probes.linear
    Examples, over the relation's facts (the first `limit`)."""
    from analyses.factworld_facts import relation_facts
    from models import factworld
    from probes.linear import Example

    facts = relation_facts(relation, limit=limit)
    seen, unseen = factworld.templates(relation, heldout=False), factworld.templates(relation, heldout=True)

    def examples(fs, templates):
        return [Example(t.format(subject=f.subject), f.subject, f.object) for f in fs for t in templates]

    train_subjects = [f for i, f in enumerate(facts) if i % 5]
    test_subjects = [f for i, f in enumerate(facts) if not i % 5]
    return {"held-out subjects": (examples(train_subjects, seen), examples(test_subjects, seen)),
            "held-out templates": (examples(facts, seen), examples(facts, unseen))}


def recall_chain(model: ModelArg = "factworld", relation: str = "sport", *, limit: Optional[int] = None,
                 out: Optional[Union[str, Path]] = None, progress: bool = True,
                 dtype: Optional[str] = None) -> AnalysisResult:
    """The recall chain over the relation's facts (the first `limit`) on a fact-world model:
    enrichment, the subject sites the heads carry, extraction per head, linear probes (see the
    module docstring). `results` holds the extraction rates and the `ProbeCurve`s."""
    from analyses.factworld_facts import relation_facts

    if relation not in RELATIONS:
        raise ValueError(f"unknown relation {relation!r}; choose from {', '.join(RELATIONS)}")
    model = as_model(model, dtype)
    outputs = Outputs(out)
    facts = relation_facts(relation, limit=limit)
    start = time.perf_counter()
    chain = _chain(model, relation, facts, progress)
    chain_seconds = time.perf_counter() - start
    start = time.perf_counter()
    curves = _probe_curves(model, relation, limit)
    probe_seconds = time.perf_counter() - start

    points = ["embed"] + [f"L{l}" for l in range(model.cfg.n_layers)]
    report = {
        "relation": relation, "n_facts": len(facts), "points": points,
        "enrichment_logit_lens_rate": chain["enrichment"], "enrichment_rate_among_objects": chain["enrichment_objects"],
        "n_objects": len(chain["objects"]), "top_moved_site": dict(chain["moved_at"].most_common()),
        "extraction_rate": chain["rate"].tolist(), "extraction_rate_among_relation_objects": chain["rate_among"].tolist(),
        "attention_to_subject": chain["attention"].tolist(),
        "probes": {k: c.to_dict() for k, c in curves.items()},
        "seconds": {"chain": chain_seconds, "probes": probe_seconds}, "roles": list(chain["roles"]),
    }
    outputs.json(f"{relation}.json", report)
    _print(model, relation, report, chain, curves)
    paths = outputs.figure(_figure(model, relation, points, chain, curves), relation)
    for suffix, view in figure_views(relation, points, chain, curves).items():
        outputs.view(relation + suffix, view)
    if out is not None:
        print(f"Plots ({', '.join(str(p) for p in paths)}) and JSON in {out}/")
    return AnalysisResult("recall", report, outputs.files,
                          {"extraction_rate": chain["rate"], "extraction_rate_among": chain["rate_among"],
                           "probes": curves})


def _chain(model, relation: str, facts: list, progress: bool) -> dict:
    """Per fact: enrichment rates, extraction (all tokens, among the relation's objects), and the
    subject site whose output the heads carry most; averaged over the facts."""
    from models import factworld
    from probes.ffn import ROLES, prompt_layout
    from probes.recall import attribute_extraction, extraction_rate, moved_contributions, subject_enrichment

    objects = sorted({f.object for r in RELATIONS for f in factworld.facts(r)} - {"none"})
    candidates = sorted({f.object for f in facts})
    extractions, among, rates, rates_objects, moved_at = [], [], [], [], Counter()
    for fact in progress_bar(facts, progress, desc=f"recall chain of {relation} facts"):
        prompt = factworld.prompt(fact.subject, relation)
        attributes = [factworld.lookup(fact.subject, r) for r in factworld.relations()]
        attributes = [a for a in attributes if a != "none"]
        rates.append(subject_enrichment(model, prompt, fact.subject, attributes).rate)
        rates_objects.append(subject_enrichment(model, prompt, fact.subject, attributes, candidates=objects).rate)
        extractions.append(attribute_extraction(model, prompt, fact.subject, fact.object))
        among.append(attribute_extraction(model, prompt, fact.subject, fact.object, candidates=candidates))
        moved = moved_contributions(model, prompt, fact.subject, fact.object)
        layer, rest = divmod(int(moved.flatten().argmax()), moved.shape[1] * moved.shape[2])
        role = prompt_layout(model, prompt, fact.subject).roles[rest // moved.shape[2]]
        moved_at[f"L{layer} {role}"] += 1
    return {"objects": objects, "candidates": candidates, "moved_at": moved_at, "roles": ROLES,
            "rate": extraction_rate(extractions), "rate_among": extraction_rate(among),
            "attention": torch.stack([e.attention for e in extractions]).mean(0),
            "enrichment": torch.tensor(rates).mean(0).tolist(),
            "enrichment_objects": torch.tensor(rates_objects).mean(0).tolist()}


def _probe_curves(model, relation: str, limit: Optional[int]) -> dict:
    from probes.linear import ROLES as PROBE_ROLES
    from probes.linear import probe_curve

    curves = {}
    for split, (train, test) in probe_splits(relation, limit).items():
        for role in PROBE_ROLES:
            curves[f"{split}, {role}"] = probe_curve(model, train, test, role)
    return curves


def _print(model, relation: str, report: dict, chain: dict, curves: dict) -> None:
    points, seconds = report["points"], report["seconds"]
    print(f"{relation}: {report['n_facts']} facts ({seconds['chain']:.0f} s chain, {seconds['probes']:.0f} s probes)")
    print("subject enrichment, logit-lens attribute rate at the last subject token (whole vocabulary): "
          + ", ".join(f"{p} {r:.3f}" for p, r in zip(points, chain["enrichment"])))
    print(f"  ... among the {len(chain['objects'])} objects of all relations: "
          + ", ".join(f"{p} {r:.3f}" for p, r in zip(points, chain["enrichment_objects"])))
    for name, c in curves.items():
        print(f"linear probe, {name}: test accuracy " + ", ".join(f"{p} {a:.2f}" for p, a in zip(points, c.test_accuracy))
              + f" (chance {c.chance:.2f}, {c.n_train} train / {c.n_test} test)")
    print("subject site whose output the heads carry to the answer most: "
          + ", ".join(f"{k}: {v}" for k, v in chain["moved_at"].most_common(5)))
    attention, n_heads = chain["attention"], model.cfg.n_heads
    for name, r in (("whole vocabulary", chain["rate"]),
                    (f"among the {len(chain['candidates'])} {relation} objects", chain["rate_among"])):
        order = r.flatten().argsort(descending=True)[:5].tolist()
        print(f"extraction rate per head (answer = top token, {name}, of what it writes from the subject): "
              + ", ".join(f"L{i // n_heads}H{i % n_heads} {float(r.flatten()[i]):.2f} "
                          f"(attention {float(attention.flatten()[i]):.2f})" for i in order))


def _figure(model, relation: str, points: list[str], chain: dict, curves: dict) -> Figure:
    from interp import plot

    rate_among, moved_at = chain["rate_among"], chain["moved_at"]
    fig = Figure(figsize=(13, 8), layout="constrained")
    (a, b), (c, d) = fig.subplots(2, 2)
    plot.heatmap(rate_among, row_labels=[f"L{l}" for l in range(model.cfg.n_layers)],
                 col_labels=[f"H{h}" for h in range(model.cfg.n_heads)],
                 title=f"extraction rate per head (top among the {relation} objects)",
                 xlabel="head", ylabel="layer", colorbar_label="share of facts", cmap="Blues", ax=a,
                 center=float(rate_among.max()) / 2)  # colours from 0 to the largest value
    b.plot(points, chain["enrichment"], marker="o", label="logit-lens attribute rate (vocabulary)")
    b.plot(points, chain["enrichment_objects"], marker="^",
           label=f"logit-lens attribute rate (among {len(chain['objects'])} objects)")
    b.plot(points, curves["held-out subjects, last subject token"].test_accuracy, marker="s",
           label="linear probe, held-out subjects")
    b.set_ylim(0, 1.05)
    b.set_title("subject enrichment at the last subject token")
    b.legend(fontsize="small")
    for name, curve in curves.items():
        c.plot(points, curve.test_accuracy, marker="o", label=name)
    c.axhline(curves["held-out subjects, last token"].chance, color="#777777", linestyle=":", label="majority class")
    c.set_ylim(0, 1.05)
    c.set_title(f"linear probes decoding the {relation} (test accuracy)")
    c.legend(fontsize="small")
    labels, counts = zip(*moved_at.most_common(8)) if moved_at else ((), ())
    d.barh(list(labels)[::-1], list(counts)[::-1], color="#1b7837")
    d.set_title("the subject site the heads carry to the answer most")
    d.set_xlabel("facts")
    return fig


def figure_views(relation: str, points: list[str], chain: dict, curves: dict) -> dict:
    """The figure's numbers as views, {file suffix: view}: "" the extraction rate per head among the
    relation's objects (heatmap [layer, head]), "_curves" enrichment and probe accuracy per residual
    point (table), "_sites" the subject sites the heads carry most (table)."""
    from analyses.figure_views import Grid, table_view

    rate_among = chain["rate_among"]
    n_layers, n_heads = rate_among.shape
    heads = Grid(rate_among, ("layer", "head"), {"layer": [str(l) for l in range(n_layers)],
                                                 "head": [str(h) for h in range(n_heads)]},
                 title=f"{relation}: extraction rate per head (answer top among the {len(chain['candidates'])} "
                       f"{relation} objects)", metric_name="share of facts")
    rows = [["logit-lens attribute rate (vocabulary)", None, *chain["enrichment"]],
            [f"logit-lens attribute rate (among {len(chain['objects'])} objects)", None, *chain["enrichment_objects"]]]
    rows += [[f"linear probe, {name} (test accuracy)", c.chance, *c.test_accuracy] for name, c in curves.items()]
    curves_view = table_view(f"{relation}: subject enrichment and linear probes per residual point",
                             ["measure", "chance", *points], rows,
                             notes=["enrichment at the last subject token; probes tested on held-out subjects "
                                    "or held-out templates"])
    sites = table_view(f"{relation}: the subject site the heads carry to the answer most",
                       ["site", "facts"], [[k, v] for k, v in chain["moved_at"].most_common()])
    return {"": heads, "_curves": curves_view, "_sites": sites}


def run(args: argparse.Namespace) -> int:
    if args.relation not in RELATIONS:
        raise SystemExit(f"unknown relation {args.relation!r}; choose from {', '.join(RELATIONS)}")
    return recall_chain(args.model, args.relation, limit=args.limit, out=args.out, progress=not args.quiet,
                        dtype=args.dtype).rc


def main(argv: Optional[Sequence[str]] = None) -> int:
    return main_for("analyses.recall", __doc__, add_arguments, run, argv)


if __name__ == "__main__":
    sys.exit(main())
