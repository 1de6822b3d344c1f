# Sourced by the Label Studio scripts: where it is installed, where its data and credentials
# live, and its port, which is the port of label_studio.url in params.yaml (or in the file
# SAGE_ADA_PARAMS names) unless LABEL_STUDIO_PORT says otherwise: one setting for the flow and
# the server.
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"
[ -f "$REPO_ROOT/.env" ] && { set -a; source "$REPO_ROOT/.env"; set +a; }
VERSION=$(cat "$INFRA_ROOT/label-studio/VERSION")
VENV=${LABEL_STUDIO_VENV:-$HOME/.cache/sage-ada/label-studio-$VERSION}
PARAMS=${SAGE_ADA_PARAMS:-$REPO_ROOT/params.yaml}
DATA=${LABEL_STUDIO_DATA:-$REPO_ROOT/.sage-ada/label-studio}
CREDS="$DATA/credentials.env"

params_port() {  # the port of label_studio.url in the params file
  local py="$VENV/bin/python"
  [ -x "$py" ] || py=python3
  "$py" - "$PARAMS" 2>/dev/null <<'PY' || echo 8080
import sys
from urllib.parse import urlparse

import yaml

url = ((yaml.safe_load(open(sys.argv[1])) or {}).get("label_studio") or {}).get("url") or ""
print(urlparse(url).port or 8080)
PY
}
params_media() {  # label_studio.media_root in the params file, absolute (relative: to the repository)
  local py="$VENV/bin/python"
  [ -x "$py" ] || py=python3
  (cd "$REPO_ROOT" && "$py" - "$PARAMS" 2>/dev/null <<'PY') || echo "$REPO_ROOT/.sage-ada/label-studio/media"
import os
import sys

import yaml

root = ((yaml.safe_load(open(sys.argv[1])) or {}).get("label_studio") or {}).get("media_root")
print(os.path.abspath(os.path.expanduser(root or ".sage-ada/label-studio/media")))
PY
}
params_trusted() {  # label_studio.webhook_url and .s3.endpoint in the params file, where set
  local py="$VENV/bin/python"
  [ -x "$py" ] || py=python3
  "$py" - "$PARAMS" 2>/dev/null <<'PY' || true
import sys

import yaml

ls = (yaml.safe_load(open(sys.argv[1])) or {}).get("label_studio") or {}
print(" ".join(u for u in (ls.get("webhook_url"), (ls.get("s3") or {}).get("endpoint")) if u))
PY
}
PORT=$(params_port)
# symlinks resolved, as the run resolves media_root: Label Studio refuses a run's folder that
# does not lie under this path as written
MEDIA=$(realpath -m "${LABEL_STUDIO_MEDIA_ROOT:-$(params_media)}")
if [ -n "${LABEL_STUDIO_PORT:-}" ] && [ "$LABEL_STUDIO_PORT" != "$PORT" ]; then
  echo "warning: LABEL_STUDIO_PORT=$LABEL_STUDIO_PORT, but label_studio.url in $PARAMS names port" \
       "$PORT: the flow looks there; set the same port in both (or unset LABEL_STUDIO_PORT)" >&2
  PORT=$LABEL_STUDIO_PORT
fi
export PORT_SETTING="the port of label_studio.url in $PARAMS"  # named by the "port taken" error
