#!/usr/bin/env bash
# Give a person an account on the project's MLflow server (its basic-auth app), so each run and
# model version says who made it and nobody shares the admin's password.
#   infra/mlflow/add-user.sh NAME [NAME ...]
# Each account gets a generated password, written to $SAGE_ADA_SECRETS/mlflow-users/<name>
# (default ~/.config/sage-ada; mode 600, never printed): hand it over as you hand over other
# secrets; the person sets MLFLOW_TRACKING_USERNAME=<name> and MLFLOW_TRACKING_PASSWORD to it.
# Logs in as the admin (the password infra/mlflow/server.sh made); the server at MLFLOW_PORT
# (5000) must be running. A name that has an account already is left as it is.
[ $# -ge 1 ] || { echo "usage: $0 NAME [NAME ...]" >&2; exit 2; }
source "$(dirname "$0")/../lib.sh"
PORT=${MLFLOW_PORT:-5000}
secret_env_if_made mlflow-password MLFLOW_AUTH_ADMIN_PASSWORD
[ -n "${MLFLOW_AUTH_ADMIN_PASSWORD:-}" ] || {
  echo "error: no admin password: start the server first (infra/mlflow/server.sh start)" >&2; exit 1; }
folder="$(cd "$REPO_ROOT" && python -m components.secrets path mlflow-password)"
folder="$(dirname "$folder")/mlflow-users"
umask 077
mkdir -p "$folder"
python3 - "http://127.0.0.1:$PORT" "$folder" "$@" <<'PY'
import base64
import json
import os
import re
import secrets
import sys
import urllib.error
import urllib.request
from pathlib import Path

url, folder, *names = sys.argv[1:]
admin = base64.b64encode(f"sage-ada:{os.environ['MLFLOW_AUTH_ADMIN_PASSWORD']}".encode()).decode()


def call(path: str, body: dict) -> int:
    request = urllib.request.Request(f"{url}{path}", data=json.dumps(body).encode(),
                                     method="POST", headers={"Content-Type": "application/json",
                                                             "Authorization": f"Basic {admin}"})
    try:
        with urllib.request.urlopen(request, timeout=30):
            return 200
    except urllib.error.HTTPError as err:
        return err.code
    except OSError as err:
        sys.exit(f"error: the MLflow server at {url} does not answer ({err}); start it with "
                 "infra/mlflow/server.sh start")


for name in names:
    if not re.fullmatch(r"[A-Za-z0-9._@-]{1,64}", name):
        sys.exit(f"error: {name!r}: a name is letters, digits and . _ @ - (at most 64)")
    file = Path(folder) / name
    if file.exists():
        print(f"{name} has an account already (password in {file})")
        continue
    password = secrets.token_urlsafe(18)
    status = call("/api/2.0/mlflow/users/create", {"username": name, "password": password})
    if status == 401:
        sys.exit("error: the server refused the admin's password: is it the server that "
                 "infra/mlflow/server.sh started on this machine?")
    if status != 200:
        sys.exit(f"error: the server did not make {name}'s account (HTTP {status}); "
                 "is the name taken by an account made elsewhere?")
    file.write_text(password + "\n")
    print(f"{name}: account made; password in {file} (mode 600)")
PY
