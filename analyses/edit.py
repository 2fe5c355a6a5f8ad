"""Rewrite a stored fact and show what changed; score random edits CounterFact-style.

    interp edit "Michael Jordan plays the sport of" soccer --subject "Michael Jordan"
    interp edit "Michael Jordan plays the sport of" soccer --method memit --layer 0 --save edited/
    interp edit "Michael Jordan plays the sport of" soccer --method alphaedit --sequential 50
    python -m analyses.edit "Tom Brady plays the sport of" golf --out results/edit
    interp evaluate-edits --method rome -n 10 --out results/evaluate_edits

`interp edit` (`edit_fact`): the edit (ROME by default; MEMIT, AlphaEdit or FT-L with --method) is made
at --layer, or at the layer a causal trace picks (the MLP whose output at the subject's last
token restores the answer most), and stated. Then a before / after table: the edited prompt,
the relation's training templates, its held-out templates (never trained on), the neighbours
(people sharing a name token, people with the old answer) and the subject's other relations.
OUT/edit.json and OUT/edit.png; OUT/edit.html, every prompt's top token and probability, P(new
target) and P(old answer) before and after, sortable and filtered by group, with the efficacy,
paraphrase and specificity scores on top (`probes.edit.evaluate.EditComparison`,
`results["comparison"]`); --save DIR writes the edited model to a new directory.
--sequential N makes N more random edits of other people after it, one after another (each on
the model as edited so far), and the table shows the model holding all N + 1; it says how many
still give their new target. The model in memory is restored bit-identically at the end (checked).

`interp evaluate-edits` (`evaluate_random_edits`): N random facts of a relation the model
knows, each moved to another random answer (seeded), edited (one at a time; MEMIT and AlphaEdit: all at
once) and scored by `probes.edit.evaluate_edits`: efficacy, paraphrase, neighbourhood,
attribute specificity and the fluency cost. OUT/evaluate_edits.json.
"""

from __future__ import annotations

import argparse
import random
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Optional, Sequence, Union

import torch

from analyses.common import AnalysisResult, ModelArg, Outputs, add_model_arguments, add_out_argument, as_model, main_for

if TYPE_CHECKING:
    from models import Transformer
    from probes.edit import Edit, EditRequest

METHODS = ("rome", "memit", "alphaedit", "ft")
SHOWN = ("Michael Phelps", "Alexis Jordan")  # the canonical contrasts, printed when they are neighbours
KEEP_GROUPS = ("neighbours keep theirs", "other relations keep theirs")  # the table's groups that keep their answers
PARAPHRASE_GROUPS = ("held-out templates",)  # the paraphrase score's prompts: never trained on, never optimised on


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("prompt", help="a fact-world prompt ending right before the answer")
    p.add_argument("new_target", metavar="NEW_TARGET", help="the new answer (one token)")
    p.add_argument("--subject", default=None, help="the subject in the prompt (found automatically for fact-world)")
    p.add_argument("--method", choices=METHODS, default="rome")
    p.add_argument("--layer", type=int, default=None, help="MLP layer to edit (default: chosen by a causal trace)")
    p.add_argument("--save", default=None, help="write the edited model to this new directory")
    p.add_argument("--sequential", type=int, default=0, metavar="N",
                   help="then make N more random edits (seeded by --seed) one after another, and show the table "
                        "with all N + 1 applied (rome, memit, alphaedit)")
    p.add_argument("--seed", type=int, default=0, help="seeds the --sequential edits")
    add_model_arguments(p)
    add_out_argument(p, "results/edit")


def add_evaluate_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--method", choices=METHODS, default="rome")
    p.add_argument("-n", "--n", type=int, default=10, help="random facts to edit (default 10)")
    p.add_argument("--relation", default="sport", help="fact-world relation whose facts are edited")
    p.add_argument("--layer", type=int, default=None, help="MLP layer to edit (default: each fact's traced layer)")
    p.add_argument("--seed", type=int, default=0, help="seeds the choice of facts and new answers")
    p.add_argument("--fluency", type=int, default=200, help="held-out sentences for the fluency loss (0: none)")
    add_model_arguments(p)
    add_out_argument(p, "results/evaluate_edits")
    from analyses.sharded import add_workers_arguments

    add_workers_arguments(p, 4, "edits")


