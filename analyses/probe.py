"""The anatomy of one fact, then the FFN key-value details.

    interp probe "Michael Jordan plays the sport of" --target basketball
    python -m analyses.probe --target basketball --out results/probe

`interp probe` prints and saves, for the prompt's answer:
  - the anatomy (`analyses.anatomy`): the AND keys at the subject's last token with each key
    split by source token, what their values write through the later heads, the heads that
    move it to the last position, the last-position writers, the localisation (positions and
    all) with its random baseline, and the chain figure (OUT/chain);
  - the details: neurons ranked by direct contribution at the last position, the AND test there,
    the key decomposition of the top neuron, trigger examples, value projections, knowledge
    neurons (integrated gradients) and their overlap, ablation (zero, mean) and amplification
    (x2) of the top neurons against random neurons, with the other facts' accuracy.
Plots: OUT/chain, OUT/contributions_and_ablation, OUT/keys; every number in OUT/probe.json.
(`interp probe-relation` localises every fact of a relation: `analyses.probe_relation`.)
"""

from __future__ import annotations

import argparse
import sys
from typing import Optional, Sequence

import torch
from matplotlib.figure import Figure

from analyses.common import CLEAN, add_model_arguments, add_out_argument, load_model, main_for, write_json

def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("prompt", nargs="?", default=CLEAN)
    p.add_argument("--target", default=None, help="the answer word (default: the model's top prediction)")
    p.add_argument("--counterfactual", default=None, help="rank by logit(target) - logit(counterfactual)")
    p.add_argument("--subject", default=None, help="the subject in the prompt (found automatically for fact-world)")
    p.add_argument("--first-only", default=None, help="a subject sharing only the first word (AND test)")
    p.add_argument("--last-only", default=None, help="a subject sharing only the last word (AND test)")
    p.add_argument("--other", action="append", default=[], metavar="PROMPT|ANSWER",
                   help="another fact for the specificity check (repeatable; fact-world facts are used by default)")
    p.add_argument("-k", type=int, default=10, help="neurons to rank, ablate and amplify")
    p.add_argument("--random-draws", type=int, default=5)
    add_model_arguments(p)
    add_out_argument(p, "results/probe")


def _table(rows: list[list], header: list[str]) -> str:
    cells = [header] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in cells)


def _bias_note(row) -> str:
    """Which parts the key's bias alone keeps silent (they would fire without it)."""
    if row.bias_gates:
        return "bias silences both parts"
    if row.silenced_by_bias:
        return f"bias silences the {row.silenced_by_bias[0]} part"
    return ""


def _top_word(model, prompt: str) -> str:
    with torch.no_grad():
        return model.tokenizer.token_str(int(model(prompt)[0, -1].argmax()))


