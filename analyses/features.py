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

The table's corpus scan runs in shards on Ray workers with --workers N (a local cluster),
--address ADDR (a running one) or --resume (`probes.sae.dashboard_sharded`), written to
OUT/L{LAYER}_features.shards.jsonl as they finish; the table is the same.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Optional, Sequence, Union

from analyses.common import (
    AnalysisResult, ModelArg, Outputs, add_batch_size_argument, add_model_arguments, add_out_argument, as_model,
    main_for,
)
from analyses.sharded import add_workers_arguments

SORTS = ("frequency", "max", "index")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("layer", type=int, help="the MLP layer whose transcoder to read")
    p.add_argument("index", type=int, nargs="?", help="one feature: write its dashboard")
    p.add_argument("--transcoders", "--dictionaries", dest="transcoders", default="factworld",
                   help="'factworld' (shipped) or a folder of L0, L1, ... transcoders (--dictionaries: the old name)")
    p.add_argument("--limit", type=int, default=None, help="only the first N people's prompts")
    p.add_argument("-k", type=int, default=10, help="top contexts and value tokens in a dashboard")
    p.add_argument("--sort", choices=SORTS, default="frequency", help="order of the table (default frequency)")
    p.add_argument("--show", type=int, default=30, help="table rows to print (0: all)")
    add_batch_size_argument(p, 512)
    add_model_arguments(p)
    add_out_argument(p, "results/features")
    add_workers_arguments(p, shard_size=4, what="batches")


def corpus(limit: Optional[int] = None) -> list[str]:
    """Every fact prompt of the first `limit` people (all), in every template of its relation."""
    from models import factworld

    people = factworld.subjects()[:limit]
    by_person: dict[str, list] = {}
    for fact in factworld.facts():
        by_person.setdefault(fact.subject, []).append(fact)
    return [t.format(subject=p) for p in people for f in by_person.get(p, []) for t in factworld.templates(f.relation)]


def layer_features(model: ModelArg = "factworld", layer: int = 0, index: Optional[int] = None, *,
                   transcoders: Union[str, Path] = "factworld", limit: Optional[int] = None, k: int = 10,
                   sort: str = "frequency", show: int = 30, batch_size: int = 512,
                   out: Optional[Union[str, Path]] = None, progress: bool = True,
                   dtype: Optional[str] = None, workers: Optional[int] = None, address: Optional[str] = None,
                   resume: bool = False, shard_size: int = 4) -> AnalysisResult:
    """The features of the transcoder of MLP `layer` over the fact world's prompts (the first
    `limit` people's): a table of every live feature, or with `index` that feature's dashboard.
    `results` holds the `FeatureTable` ("table") or the `FeatureDashboard` ("dashboard"). A layer
    outside the transcoders raises `IndexRangeError`, a feature index outside them ValueError.
    workers / address / resume: the table's scan in shards of `shard_size` batches
    (`probes.sae.dashboard_sharded`), written to OUT/L{layer}_features.shards.jsonl."""
    from interp.checks import resolve_layer
    from probes.sae import load_transcoders

    if sort not in SORTS:
        raise ValueError(f"sort must be one of {SORTS}, got {sort!r}")
    if resume and out is None:
        raise ValueError("resume=True needs out=: the folder whose shard file to resume")
    start = time.perf_counter()
    shards = None
    if workers or address is not None or resume:
        shards = dict(model=model, workers=workers, address=address, resume=resume, batches_per_shard=shard_size,
                      dtype=dtype)
    model = as_model(model, dtype)
    transcoders = load_transcoders(transcoders, device=model.device)
    layer = resolve_layer(layer, len(transcoders), "transcoder layer")
    texts = corpus(limit)
    if not texts:
        raise ValueError(f"limit={limit} leaves no prompts")
    outputs = Outputs(out)
    if index is None:
        result = _table(model, transcoders[layer], layer, texts, sort, show, batch_size, progress, outputs, shards)
    else:
        result = _dashboard(model, transcoders[layer], layer, index, texts, k, batch_size, progress, outputs)
    print(f"({time.perf_counter() - start:.1f} s)")
    return result


