#!/usr/bin/env bash
# MLflow tracking server on 127.0.0.1, serving (proxying) the artifacts, so clients on any
# machine read and write models and run state through it, never a path of their own disk.
#   infra/mlflow/server.sh start|stop|status
# Settings: MLFLOW_PORT (5000); MLFLOW_HOST (127.0.0.1; 0.0.0.0 in a container);
#   MLFLOW_BACKEND_STORE_URI: where runs are kept (default sqlite in the project's mlflow/;
#   a team: postgresql://user:password@host:5432/mlflow); MLFLOW_ARTIFACTS_DESTINATION: where the
#   server keeps artifacts (default mlflow/artifacts; or an object store URI the server can write);
#   MLFLOW_START_TIMEOUT: seconds to wait for it to answer (default 300).
# Then: export MLFLOW_TRACKING_URI=http://127.0.0.1:5000, and `sage-ada ui` prints the UI's links
#   to each experiment's training runs (http://127.0.0.1:5000/#/experiments/<id>/runs?workflowType=
#   machine_learning: without that parameter MLflow 3.17 opens its GenAI pages until the browser
#   chose "Model training" at the top of the UI's sidebar).
# It asks who you are (MLflow's basic-auth app): the admin, sage-ada, has a password made once
#   into $SAGE_ADA_SECRETS/mlflow-password (default ~/.config/sage-ada, mode 600, never printed;
#   MLFLOW_TRACKING_PASSWORD where set), which this project's clients on this machine read by
#   themselves; `infra/mlflow/add-user.sh <name>` makes an account per person. Accounts live in
#   MLFLOW_AUTH_DATABASE_URI (default sqlite in the store). Everyone logged in may read every
#   experiment and log runs and models to it (default_permission EDIT); only its creator and the
#   admin may delete it or change who may.
#   /health answers without a login.
source "$(dirname "$0")/../lib.sh"
PORT=${MLFLOW_PORT:-5000}
export PORT_SETTING="MLFLOW_PORT=<port>"  # named by the "port taken" error
STORE=${MLFLOW_STORE:-$REPO_ROOT/mlflow}
BACKEND=${MLFLOW_BACKEND_STORE_URI:-sqlite:///$STORE/mlflow.db}
ARTIFACTS=${MLFLOW_ARTIFACTS_DESTINATION:-$STORE/artifacts}
case "$ARTIFACTS" in *://*) ;; *) mkdir -p "$ARTIFACTS" ;; esac
auth_config() {  # MLflow's auth settings (no secret in them: the password is in the environment)
  local ini="$RUN_DIR/mlflow-auth-$PORT.ini"
  (umask 077; : >"$ini")
  cat >"$ini" <<INI
[mlflow]
default_permission = EDIT
database_uri = ${MLFLOW_AUTH_DATABASE_URI:-sqlite:///$STORE/basic_auth.db}
admin_username = sage-ada
authorization_function = mlflow.server.auth:authenticate_request_basic_auth
auth_cache_ttl_seconds = 60
INI
  echo "$ini"
}
case "${1:-}" in
  start) secret_env mlflow-password MLFLOW_AUTH_ADMIN_PASSWORD
         secret_env mlflow-flask-key MLFLOW_FLASK_SERVER_SECRET_KEY
         export MLFLOW_AUTH_CONFIG_PATH
         MLFLOW_AUTH_CONFIG_PATH=$(auth_config)
         # the store's URI (a PostgreSQL password in it) goes by environment, never on the
         # command line, where `ps` shows it to every user of the machine
         export MLFLOW_BACKEND_STORE_URI=$BACKEND
         LAUNCH_CONFIG="port $PORT, runs in $(redact "$BACKEND"), artifacts in $ARTIFACTS" \
         launch mlflow-server "$PORT" "http://127.0.0.1:$PORT/health" "${MLFLOW_START_TIMEOUT:-300}" \
           mlflow server --app-name basic-auth --host "${MLFLOW_HOST:-127.0.0.1}" --port "$PORT" \
             --artifacts-destination "$ARTIFACTS" --serve-artifacts
         echo "export MLFLOW_TRACKING_URI=http://127.0.0.1:$PORT"
         # MLflow 3.17's UI opens on its GenAI pages, whatever the experiment's kind tag says
         echo "then 'sage-ada ui' prints the links to each experiment's training runs" ;;
  stop) stop_named mlflow-server ;;
  status) status_named mlflow-server ;;
  *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
