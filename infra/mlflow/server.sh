#!/usr/bin/env bash
# MLflow tracking server on 127.0.0.1 over the project's local store (mlflow/).
#   infra/mlflow/server.sh start|stop|status      (MLFLOW_PORT, default 5000;
#   MLFLOW_START_TIMEOUT: seconds to wait for it to answer, default 300)
# Then: export MLFLOW_TRACKING_URI=http://127.0.0.1:5000
source "$(dirname "$0")/../lib.sh"
PORT=${MLFLOW_PORT:-5000}
STORE=${MLFLOW_STORE:-$REPO_ROOT/mlflow}
mkdir -p "$STORE/artifacts"
case "${1:-}" in
  start) launch mlflow-server "$PORT" "http://127.0.0.1:$PORT/health" "${MLFLOW_START_TIMEOUT:-300}" \
           mlflow server --host 127.0.0.1 --port "$PORT" \
             --backend-store-uri "sqlite:///$STORE/mlflow.db" \
             --artifacts-destination "$STORE/artifacts" --serve-artifacts
         echo "export MLFLOW_TRACKING_URI=http://127.0.0.1:$PORT" ;;
  stop) stop_named mlflow-server ;;
  status) status_named mlflow-server ;;
  *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
