"""The anatomy of one fact, then the FFN key-value details.

    interp probe "Michael Jordan plays the sport of" --target basketball
    python -m analyses.probe --target basketball --out results/probe

`interp probe` prints and saves, for the prompt's answer:
  - the anatomy (`analyses.anatomy`): the AND keys at the subject's last token with each key
    split by source token, what their values write through the later heads, the heads that
    move it to the last position, the last-position writers, the localisation (positions and
    all) with its random baseline, and the chain figure (OUT/chain; OUT/chain.html interactive);
  - the details: neurons ranked by direct contribution at the last position, the AND test there,
    the key decomposition of the top neuron, trigger examples, value projections, knowledge
    neurons (integrated gradients) and their overlap, ablation (zero, mean) and amplification
    (x2) of the top neurons against random neurons, with the other facts' accuracy.
Plots: OUT/chain (and its page OUT/chain.html), OUT/contributions_and_ablation, OUT/keys; the numbers in
OUT/probe.json.
(`interp probe-relation` localises every fact of a relation: `analyses.probe_relation`.)
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence, Union

import torch
from matplotlib.figure import Figure

from analyses.common import (
    CLEAN, AnalysisResult, ModelArg, Outputs, add_model_arguments, add_out_argument, as_model, main_for,
)


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
    from interp.words import token_text

    with torch.no_grad():
        return token_text(model, int(model(prompt)[0, -1].argmax()))


@dataclass
class _Fact:
    """The fact being probed and its contrasts (AND test, specificity)."""

    prompt: str
    target: str
    subject: Optional[str]
    first_only: Optional[str]
    last_only: Optional[str]
    others: dict
    found: Optional[tuple]  # (subject, relation, template) for a fact-world prompt

    @property
    def has_contrasts(self) -> bool:
        return bool(self.subject and self.first_only and self.last_only)


def _fact(model, prompt: str, target: Optional[str], subject: Optional[str], first_only: Optional[str],
          last_only: Optional[str], others: Optional[Sequence[tuple[str, str]]], factworld: bool) -> _Fact:
    """Fill in what was not given: the target (the top word), and on the fact world the subject, the
    contrast subjects (sharing one name part, with another answer) and the other facts."""
    from analyses import factworld_facts
    from probes import ffn

    target = target or _top_word(model, prompt)
    found = factworld_facts.find_subject(prompt) if factworld else None
    subject = subject or (found[0] if found else None)
    if prompt == CLEAN and subject == "Michael Jordan":  # the canonical contrast
        first_only, last_only = first_only or "Michael Phelps", last_only or "Alexis Jordan"
    elif found and subject and (first_only is None or last_only is None):
        from models import factworld

        firsts, lasts = ffn.related_subjects(subject, factworld.subjects())
        differs = lambda s: factworld.lookup(s, found[1]) != target  # noqa: E731  a contrast with another answer
        first_only = first_only or next((s for s in firsts if differs(s)), None)
        last_only = last_only or next((s for s in lasts if differs(s)), None)
    if others:
        groups = {"given": [tuple(o) for o in others]}
    else:
        groups = factworld_facts.other_facts(found[0], found[1]) if found else {}
    return _Fact(prompt, target, subject, first_only, last_only, groups, found)


def probe_fact(model: ModelArg = "factworld", prompt: str = CLEAN, target: Optional[str] = None, *,
               counterfactual: Optional[str] = None, subject: Optional[str] = None,
               first_only: Optional[str] = None, last_only: Optional[str] = None,
               others: Optional[Sequence[tuple[str, str]]] = None, k: int = 10, random_draws: int = 5,
               out: Optional[Union[str, Path]] = None, progress: bool = True,
               dtype: Optional[str] = None) -> AnalysisResult:
    """The anatomy of `prompt` -> `target` (default: the model's top word) and the FFN key-value
    details (see the module docstring). `others`: (prompt, answer) facts for the specificity
    check (default on the fact world: every other fact). `results` holds the `RankedNeurons`
    ("fact_neurons"), the `KnowledgeNeuronResult` and the `Validation`."""
    from analyses.factworld_facts import is_factworld
    from interp import plot

    factworld = is_factworld(model)
    model = as_model(model, dtype)
    outputs = Outputs(out)
    fact = _fact(model, prompt, target, subject, first_only, last_only, others, factworld)
    report: dict = {"prompt": prompt, "target": fact.target, "counterfactual": counterfactual,
                    "subject": fact.subject}
    if fact.has_contrasts:
        from analyses.anatomy import anatomy

        print(f"The anatomy of {prompt!r} -> {fact.target!r}\n")
        report["anatomy"] = anatomy(model, prompt, fact.target, fact.subject, fact.first_only, fact.last_only,
                                    others=fact.others, out=outputs.folder, plot=plot)
        if out is not None:
            outputs.files += [outputs.folder / f"chain.{ext}" for ext in ("png", "svg", "html")]
        print("\nDetails\n")
    else:
        from analyses.anatomy import localisation

        localisation(model, prompt, fact.target, fact.subject, fact.others, report)
    ranked = _rank(model, fact, k, counterfactual, report)
    if fact.has_contrasts:
        _and_tests(model, fact, ranked, report)
        if fact.found:
            _plot_keys(model, fact, ranked, outputs)
    else:
        print("AND test skipped: give --subject, --first-only and --last-only\n")
    _keys_and_values(model, fact, ranked, report)
    kn = _knowledge_neurons(model, fact, ranked, k, progress, report)
    val = _interventions(model, fact, ranked, k, random_draws, report)
    _plot_ranked(ranked, val, fact.target, outputs)
    outputs.json("probe.json", report)
    if out is not None:
        print(f"\nPlots and JSON in {out}/")
    return AnalysisResult("probe", report, outputs.files,
                          {"fact_neurons": ranked, "knowledge_neurons": kn, "validation": val})


def _rank(model, fact: _Fact, k: int, counterfactual: Optional[str], report: dict):
    from probes import ffn

    ranked = ffn.fact_neurons(model, fact.prompt, fact.target, k, counterfactual=counterfactual)
    report["fact_neurons"] = ranked.to_dict()
    print(f"{fact.prompt!r} -> {fact.target!r}: top {k} neurons by direct contribution to logit({ranked.target})")
    print(_table([[i + 1, n.label, f"{n.activation:.2f}", f"{n.contribution:+.3f}", f"{n.value_score:+.3f}",
                   " ".join(n.top_tokens[:4])] for i, n in enumerate(ranked)],
                 ["#", "neuron", "activation", "contribution", "per unit", "value promotes"]))
    print(f"these {k} explain {ranked.explained:.0%} of all neurons' direct contribution ({ranked.total:+.2f})\n")
    return ranked


def _and_tests(model, fact: _Fact, ranked, report: dict) -> None:
    """The AND test on the ranked neurons at the last position, then the strongest AND keys of the
    whole model at the last subject token."""
    from probes import ffn
    from probes.subjects import last_subject_pos

    subject, first_only, last_only = fact.subject, fact.first_only, fact.last_only
    p_first, p_last = fact.prompt.replace(subject, first_only), fact.prompt.replace(subject, last_only)
    rows = ffn.and_detection(model, fact.prompt, p_first, p_last, neurons=ranked.sites)
    report["and_detection"] = {"first_only": p_first, "last_only": p_last, "rows": [r.to_dict() for r in rows]}
    print(f"AND test at the last position: {subject!r} vs {first_only!r} vs {last_only!r}")
    print(_table([[r.label, f"{r.full:.2f}", f"{r.first_only:.2f}", f"{r.last_only:.2f}", f"{r.pre_full:+.2f}",
                   f"{r.pre_first_only:+.2f}", f"{r.pre_last_only:+.2f}", f"{r.bias:+.2f}",
                   "AND" if r.is_and else "", _bias_note(r)] for r in rows],
                 ["neuron", subject, first_only, last_only, "pre", "pre", "pre", "bias", "", ""]))
    print(f"{sum(r.is_and for r in rows)} of {len(rows)} fire for {subject!r} and at most 25% as much for either "
          "part alone\n")
    at = last_subject_pos(model, fact.prompt, subject)
    scan = ffn.and_detection(model, fact.prompt, p_first, p_last, pos=at, k=5)
    report["and_at_last_subject_token"] = {"pos": at, "rows": [r.to_dict() for r in scan]}
    print(f"the strongest AND keys over the whole model at the last subject token (position {at}):")
    print(_table([[r.label, f"{r.full:.2f}", f"{r.first_only:.2f}", f"{r.last_only:.2f}", f"{r.bias:+.2f}",
                   "AND" if r.is_and else "", _bias_note(r)] for r in scan],
                 ["neuron", subject, first_only, last_only, "bias", "", ""]))
    print()


def _keys_and_values(model, fact: _Fact, ranked, report: dict) -> None:
    """The key decomposition of the top neuron, trigger examples (fact world) and value projections."""
    from analyses import factworld_facts
    from probes import ffn

    top = ranked[0]
    parts = ffn.key_decomposition(model, fact.prompt, top.site)
    report["key_decomposition"] = {"neuron": top.label, "parts": parts}
    print(f"key of {top.label}, pre-activation {sum(parts.values()):+.2f} = "
          + " ".join(f"{k} {v:+.2f}" for k, v in parts.items()))
    if fact.found:
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


def _knowledge_neurons(model, fact: _Fact, ranked, k: int, progress: bool, report: dict):
    """Knowledge neurons (integrated gradients) as an independent ranking, and its overlap."""
    from probes.knowledge_neurons import knowledge_neurons, ranking_overlap

    kn = knowledge_neurons(model, fact.prompt, fact.target, progress=progress)
    overlap = ranking_overlap(kn.top(k), ranked.sites, k)
    report["knowledge_neurons"] = {"top": [[n.label, s] for n, s in kn.top(k)],
                                   "overlap_with_fact_neurons": overlap | {"shared": [n.label for n in overlap["shared"]]}}
    print(f"\nknowledge neurons (integrated gradients), top {k}: " + " ".join(f"L{n.layer}N{n.index}"
                                                                            for n, _ in kn.top(k)))
    print(f"overlap with the contribution ranking: {overlap['overlap']} of {k}\n")
    return kn


def _interventions(model, fact: _Fact, ranked, k: int, random_draws: int, report: dict):
    from probes import ffn

    val = ffn.validate(model, fact.prompt, fact.target, ranked.sites, other_facts=fact.others, n_random=random_draws)
    report["validation"] = val.to_dict()
    print(f"interventions on the top {k} neurons at every position (random: {random_draws} draws of "
          f"{k} neurons from the same layers):")
    print(_table([[i.mode, f"{i.p_before:.3f}", f"{i.p_after:.3f}", i.rank_after,
                   f"{sum(i.random_p_after) / len(i.random_p_after):.3f}", max(i.random_rank_after)]
                  for i in val.interventions],
                 ["", f"P({fact.target}) before", "after", "rank after", "random: P after", "random: worst rank"]))
    for group, s in val.specificity.items():
        print(f"top-1 accuracy, {group} ({s['n']} facts): {s['before']:.3f} -> {s['after']:.3f} after zero ablation")
    return val


def run(args: argparse.Namespace) -> int:
    others = [tuple(o.split("|", 2)) for o in args.other]
    return probe_fact(args.model, args.prompt, args.target, counterfactual=args.counterfactual, subject=args.subject,
                      first_only=args.first_only, last_only=args.last_only, others=others, k=args.k,
                      random_draws=args.random_draws, out=args.out, progress=not args.quiet, dtype=args.dtype).rc


def _plot_ranked(ranked, val, target: str, outputs: Outputs) -> None:
    from interp import plot

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
    outputs.figure(fig, "contributions_and_ablation")


def _plot_keys(model, fact: _Fact, ranked, outputs: Outputs) -> None:
    """Activations of the top neurons across subjects sharing a name part (fact-world)."""
    from interp import plot
    from models import factworld
    from probes import ffn

    prompt, subject, found = fact.prompt, fact.subject, fact.found
    firsts, lasts = ffn.related_subjects(subject, factworld.subjects())
    names = [subject] + firsts[:6] + lasts[:6]
    prompts = [prompt.replace(subject, s) for s in names]
    labels = [f"{s} ({factworld.lookup(s, found[1])})" for s in names]
    acts = ffn.neuron_activations(model, prompts, ranked.sites)  # [prompt, neuron]
    fig = plot.heatmap(acts.T, row_labels=[n.label for n in ranked], col_labels=labels,
                       title="key activations at the last position across related subjects",
                       xlabel="subject (its answer)", ylabel="neuron", colorbar_label="activation")
    outputs.figure(fig, "keys")


def main(argv: Optional[Sequence[str]] = None) -> int:
    return main_for("analyses.probe", __doc__, add_arguments, run, argv)


if __name__ == "__main__":
    sys.exit(main())
