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
OUT/RELATION.json and OUT/RELATION.png.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter
from typing import Optional, Sequence

import torch
from matplotlib.figure import Figure
from tqdm.auto import tqdm

from analyses.common import add_model_arguments, add_out_argument, load_model, main_for, write_json

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


def run(args: argparse.Namespace) -> int:
    from analyses.factworld_facts import relation_facts
    from interp import plot
    from models import factworld
    from probes.ffn import ROLES, prompt_layout
    from probes.linear import ROLES as PROBE_ROLES
    from probes.linear import probe_curve
    from probes.recall import attribute_extraction, extraction_rate, moved_contributions, subject_enrichment

    if args.relation not in RELATIONS:
        raise SystemExit(f"unknown relation {args.relation!r}; choose from {', '.join(RELATIONS)}")
    model = load_model(args)
    facts = relation_facts(args.relation, limit=args.limit)
    start = time.perf_counter()
    objects = sorted({f.object for r in RELATIONS for f in factworld.facts(r)} - {"none"})
    candidates = sorted({f.object for f in facts})
    extractions, among, rates, rates_objects, moved_at = [], [], [], [], Counter()
    for fact in tqdm(facts, desc=f"recall chain of {args.relation} facts", disable=args.quiet):
        prompt = factworld.prompt(fact.subject, args.relation)
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
    rate, rate_among = extraction_rate(extractions), extraction_rate(among)
    attention = torch.stack([e.attention for e in extractions]).mean(0)
    enrichment = torch.tensor(rates).mean(0).tolist()
    enrichment_objects = torch.tensor(rates_objects).mean(0).tolist()
    chain_seconds = time.perf_counter() - start

    start = time.perf_counter()
    curves = {}
    for split, (train, test) in probe_splits(args.relation, args.limit).items():
        for role in PROBE_ROLES:
            curves[f"{split}, {role}"] = probe_curve(model, train, test, role)
    probe_seconds = time.perf_counter() - start

    points = ["embed"] + [f"L{l}" for l in range(model.cfg.n_layers)]
    report = {
        "relation": args.relation, "n_facts": len(facts), "points": points,
        "enrichment_logit_lens_rate": enrichment, "enrichment_rate_among_objects": enrichment_objects,
        "n_objects": len(objects), "top_moved_site": dict(moved_at.most_common()),
        "extraction_rate": rate.tolist(), "extraction_rate_among_relation_objects": rate_among.tolist(),
        "attention_to_subject": attention.tolist(),
        "probes": {k: c.to_dict() for k, c in curves.items()},
        "seconds": {"chain": chain_seconds, "probes": probe_seconds}, "roles": list(ROLES),
    }
    write_json(args.out / f"{args.relation}.json", report)

    print(f"{args.relation}: {len(facts)} facts ({chain_seconds:.0f} s chain, {probe_seconds:.0f} s probes)")
    print("subject enrichment, logit-lens attribute rate at the last subject token (whole vocabulary): "
          + ", ".join(f"{p} {r:.3f}" for p, r in zip(points, enrichment)))
    print(f"  ... among the {len(objects)} objects of all relations: "
          + ", ".join(f"{p} {r:.3f}" for p, r in zip(points, enrichment_objects)))
    for name, c in curves.items():
        print(f"linear probe, {name}: test accuracy " + ", ".join(f"{p} {a:.2f}" for p, a in zip(points, c.test_accuracy))
              + f" (chance {c.chance:.2f}, {c.n_train} train / {c.n_test} test)")
    print("subject site whose output the heads carry to the answer most: "
          + ", ".join(f"{k}: {v}" for k, v in moved_at.most_common(5)))
    for name, r in (("whole vocabulary", rate), (f"among the {len(candidates)} {args.relation} objects", rate_among)):
        order = r.flatten().argsort(descending=True)[:5].tolist()
        print(f"extraction rate per head (answer = top token, {name}, of what it writes from the subject): "
              + ", ".join(f"L{i // model.cfg.n_heads}H{i % model.cfg.n_heads} {float(r.flatten()[i]):.2f} "
                          f"(attention {float(attention.flatten()[i]):.2f})" for i in order))

    fig = Figure(figsize=(13, 8), layout="constrained")
    (a, b), (c, d) = fig.subplots(2, 2)
    plot.heatmap(rate_among, row_labels=[f"L{l}" for l in range(model.cfg.n_layers)],
                 col_labels=[f"H{h}" for h in range(model.cfg.n_heads)],
                 title=f"extraction rate per head (top among the {args.relation} objects)",
                 xlabel="head", ylabel="layer", colorbar_label="share of facts", cmap="Blues", ax=a,
                 center=float(rate_among.max()) / 2)  # colours from 0 to the largest value
    b.plot(points, enrichment, marker="o", label="logit-lens attribute rate (vocabulary)")
    b.plot(points, enrichment_objects, marker="^", label=f"logit-lens attribute rate (among {len(objects)} objects)")
    b.plot(points, curves["held-out subjects, last subject token"].test_accuracy, marker="s",
           label="linear probe, held-out subjects")
    b.set_ylim(0, 1.05)
    b.set_title("subject enrichment at the last subject token")
    b.legend(fontsize="small")
    for name, curve in curves.items():
        c.plot(points, curve.test_accuracy, marker="o", label=name)
    c.axhline(curves["held-out subjects, last token"].chance, color="#777777", linestyle=":", label="majority class")
    c.set_ylim(0, 1.05)
    c.set_title(f"linear probes decoding the {args.relation} (test accuracy)")
    c.legend(fontsize="small")
    labels, counts = zip(*moved_at.most_common(8)) if moved_at else ((), ())
    d.barh(list(labels)[::-1], list(counts)[::-1], color="#1b7837")
    d.set_title("the subject site the heads carry to the answer most")
    d.set_xlabel("facts")
    paths = plot.save(fig, args.out / args.relation)
    print(f"Plots ({', '.join(str(p) for p in paths)}) and JSON in {args.out}/")
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    return main_for("analyses.recall", __doc__, add_arguments, run, argv)


if __name__ == "__main__":
    sys.exit(main())
