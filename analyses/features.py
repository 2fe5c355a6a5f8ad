"""The shipped transcoders' features over the fact world's prompts: a table of a layer, or one
feature's dashboard.

    interp features LAYER [--sort frequency|max|index] [--show N] [--limit N] [--out results/features]
    interp features LAYER INDEX [-k K] [--limit N] [--out results/features]

The corpus is every fact prompt of every person, in all templates of its relation (training
and held-out), each ending right before the object ("Michael Jordan plays the sport of"):
1422 facts x 27 templates = 38,394 prompts; --limit N keeps the first N people's.

- LAYER: every live feature's frequency (share of tokens where it fires), largest activation,
  the token and prompt where that happens, and the token its value promotes most; printed
  (the first --show rows) and written to OUT/L{LAYER}_features.json.
- LAYER INDEX: the feature's dashboard (probes.sae.dashboard): top contexts, the value's
  promoted / suppressed tokens, the key at the top context by source, the histogram of its
  activations; OUT/L{LAYER}F{INDEX}.png and .json.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Optional, Sequence

from analyses.common import add_model_arguments, add_out_argument, load_model, main_for, write_json

SORTS = ("frequency", "max", "index")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("layer", type=int, help="the MLP layer whose transcoder to read")
    p.add_argument("index", type=int, nargs="?", help="one feature: write its dashboard")
    p.add_argument("--dictionaries", default="factworld", help="a folder of L0, L1, ... dictionaries")
    p.add_argument("--limit", type=int, default=None, help="only the first N people's prompts")
    p.add_argument("-k", type=int, default=10, help="top contexts and value tokens in a dashboard")
    p.add_argument("--sort", choices=SORTS, default="frequency", help="order of the table (default frequency)")
    p.add_argument("--show", type=int, default=30, help="table rows to print (0: all)")
    p.add_argument("--batch-size", type=int, default=512)
    add_model_arguments(p)
    add_out_argument(p, "results/features")


def corpus(limit: Optional[int] = None) -> list[str]:
    """Every fact prompt of the first `limit` people (all), in every template of its relation."""
    from models import factworld

    people = factworld.subjects()[:limit]
    by_person: dict[str, list] = {}
    for fact in factworld.facts():
        by_person.setdefault(fact.subject, []).append(fact)
    return [t.format(subject=p) for p in people for f in by_person.get(p, []) for t in factworld.templates(f.relation)]


def run(args: argparse.Namespace) -> int:
    from probes.sae import load_transcoders

    start = time.perf_counter()
    model = load_model(args)
    transcoders = load_transcoders(args.dictionaries)
    if not -len(transcoders) <= args.layer < len(transcoders):
        raise SystemExit(f"interp features: layer {args.layer} is out of range: there are {len(transcoders)} "
                         f"transcoders (layers 0..{len(transcoders) - 1})")
    layer = args.layer % len(transcoders)
    texts = corpus(args.limit)
    if not texts:
        raise SystemExit(f"interp features: --limit {args.limit} leaves no prompts")
    if args.index is None:
        table_report(model, transcoders[layer], layer, texts, args)
    else:
        dashboard_report(model, transcoders[layer], layer, args.index, texts, args)
    print(f"({time.perf_counter() - start:.1f} s)")
    return 0


def table_report(model, transcoder, layer: int, texts: list[str], args: argparse.Namespace) -> None:
    from probes.sae.dashboard import feature_table

    table = feature_table(model, transcoder, texts, batch_size=args.batch_size, progress=not args.quiet)
    key = {"frequency": lambda r: -r.frequency, "max": lambda r: -r.max_activation, "index": lambda r: r.index}
    table.rows.sort(key=key[args.sort])
    path = write_json(args.out / f"L{layer}_features.json", table.to_dict())
    print(f"layer {layer}: {len(table.rows)} live features of {table.n_features} ({table.n_dead} never fire) on "
          f"{table.n_tokens} tokens of {table.n_texts} prompts")
    print(f"{'feature':>8}  {'freq':>7}  {'max':>6}  {'top token':<14} {'promotes':<14} top context")
    for row in table.rows[: args.show or None]:
        words = model.to_str_tokens(row.text)
        context = " ".join(f"[{w}]" if p == row.pos else w for p, w in enumerate(words) if p > 0 or row.pos == 0)
        print(f"{row.index:8d}  {row.frequency:7.2%}  {row.max_activation:6.2f}  {row.token:<14} {row.promotes:<14} "
              f"{context}")
    if args.show and len(table.rows) > args.show:
        print(f"... {len(table.rows) - args.show} more in {path}")
    else:
        print(f"JSON in {path}")


def dashboard_report(model, transcoder, layer: int, index: int, texts: list[str], args: argparse.Namespace) -> None:
    from probes.sae.dashboard import feature_dashboard, plot_dashboard

    try:
        dash = feature_dashboard(model, transcoder, index, texts, k=args.k, batch_size=args.batch_size,
                                 progress=not args.quiet)
    except ValueError as e:
        raise SystemExit(f"interp features: {e}") from None
    write_json(args.out / f"{dash.label}.json", dash.to_dict())
    png = plot_dashboard(dash, args.out / f"{dash.label}.png")
    print(f"feature {dash.label}: fires on {dash.frequency:.2%} of {dash.n_tokens} tokens ({dash.n_texts} prompts), "
          f"max {dash.max_activation:.3f}")
    for c in dash.top_examples:
        print(f"  {c.activation:7.3f}  {c.marked()}")
    for what, tokens in (("promotes", dash.value_top), ("suppresses", dash.value_bottom)):
        print(f"value {what}: " + ", ".join(f"{t} {v:+.2f}" for t, v in tokens))
    if dash.key_sources:
        ranked = sorted(dash.key_sources.items(), key=lambda kv: -abs(kv[1]))
        print(f"key at the top context (pre-activation {dash.key_pre_activation:.3f}): "
              + ", ".join(f"{s} {v:+.3f}" for s, v in ranked[:8]))
    for note in dash.notes:
        print(f"note: {note}")
    print(f"Plot and JSON: {png} and {png.with_suffix('.json')}")


def main(argv: Optional[Sequence[str]] = None) -> int:
    return main_for("analyses.features", __doc__, add_arguments, run, argv)


if __name__ == "__main__":
    sys.exit(main())