def _check_factworld(model: ModelArg, what: str) -> None:
    if not (isinstance(model, str) and model == "factworld") and getattr(model, "default_corpus", None) is None:
        raise ValueError(f"{what} uses the fact world's templates, neighbours and corpus: use the shipped model "
                         "(the probes.edit functions work on any model)")


def _rows(case, relation: str) -> dict[str, list[tuple[str, str]]]:
    """Groups of (prompt, answer that counts as right) for the table."""
    from models import factworld

    subject, new_target = case.request.subject, case.request.new_target
    return {
        "edited prompt": [(case.request.prompt, new_target)],
        "training templates": [(t.format(subject=subject), new_target)
                               for t in factworld.templates(relation, heldout=False)],
        "held-out templates": [(p, new_target) for p in case.paraphrases],
        "neighbours keep theirs": list(case.neighbours),
        "other relations keep theirs": list(case.attributes),
    }


def _top1_share(model: "Transformer", pairs: list[tuple[str, str]]) -> tuple[float, list[str]]:
    from interp.words import answer_token, token_text
    from models.transformer import last_token_logits

    def token(word: str) -> int:
        try:
            return answer_token(model, word)
        except ValueError:
            return -1  # an answer of several tokens is never the top-1 token

    top = last_token_logits(model, [p for p, _ in pairs]).argmax(-1).tolist()
    right = [t == token(a) for t, (_, a) in zip(top, pairs)]
    return sum(right) / len(pairs), [token_text(model, t) for t in top]


def _fact(prompt: str, subject: Optional[str]) -> tuple[str, str]:
    """(subject, relation) of a fact-world prompt; a clear error otherwise."""
    from analyses.factworld_facts import find_subject

    found = find_subject(prompt)
    if found is None:
        raise ValueError(f"{prompt!r} is not a fact-world prompt (a template of sport, country or occupation "
                         "with a known subject)")
    if subject is not None and subject != found[0]:
        raise ValueError(f"the prompt's subject is {found[0]!r}, not {subject!r}")
    return found[0], found[1]