def run(args: argparse.Namespace) -> int:
    from analyses import factworld_facts
    from interp import plot
    from probes import ffn
    from probes.knowledge_neurons import knowledge_neurons, ranking_overlap

    model = load_model(args)
    prompt = args.prompt
    target = args.target or _top_word(model, prompt)
    found = factworld_facts.find_subject(prompt) if args.model == "factworld" else None
    subject = args.subject or (found[0] if found else None)
    report: dict = {"prompt": prompt, "target": target, "counterfactual": args.counterfactual, "subject": subject}

    first_only, last_only = args.first_only, args.last_only
    if prompt == CLEAN and subject == "Michael Jordan":  # the canonical contrast
        first_only, last_only = first_only or "Michael Phelps", last_only or "Alexis Jordan"
    elif found and subject and (first_only is None or last_only is None):
        from models import factworld

        firsts, lasts = ffn.related_subjects(subject, factworld.subjects())
        differs = lambda s: factworld.lookup(s, found[1]) != target  # noqa: E731  a contrast with another answer
        first_only = first_only or next((s for s in firsts if differs(s)), None)
        last_only = last_only or next((s for s in lasts if differs(s)), None)
    if args.other:
        others = {"given": [tuple(o.split("|", 2)) for o in args.other]}
    else:
        others = factworld_facts.other_facts(found[0], found[1]) if found else {}
    if subject and first_only and last_only:
        from analyses.anatomy import anatomy

        print(f"The anatomy of {prompt!r} -> {target!r}\n")
        report["anatomy"] = anatomy(model, prompt, target, subject, first_only, last_only, others=others,
                                    out=args.out, plot=plot)
        print("\nDetails\n")
    else:
        from analyses.anatomy import localisation

        localisation(model, prompt, target, subject, others, report)
    ranked = ffn.fact_neurons(model, prompt, target, args.k, counterfactual=args.counterfactual)
    report["fact_neurons"] = ranked.to_dict()
    print(f"{prompt!r} -> {target!r}: top {args.k} neurons by direct contribution to logit({ranked.target})")
    print(_table([[i + 1, n.label, f"{n.activation:.2f}", f"{n.contribution:+.3f}", f"{n.value_score:+.3f}",
                   " ".join(n.top_tokens[:4])] for i, n in enumerate(ranked)],
                 ["#", "neuron", "activation", "contribution", "per unit", "value promotes"]))
    print(f"these {args.k} explain {ranked.explained:.0%} of all neurons' direct contribution ({ranked.total:+.2f})\n")

    # AND test on the ranked neurons, at the last position.
    if subject and first_only and last_only:
        p_first, p_last = prompt.replace(subject, first_only), prompt.replace(subject, last_only)
        rows = ffn.and_detection(model, prompt, p_first, p_last, neurons=ranked.sites)
        report["and_detection"] = {"first_only": p_first, "last_only": p_last, "rows": [r.to_dict() for r in rows]}
        print(f"AND test at the last position: {subject!r} vs {first_only!r} vs {last_only!r}")
        print(_table([[r.label, f"{r.full:.2f}", f"{r.first_only:.2f}", f"{r.last_only:.2f}", f"{r.pre_full:+.2f}",
                       f"{r.pre_first_only:+.2f}", f"{r.pre_last_only:+.2f}", f"{r.bias:+.2f}",
                       "AND" if r.is_and else "", _bias_note(r)] for r in rows],
                     ["neuron", subject, first_only, last_only, "pre", "pre", "pre", "bias", "", ""]))
        print(f"{sum(r.is_and for r in rows)} of {len(rows)} fire for {subject!r} and at most 25% as much for either "
              "part alone\n")
        from probes.subjects import last_subject_pos

        at = last_subject_pos(model, prompt, subject)
        scan = ffn.and_detection(model, prompt, p_first, p_last, pos=at, k=5)
        report["and_at_last_subject_token"] = {"pos": at, "rows": [r.to_dict() for r in scan]}
        print(f"the strongest AND keys over the whole model at the last subject token (position {at}):")
        print(_table([[r.label, f"{r.full:.2f}", f"{r.first_only:.2f}", f"{r.last_only:.2f}", f"{r.bias:+.2f}",
                       "AND" if r.is_and else "", _bias_note(r)] for r in scan],
                     ["neuron", subject, first_only, last_only, "bias", "", ""]))
        print()
        _plot_keys(model, prompt, subject, ranked, found, plot, args)
    else:
        print("AND test skipped: give --subject, --first-only and --last-only\n")

    # Keys, triggers and values of the top neurons.
    top = ranked[0]
    parts = ffn.key_decomposition(model, prompt, top.site)
    report["key_decomposition"] = {"neuron": top.label, "parts": parts}
    print(f"key of {top.label}, pre-activation {sum(parts.values()):+.2f} = "
          + " ".join(f"{k} {v:+.2f}" for k, v in parts.items()))
    if found:
        report["triggers"] = {}
        trigger_prompts = factworld_facts.factworld_prompts()
        for n in ranked[:3]:
            trig = ffn.trigger_examples(model, n.site, trigger_prompts, k=5)
            report["triggers"][n.label] = [vars(t) for t in trig]
            print(f"{n.label} fires most on: " + "; ".join(f"{t.prompt!r} @ {t.token!r} {t.activation:.2f}" for t in trig))
    report["values"] = {}
    for n in ranked[:5]:
        proj = ffn.value_projection(model, n.site, 5)
        report["values"][n.label] = {"promoted": proj.promoted, "suppressed": proj.suppressed}
        print(f"value {n.label}: + " + " ".join(f"{w} {s:.2f}" for w, s in proj.promoted)
              + " | - " + " ".join(f"{w} {s:.2f}" for w, s in proj.suppressed))

    # Knowledge neurons (integrated gradients) as an independent ranking.
    kn = knowledge_neurons(model, prompt, target, progress=not args.quiet)
    overlap = ranking_overlap(kn.top(args.k), ranked.sites, args.k)
    report["knowledge_neurons"] = {"top": [[n.label, s] for n, s in kn.top(args.k)],
                                   "overlap_with_fact_neurons": overlap | {"shared": [n.label for n in overlap["shared"]]}}
    print(f"\nknowledge neurons (integrated gradients), top {args.k}: "
          + " ".join(f"L{n.layer}N{n.index}" for n, _ in kn.top(args.k)))
    print(f"overlap with the contribution ranking: {overlap['overlap']} of {args.k}\n")

    # Interventions.
    val = ffn.validate(model, prompt, target, ranked.sites, other_facts=others, n_random=args.random_draws)
    report["validation"] = val.to_dict()
    print(f"interventions on the top {args.k} neurons at every position (random: {args.random_draws} draws of "
          f"{args.k} neurons from the same layers):")
    print(_table([[i.mode, f"{i.p_before:.3f}", f"{i.p_after:.3f}", i.rank_after,
                   f"{sum(i.random_p_after) / len(i.random_p_after):.3f}", max(i.random_rank_after)]
                  for i in val.interventions],
                 ["", f"P({target}) before", "after", "rank after", "random: P after", "random: worst rank"]))
    for group, s in val.specificity.items():
        print(f"top-1 accuracy, {group} ({s['n']} facts): {s['before']:.3f} -> {s['after']:.3f} after zero ablation")
    _plot_ranked(ranked, val, target, plot, args)
    write_json(args.out / "probe.json", report)
    print(f"\nPlots and JSON in {args.out}/")
    return 0


