"""Round trip through SAELens itself (issue 23): ours -> save_saelens -> SAELens (in .venv-ct)
-> SAELens' save_model -> load_saelens -> ours, comparing features and outputs.

Runs in .venv (our code); calls benchmarks/peers/saelens_roundtrip.py with .venv-ct's python.
The dictionaries: one random dictionary of every kind SAELens can hold (SAE relu / topk /
batchtopk; transcoder relu / topk / batchtopk, and relu / batchtopk with a skip connection) and
the four shipped fact-world transcoders (on the model's own activations plus random inputs).
For each it reports the largest |difference| between our features / outputs and
  - SAELens' (the folder loaded by SAE.load_from_disk),
  - ours again after SAELens re-saved the folder (load_saelens of SAELens' own save),
and whether the active feature sets agree. Differences are max |ours - theirs| / max(max |ours|, 1)
(float32 rounding of the b_pre fold grows with the size of the values). Exit status 1 if any
exceeds --tol or an active set differs.

    .venv/bin/python benchmarks/peers/check_saelens_roundtrip.py [--json out.json] [--tol 1e-5]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import models  # noqa: E402
from probes.sae import SparseDictionary, load_transcoders  # noqa: E402
from probes.sae.dictionary import DictionaryConfig  # noqa: E402
from probes.sae.saelens_format import load_saelens, save_saelens  # noqa: E402

CASES = [("sae", "relu", False), ("sae", "topk", False), ("sae", "batchtopk", False), ("transcoder", "relu", False),
         ("transcoder", "topk", False), ("transcoder", "batchtopk", False), ("transcoder", "relu", True),
         ("transcoder", "batchtopk", True)]


def random_dictionary(kind: str, activation: str, skip: bool, d: int = 64, n: int = 256, seed: int = 0) -> SparseDictionary:
    hook_in = "blocks.1.hook_resid_pre" if kind == "sae" else "blocks.1.ln2.hook_normalized"
    hook_out = hook_in if kind == "sae" else "blocks.1.hook_mlp_out"
    tc = SparseDictionary(DictionaryConfig(d, d, n, activation=activation, k=16, skip=skip, kind=kind, in_hook=hook_in,
                                           out_hook=hook_out, seed=seed))
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in tc.named_parameters():  # encoder and skip ~ 1/sqrt(d): activations of order 1
            p.copy_(torch.randn(p.shape, generator=g) * {"W_enc": d ** -0.5, "W_skip": d ** -0.5}.get(name, 0.5))
        tc.normalise_decoder()
        tc.threshold.fill_(0.2)
    return tc.eval()


def dictionaries() -> dict[str, tuple[SparseDictionary, torch.Tensor]]:
    out = {}
    for i, (kind, activation, skip) in enumerate(CASES):
        tc = random_dictionary(kind, activation, skip, seed=i)
        x = torch.randn(512, tc.cfg.d_in, generator=torch.Generator().manual_seed(100 + i))
        out[f"{kind}_{activation}{'_skip' if skip else ''}"] = (tc, x)
    model = models.load("factworld")
    _, cache = model.run_with_cache(["Michael Jordan plays the sport of", "Michael Jordan plays the sport of basketball"])
    for layer, tc in enumerate(load_transcoders("factworld")):
        x = torch.cat([cache[tc.in_hook].reshape(-1, tc.cfg.d_in).detach(),
                       torch.randn(256, tc.cfg.d_in, generator=torch.Generator().manual_seed(layer))])
        out[f"factworld_L{layer}"] = (tc, x)
    return out


def diff(a: torch.Tensor, b: torch.Tensor) -> float:
    """max |a - b| relative to max |b| (or absolute where max |b| < 1)."""
    return (a.double() - b.double()).abs().max().item() / max(b.abs().max().item(), 1.0)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--python", type=Path, default=ROOT / ".venv-ct" / "bin" / "python", help="a python with sae-lens 6")
    p.add_argument("--json", type=Path, default=None, help="write the results here")
    p.add_argument("--tol", type=float, default=1e-5)
    a = p.parse_args(argv)
    if not a.python.is_file():
        p.error(f"--python {a.python}: not found (build .venv-ct and install sae-lens 6 there)")
    cases = dictionaries()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for name, (tc, _) in cases.items():
            save_saelens(tc, tmp / "ours" / name)
        save_file({name: x.contiguous() for name, (_, x) in cases.items()}, str(tmp / "inputs.safetensors"))
        cmd = [str(a.python), str(ROOT / "benchmarks" / "peers" / "saelens_roundtrip.py"), "--inputs",
               str(tmp / "inputs.safetensors"), "--out", str(tmp / "sl"), *[str(tmp / "ours" / n) for n in cases]]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
        if proc.returncode != 0:
            print(proc.stdout, proc.stderr, sep="\n", file=sys.stderr)
            return proc.returncode
        summary = json.loads((tmp / "sl" / "summary.json").read_text())
        rows, worst = [], 0.0
        for name, (tc, x), peer in zip(cases, cases.values(), summary["folders"]):
            with torch.no_grad():
                f, y = tc.encode(x), tc(x)
                sl = load_file(str(tmp / "sl" / f"{name}.outputs.safetensors"))
                back = load_saelens(tmp / "sl" / name)  # SAELens' own save, read by us
                fb, yb = back.encode(x), back(x)
            row = {"name": name, "saelens_class": peer["class"], "architecture": peer["architecture"],
                   "features_vs_saelens": diff(sl["features"], f), "output_vs_saelens": diff(sl["output"], y),
                   "active_sets_equal_saelens": bool(torch.equal(sl["features"] != 0, f != 0)),
                   "features_after_saelens_save": diff(fb, f), "output_after_saelens_save": diff(yb, y),
                   "active_sets_equal_after_save": bool(torch.equal(fb != 0, f != 0)),
                   "max_abs_output": y.abs().max().item(), "mean_active": float((f != 0).sum(-1).float().mean())}
            worst = max(worst, *(row[k] for k in row if k.startswith(("features_", "output_"))))
            rows.append(row)
            print(f"{name:28s} {peer['class']:22s} features {row['features_vs_saelens']:.2e} / "
                  f"{row['features_after_saelens_save']:.2e}  outputs {row['output_vs_saelens']:.2e} / "
                  f"{row['output_after_saelens_save']:.2e}  sets {row['active_sets_equal_saelens']}/"
                  f"{row['active_sets_equal_after_save']}")
    ok = worst <= a.tol and all(r["active_sets_equal_saelens"] and r["active_sets_equal_after_save"] for r in rows)
    result = {"sae_lens": summary["sae_lens"], "torch_peer": summary["torch"], "tol": a.tol, "worst": worst, "ok": ok,
              "rows": rows}
    if a.json:
        a.json.write_text(json.dumps(result, indent=1) + "\n")
    print(f"SAELens {summary['sae_lens']}: worst |difference| {worst:.2e} (tol {a.tol:g}): {'OK' if ok else 'FAILED'}")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