def edit_fact(model: ModelArg = "factworld", prompt: str = "Michael Jordan plays the sport of",
              new_target: str = "soccer", *, subject: Optional[str] = None, method: str = "rome",
              layer: Optional[int] = None, save: Optional[Union[str, Path]] = None, sequential: int = 0, seed: int = 0,
              out: Optional[Union[str, Path]] = None, progress: bool = True, dtype: Optional[str] = None) -> AnalysisResult:
    """Edit one fact-world fact and tabulate top-1 before and after over its prompt, templates,
    held-out templates, neighbours and other relations (see the module docstring). With
    `sequential` = N, N more random edits of other people (seeded by `seed`) follow it one after
    another, each made on the model as edited so far, and the table compares the model before
    with the model holding all N + 1 (`report["sequential"]`: how many still hold at the end).
    `results`: the `Edit` ("edit", with `sequential` the run's combined edit) and the `EditCase`
    ("case"); the model is restored bit-identically."""
    from analyses import factworld_edits as fe
    from probes.edit import EditRequest, check_request, choose_layer
    from probes.edit.evaluate import compare_edit

    _check_factworld(model, "interp edit")
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if sequential < 0 or (sequential and method == "ft"):
        raise ValueError(f"--sequential takes N >= 0 edits of rome, memit or alphaedit, got {sequential} with {method}")
    model = as_model(model, dtype)
    subject, relation = _fact(prompt, subject)
    request = EditRequest(prompt, subject, new_target)
    check_request(model, request)
    before_weights = {n: p.detach().clone() for n, p in model.named_parameters()}
    if layer is None:
        layer, why = choose_layer(model, prompt, subject)
    else:
        why = "given (--layer)"
    edit = fe.make_edit(model, method, request, layer, relation, why, progress=progress)
    chain = _sequential_after(model, edit, request, method, sequential, seed, progress) if sequential else None
    if chain is not None:
        edit = chain.pop("combined")
    case = fe.edit_case(subject, relation, new_target)
    case.request = request
    groups = _rows(case, relation)
    before = {g: _top1_share(model, pairs) for g, pairs in groups.items()}
    with edit.applied(model):
        after = {g: _top1_share(model, pairs) for g, pairs in groups.items()}
        saved = edit.save(model, save) if save else None
    comparison = compare_edit(model, edit, request, case.old, groups, keep=KEEP_GROUPS, paraphrases=PARAPHRASE_GROUPS,
                              method=method, layer=layer)
    restored = all(torch.equal(p, before_weights[n]) for n, p in model.named_parameters())
    if not restored:
        raise RuntimeError("the weights differ from the original after the edit was reverted")
    table = {g: {"before": before[g][0], "after": after[g][0], "prompts": [p for p, _ in pairs],
                 "answers_after": after[g][1], "right": [r for _, r in pairs]} for g, pairs in groups.items()}
    table["neighbours keep theirs"]["changed"] = _neighbour_changes(groups, before, after)[1]
    info = {k: v for k, v in edit.info.items() if k not in ("seconds", "shares")}  # the JSON is reproducible
    report = {"request": request.to_dict(), "old": case.old, "method": method, "layer": layer, "why_layer": why,
              "delta_norm": edit.norm(), "info": info, "table": table, "restored": restored,
              "scores": comparison.scores, "prompts": [r.to_dict() for r in comparison.rows]}
    if chain is not None:
        report["sequential"] = chain
    outputs = Outputs(out)
    outputs.json("edit.json", report)
    if out is not None:
        outputs.figure(_figure(groups, before, after, subject, case.old, new_target, method, layer), "edit")
        outputs.view("edit", comparison)
    results = {"edit": edit, "case": case, "groups": groups, "before": before, "after": after, "saved": saved,
               "comparison": comparison}
    return AnalysisResult("edit", report, outputs.files, results)


def _sequential_after(model: "Transformer", first: "Edit", request: "EditRequest", method: str, n: int, seed: int,
                      progress: bool) -> dict:
    """Apply `first`, then n random edits of other people one after another (`sequential_edit`);
    measure which of the n + 1 give their new target at the end; revert all. {"combined": the
    run as one Edit, "edits", "held", "requests"}."""
    from analyses import factworld_edits as fe
    from probes.edit import SequentialEdits, sequential_edit

    pairs = [(s, r, t) for r in ("sport", "country", "occupation")
             for s, t in fe.random_edits(min(n, 200), relation=r, seed=seed, known_by=model) if s != request.subject]
    random.Random(seed).shuffle(pairs)
    if len(pairs) < n:
        raise ValueError(f"only {len(pairs)} other facts to edit after this one, asked for {n}")
    others = [fe.request(s, r, t) for s, r, t in pairs[:n]]
    run = SequentialEdits(model)
    try:
        run.add(first)
        sequential_edit(model, others, method, run=run, progress=progress)
        held = [top1_is(model, r.prompt, r.new_target) for r in [request] + others]
        combined = run.combined()
    finally:
        run.revert()
    return {"combined": combined, "edits": n + 1, "held": sum(held), "first_held": held[0],
            "requests": [r.to_dict() for r in [request] + others]}


def top1_is(model: "Transformer", prompt: str, word: str) -> bool:
    from interp.words import answer_token

    with torch.no_grad():
        return int(model(prompt)[0, -1].argmax()) == answer_token(model, word)


def _neighbour_changes(groups, before, after) -> tuple[list[tuple[str, str, str]], list[str]]:
    """((name, answer before, answer after) per neighbour, ["name was -> now", ...] for those changed)."""
    from analyses.factworld_facts import find_subject

    key = "neighbours keep theirs"
    people = [(find_subject(p)[0], was, now) for (p, _), was, now in zip(groups[key], before[key][1], after[key][1])]
    return people, [f"{n} {was} -> {now}" for n, was, now in people if now != was]


