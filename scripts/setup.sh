#!/usr/bin/env bash
# Create (or reuse) the project's virtual environment and install the locked versions.
#
# The environment lives outside the clone, keyed by the hash of the lock file, so a second clone
# on the same machine reuses it; when it is missing it is simply built (about 3 minutes, 6.5 GB).
# `.venv` in the repository is a link to it. Override the place with SAGE_ADA_VENV.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null 2>&1 || PY=python3
"$PY" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' || {
  echo "error: Python 3.11 is required (found $("$PY" --version 2>&1)); set PYTHON=/path/to/python3.11" >&2
  exit 1
}

lock_hash=$(cat requirements/constraints.txt requirements/base.in | sha256sum | cut -c1-12)
venv=${SAGE_ADA_VENV:-$HOME/.cache/sage-ada/venv-$lock_hash}

# pip warns once per package about local index mirrors that lack it: harmless, so filtered.
pip_quiet() {
  local log; log=$(mktemp)
  if ! "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "$@" >"$log" 2>&1; then
    grep -v "is neither a file nor a directory" "$log" >&2; rm -f "$log"
    echo "error: pip install failed (see above); check the network to the package registry and rerun" >&2
    exit 1
  fi
  grep -v "is neither a file nor a directory" "$log" || true; rm -f "$log"
}

if [ ! -f "$venv/.complete" ]; then
  echo "setup: creating the environment in $venv (first time only; a few minutes)"
  rm -rf "$venv"
  mkdir -p "$(dirname "$venv")"
  "$PY" -m venv "$venv"
  pip_quiet -r requirements/base.in -c requirements/constraints.txt
  pip_quiet --no-deps -e .
  "$venv/bin/python" -c "import torch, torchvision, prefect, mlflow, dvc, great_expectations, label_studio_sdk" \
    || { echo "error: the environment in $venv does not import; delete it and rerun" >&2; exit 1; }
  touch "$venv/.complete"
elif ! grep -qF "\"file://$(pwd)\"" "$venv"/lib/python3.11/site-packages/sage_ada-*.dist-info/direct_url.json 2>/dev/null; then
  # The editable install points at one clone; re-point it at this one (seconds, no downloads).
  pip_quiet --no-deps --no-build-isolation -e .
fi
ln -sfn "$venv" .venv

# Analytics off everywhere it exists, so nothing in the logs looks like a failure.
.venv/bin/dvc config --local core.analytics false >/dev/null 2>&1 || true
echo "setup: environment ready (.venv -> $venv)"
