#!/usr/bin/env bash
# Install the Label Studio server into its own virtual environment (its pins conflict with
# prefect and mlflow, so it never shares the project's). Idempotent; about 1 GB, ~1-2 minutes.
#   LABEL_STUDIO_VENV   where to put it (default: ~/.cache/sage-ada/label-studio-<version>)
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
VERSION=$(cat "$HERE/VERSION")
VENV=${LABEL_STUDIO_VENV:-$HOME/.cache/sage-ada/label-studio-$VERSION}
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null 2>&1 || PY=python3
mkdir -p "$(dirname "$VENV")"
exec 9>"$VENV.lock"   # two installs at once (two test workers, two terminals) take turns
flock 9
if [ -f "$VENV/.complete" ]; then
  echo "label-studio $VERSION already installed in $VENV"; exit 0
fi
echo "installing label-studio $VERSION into $VENV (first time only)"
rm -rf "$VENV"
"$PY" -m venv "$VENV"
log=$(mktemp)
if ! "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "label-studio==$VERSION" >"$log" 2>&1; then
  grep -v "is neither a file nor a directory" "$log" >&2; rm -f "$log"
  echo "error: could not install label-studio $VERSION; check access to the package registry" >&2
  exit 1
fi
rm -f "$log"
"$VENV/bin/python" -c "import label_studio" || { echo "error: label-studio does not import in $VENV" >&2; exit 1; }
touch "$VENV/.complete"
echo "label-studio $VERSION installed in $VENV"
