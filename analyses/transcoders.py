"""The shipped transcoders of the fact-world model, judged against its known facts.

    interp transcoders [--out results/transcoders]

- Per layer: L0, variance explained, CE recovered over all tokens and at the object token, KL,
  dead and dense features, on 300 held-out-template sentences.
- All four transcoders spliced in at once: top-1 accuracy on every fact in the held-out
  templates, against the clean model's.
- Subject features: for each of the 474 people, at the last subject token ("{subject} plays
  the sport of"), is there a unit that fires for them and stays below 10% of that for every
  person who shares a name token? Per layer, transcoder features and MLP neurons side by side.
- Fact features: for athletes with a dedicated feature, does its value (the decoder row,
  carried by the later heads to the last position) rank the person's sport first among the
  sports?
OUT/transcoders.json, OUT/transcoders.png and OUT/transcoders.html (the figure's numbers as a table).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Optional, Sequence, Union

import torch
from matplotlib.figure import Figure

from analyses.common import (
    AnalysisResult, ModelArg, Outputs, add_model_arguments, add_out_argument, as_model, main_for,
)

if TYPE_CHECKING:
    from models import Transformer


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--transcoders", "--dictionaries", dest="transcoders", default="factworld",
                   help="'factworld' (shipped) or a folder of L0, L1, ... transcoders (--dictionaries: the old name)")
    add_model_arguments(p)
    add_out_argument(p, "results/transcoders")


def spliced_accuracy(model: Transformer, transcoders, prompts: list[str], answers: list[str]) -> tuple[float, float]:
    """(clean, all-spliced) top-1 accuracy on the prompts; `transcoders`: per-layer transcoders
    (one per layer) or a cross-layer transcoder, spliced into every layer at once."""
    from interp.words import answer_tokens
    from models.transformer import last_token_logits
    from probes.sae import splice_all_hooks

    ids = answer_tokens(model, answers)
    with torch.no_grad():
        clean = last_token_logits(model, prompts).argmax(-1) == ids
        with model.hooks(fwd_hooks=splice_all_hooks(transcoders)):
            spliced = last_token_logits(model, prompts).argmax(-1) == ids
    return float(clean.double().mean()), float(spliced.double().mean())


def judge_transcoders(model: ModelArg = "factworld", *, transcoders: Union[str, Path] = "factworld",
                      out: Optional[Union[str, Path]] = None, dtype: Optional[str] = None) -> AnalysisResult:
    """The transcoders of a fact-world model (`transcoders`: "factworld" or a folder of L0, L1,
    ...) judged per layer, spliced in all at once, and as subject / fact features against the
    MLP neurons (see the module docstring)."""
    from analyses.train_transcoders import held_out
    from probes.sae import load_transcoders

    model = as_model(model, dtype)
    outputs = Outputs(out)
    transcoders = load_transcoders(transcoders, device=model.device)
    report: dict = {"layers": _per_layer(model, transcoders, *held_out(model))}
    report["all_spliced"] = _all_spliced(model, transcoders)
    report["subject_features"] = _subject_features(model, transcoders)
    outputs.json("transcoders.json", report)
    outputs.figure(_figure(report), "transcoders")
    outputs.view("transcoders", figure_table(report))
    if out is not None:
        print(f"Plot and JSON in {out}/")
    return AnalysisResult("transcoders", report, outputs.files)


def _per_layer(model, transcoders, test: list[str], focus: list[int]) -> dict:
    from probes.sae import evaluate_dictionary

    layers = {}
    print("layer  L0    var.expl.  CE rec.(all)  CE rec.(object)  KL      dead   dense")
    for layer, tc in enumerate(transcoders):
        s = evaluate_dictionary(model, tc, test, focus=focus)
        layers[layer] = s.to_dict()
        print(f"{layer:5d}  {s.l0:4.1f}  {s.variance_explained:9.4f}  {s.ce_recovered:12.3f}  {s.focus_ce_recovered:15.3f}  "
              f"{s.kl:.4f}  {s.dead:.3f}  {s.dense:.3f}")
    return layers


def _all_spliced(model, transcoders) -> dict:
    from analyses.factworld_facts import heldout_fact_prompts

    prompts, answers = heldout_fact_prompts()
    clean, spliced = spliced_accuracy(model, transcoders, prompts, answers)
    print(f"all {len(transcoders)} transcoders spliced in: held-out-template fact accuracy {spliced:.3f} against "
          f"{clean:.3f} clean ({spliced / clean:.1%}), {len(prompts)} prompts")
    return {"prompts": len(prompts), "clean": clean, "spliced": spliced, "ratio": spliced / clean}


def _subject_features(model, transcoders) -> dict:
    """Per layer: the share of people with a dedicated transcoder feature / MLP neuron at the last
    subject token, and for athletes whether the feature's carried value ranks their sport first."""
    from interp import names as hook_names
    from interp.tokens import cached_batches
    from interp.words import answer_tokens
    from models import factworld
    from probes.ffn import related_subjects
    from probes.sae.dedicated import dedicated_units
    from probes.subjects import last_subject_pos

    people = factworld.subjects()
    index = {s: i for i, s in enumerate(people)}
    neighbours = [[index[q] for q in sum(related_subjects(s, people), [])] for s in people]
    texts = [f"{s} plays the sport of" for s in people]
    ends = torch.tensor([last_subject_pos(model, t, s) for t, s in zip(texts, people)])
    names = [tc.in_hook for tc in transcoders] + [hook_names.act_name("post", l) for l in range(model.cfg.n_layers)]
    _, cache = next(cached_batches(model, texts, names, len(texts)))
    rows = torch.arange(len(people))
    sports = [o for o in sorted(factworld.objects("sport")) if o != "none"]
    sport_ids = answer_tokens(model, sports)
    athletes = [(s, factworld.lookup(s, "sport")) for s in people if factworld.lookup(s, "sport") != "none"]
    out = {}
    for layer, tc in enumerate(transcoders):
        with torch.no_grad():
            feats = tc.encode(cache[tc.in_hook][rows, ends])
        f_units = dedicated_units(feats, neighbours)
        n_units = dedicated_units(cache["post", layer][rows, ends], neighbours)
        judged, promoted = _fact_features(model, tc, layer, f_units, athletes, index, ends, sports, sport_ids)
        entry = {"features": sum(u is not None for u in f_units) / len(people),
                 "neurons": sum(u is not None for u in n_units) / len(people),
                 "athletes_with_feature": judged, "value_promotes_sport": promoted / judged if judged else None}
        out[layer] = entry
        print(f"layer {layer}: people with a dedicated transcoder feature {entry['features']:.1%}, with a dedicated "
              f"neuron {entry['neurons']:.1%}" + (f"; the feature's value ranks the sport first for {promoted} of "
                                                  f"{judged} athletes" if judged else ""))
    return out


