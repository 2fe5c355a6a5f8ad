"""Where the facts of a relation live: position-aware localisation of every fact.

    interp probe-relation sport
    interp probe-relation all --methods direct,attribution,greedy    # compare ranking methods
    interp probe-relation sport --at subject                          # sites at the subject's tokens only
    interp probe-relation sport --unit feature --max-sites 5          # the shipped transcoders' features
    interp probe-relation all --workers 2 --resume                    # on 2 Ray workers, keeping finished shards
    python -m analyses.probe_relation country --out results/probe-relation

For each fact (template 0, "none" answers left out) `probes.ffn.localise` looks for the
fewest MLP neuron sites (layer, position, neuron) whose zero ablation moves the answer off
top-1 while the other facts (the same relation, and the other relations, with the sites
ablated at corresponding positions) keep >= 95% of their top-1 accuracy, with k <= 20.
Printed and saved per relation: how many facts are localised with k <= 1, 2, 3, 5, 10, 20;
the random baseline (the same number of sites at the same layers and positions, 5 draws);
a layer x position-role heatmap of the sites; the sites shared by most facts; the facts
that fail and why. OUT/RELATION[_METHOD].json and .png; with several methods also
OUT/methods.json and OUT/methods.png (localised share per relation and method). Each figure
has its interactive page beside it: RELATION[_METHOD].html (the sites heatmap),
RELATION[_METHOD]_within.html (the localised facts per k) and methods.html (the methods table). With
--unit feature the sites are the features of the shipped transcoders (`probes.sae.attached`,
or --transcoders DIR) instead of neurons; files get a _features suffix. With --workers N (a local Ray
cluster), --address ADDR (a running one) or --resume, the facts are localised in shards
(`analyses.sharded`), each written to OUT/NAME.shards.jsonl as it finishes; the results are the
same, number for number.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from pathlib import Path
from typing import Optional, Sequence, Union

from matplotlib.figure import Figure

from analyses.common import AnalysisResult, ModelArg, Outputs, add_model_arguments, add_out_argument, as_model, main_for
from analyses.sharded import add_workers_arguments

RELATIONS = ("sport", "country", "occupation")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("relation", nargs="?", default="sport", help="sport, country, occupation, or all")
    p.add_argument("--method", default=None, help="site ranking (default: probes.ffn.DEFAULT_METHOD)")
    p.add_argument("--methods", default=None, help="comma-separated ranking methods to compare")
    p.add_argument("--max-sites", type=int, default=20)
    p.add_argument("--at", choices=["any", "subject"], default="any",
                   help="where sites may be: any position (default) or the subject's tokens only")
    p.add_argument("--limit", type=int, default=None, help="only the first N facts of each relation")
    p.add_argument("--unit", choices=["neuron", "feature"], default="neuron",
                   help="localise with MLP neurons (default) or with transcoder features")
    p.add_argument("--transcoders", default="factworld", help="with --unit feature: 'factworld' or a directory")
    add_model_arguments(p)
    add_out_argument(p, "results/probe-relation")
    add_workers_arguments(p, shard_size=8, what="facts")


def _methods(method: Optional[str], methods: Optional[Sequence[str]]) -> list[str]:
    from probes.ffn import DEFAULT_METHOD, METHODS

    chosen = list(methods) if methods else [method or DEFAULT_METHOD]
    for m in chosen:
        if m not in METHODS:
            raise ValueError(f"unknown method {m!r}; choose from {', '.join(METHODS)}")
    return chosen


def _relations(name: str) -> list[str]:
    if name == "all":
        return list(RELATIONS)
    if name not in RELATIONS:
        raise ValueError(f"unknown relation {name!r}; choose from {', '.join(RELATIONS)} or all")
    return [name]


def report(view, n_layers: int) -> None:
    within = view.within()
    print(f"{view.relation} ({view.method}, sites at {view.at}): {view.n_localised} of {view.n_facts} facts localised "
          f"({view.n_localised / max(1, view.n_facts):.0%}) with k <= {view.max_sites} sites, "
          f"{view.seconds:.0f} s; the model knows {view.n_known} of them (top-1 in this template)")
    print("  " + ", ".join(f"k <= {b}: {n}" for b, n in within.items()))
    print(f"  random baseline (same count, layers, positions; {view.n_random} draws per localised fact): "
          f"{view.random_rate():.1%} of draws move the answer off top-1")
    heat = view.heatmap(n_layers)
    from probes.ffn import ROLES

    roles = [r for j, r in enumerate(ROLES) if heat[:, j].sum()]
    print("  where the sites are (localised facts): " + "; ".join(
        f"{r} {int(heat[:, ROLES.index(r)].sum())} (" + " ".join(f"L{l}:{int(heat[l, ROLES.index(r)])}"
                                                               for l in range(n_layers)) + ")" for r in roles))
    print("  sites shared by most facts: " + "; ".join(f"{s} ({n} facts: {', '.join(o[:4])}{' ...' if len(o) > 4 else ''})"
                                                      for s, n, o in view.shared(5)))
    fails = list(view.reasons.items())
    kinds = view.failure_kinds()
    if kinds:
        print("  why the others fail: " + "; ".join(f"{kind}: {n}" for kind, n in kinds.items()))
    if fails:
        print(f"  not localised ({len(fails)}), e.g.: " + "; ".join(f"{s} -> {view.objects[s]}: {r}"
                                                                  for s, r in fails[:4]))


def plot_view(view, n_layers: int) -> Figure:
    """The localised facts per k and where their sites are (layer x position role)."""
    from interp import plot
    from probes.ffn import ROLES

    fig = Figure(figsize=(13, 4.2), layout="constrained")
    left, right = fig.subplots(1, 2, width_ratios=[1, 1.6])
    within = view.within()
    left.bar([f"<= {b}" for b in within], list(within.values()), color="#2166ac")
    left.axhline(0.9 * view.n_facts, color="#b2182b", linestyle="--", label="90% of the facts")
    left.set_xlabel("sites zero-ablated (k)")
    left.set_ylabel("facts localised")
    left.set_title(f"{view.relation}: {view.n_localised}/{view.n_facts} localised ({view.method}); "
                   f"random: {view.random_rate():.1%}")
    left.legend(loc="upper left")
    heat = view.heatmap(n_layers).double()
    plot.heatmap(heat, center=float(heat.max()) / 2, row_labels=[f"L{l}" for l in range(n_layers)],
                 col_labels=list(ROLES), title="where the sites are (localised facts)", xlabel="position role",
                 ylabel="layer", colorbar_label="sites", cmap="Blues", ax=right, rotate_col_labels=True)
    return fig


def sites_grid(view, n_layers: int):
    """The figure's heatmap as a labelled result: [layer, role] sites of the localised facts."""
    from analyses.figure_views import Grid
    from probes.ffn import ROLES

    return Grid(view.heatmap(n_layers), ("layer", "role"), {"layer": [str(l) for l in range(n_layers)],
                                                            "role": list(ROLES)},
                title=f"{view.relation} ({view.method}): where the sites of the localised facts are", metric_name="sites")