def _figure(groups, before, after, subject: str, old: str, new_target: str, method: str, layer: int):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(9, 4), layout="constrained")
    ax = fig.subplots()
    names = list(groups)
    x = torch.arange(len(names), dtype=torch.float64)
    ax.bar(x - 0.2, [before[g][0] for g in names], 0.4, label="before", color="#999999")
    ax.bar(x + 0.2, [after[g][0] for g in names], 0.4, label=f"after {method.upper()}", color="#b2182b")
    ax.set_xticks(x.tolist(), [n.replace(" ", "\n", 1) for n in names], fontsize=8)
    ax.set_ylabel("share right (top-1)")
    ax.set_title(f"{subject}: {old} -> {new_target} ({method.upper()}, MLP {layer})")
    ax.legend()
    return fig


def _print_edit(result: AnalysisResult) -> None:
    r, res = result.report, result.results
    edit, groups, before, after = res["edit"], res["groups"], res["before"], res["after"]
    subject = res["case"].request.subject
    if res["saved"] is not None:
        print(f"edited model written to {res['saved']}")
    print(f"{r['method'].upper()} edit of {r['request']['prompt']!r}: {r['old']} -> {r['request']['new_target']}, "
          f"MLP layer {r['layer']} ({r['why_layer']}); |delta W| = {edit.norm():.3f}")
    print(f"{'':30s} {'before':>7s} {'after':>7s}   examples after")
    for g, pairs in groups.items():
        (b, _), (a, words) = before[g], after[g]
        examples = ", ".join(f"{p.replace(subject, '…')!r} -> {w}" for (p, _), w in list(zip(pairs, words))[:2])
        print(f"{g:30s} {b:7.2f} {a:7.2f}   {examples}")
    people, changed = _neighbour_changes(groups, before, after)
    shown = [x for x in people if x[0] in SHOWN] or people[:2]
    print(f"neighbours: {len(people) - len(changed)} of {len(people)} unchanged"
          + (f" (changed: {'; '.join(changed)})" if changed else "")
          + "; " + ", ".join(f"{n}: {was} -> {now}" for n, was, now in shown))
    names = {"efficacy_top1": "efficacy (top-1)", "paraphrase_top1": "paraphrase (top-1)", "specificity": "specificity"}
    print("scores: " + ", ".join(f"{n} {r['scores'][k]:.0f} %" for k, n in names.items() if k in r["scores"]))
    print("weights restored bit-identically after the edit: yes")
    print(f"edit computed in {edit.info.get('seconds', float('nan')):.2f} s")


def run(args: argparse.Namespace) -> int:
    if args.model != "factworld":
        raise SystemExit("interp edit evaluates on the fact world's templates and neighbours: use the shipped "
                         "model (the probes.edit functions work on any model)")
    try:
        result = edit_fact(args.model, args.prompt, args.new_target, subject=args.subject, method=args.method,
                           layer=args.layer, save=args.save, sequential=args.sequential, seed=args.seed, out=args.out,
                           progress=not args.quiet, dtype=args.dtype)
    except ValueError as e:
        raise SystemExit(str(e)) from None
    _print_edit(result)
    if "sequential" in result.report:
        sq = result.report["sequential"]
        print(f"{sq['edits']} edits one after another ({args.method}): {sq['held']} of them give their new target at "
              f"the end; this one {'holds' if sq['first_held'] else 'does not hold'}")
    print(f"Plot, page (edit.html) and JSON in {args.out}/")
    return result.rc


