"""SAELens 6 as a peer for our SAELens-format dictionaries (issue 23): load, compute, re-save.

Runs INSIDE .venv-ct (TransformerLens 3; sae-lens 6.54 installed there with torch pinned) and
imports nothing of ours. For every folder given (cfg.json + sae_weights.safetensors, e.g. written
by probes.sae.saelens_format.save_saelens) it

  1. loads it with SAELens' own loader, `sae_lens.SAE.load_from_disk(folder)`;
  2. runs the inputs through it: features = sae.encode(x), output = sae(x) (forward: for a skip
     transcoder this adds x @ W_skip.T, which decode alone does not);
  3. writes OUT/<name>/ with SAELens' own `sae.save_model` and OUT/<name>.outputs.safetensors
     (features, output); OUT/summary.json has the versions, and per folder the class SAELens
     chose, its cfg.to_dict() and the tensor shapes.

    .venv-ct/bin/python benchmarks/peers/saelens_roundtrip.py --inputs /tmp/x.safetensors \
        --out /tmp/sl_out /tmp/ours/L0 /tmp/ours/L1

--inputs: a safetensors file with one tensor per folder name ([n, d_in]), or "x" for all.
benchmarks/peers/check_saelens_roundtrip.py (in .venv) writes the folders and inputs, runs this
and compares.
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never the network
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "disabled")

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import sys  # noqa: E402
from importlib.metadata import version  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("folders", nargs="+", type=Path, help="SAELens-format folders (cfg.json + sae_weights.safetensors)")
    p.add_argument("--inputs", required=True, type=Path, help="safetensors: a tensor per folder name, or 'x'")
    p.add_argument("--out", required=True, type=Path, help="output folder (created; must be empty or new)")
    a = p.parse_args(argv)
    problems = [f"{f}: no cfg.json / sae_weights.safetensors" for f in a.folders
                if not ((f / "cfg.json").is_file() and (f / "sae_weights.safetensors").is_file())]
    if not a.inputs.is_file():
        problems.append(f"--inputs {a.inputs}: no such file")
    if a.out.exists() and (not a.out.is_dir() or any(a.out.iterdir())):
        problems.append(f"--out {a.out}: exists and is not an empty folder")
    names = [f.name for f in a.folders]
    if len(set(names)) != len(names):
        problems.append(f"folder names must differ (they name the outputs): {names}")
    if problems:
        p.error("; ".join(problems))
    return a


def run(folder: Path, x: torch.Tensor, out: Path) -> dict:
    from safetensors.torch import save_file
    from sae_lens import SAE

    sae = SAE.load_from_disk(str(folder), device="cpu")
    sae.eval()
    with torch.no_grad():
        features = sae.encode(x)
        output = sae(x)
    save_file({"features": features.contiguous(), "output": output.contiguous()},
              str(out / f"{folder.name}.outputs.safetensors"))
    sae.save_model(out / folder.name)
    return {"folder": str(folder), "class": type(sae).__name__, "architecture": sae.cfg.architecture(),
            "cfg": sae.cfg.to_dict(), "tensors": {k: list(v.shape) for k, v in sae.state_dict().items()},
            "n": int(x.shape[0]), "mean_active": float((features != 0).sum(-1).float().mean())}


def main(argv=None) -> int:
    from safetensors.torch import load_file

    a = parse_args(argv)
    inputs = load_file(str(a.inputs))
    a.out.mkdir(parents=True, exist_ok=True)
    results = []
    for folder in a.folders:
        x = inputs.get(folder.name, inputs.get("x"))
        if x is None:
            raise SystemExit(f"--inputs {a.inputs} has neither {folder.name!r} nor 'x'")
        results.append(run(folder, x, a.out))
        print(f"{folder.name}: {results[-1]['class']} ({results[-1]['architecture']}), "
              f"{results[-1]['mean_active']:.1f} active features per row")
    summary = {"sae_lens": version("sae-lens"), "torch": torch.__version__, "transformer_lens": version("transformer-lens"),
               "python": sys.version.split()[0], "platform": platform.platform(), "folders": results}
    (a.out / "summary.json").write_text(json.dumps(summary, indent=1, default=str) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