def within_table(view):
    """The figure's bars as a table: facts localised with k <= b sites, and their share."""
    from analyses.figure_views import table_view

    rows = [[f"<= {b}", n, n / max(1, view.n_facts)] for b, n in view.within().items()]
    return table_view(f"{view.relation}: {view.n_localised}/{view.n_facts} facts localised ({view.method})",
                      ["sites zero-ablated (k)", "facts localised", "share of the facts"], rows,
                      notes=[f"random baseline: {view.random_rate():.1%} of draws move the answer off top-1; "
                             f"the model knows {view.n_known} of the {view.n_facts} facts"])


def methods_table(table: dict, methods: Sequence[str], relations: Sequence[str]):
    """methods.json as a table: one row per method and relation."""
    from analyses.figure_views import table_view

    rows = [[m, r, t["n_facts"], t["n_known"], t["n_localised"], t["n_localised"] / max(1, t["n_facts"]),
             t["random_rate"], t["seconds"]] for m in methods for r in relations for t in [table[m][r]]]
    return table_view("localisation rate by ranking method",
                      ["method", "relation", "facts", "known", "localised", "share localised", "random rate",
                       "seconds"], rows)


def probe_relation(model: ModelArg = "factworld", relation: str = "sport", *, method: Optional[str] = None,
                   methods: Optional[Sequence[str]] = None, max_sites: int = 20, at: str = "any",
                   limit: Optional[int] = None, unit: str = "neuron", transcoders: Union[str, Path] = "factworld",
                   out: Optional[Union[str, Path]] = None, progress: bool = True,
                   dtype: Optional[str] = None, workers: Optional[int] = None, address: Optional[str] = None,
                   resume: bool = False, shard_size: int = 8) -> AnalysisResult:
    """Localise every fact of `relation` ("all": each relation) on a fact-world model, by one
    ranking `method` or several `methods` compared; at="subject" limits the sites to the subject's
    tokens; unit="feature" localises with the `transcoders`' features. `results[relation]` (or
    "relation_method") is the `RelationView`; the report is the table per method and relation.
    workers / address / resume: in shards of `shard_size` facts (`analyses.sharded`), written to
    OUT/NAME.shards.jsonl; the same views."""
    if at not in ("any", "subject"):
        raise ValueError(f"at must be 'any' or 'subject', got {at!r}")
    if unit not in ("neuron", "feature"):
        raise ValueError(f"unit must be 'neuron' or 'feature', got {unit!r}")
    chosen, relations = _methods(method, methods), _relations(relation)
    if resume and out is None:
        raise ValueError("resume=True needs out=: the folder whose shard files to resume")
    shards = None
    if workers or address is not None or resume:
        shards = dict(model=model if isinstance(model, (str, Path)) else None, dtype=dtype, transcoders=transcoders,
                      workers=workers, address=address, resume=resume, shard_size=shard_size)
    model = as_model(model, dtype)
    outputs = Outputs(out)
    with contextlib.ExitStack() as stack:
        if unit == "feature" and shards is None:  # sharded: each worker attaches its own
            from probes.sae import attached, load_transcoders

            stack.enter_context(attached(model, load_transcoders(transcoders, device=model.device)))
        if shards is not None:  # one Ray cluster for every relation and method
            from interp.workers import ray_cluster

            stack.enter_context(ray_cluster(workers, address))
        table, views = _localise_all(model, chosen, relations, max_sites, limit, at, unit, progress, outputs, shards)
    if len(chosen) > 1:
        _compare_methods(table, chosen, relations, max_sites, outputs)
    if out is not None:
        print(f"Plots and JSON in {out}/")
    return AnalysisResult("probe-relation", table, outputs.files, views)