def _table(model, transcoder, layer: int, texts: list[str], sort: str, show: int, batch_size: int, progress: bool,
           outputs: Outputs, shards: Optional[dict] = None) -> AnalysisResult:
    from probes.sae.dashboard import feature_table

    if shards is None:
        table = feature_table(model, transcoder, texts, batch_size=batch_size, progress=progress)
    else:
        from probes.sae.dashboard_sharded import feature_table_sharded

        named = isinstance(shards["model"], (str, Path))
        table = feature_table_sharded(
            shards["model"] if named else model, transcoder, texts, batch_size=batch_size,
            batches_per_shard=shards["batches_per_shard"], dtype=shards["dtype"] if named else None,
            loaded=model if named else None, workers=shards["workers"], address=shards["address"],
            resume=shards["resume"], progress=progress,
            out=outputs.folder / f"L{layer}_features.shards.jsonl" if outputs.folder is not None else None)
    key = {"frequency": lambda r: -r.frequency, "max": lambda r: -r.max_activation, "index": lambda r: r.index}
    table.rows.sort(key=key[sort])
    path = outputs.json(f"L{layer}_features.json", table.to_dict())
    print(f"layer {layer}: {len(table.rows)} live features of {table.n_features} ({table.n_dead} never fire) on "
          f"{table.n_tokens} tokens of {table.n_texts} prompts")
    print(f"{'feature':>8}  {'freq':>7}  {'max':>6}  {'top token':<14} {'promotes':<14} top context")
    for row in table.rows[: show or None]:
        words = model.to_str_tokens(row.text)
        context = " ".join(f"[{w}]" if p == row.pos else w for p, w in enumerate(words) if p > 0 or row.pos == 0)
        print(f"{row.index:8d}  {row.frequency:7.2%}  {row.max_activation:6.2f}  {row.token:<14} {row.promotes:<14} "
              f"{context}")
    if show and len(table.rows) > show:
        print(f"... {len(table.rows) - show} more" + (f" in {path}" if path else ""))
    elif path:
        print(f"JSON in {path}")
    return AnalysisResult("features", table.to_dict(), outputs.files, {"table": table})


def _dashboard(model, transcoder, layer: int, index: int, texts: list[str], k: int, batch_size: int,
               progress: bool, outputs: Outputs) -> AnalysisResult:
    from probes.sae.dashboard import feature_dashboard, plot_dashboard

    dash = feature_dashboard(model, transcoder, index, texts, k=k, batch_size=batch_size, progress=progress)
    outputs.json(f"{dash.label}.json", dash.to_dict())
    if outputs.folder is not None:
        png = plot_dashboard(dash, outputs.folder / f"{dash.label}.png")
        outputs.files.append(png)
        outputs.view(dash.label, dash)
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
    if outputs.folder is not None:
        print(f"Plot and JSON: {outputs.files[-1]} and {outputs.files[-1].with_suffix('.json')}")
    return AnalysisResult("features", dash.to_dict(), outputs.files, {"dashboard": dash})


def run(args: argparse.Namespace) -> int:
    from interp.checks import IndexRangeError

    try:
        return layer_features(args.model, args.layer, args.index, transcoders=args.transcoders, limit=args.limit,
                              k=args.k, sort=args.sort, show=args.show, batch_size=args.batch_size, out=args.out,
                              progress=not args.quiet, dtype=args.dtype, workers=args.workers, address=args.address,
                              resume=args.resume, shard_size=args.shard_size).rc
    except IndexRangeError as e:  # a clean command-line error, no traceback
        raise SystemExit(f"interp features: layer {args.layer} is out of range: {e}") from None
    except ValueError as e:
        raise SystemExit(f"interp features: {e}") from None


def main(argv: Optional[Sequence[str]] = None) -> int:
    return main_for("analyses.features", __doc__, add_arguments, run, argv)


if __name__ == "__main__":
    sys.exit(main())
