"""Which transcoder settings give the attribution graphs better dictionaries (issue 23)?

    python -m analyses.dictionary_study [--settings A,B,...] [--facts 40] [--work DIR] [--quick]
                                        [--out results/dictionary_study]

Each setting (`SETTINGS`: width, activation, k, skip connection, steps, the layers it trains)
is trained with `analyses.train_transcoders.train_layer` on the shipped transcoders' data
(150,000 tokens of the fact world's training sentences) into --work (default
/tmp/dictionary_study; a setting found there with the same options is loaded, not trained
again). Layers a setting does not train are the shipped transcoders'. Per setting:

- per trained layer: L0, variance explained, dead features, and the loss at the object token
  of 300 held-out-template sentences (clean, spliced, zero-ablated; recovered =
  (zero - spliced) / (zero - clean), ill-defined where zeroing the MLP barely moves it);
- subject features: the share of the 474 people with a dedicated feature (it fires at the
  last subject token of "{subject} plays the sport of" and stays below 10% of that for every
  person sharing a name token; `probes.sae.dedicated`) per layer, at the best layer, and at
  some layer of 0-2 (the union);
- attribution graphs over all four layers on `--facts` athlete -> sport facts spread over the
  225 (and Michael Jordan): replacement score and completeness (`probes.graph`), median and
  Michael Jordan's.

OUT/study.json (every number) and OUT/study.png (dedicated share per layer, graph scores).
`--quick` trains 60 steps of two small settings and builds 3 graphs: a smoke run in a minute.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Optional, Sequence, Union

import torch

from analyses.common import AnalysisResult, ModelArg, Outputs, add_model_arguments, add_out_argument, as_model, main_for

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from models import Transformer
    from probes.sae import SparseDictionary

MICHAEL_JORDAN = "Michael Jordan"
SUBJECT_TEMPLATE = "{subject} plays the sport of"
SUBJECT_LAYERS = (0, 1, 2)  # where subject features live (layer 3's share is 0.6% for the shipped ones)


@dataclass(frozen=True)
class Setting:
    """A transcoder setting: the options of `train_layer` and the layers it trains (the others
    are the shipped transcoders'). `layers=()`: the shipped transcoders themselves."""

    features: int = 512
    k: int = 32
    activation: str = "topk"
    skip: bool = False
    steps: int = 3000
    l1: float = 1e-3
    layers: tuple[int, ...] = (0, 1, 2, 3)

    def train_options(self) -> dict:
        return {k: v for k, v in asdict(self).items() if k != "layers"}

    def label(self) -> str:
        if not self.layers:
            return "shipped (512, TopK k=32, 3000 steps)"
        act = {"topk": f"TopK k={self.k}", "batchtopk": f"BatchTopK k={self.k}", "relu": f"ReLU+L1 {self.l1:g}"}
        return (f"{self.features}, {act[self.activation]}{', skip' if self.skip else ''}, {self.steps} steps, "
                f"layers {','.join(map(str, self.layers))}")


SETTINGS: dict[str, Setting] = {
    "shipped": Setting(layers=()),
    "w2048-k32": Setting(features=2048, steps=1500),
    "w2048-k16": Setting(features=2048, k=16, steps=1500, layers=(0,)),
    "w2048-batchtopk": Setting(features=2048, activation="batchtopk", steps=1500, layers=(0,)),
    "w512-skip": Setting(skip=True),
    "w1024-k32-skip": Setting(features=1024, skip=True, steps=1500),
    "w2048-k32-skip": Setting(features=2048, skip=True, steps=1500, layers=(0, 3)),  # the layers with the most error
    "w2048-k32-3000": Setting(features=2048, steps=3000),
}
QUICK = {"shipped": SETTINGS["shipped"], "quick-w256-k16": Setting(features=256, k=16, steps=60, layers=(0,)),
         "quick-w256-skip": Setting(features=256, k=16, skip=True, steps=60, layers=(2,))}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--settings", default=None, help=f"comma-separated names among {', '.join(SETTINGS)} (default: all)")
    p.add_argument("--facts", type=int, default=40, help="athlete -> sport facts to build graphs for (plus Michael Jordan)")
    p.add_argument("--work", type=Path, default=Path("/tmp/dictionary_study"),
                   help="where each setting's transcoders are trained to (and found again)")
    p.add_argument("--quick", action="store_true", help="a smoke run: two tiny settings, 60 steps, 3 graphs")
    p.add_argument("--ship", type=Path, default=None,
                   help="with one setting that trains every layer: also write its transcoders to this new or empty "
                        "folder (L0, L1, ... and training.json), loadable with load_transcoders(DIR)")
    add_model_arguments(p)
    add_out_argument(p, "results/dictionary_study")


# ------------------------------------------------------------------ subject features
def subject_feature_acts(model: Transformer, tc: SparseDictionary, texts: Sequence[str],
                         ends: Sequence[int]) -> torch.Tensor:
    """[n_texts, n_features]: the transcoder's feature activations at position ends[i] of text i."""
    from interp.tokens import cached_batches

    if len(texts) != len(ends):
        raise ValueError(f"{len(texts)} texts but {len(ends)} positions")
    _, cache = next(cached_batches(model, list(texts), [tc.in_hook], len(texts)))
    with torch.no_grad():
        return tc.encode(cache[tc.in_hook][torch.arange(len(texts)), torch.as_tensor(list(ends))])


def has_dedicated(acts: torch.Tensor, neighbours: Sequence[Sequence[int]]) -> list[bool]:
    """Per subject (row of acts [n_subjects, n_units]): does it have a dedicated unit
    (`probes.sae.dedicated.dedicated_units`)?"""
    from probes.sae.dedicated import dedicated_units

    return [u is not None for u in dedicated_units(acts, neighbours)]


def dedicated_summary(per_layer: dict[int, list[bool]]) -> dict:
    """{"per_layer": {layer: share}, "best_layer": (layer, share), "any_layer": share of subjects with a
    dedicated unit at some layer of `per_layer`}."""
    if not per_layer:
        raise ValueError("no layers to summarise")
    n = {len(v) for v in per_layer.values()}
    if len(n) != 1 or 0 in n:
        raise ValueError(f"every layer needs one flag per subject, got lengths {sorted(n)}")
    shares = {layer: sum(v) / len(v) for layer, v in per_layer.items()}
    best = max(shares, key=lambda l: (shares[l], -l))
    union = [any(flags) for flags in zip(*per_layer.values())]
    return {"per_layer": shares, "best_layer": [best, shares[best]], "any_layer": sum(union) / len(union)}


class People:
    """The fact world's 474 people, each one's neighbours (people sharing a name token), and the
    prompts and last subject positions the dedicated-unit check reads."""

    def __init__(self, model: Transformer) -> None:
        from models import factworld
        from probes.ffn import related_subjects
        from probes.subjects import last_subject_pos

        self.names = factworld.subjects()
        index = {s: i for i, s in enumerate(self.names)}
        self.neighbours = [[index[q] for q in sum(related_subjects(s, self.names), [])] for s in self.names]
        self.texts = [SUBJECT_TEMPLATE.format(subject=s) for s in self.names]
        self.ends = [last_subject_pos(model, t, s) for t, s in zip(self.texts, self.names)]

    def dedicated(self, model: Transformer, tc: SparseDictionary) -> list[bool]:
        return has_dedicated(subject_feature_acts(model, tc, self.texts, self.ends), self.neighbours)


# ------------------------------------------------------------------ training and the transcoder sets
def trained_layers(model: Transformer, name: str, setting: Setting, work: Optional[Path], data: dict,
                   texts: Sequence[str], progress: bool = True) -> dict[int, tuple[SparseDictionary, float]]:
    """{layer: (transcoder, training seconds)} for the setting's layers: loaded from work/name/L{l}
    when a transcoder trained with the same options is there, else trained (and saved there)."""
    from analyses.train_transcoders import train_layer, training_pairs
    from probes.sae import load_dictionary, save_dictionary

    out = {}
    for layer in setting.layers:
        folder = None if work is None else work / name / f"L{layer}"
        if folder is not None and (folder / "cfg.json").exists():
            extra = json.loads((folder / "cfg.json").read_text()).get("extra", {})
            if extra.get("setting") == setting.train_options():
                out[layer] = (load_dictionary(folder), float(extra["seconds"]))
                continue
        if layer not in data:
            data[layer] = training_pairs(model, layer, texts)
        tc, record = train_layer(model, layer, data[layer], progress=progress, **setting.train_options())
        if folder is not None:
            save_dictionary(tc, folder, extra={"setting": setting.train_options(), "seconds": record.seconds},
                            overwrite=True)
        out[layer] = (tc, record.seconds)
    return out


def transcoder_set(shipped: Sequence[SparseDictionary], trained: dict[int, SparseDictionary]) -> list[SparseDictionary]:
    """One transcoder per layer: the trained one where there is one, else the shipped one."""
    bad = sorted(set(trained) - set(range(len(shipped))))
    if bad:
        raise ValueError(f"trained layers {bad} are not among the model's {len(shipped)} layers")
    return [trained.get(layer, tc) for layer, tc in enumerate(shipped)]


# ------------------------------------------------------------------ graphs
def graph_facts(n: int) -> list[tuple[str, str, str]]:
    """n athlete -> sport facts (subject, prompt, sport) spread evenly over all of them, and
    Michael Jordan's (last, if not among them)."""
    from analyses.graph_study import athlete_facts, spread_athlete_facts

    if n < 1:
        raise ValueError(f"need at least one fact, got {n}")
    facts, picked = athlete_facts(), spread_athlete_facts(n)
    if all(f[0] != MICHAEL_JORDAN for f in picked):
        picked += [f for f in facts if f[0] == MICHAEL_JORDAN]
    return picked


def graph_scores(model: Transformer, transcoders: Sequence[SparseDictionary], facts: Sequence[tuple[str, str, str]],
                 progress: bool = True) -> list[dict]:
    """Per fact: {"subject", "replacement", "completeness", "features", "error_share"} of its
    attribution graph (the sport as the only target); error_share[l] is layer l's error nodes'
    share of the influence that reaches tokens and errors (replacement = 1 - their sum)."""
    from interp.progress import progress_bar
    from probes.graph import attribution_graph

    rows = []
    for subject, prompt, sport in progress_bar(facts, progress, desc="graphs"):
        graph = attribution_graph(model, prompt, transcoders, targets=[sport], progress=False)
        rows.append({"subject": subject, **graph.scores(), "features": graph.n_features,
                     "error_share": error_share_by_layer(graph)})
    return rows


def error_share_by_layer(graph) -> list[float]:
    """[n_layers]: each layer's error nodes' share of the influence on the targets that reaches
    the graph's sources (token embeddings and error nodes)."""
    import einops

    influence = graph.influence()
    errors = einops.rearrange(influence[graph.error_nodes], "(layer pos) -> layer pos", layer=graph.n_layers).sum(-1)
    reached = influence[graph.token_nodes].sum() + errors.sum()
    return (errors / reached).tolist() if reached > 0 else [float("nan")] * graph.n_layers


def _median(rows: list[dict], key: str) -> float:
    values = [r[key] for r in rows if r[key] == r[key]]
    return statistics.median(values) if values else float("nan")


# ------------------------------------------------------------------ the study
@dataclass
class Context:
    """What every setting is measured on (built once)."""

    model: Transformer
    shipped: list
    people: People
    held_out: tuple[list[str], list[int]]
    facts: list
    texts: list[str]
    n_spread: int  # the first n_spread facts are the even spread (the medians' sample)
    fact_prompts: tuple[list[str], list[str]] = ((), ())  # (prompts, answers) for the all-spliced accuracy
    data: dict = field(default_factory=dict)


def measure_setting(ctx: Context, name: str, setting: Setting, work: Optional[Path], progress: bool = True) -> dict:
    """Train (or load) one setting and measure it (see the module docstring)."""
    from probes.sae import evaluate_dictionary

    trained = trained_layers(ctx.model, name, setting, work, ctx.data, ctx.texts, progress)
    tcs = transcoder_set(ctx.shipped, {l: tc for l, (tc, _) in trained.items()})
    own = sorted(trained) if trained else list(range(len(tcs)))
    layers, flags = {}, {}
    for layer in own:
        s = evaluate_dictionary(ctx.model, tcs[layer], ctx.held_out[0], focus=ctx.held_out[1])
        flags[layer] = ctx.people.dedicated(ctx.model, tcs[layer])
        layers[layer] = {"l0": s.l0, "variance_explained": s.variance_explained, "dead": s.dead, "kl": s.kl,
                         "object_ce_clean": s.focus_ce_clean, "object_ce_spliced": s.focus_ce_spliced,
                         "object_ce_zero": s.focus_ce_zero, "object_ce_recovered": s.focus_ce_recovered,
                         "dedicated": sum(flags[layer]) / len(flags[layer]),
                         "train_seconds": trained[layer][1] if layer in trained else None}
    subject = {l: flags.get(l) or ctx.people.dedicated(ctx.model, tcs[l]) for l in SUBJECT_LAYERS}
    from analyses.transcoders import spliced_accuracy

    clean, spliced = spliced_accuracy(ctx.model, tcs, *ctx.fact_prompts)
    rows = graph_scores(ctx.model, tcs, ctx.facts, progress)
    mj = next((r for r in rows if r["subject"] == MICHAEL_JORDAN), None)
    sample = rows[:ctx.n_spread]  # Michael Jordan counts only where the even spread picks him
    return {"setting": asdict(setting), "label": setting.label(), "shipped_layers": [l for l in range(len(tcs)) if l not in trained],
            "train_seconds": sum(s for _, s in trained.values()), "layers": layers,
            "dedicated": dedicated_summary(subject),
            "all_spliced": {"prompts": len(ctx.fact_prompts[0]), "clean": clean, "spliced": spliced},
            "graphs": {"facts": len(sample), "replacement_median": _median(sample, "replacement"),
                       "completeness_median": _median(sample, "completeness"),
                       "features_median": _median(sample, "features"),
                       "error_share_mean": [statistics.fmean(r["error_share"][l] for r in sample) for l in range(len(tcs))],
                       "michael_jordan": mj, "per_fact": rows}}


def dictionary_study(model: ModelArg = "factworld", *, settings: Optional[Sequence[str]] = None, n_facts: int = 40,
                     work: Optional[Union[str, Path]] = Path("/tmp/dictionary_study"), quick: bool = False,
                     out: Optional[Union[str, Path]] = None, ship: Optional[Union[str, Path]] = None,
                     progress: bool = True, dtype: Optional[str] = None) -> AnalysisResult:
    """See the module docstring. `settings`: names among SETTINGS (QUICK with quick=True).
    `ship`: a new or empty folder for the one setting's transcoders (it must train every layer)."""
    from analyses.factworld_edits import stats_texts
    from analyses.train_transcoders import held_out
    from analyses.factworld_facts import heldout_fact_prompts
    from models.checkpoint import check_empty_dir
    from probes.sae import load_transcoders

    table = QUICK if quick else SETTINGS
    names = list(table) if settings is None else list(settings)
    unknown = [n for n in names if n not in table]
    if unknown:
        raise ValueError(f"unknown settings {unknown}; choose among {list(table)}")
    if ship is not None:  # before any work
        if len(names) != 1 or set(table[names[0]].layers) != set(range(4)):
            raise ValueError(f"--ship writes one setting that trains layers 0-3; got {names}")
        ship = check_empty_dir(ship)
    model = as_model(model, dtype)
    work = None if work is None else Path(work)
    n_facts = 2 if quick else n_facts
    facts = graph_facts(n_facts)
    ctx = Context(model, load_transcoders("factworld"), People(model), held_out(model, 60 if quick else 300), facts,
                  stats_texts(2000 if quick else 20_000), n_spread=min(n_facts, len(facts)),
                  fact_prompts=heldout_fact_prompts(200 if quick else None))
    report = {"facts": [f[0] for f in ctx.facts], "settings": {}}
    for name in names:
        report["settings"][name] = row = measure_setting(ctx, name, table[name], work, progress)
        _print_row(name, row)
    outputs = Outputs(out)
    outputs.json("study.json", report)
    if outputs.folder is not None:
        outputs.figure(_figure(report), "study")
    if ship is not None:
        ship_setting(ctx, names[0], table[names[0]], work, ship, report["settings"][names[0]])
    return AnalysisResult("dictionary-study", report, outputs.files)


def ship_setting(ctx: Context, name: str, setting: Setting, work: Optional[Path], dest: Path, row: dict) -> Path:
    """Write the setting's transcoders (trained or found in `work`) to dest/L{l} (cfg.json with the
    setting, training seconds and scores) and dest/training.json (the study's row, per-fact rows left
    out). `--ship DIR` names the folder, so a shipped one is allowed; a non-empty one is still refused."""
    from analyses.common import write_json
    from probes.sae import save_dictionary

    trained = trained_layers(ctx.model, name, setting, work, ctx.data, ctx.texts, progress=False)
    for layer, (tc, seconds) in sorted(trained.items()):
        save_dictionary(tc, dest / f"L{layer}", allow_shipped=True, extra={"setting": setting.train_options(), "seconds": seconds,
                                                       "scores": row["layers"][layer],
                                                       "trained_by": "analyses.train_transcoders.train_layer"})
    summary = {k: v for k, v in row.items() if k != "graphs"}
    summary["graphs"] = {k: v for k, v in row["graphs"].items() if k != "per_fact"}
    write_json(dest / "training.json", summary)
    print(f"transcoders in {dest}/")
    return dest


def _print_row(name: str, row: dict) -> None:
    d, g = row["dedicated"], row["graphs"]
    per = " / ".join(f"{100 * s:.1f}" for s in d["per_layer"].values())
    mj = g["michael_jordan"] or {}
    print(f"{name}: {row['label']}; trained in {row['train_seconds']:.0f} s")
    for layer, e in row["layers"].items():
        print(f"  layer {layer}: L0 {e['l0']:.1f}, var. expl. {e['variance_explained']:.4f}, dead {e['dead']:.3f}, "
              f"object-token loss {e['object_ce_clean']:.4f} clean / {e['object_ce_spliced']:.4f} spliced / "
              f"{e['object_ce_zero']:.4f} zeroed (recovered {e['object_ce_recovered']:.3f}), dedicated "
              f"{100 * e['dedicated']:.1f}%")
    print(f"  every layer spliced in: fact accuracy "
          f"{row['all_spliced']['spliced']:.3f} (clean {row['all_spliced']['clean']:.3f})")
    print(f"  dedicated (layers 0-2): {per} %; best layer {d['best_layer'][0]} {100 * d['best_layer'][1]:.1f}%, some "
          f"layer {100 * d['any_layer']:.1f}%")
    print(f"  graphs ({g['facts']} facts): replacement median {g['replacement_median']:.3f}, completeness median "
          f"{g['completeness_median']:.3f}; Michael Jordan {mj.get('replacement', float('nan')):.3f} / "
          f"{mj.get('completeness', float('nan')):.3f}; error share by layer (mean) "
          + " / ".join(f"{e:.3f}" for e in g["error_share_mean"]))


def _figure(report: dict) -> Figure:
    from matplotlib.figure import Figure

    names = list(report["settings"])
    fig = Figure(figsize=(11, 4), layout="constrained")
    ax1, ax2 = fig.subplots(1, 2)
    width = 0.8 / len(SUBJECT_LAYERS)
    for i, layer in enumerate(SUBJECT_LAYERS):
        ax1.bar([j + (i - 1) * width for j in range(len(names))],
                [report["settings"][n]["dedicated"]["per_layer"][layer] for n in names], width, label=f"layer {layer}")
    ax1.axhline(0.8, color="k", lw=0.8, ls="--", label="target 80%")
    ax1.set_xticks(range(len(names)), names, rotation=30, ha="right", fontsize=8)
    ax1.set_ylabel("share of the 474 people")
    ax1.set_title("people with a dedicated subject feature", fontsize=9)
    ax1.legend(fontsize=7, loc="lower right")
    lowest = 1.0
    for j, key in enumerate(("replacement_median", "completeness_median")):
        values = [report["settings"][n]["graphs"][key] for n in names]
        lowest = min([lowest, *(v for v in values if v == v)])
        ax2.plot(range(len(names)), values, "o-", label=key.replace("_", " "))
    ax2.set_xticks(range(len(names)), names, rotation=30, ha="right", fontsize=8)
    ax2.set_ylim(lowest - 0.02, 1)
    n_facts = report["settings"][names[0]]["graphs"]["facts"] if names else 0
    ax2.set_title(f"attribution graphs, median over {n_facts} athlete facts (all 4 layers)", fontsize=9)
    ax2.legend(fontsize=7)
    return fig


def run(args: argparse.Namespace) -> int:
    settings = None if args.settings is None else [s.strip() for s in args.settings.split(",") if s.strip()]
    dictionary_study(args.model, settings=settings, n_facts=args.facts, work=args.work, quick=args.quick, out=args.out,
                     ship=args.ship, progress=not args.quiet, dtype=args.dtype)
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    return main_for("analyses.dictionary_study", __doc__, add_arguments, run, argv)


if __name__ == "__main__":
    sys.exit(main())
