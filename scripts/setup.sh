#!/usr/bin/env bash
# Sets up descentlab in a virtual environment inside the checkout (.venv).
# Idempotent: a second run reuses the environment and installs only what changed.
# torch is installed first and pinned, so that no later requirement pulls a
# multi-gigabyte CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
TORCH_SPEC=${DESCENTLAB_TORCH:-torch==2.13.0}

if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 10))'; then
    echo "descentlab needs Python 3.10 or newer; $PYTHON is $("$PYTHON" --version 2>&1)" >&2
    exit 1
fi

if [ ! -x .venv/bin/python ]; then
    echo "Creating .venv with $("$PYTHON" --version 2>&1)"
    "$PYTHON" -m venv .venv
fi
PY=.venv/bin/python

stamp=.venv/.descentlab-installed
want="$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -d' ' -f1) $TORCH_SPEC"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && "$PY" -c 'import torch, descentlab' 2>/dev/null; then
    exit 0
fi

"$PY" -m pip install --quiet --upgrade pip
if ! "$PY" -c 'import torch' 2>/dev/null; then
    echo "Installing $TORCH_SPEC (CPU build)"
    "$PY" -m pip install --quiet "$TORCH_SPEC"
fi
echo "Installing descentlab and its tools"
"$PY" -m pip install --quiet -e ".[all]"
echo "$want" > "$stamp"