def run(args: argparse.Namespace) -> int:
    try:  # a clean command-line error for a wrong name, before the model loads
        methods = _methods(args.method, args.methods.split(",") if args.methods else None)
        _relations(args.relation)
    except ValueError as e:
        raise SystemExit(str(e)) from None
    return probe_relation(args.model, args.relation, methods=methods, max_sites=args.max_sites, at=args.at,
                          limit=args.limit, unit=args.unit, transcoders=args.transcoders, out=args.out,
                          progress=not args.quiet, dtype=args.dtype, workers=args.workers, address=args.address,
                          resume=args.resume, shard_size=args.shard_size).rc


def _localise_all(model, methods: list[str], relations: list[str], max_sites: int, limit: Optional[int], at: str,
                  unit: str, progress: bool, outputs: Outputs, shards: Optional[dict] = None
                  ) -> tuple[dict[str, dict[str, dict]], dict]:
    from analyses.factworld_facts import relation_view
    from analyses.sharded import relation_view_sharded
    from probes.ffn import SUBJECT_ROLES

    table: dict[str, dict[str, dict]] = {}
    views = {}
    for method in methods:
        for relation in relations:
            name = (relation if len(methods) == 1 else f"{relation}_{method}") + \
                ("_features" if unit == "feature" else "")
            roles = SUBJECT_ROLES if at == "subject" else None
            if shards is None:
                view = relation_view(model, relation, method=method, max_sites=max_sites, limit=limit, roles=roles,
                                     progress=progress, unit=unit)
            else:
                named = shards["model"] is not None
                view = relation_view_sharded(
                    shards["model"] if named else model, relation, method=method, max_sites=max_sites, limit=limit,
                    roles=roles, unit=unit, transcoders=shards["transcoders"], dtype=shards["dtype"],
                    loaded=model if named else None, shard_size=shards["shard_size"], workers=shards["workers"],
                    address=shards["address"], resume=shards["resume"], progress=progress,
                    out=outputs.folder / f"{name}.shards.jsonl" if outputs.folder is not None else None)
            outputs.result(f"{name}.json", view)
            outputs.figure(plot_view(view, model.cfg.n_layers), name)
            outputs.view(name, sites_grid(view, model.cfg.n_layers))
            outputs.view(f"{name}_within", within_table(view))
            report(view, model.cfg.n_layers)
            views[name] = view
            table.setdefault(method, {})[relation] = {
                "n_facts": view.n_facts, "n_known": view.n_known, "n_localised": view.n_localised, "within": view.within(),
                "random_rate": view.random_rate(), "seconds": view.seconds}
    return table, views


def _compare_methods(table: dict, methods: list[str], relations: list[str], max_sites: int,
                     outputs: Outputs) -> None:
    outputs.json("methods.json", table)
    fig = Figure(figsize=(9, 4), layout="constrained")
    ax = fig.subplots()
    width = 0.8 / len(methods)
    for i, method in enumerate(methods):
        shares = [table[method][r]["n_localised"] / max(1, table[method][r]["n_facts"]) for r in relations]
        ax.bar([j + i * width for j in range(len(relations))], shares, width, label=method)
    ax.set_xticks([j + 0.4 - width / 2 for j in range(len(relations))], relations)
    ax.axhline(0.9, color="#b2182b", linestyle="--")
    ax.set_ylabel(f"facts localised with k <= {max_sites}")
    ax.set_title("localisation rate by ranking method")
    ax.legend(loc="lower right", fontsize="small")
    outputs.figure(fig, "methods")
    outputs.view("methods", methods_table(table, methods, relations))
    print("\nlocalised share per method: " + "; ".join(
        f"{m}: " + ", ".join(f"{r} {t[r]['n_localised']}/{t[r]['n_facts']}" for r in relations)
        for m, t in table.items()))


def main(argv: Optional[Sequence[str]] = None) -> int:
    return main_for("analyses.probe_relation", __doc__, add_arguments, run, argv)


if __name__ == "__main__":
    sys.exit(main())
