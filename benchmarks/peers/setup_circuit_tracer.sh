#!/usr/bin/env bash
# Build .venv-ct (repo root): circuit-tracer 0.5.0 + TransformerLens 3 + transformers 4.57, CPU torch.
# Idempotent: a venv that already holds the pinned versions is left as it is.
# Usage: bash benchmarks/peers/setup_circuit_tracer.sh   (PYTHON=python3.11 to choose the interpreter)
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
venv="$root/.venv-ct"
reqs="$here/circuit_tracer_requirements.txt"
py="${PYTHON:-python3}"
torch_version="2.13.0"

check() {  # exit 0 when the venv holds what the requirements ask for
  "$venv/bin/python" - "$torch_version" <<'PY' 2>/dev/null
import sys
from importlib.metadata import version
import torch
want = sys.argv[1]
assert torch.__version__.split("+")[0] == want, torch.__version__
assert torch.version.cuda is None, f"a CUDA torch ({torch.version.cuda}) slipped in"
assert version("circuit-tracer") == "0.5.0"
assert version("transformer-lens").startswith("3.")
t = tuple(int(x) for x in version("transformers").split(".")[:3])
assert (4, 56) <= t[:2] and t <= (4, 57, 3), version("transformers")
import circuit_tracer, transformer_lens  # noqa: F401  (imports work)
PY
}

report() {
  echo "== .venv-ct ($venv):"
  "$venv/bin/python" -c "import sys; print('python', sys.version.split()[0])"
  "$venv/bin/python" -m pip list --format=freeze 2>/dev/null \
    | grep -iE '^(circuit-tracer|transformer-lens|transformers|torch|tokenizers|safetensors|nnsight|numpy|huggingface-hub)=='
  "$venv/bin/python" -c "import torch; print('torch cuda build:', torch.version.cuda)"
}

if [ -x "$venv/bin/python" ] && check; then
  echo "== .venv-ct already complete; nothing installed"
  report
  exit 0
fi

[ -x "$venv/bin/python" ] || "$py" -m venv "$venv"
pip=("$venv/bin/python" -m pip install --disable-pip-version-check)
# 1. torch alone, so that nothing else can choose a (CUDA) torch for it
"${pip[@]}" "torch==$torch_version"
# 2. the rest, with torch held where it is
cons="$(mktemp)"; trap 'rm -f "$cons"' EXIT
echo "torch==$("$venv/bin/python" -c 'import torch; print(torch.__version__)')" > "$cons"
"${pip[@]}" -c "$cons" -r "$reqs"
check || { echo "setup_circuit_tracer: .venv-ct is incomplete after install (see above)" >&2; exit 1; }
echo "== installed"
report
