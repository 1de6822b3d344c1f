#!/usr/bin/env bash
# Prefect server on 127.0.0.1, for deployments, scheduled runs and the Prefect UI (the worker
# that runs them: infra/prefect/worker.sh).
#   infra/prefect/server.sh start|stop|status      (PREFECT_PORT, default 4200)
# Its database: SQLite under PREFECT_HOME, or PostgreSQL for a team with
#   PREFECT_API_DATABASE_CONNECTION_URL=postgresql+asyncpg://user:password@host:5432/prefect
# Then: export PREFECT_API_URL=http://127.0.0.1:4200/api ; sage-ada serve --cron "0 2 * * *"
# It asks who you are: every API call (the UI's too) needs the auth string "user:password",
# made once into $SAGE_ADA_SECRETS/prefect-auth (default ~/.config/sage-ada, mode 600, never
# printed), or PREFECT_API_AUTH_STRING where set. Clients send it from their
# PREFECT_API_AUTH_STRING (the worker and receiver scripts read the file themselves); the UI's
# login page asks for it. /api/health answers without it.
source "$(dirname "$0")/../lib.sh"
PORT=${PREFECT_PORT:-4200}
export PORT_SETTING="PREFECT_PORT=<port>"  # named by the "port taken" error
export PREFECT_SERVER_ANALYTICS_ENABLED=false PREFECT_HOME=${PREFECT_HOME:-$RUN_DIR/prefect-home}
# The UI asks the address it was given for its API, not the port it is served on: without this,
# a server on another port than 4200 shows "Can't connect to Server API at ...:4200" (or, worse,
# another server's runs). A team server reached by another name sets PREFECT_UI_API_URL itself.
export PREFECT_SERVER_API_PORT=$PORT
# On SQLite, a request that meets another's write lock ("database is locked": SQLite's lock
# upgrade does not wait) is answered 503, which the UI shows only as "Oops. Something went
# wrong": such errors go to the log too. A team runs Prefect on PostgreSQL (infra/team.sh).
export PREFECT_API_LOG_RETRYABLE_ERRORS=${PREFECT_API_LOG_RETRYABLE_ERRORS:-true}
export PREFECT_UI_API_URL=${PREFECT_UI_API_URL:-http://127.0.0.1:$PORT/api}
case "${1:-}" in
  start) secret_env prefect-auth PREFECT_API_AUTH_STRING
         export PREFECT_SERVER_API_AUTH_STRING=$PREFECT_API_AUTH_STRING
         LAUNCH_CONFIG="port $PORT, state in $(redact "${PREFECT_API_DATABASE_CONNECTION_URL:-SQLite under $PREFECT_HOME}")" \
         launch prefect-server "$PORT" "http://127.0.0.1:$PORT/api/health" "${PREFECT_START_TIMEOUT:-300}" \
           prefect server start --host "${PREFECT_HOST:-127.0.0.1}" --port "$PORT"
         echo "export PREFECT_API_URL=http://127.0.0.1:$PORT/api"
         echo "export PREFECT_API_AUTH_STRING=\"\$(cat $(cd "$REPO_ROOT" && python -m components.secrets path prefect-auth))\"" ;;
  stop) stop_named prefect-server ;;
  status) status_named prefect-server ;;
  *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