def _fact_features(model, tc, layer: int, f_units: list, athletes: list, index: dict, ends: torch.Tensor,
                   sports: list[str], sport_ids: torch.Tensor) -> tuple[int, int]:
    """(athletes with a dedicated feature, those whose feature's value, carried by the later heads to
    the last position, ranks their sport first among the sports); (0, 0) at the last layer."""
    from probes.recall import carry_map

    promoted = judged = 0
    if layer == model.cfg.n_layers - 1:
        return judged, promoted
    for s, sport in athletes:
        unit = f_units[index[s]]
        if unit is None:
            continue
        carried = tc.W_dec.detach()[unit].double() @ carry_map(model, f"{s} plays the sport of",
                                                               int(ends[index[s]]), layer).double()
        judged += 1
        promoted += sports[int(carried[sport_ids].argmax())] == sport
    return judged, promoted


def _figure(report: dict) -> Figure:
    fig = Figure(figsize=(8, 4), layout="constrained")
    ax = fig.subplots()
    layers = list(report["subject_features"])
    x = torch.arange(len(layers), dtype=torch.float64)
    ax.bar(x - 0.2, [report["subject_features"][l]["features"] for l in layers], 0.4, label="transcoder features")
    ax.bar(x + 0.2, [report["subject_features"][l]["neurons"] for l in layers], 0.4, label="MLP neurons")
    ax.set_xticks(x.tolist(), [f"layer {l}" for l in layers])
    ax.set_ylabel("share of the 474 people")
    ax.set_title("a unit dedicated to the person (fires, < 10% for everyone sharing a name token)")
    ax.legend()
    return fig


def figure_table(report: dict):
    """The figure's numbers as a "table" view: per layer, the share of people with a dedicated
    transcoder feature and MLP neuron, and the fact-feature check."""
    from analyses.figure_views import table_view

    rows = [[f"layer {l}", e["features"], e["neurons"], e["athletes_with_feature"], e["value_promotes_sport"]]
            for l, e in report["subject_features"].items()]
    spliced = report.get("all_spliced")
    notes = [f"all transcoders spliced in: held-out-template fact accuracy {spliced['spliced']:.3f} against "
             f"{spliced['clean']:.3f} clean"] if spliced else []
    return table_view("a unit dedicated to the person (fires, < 10% for everyone sharing a name token)",
                      ["layer", "people with a dedicated feature", "people with a dedicated neuron",
                       "athletes with a feature", "feature value ranks the sport first"], rows, notes=notes)


def run(args: argparse.Namespace) -> int:
    return judge_transcoders(args.model, transcoders=args.transcoders, out=args.out, dtype=args.dtype).rc


def main(argv: Optional[Sequence[str]] = None) -> int:
    return main_for("analyses.transcoders", __doc__, add_arguments, run, argv)


if __name__ == "__main__":
    sys.exit(main())
