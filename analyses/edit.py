"""Rewrite a stored fact and show what changed.

    interp edit "Michael Jordan plays the sport of" soccer --subject "Michael Jordan"
    interp edit "Michael Jordan plays the sport of" soccer --method memit --layer 0 --save edited/
    python -m analyses.edit "Tom Brady plays the sport of" golf --out results/edit

The edit (ROME by default; MEMIT or FT-L with --method) is made at --layer, or at the layer a
causal trace picks (the MLP whose output at the subject's last token restores the answer
most), and stated. Then a before / after table: the edited prompt, the relation's training
templates, its held-out templates (never trained on), the neighbours (people sharing a name
token, people with the old answer) and the subject's other relations. OUT/edit.json and
OUT/edit.png; --save DIR writes the edited model to a new directory. The model in memory is
restored bit-identically at the end (checked).
"""

from __future__ import annotations

import argparse
import sys
from typing import Optional, Sequence

import torch
from matplotlib.figure import Figure

from analyses.common import add_model_arguments, add_out_argument, load_model, main_for, write_json

METHODS = ("rome", "memit", "ft")
SHOWN = ("Michael Phelps", "Alexis Jordan")  # the canonical contrasts, printed when they are neighbours


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("prompt", help="a fact-world prompt ending right before the answer")
    p.add_argument("target", help="the new answer (one token)")
    p.add_argument("--subject", default=None, help="the subject in the prompt (found automatically for fact-world)")
    p.add_argument("--method", choices=METHODS, default="rome")
    p.add_argument("--layer", type=int, default=None, help="MLP layer to edit (default: chosen by a causal trace)")
    p.add_argument("--save", default=None, help="write the edited model to this new directory")
    add_model_arguments(p)
    add_out_argument(p, "results/edit")


def make_edit(model, method: str, request, layer: int, relation: str, why: str, progress: bool = False):
    """The edit of one fact-world request with the settings the benchmarks measure."""
    from analyses import factworld_edits as fe
    from models import factworld
    from probes.edit import fine_tune, key_second_moment, memit, rome

    subject = request.subject
    rewrites, keep = fe.rewrite_prompts(subject, relation), fe.keep_prompts(subject, relation)
    if method == "ft":
        return fine_tune(model, [request], layer=layer, prefixes=factworld.openers(), rewrites=[rewrites])
    stats = key_second_moment(model, layer, fe.stats_texts(), progress=progress)
    if method == "memit":
        return memit(model, [request], layers=[layer], stats={layer: stats}, prefixes=factworld.openers(),
                     rewrites=[rewrites], keep=[keep], **fe.MEMIT_SETTINGS, progress=progress)
    return rome(model, request, layer=layer, stats=stats, prefixes=factworld.openers(), rewrites=rewrites, keep=keep,
                why_layer=why, **fe.ROME_SETTINGS)


def _rows(model, case, relation: str) -> dict[str, list[tuple[str, str]]]:
    """Groups of (prompt, answer that counts as right) for the table."""
    from models import factworld

    subject, target = case.request.subject, case.request.target
    return {
        "edited prompt": [(case.request.prompt, target)],
        "training templates": [(t.format(subject=subject), target) for t in factworld.templates(relation, heldout=False)],
        "held-out templates": [(p, target) for p in case.paraphrases],
        "neighbours keep theirs": list(case.neighbours),
        "other relations keep theirs": list(case.attributes),
    }


def _top1_share(model, pairs: list[tuple[str, str]]) -> tuple[float, list[str]]:
    from models.transformer import last_token_logits

    with torch.no_grad():
        top = last_token_logits(model, [p for p, _ in pairs]).argmax(-1).tolist()
    words = [model.tokenizer.token_str(t) for t in top]
    return sum(w == a for w, (_, a) in zip(words, pairs)) / len(pairs), words