def evaluate_random_edits(model: ModelArg = "factworld", *, method: str = "rome", n: int = 10,
                          relation: str = "sport", layer: Optional[int] = None, seed: int = 0, fluency: int = 200,
                          out: Optional[Union[str, Path]] = None, progress: bool = True,
                          dtype: Optional[str] = None, workers: Optional[int] = None, address: Optional[str] = None,
                          resume: bool = False, shard_size: int = 4) -> AnalysisResult:
    """`evaluate_edits` over `n` random known facts of `relation`, each moved to another random
    answer (seeded); each edit at `layer` or at its fact's traced layer (MEMIT, AlphaEdit: one edit of all
    at the layer traced most often). `results["report"]` is the `EditReport`. With `workers` or
    `address` (ROME, FT-L) the facts are edited and scored in shards on Ray workers
    (`analyses.sharded.evaluate_edits_sharded`, shard files OUT/evaluate_edits.shards.jsonl), with
    the same numbers."""
    from analyses import factworld_edits as fe
    from interp.progress import progress_bar
    from models import factworld
    from probes.edit import alphaedit, choose_layer, evaluate_edits, key_second_moment, memit

    _check_factworld(model, "interp evaluate-edits")
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    name = model if isinstance(model, str) else None
    model = as_model(model, dtype)
    if workers or address is not None:
        from analyses.sharded import evaluate_edits_sharded

        facts = [(s, relation, t) for s, t in fe.random_edits(n, relation=relation, seed=seed, known_by=model)]
        shard_file = Path(out) / "evaluate_edits.shards.jsonl" if out is not None else None
        edit_report_, records = evaluate_edits_sharded(name or model, facts, method, layer=layer, fluency=fluency,
                                                      dtype=dtype, loaded=model if name else None,
                                                      shard_size=shard_size, workers=workers, address=address,
                                                      out=shard_file, resume=resume, progress=progress)
        report = edit_report_.to_dict() | {"relation": relation, "seed": seed, "layers": [r["layer"] for r in records]}
        outputs = Outputs(out)
        outputs.json("evaluate_edits.json", report)
        return AnalysisResult("evaluate-edits", report, outputs.files, {"report": edit_report_, "edits": None})
    cases = [fe.edit_case(s, relation, t) for s, t in fe.random_edits(n, relation=relation, seed=seed, known_by=model)]
    layers = [layer if layer is not None else choose_layer(model, c.request.prompt, c.request.subject, c.old)[0]
              for c in progress_bar(cases, progress=progress, desc="choosing layers (causal traces)")]
    if method in ("memit", "alphaedit"):
        top = min(set(layers), key=lambda l: (-layers.count(l), l))
        many = memit if method == "memit" else alphaedit
        edits = [many(model, [c.request for c in cases], layers=[top],
                      stats={top: key_second_moment(model, top, fe.stats_texts(), progress=progress)},
                      progress=progress)]
    else:
        edits = [fe.make_edit(model, method, c.request, l, relation, "causal trace" if layer is None else "given")
                 for c, l in progress_bar(list(zip(cases, layers)), progress=progress, desc=f"{method} edits")]
    texts = fe.fluency_texts(fluency) if fluency else ()
    edit_report = evaluate_edits(model, cases, edits, texts, method=method, progress=progress)
    report = edit_report.to_dict() | {"relation": relation, "seed": seed, "layers": layers}
    outputs = Outputs(out)
    outputs.json("evaluate_edits.json", report)
    return AnalysisResult("evaluate-edits", report, outputs.files, {"report": edit_report, "edits": edits})


def run_evaluate(args: argparse.Namespace) -> int:
    try:
        result = evaluate_random_edits(args.model, method=args.method, n=args.n, relation=args.relation,
                                       layer=args.layer, seed=args.seed, fluency=args.fluency, out=args.out,
                                       progress=not args.quiet, dtype=args.dtype, workers=args.workers,
                                       address=args.address, resume=args.resume, shard_size=args.shard_size)
    except ValueError as e:
        raise SystemExit(str(e)) from None
    r = result.results["report"]
    print(f"{r.method.upper()}: {r.n_cases} edits of {args.relation} facts (seed {args.seed}), layers {result['layers']}")
    for name, value in r.means.items():
        print(f"  {name:20s} {value:6.1f} %")
    print(f"  {'score':20s} {r.score:6.1f}   fluency loss +{r.loss_increase:.2f} %   {r.seconds_per_edit:.2f} s/edit")
    print(f"JSON in {args.out}/")
    return result.rc


def main(argv: Optional[Sequence[str]] = None) -> int:
    return main_for("analyses.edit", __doc__, add_arguments, run, argv)


if __name__ == "__main__":
    sys.exit(main())
