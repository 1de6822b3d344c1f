#!/usr/bin/env bash
# Install the Label Studio server into its own virtual environment (its pins conflict with
# prefect and mlflow, so it never shares the project's). Idempotent; about 1 GB, ~1-2 minutes.
#   LABEL_STUDIO_VENV   where to put it (default: ~/.cache/sage-ada/label-studio-<version>)
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
VERSION=$(cat "$HERE/VERSION")
VENV=${LABEL_STUDIO_VENV:-$HOME/.cache/sage-ada/label-studio-$VERSION}
source "$HERE/../venv.sh"
install_venv label-studio "$VERSION" "$VENV" "label-studio==$VERSION" python -c "import label_studio"