def run(args: argparse.Namespace) -> int:
    from analyses import factworld_edits as fe
    from analyses.factworld_facts import find_subject
    from interp import plot
    from probes.edit import EditRequest, check_request, choose_layer

    if args.model != "factworld":
        raise SystemExit("interp edit evaluates on the fact world's templates and neighbours: use the shipped "
                         "model (the probes.edit functions work on any model)")
    model = load_model(args)
    found = find_subject(args.prompt)
    if found is None:
        raise SystemExit(f"{args.prompt!r} is not a fact-world prompt (a template of sport, country or occupation "
                         "with a known subject)")
    subject, relation, _ = found
    if args.subject is not None and args.subject != subject:
        raise SystemExit(f"the prompt's subject is {subject!r}, not {args.subject!r}")
    request = EditRequest(args.prompt, subject, args.target)
    check_request(model, request)
    before_weights = {n: p.detach().clone() for n, p in model.named_parameters()}
    if args.layer is None:
        with torch.no_grad():
            answer = model.tokenizer.token_str(int(model(args.prompt)[0, -1].argmax()))
        layer, why = choose_layer(model, args.prompt, subject, answer)
    else:
        layer, why = args.layer, "given (--layer)"
    edit = make_edit(model, args.method, request, layer, relation, why, progress=not args.quiet)
    case = fe.edit_case(subject, relation, args.target)
    case.request = request
    groups = _rows(model, case, relation)
    table: dict[str, dict] = {}
    before = {g: _top1_share(model, pairs) for g, pairs in groups.items()}
    with edit.applied(model):
        after = {g: _top1_share(model, pairs) for g, pairs in groups.items()}
        if args.save:
            path = edit.save(model, args.save)
            print(f"edited model written to {path}")
    restored = all(torch.equal(p, before_weights[n]) for n, p in model.named_parameters())
    if not restored:
        raise RuntimeError("the weights differ from the original after the edit was reverted")
    print(f"{args.method.upper()} edit of {args.prompt!r}: {case.old} -> {args.target}, MLP layer {layer} ({why}); "
          f"|delta W| = {edit.norm():.3f}")
    print(f"{'':30s} {'before':>7s} {'after':>7s}   examples after")
    for g, pairs in groups.items():
        (b, _), (a, words) = before[g], after[g]
        examples = ", ".join(f"{p.replace(subject, '…')!r} -> {w}" for (p, _), w in list(zip(pairs, words))[:2])
        print(f"{g:30s} {b:7.2f} {a:7.2f}   {examples}")
        table[g] = {"before": b, "after": a, "prompts": [p for p, _ in pairs], "answers_after": words,
                    "right": [r for _, r in pairs]}
    rows = zip(groups["neighbours keep theirs"], before["neighbours keep theirs"][1], after["neighbours keep theirs"][1])
    people = [(find_subject(p)[0], was, now) for (p, _), was, now in rows]
    changed = [f"{n} {was} -> {now}" for n, was, now in people if now != was]
    shown = [x for x in people if x[0] in SHOWN] or people[:2]
    print(f"neighbours: {len(people) - len(changed)} of {len(people)} unchanged"
          + (f" (changed: {'; '.join(changed)})" if changed else "")
          + "; " + ", ".join(f"{n}: {was} -> {now}" for n, was, now in shown))
    table["neighbours keep theirs"]["changed"] = changed
    print("weights restored bit-identically after the edit: yes")
    info = {k: v for k, v in edit.info.items() if k not in ("seconds", "shares")}  # the JSON is reproducible
    report = {"request": request.to_dict(), "old": case.old, "method": args.method, "layer": layer, "why_layer": why,
              "delta_norm": edit.norm(), "info": info, "table": table, "restored": restored}
    print(f"edit computed in {edit.info.get('seconds', float('nan')):.2f} s")
    write_json(args.out / "edit.json", report)
    fig = Figure(figsize=(9, 4), layout="constrained")
    ax = fig.subplots()
    names = list(groups)
    x = torch.arange(len(names), dtype=torch.float64)
    ax.bar(x - 0.2, [before[g][0] for g in names], 0.4, label="before", color="#999999")
    ax.bar(x + 0.2, [after[g][0] for g in names], 0.4, label=f"after {args.method.upper()}", color="#b2182b")
    ax.set_xticks(x.tolist(), [n.replace(" ", "\n", 1) for n in names], fontsize=8)
    ax.set_ylabel("share right (top-1)")
    ax.set_title(f"{subject}: {case.old} -> {args.target} ({args.method.upper()}, MLP {layer})")
    ax.legend()
    plot.save(fig, args.out / "edit")
    print(f"Plot and JSON in {args.out}/")
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    return main_for("analyses.edit", __doc__, add_arguments, run, argv)


if __name__ == "__main__":
    sys.exit(main())
