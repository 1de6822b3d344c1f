#!/usr/bin/env bash
# The team stack on one machine, in the order each needs the last (README "For a team"):
# PostgreSQL; MLflow, Label Studio and the Prefect server, each on its own PostgreSQL database;
# the webhook receiver that resumes suspended runs; a worker that runs flows in this clone; and
# prefect.yaml's deployments ("manual", "people", "nightly").
#   infra/team.sh start      start what is not running (a server running with other settings
#                            than these is one error: stop it first); deploy
#   infra/team.sh status     what runs, on which port, against which store (passwords hidden)
#   infra/team.sh env        the lines that point this shell at the stack: eval "$(infra/team.sh env)"
#   infra/team.sh stop       everything, in the reverse order
# Each server keeps its own settings (MLFLOW_PORT, PREFECT_PORT, POSTGRES_PORT, ...: the header
# of each script). Database URLs, with their password, go only to the server that uses each, by
# environment: never on a command line, never to the worker (every flow run inherits its
# environment) or the receiver. Logins are made once into $SAGE_ADA_SECRETS (default
# ~/.config/sage-ada, mode 600) and never printed.
source "$(dirname "$0")/lib.sh"
PY="$REPO_ROOT/.venv/bin/python"; [ -x "$PY" ] || PY=python3

mlflow_uri() { echo "http://127.0.0.1:${MLFLOW_PORT:-5000}"; }
prefect_api() { echo "http://127.0.0.1:${PREFECT_PORT:-4200}/api"; }
label_studio_url() {  # the flow's own (label_studio.url in params.yaml), for the receiver
  (cd "$REPO_ROOT" && "$PY" -c 'from components.config import load_config
print(load_config("params.yaml").label_studio.url)')
}
auth_file() { (cd "$REPO_ROOT" && "$PY" -m components.secrets path prefect-auth); }

client_env() {  # this script's own client settings, as `env` prints them for a person's shell
  export MLFLOW_TRACKING_URI; MLFLOW_TRACKING_URI=$(mlflow_uri)
  export PREFECT_API_URL; PREFECT_API_URL=$(prefect_api)
  secret_env_if_made prefect-auth PREFECT_API_AUTH_STRING
}

database() {  # NAME [driver]: the URL of database NAME (made when missing), for one server only
  local url; url=$(bash "$INFRA_ROOT/postgres/server.sh" url "$1") || return 1
  echo "${url/postgresql:\/\//postgresql${2:++$2}://}"
}

start() {
  if [ ! -x "${LABEL_STUDIO_VENV:-$HOME/.cache/sage-ada/label-studio-$(cat "$INFRA_ROOT/label-studio/VERSION")}/bin/label-studio" ]; then
    echo "error: Label Studio is not installed; run infra/label-studio/install.sh first (once, ~1 GB)" >&2
    return 1
  fi
  bash "$INFRA_ROOT/postgres/server.sh" start
  local mlflow_db labelstudio_db prefect_db
  mlflow_db=$(database mlflow) && labelstudio_db=$(database labelstudio) \
    && prefect_db=$(database prefect asyncpg) || return 1
  MLFLOW_BACKEND_STORE_URI=$mlflow_db bash "$INFRA_ROOT/mlflow/server.sh" start | sed '/^export /d; /^then /d'
  LABEL_STUDIO_DATABASE_URL=$labelstudio_db bash "$INFRA_ROOT/label-studio/server.sh" start
  # (the lines these scripts print to export are this script's `env`)
  PREFECT_API_DATABASE_CONNECTION_URL=$prefect_db bash "$INFRA_ROOT/prefect/server.sh" start \
    | sed '/^export /d'
  unset mlflow_db labelstudio_db prefect_db
  client_env
  LABEL_STUDIO_URL=${LABEL_STUDIO_URL:-$(label_studio_url)} bash "$INFRA_ROOT/webhooks/server.sh" start \
    | sed '/^set label_studio/d'
  bash "$INFRA_ROOT/prefect/worker.sh" start
  local out
  if ! out=$(cd "$REPO_ROOT" && prefect --no-prompt deploy --all 2>&1); then
    echo "error: prefect deploy --all failed in $REPO_ROOT; its last lines:" >&2
    tail -15 <<<"$out" >&2; return 1
  fi
  echo "deployed: active-domain-adaptation/manual, /people, /nightly (from $REPO_ROOT/prefect.yaml)"
  echo "next: eval \"\$(infra/team.sh env)\", then start a run, e.g."
  echo "  prefect deployment run active-domain-adaptation/people --param rounds=2 --param budget=10"
}

# the stack in the order each needs the last; stopped in the reverse order
SERVERS="postgres/server.sh mlflow/server.sh label-studio/server.sh prefect/server.sh
  webhooks/server.sh prefect/worker.sh"

every() {  # ACTION: each server's script (stop: in reverse); every one is tried, fails if one did
  local failed=0 order=$SERVERS script
  [ "$1" = stop ] && order=$(tr -s ' \n' '\n' <<<"$SERVERS" | tac)
  for script in $order; do bash "$INFRA_ROOT/$script" "$1" || failed=1; done
  return $failed
}

case "${1:-}" in
  start) start ;;
  status|stop) every "$1" ;;
  env) echo "export MLFLOW_TRACKING_URI=$(mlflow_uri)"
       echo "export PREFECT_API_URL=$(prefect_api)"
       echo "export PREFECT_API_AUTH_STRING=\"\$(cat $(auth_file))\"" ;;
  *) echo "usage: $0 start|status|env|stop" >&2; exit 2 ;;
esac
