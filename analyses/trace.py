"""Causal tracing (Meng et al. 2022) and attention knockout (Geva et al. 2023).

    interp trace                      # fact-world: Michael Jordan -> basketball, and all athletes -> sport
    python -m analyses.trace --window 1 --out results/trace

1. One fact: Gaussian noise (3 x the embedding std, 10 samples) on the subject's
   embeddings; restore the clean residual stream / MLP output / attention
   output at each (layer, position) and record P(answer). Also symmetric token
   replacement (the subject replaced by --replacement, same token length).
2. The average indirect effect over every athlete -> sport fact of the
   fact-world model, positions grouped as in ROME (first / last subject token,
   first subsequent token, last token, ...).
3. Attention knockout: block attention from the subject, the relation words or
   the last position into the last position, one window of layers at a time.

The ROME default window (10 layers) is meant for 48-layer models: on a model
of 4 layers it covers every layer and every row looks the same, so this
analysis defaults to --window 1 (pass --window 10 for the library default).

Writes PNG + SVG plots and one JSON per result into OUT. With --workers N (a local Ray cluster),
--address ADDR (a running one) or --resume, the average traces run in shards of facts
(`probes.trace_sharded`), written to OUT/average_KIND.shards.jsonl as they finish; the numbers are
the same.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from pathlib import Path
from typing import Optional, Sequence, Union

from analyses.common import (
    ANSWER, CLEAN, AnalysisResult, ModelArg, Outputs, add_model_arguments, add_out_argument, as_model, main_for,
)
from analyses.sharded import add_workers_arguments
from interp.progress import progress_bar

KINDS = ("resid", "mlp", "attn")


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_model_arguments(p)
    p.add_argument("--prompt", default=CLEAN)
    p.add_argument("--subject", default="Michael Jordan")
    p.add_argument("--answer", default=ANSWER)
    p.add_argument("--replacement", default="Michael Phelps",
                   help="subject for symmetric token replacement (same number of tokens)")
    p.add_argument("--window", type=int, default=1, help="layers restored together for mlp / attn (ROME: 10)")
    p.add_argument("--samples", type=int, default=10, help="noise samples")
    p.add_argument("--noise", type=float, default=3.0, help="noise std in units of the embedding std")
    p.add_argument("--relation", default="sport", help="fact-world relation to average over (factworld only)")
    p.add_argument("--no-average", action="store_true", help="skip the average over all facts")
    add_out_argument(p, "results/trace")
    add_workers_arguments(p, shard_size=8, what="facts")


def trace_fact(model: ModelArg = "factworld", *, prompt: str = CLEAN, subject: str = "Michael Jordan",
               answer: str = ANSWER, replacement: Optional[str] = "Michael Phelps", window: int = 1,
               samples: int = 10, noise: float = 3.0, relation: Optional[str] = "sport",
               out: Optional[Union[str, Path]] = None, progress: bool = True,
               dtype: Optional[str] = None, workers: Optional[int] = None, address: Optional[str] = None,
               resume: bool = False, shard_size: int = 8) -> AnalysisResult:
    """Causal traces of one fact (resid / mlp / attn with noise, resid with `replacement`;
    None: no replacement trace), attention knockout, and with `relation` (fact-world model
    only; None: skip) the average trace over the relation's facts. `results` holds each
    `TraceResult` ("trace_resid", ...), the `KnockoutResult` ("knockout") and the
    `AverageTrace`s ("average_resid", ...). workers / address / resume: the average traces in
    shards of `shard_size` facts (`probes.trace_sharded`), written to OUT/average_KIND.shards.jsonl."""
    from analyses.factworld_facts import is_factworld

    if resume and out is None:
        raise ValueError("resume=True needs out=: the folder whose shard files to resume")
    model_name = model
    model = as_model(model, dtype)
    shards = None
    if workers or address is not None or resume:
        shards = dict(model=model_name if isinstance(model_name, (str, Path)) else model, dtype=dtype,
                      loaded=model if isinstance(model_name, (str, Path)) else None, workers=workers,
                      address=address, resume=resume, shard_size=shard_size)
    outputs = Outputs(out)
    summary: dict = {"prompt": prompt, "subject": subject, "answer": answer, "window": window}
    results: dict = {}
    jobs = [(kind, "noise") for kind in KINDS] + ([("resid", "replace")] if replacement else [])
    for kind, corruption in progress_bar(jobs, progress, desc="causal traces"):
        name = f"trace_{kind}" + ("_replace" if corruption == "replace" else "")
        results[name] = _one_trace(model, prompt, subject, answer, kind, corruption, replacement, window, samples,
                                   noise, outputs, name, summary)
    results["knockout"] = _knockout(model, prompt, subject, answer, window, outputs, summary)
    if relation is not None and is_factworld(model_name):
        results.update(_average(model, relation, window, noise, samples, progress, outputs, summary, shards))
    outputs.json("summary.json", summary)
    if out is not None:
        print(f"Plots and JSON in {out}/")
    return AnalysisResult("trace", summary, outputs.files, results)


def _one_trace(model, prompt: str, subject: str, answer: str, kind: str, corruption: str, replacement, window: int,
               samples: int, noise: float, outputs: Outputs, name: str, summary: dict):
    from interp import plot
    from probes.causal_trace import trace

    result = trace(model, prompt, subject, answer, kind=kind, window=window, noise=noise, n_samples=samples,
                   corruption=corruption, replacement_subject=replacement if corruption == "replace" else None,
                   progress=False)
    paths = outputs.figure(plot.layer_pos_heatmap(result.values, tokens=result.labels["pos"], title=result.title,
                                                  colorbar_label=result.metric_name), name)
    outputs.json(f"{name}.json", result.to_dict())
    outputs.view(name, result)
    peak = result.indirect_effect.flatten().argmax()
    layer, pos = divmod(int(peak), result.scores.shape[1])
    summary[name] = {"clean_prob": result.clean_prob, "corrupted_prob": result.corrupted_prob,
                     "peak": {"layer": layer, "pos": result.labels["pos"][pos],
                              "indirect_effect": float(result.indirect_effect[layer, pos])},
                     "plots": [str(p) for p in paths]}
    print(f"{name:20s} P({answer}) clean {result.clean_prob:.3f}, corrupted {result.corrupted_prob:.4f}; "
          f"largest indirect effect {float(result.indirect_effect[layer, pos]):.3f} at L{layer}, "
          f"{result.labels['pos'][pos]}")
    return result


def _knockout(model, prompt: str, subject: str, answer: str, window: int, outputs: Outputs, summary: dict):
    from interp import plot
    from probes.knockout import attention_knockout_all

    knock = attention_knockout_all(model, prompt, subject, answer, window=window, progress=False)
    paths = outputs.figure(plot.heatmap(knock.values, row_labels=knock.labels["sources"],
                                        col_labels=knock.labels["layer"], title=knock.title, xlabel="layer",
                                        ylabel="blocked edges into the last position",
                                        colorbar_label="change in P(answer), %"), "knockout")
    outputs.json("knockout.json", knock.to_dict())
    outputs.view("knockout", knock)
    summary["knockout"] = {"change_percent": dict(zip(knock.labels["sources"], knock.values.tolist())),
                           "plots": [str(p) for p in paths]}
    for source, row in zip(knock.labels["sources"], knock.values.tolist()):
        print(f"knockout {source:>8s} -> last, per layer: " + " ".join(f"{v:+6.1f}%" for v in row))
    return knock


def _average(model, relation: str, window: int, noise: float, samples: int, progress: bool, outputs: Outputs,
             summary: dict, shards: Optional[dict] = None) -> dict:
    from analyses.factworld_facts import triples
    from models import factworld

    facts = triples([f for f in factworld.facts(relation) if f.object != "none"], factworld.templates(relation)[0])
    results = {}
    with contextlib.ExitStack() as stack:
        if shards is not None:  # one Ray cluster for the three kinds
            from interp.workers import ray_cluster

            stack.enter_context(ray_cluster(shards["workers"], shards["address"]))
        for kind in progress_bar(KINDS, progress, desc=f"average traces over {len(facts)} facts"):
            _average_kind(model, facts, kind, window, noise, samples, progress, outputs, summary, shards, results)
    return results


def _average_kind(model, facts: list, kind: str, window: int, noise: float, samples: int, progress: bool,
                  outputs: Outputs, summary: dict, shards: Optional[dict], results: dict) -> None:
    from interp import plot
    from probes.trace_average import average_trace

    if shards is None:
        avg = average_trace(model, facts, kind=kind, window=window, noise=noise, n_samples=samples,
                            progress=progress)
    else:
        from probes.trace_sharded import average_trace_sharded

        path = outputs.folder / f"average_{kind}.shards.jsonl" if outputs.folder is not None else None
        avg = average_trace_sharded(shards["model"], facts, kind=kind, window=window, noise=noise,
                                    n_samples=samples, dtype=shards["dtype"], loaded=shards["loaded"],
                                    shard_size=shards["shard_size"], workers=shards["workers"],
                                    address=shards["address"], out=path, resume=shards["resume"],
                                    progress=progress)
    paths = outputs.figure(plot.heatmap(avg.values, row_labels=avg.labels["layer"],
                                        col_labels=avg.labels["category"], title=avg.title, xlabel="position",
                                        ylabel="layer", colorbar_label="average indirect effect"),
                           f"average_{kind}")
    outputs.json(f"average_{kind}.json", avg.to_dict())
    outputs.view(f"average_{kind}", avg)
    summary[f"average_{kind}"] = {"plots": [str(p) for p in paths], **avg.to_dict()}
    results[f"average_{kind}"] = avg
    print(f"average {kind}: " + "; ".join(
        f"{c}: " + " ".join("  nan" if v != v else f"{v:.2f}" for v in avg.values[:, i].tolist())
        for i, c in enumerate(avg.labels["category"])))


def run(args: argparse.Namespace) -> int:
    return trace_fact(args.model, prompt=args.prompt, subject=args.subject, answer=args.answer,
                      replacement=args.replacement, window=args.window, samples=args.samples, noise=args.noise,
                      relation=None if args.no_average else args.relation, out=args.out, progress=not args.quiet,
                      dtype=args.dtype, workers=args.workers, address=args.address, resume=args.resume,
                      shard_size=args.shard_size).rc


def main(argv: Optional[Sequence[str]] = None) -> int:
    return main_for("analyses.trace", __doc__, add_arguments, run, argv)


if __name__ == "__main__":
    sys.exit(main())