def _plot_ranked(ranked, val, target: str, plot, args) -> None:
    fig = Figure(figsize=(12, 4.5), layout="constrained")
    left, right = fig.subplots(1, 2)
    plot.top_k_bar(torch.tensor([n.contribution for n in ranked]), [n.label for n in ranked], k=len(ranked),
                   title=f"direct contribution to logit({ranked.target})", ax=left, xlabel="logit")
    modes = [i.mode for i in val.interventions]
    x = torch.arange(len(modes), dtype=torch.float64)
    right.bar(x - 0.27, [i.p_before for i in val.interventions], 0.27, label="before", color="#999999")
    right.bar(x, [i.p_after for i in val.interventions], 0.27, label=f"top {len(val.neurons)} neurons", color="#b2182b")
    right.bar(x + 0.27, [sum(i.random_p_after) / len(i.random_p_after) for i in val.interventions], 0.27,
              label="random neurons (mean)", color="#2166ac")
    right.set_xticks(x.tolist(), modes)
    right.set_ylabel(f"P({target})")
    right.set_title("ablation and amplification")
    right.legend(loc="upper center", bbox_to_anchor=(0.5, -0.08), ncol=3)
    plot.save(fig, args.out / "contributions_and_ablation")


def _plot_keys(model, prompt: str, subject: str, ranked, found, plot, args) -> None:
    """Activations of the top neurons across subjects sharing a name part (fact-world)."""
    from models import factworld
    from probes import ffn

    firsts, lasts = ffn.related_subjects(subject, factworld.subjects())
    names = [subject] + firsts[:6] + lasts[:6]
    prompts = [prompt.replace(subject, s) for s in names]
    labels = [f"{s} ({factworld.lookup(s, found[1])})" for s in names]
    acts = ffn.neuron_activations(model, prompts, ranked.sites)  # [prompt, neuron]
    fig = plot.heatmap(acts.T, row_labels=[n.label for n in ranked], col_labels=labels,
                       title="key activations at the last position across related subjects",
                       xlabel="subject (its answer)", ylabel="neuron", colorbar_label="activation")
    plot.save(fig, args.out / "keys")


def main(argv: Optional[Sequence[str]] = None) -> int:
    return main_for("analyses.probe", __doc__, add_arguments, run, argv)


if __name__ == "__main__":
    sys.exit(main())
