#!/usr/bin/env bash
# The receiver that resumes suspended runs when annotators finish a round (receiver.py).
#   infra/webhooks/server.sh start|stop|status
# Needs PREFECT_API_URL; reads Label Studio's URL and token like the flow (LABEL_STUDIO_URL,
# default http://127.0.0.1:8080; LABEL_STUDIO_API_KEY, else LABEL_STUDIO_CREDENTIALS, default
# the file infra/label-studio/server.sh writes). SAGE_ADA_WEBHOOK_PORT (default 8092);
# SAGE_ADA_WEBHOOK_URL: the receiver as Label Studio reaches it (label_studio.webhook_url in
# params.yaml must say the same); SAGE_ADA_SWEEP_S: the fallback check's period (default 300).
# The webhook secret (runs put it in their webhooks' headers; the receiver refuses calls without
# it) is made once, mode 600, in $SAGE_ADA_SECRETS/webhook-secret (default ~/.config/sage-ada),
# and never printed; SAGE_ADA_WEBHOOK_SECRET instead, where a file cannot be shared.
source "$(dirname "$0")/../lib.sh"
PORT=${SAGE_ADA_WEBHOOK_PORT:-8092}
export PORT_SETTING="SAGE_ADA_WEBHOOK_PORT=<port>"  # named by the "port taken" error
export SAGE_ADA_WEBHOOK_PORT=$PORT
export LABEL_STUDIO_CREDENTIALS=${LABEL_STUDIO_CREDENTIALS:-$REPO_ROOT/.sage-ada/label-studio/credentials.env}
case "${1:-}" in
  start)
    if [ -z "${PREFECT_API_URL:-}" ]; then
      echo "error: PREFECT_API_URL is not set; start the server (infra/prefect/server.sh start) and export what it prints" >&2
      exit 2
    fi
    secret_env_if_made prefect-auth PREFECT_API_AUTH_STRING  # the server asks for it
    (cd "$REPO_ROOT" && python -m components.secrets ensure webhook-secret)
    drop_server_secrets
    LAUNCH_CONFIG="port $PORT, Label Studio at ${LABEL_STUDIO_URL:-http://127.0.0.1:8080}, Prefect at $PREFECT_API_URL" \
    launch webhook-receiver "$PORT" "http://127.0.0.1:$PORT/health" "${SAGE_ADA_WEBHOOK_START_TIMEOUT:-120}" \
      python "$INFRA_ROOT/webhooks/receiver.py"
    echo "set label_studio.webhook_url: ${SAGE_ADA_WEBHOOK_URL:-http://127.0.0.1:$PORT} (with label_studio.wait: suspend)" ;;
  stop) stop_named webhook-receiver ;;
  status) status_named webhook-receiver ;;
  *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
