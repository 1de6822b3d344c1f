#!/usr/bin/env bash
# A Prefect process worker for the project's deployments (prefect.yaml), on 127.0.0.1.
#   infra/prefect/worker.sh start|stop|status
# Needs PREFECT_API_URL (infra/prefect/server.sh start prints it). Creates the process work pool
# PREFECT_WORK_POOL (default sage-ada) when missing. The worker answers health checks on
# PREFECT_WORKER_PORT (default 8091; Label Studio has 8080); PREFECT_WORKER_START_TIMEOUT
# (default 300) is how long to wait for it. Start one per machine that should run flows; it also
# creates that machine's training slots (one Prefect concurrency limit per GPU, one for the CPU).
# Flows run in SAGE_ADA_CLONE (default: this clone); with SAGE_ADA_DVC_REMOTE set, it first pulls
# the data into it (infra/dvc/remote.sh).
source "$(dirname "$0")/../lib.sh"
POOL=${PREFECT_WORK_POOL:-sage-ada}
PORT=${PREFECT_WORKER_PORT:-8091}
export PORT_SETTING="PREFECT_WORKER_PORT=<port>"  # named by the "port taken" error
export PREFECT_SERVER_ANALYTICS_ENABLED=false PREFECT_WORKER_WEBSERVER_PORT=$PORT
# how often the worker asks for runs to start (Prefect's default: 10 s); a resumed run waits
# at most this long for it
export PREFECT_WORKER_QUERY_SECONDS=${PREFECT_WORKER_QUERY_SECONDS:-3}
# the clone this worker runs flows in (prefect.yaml's pull step reads it when a run starts)
export SAGE_ADA_CLONE=${SAGE_ADA_CLONE:-$REPO_ROOT}
case "${1:-}" in
  start)
    if [ -z "${PREFECT_API_URL:-}" ]; then
      echo "error: PREFECT_API_URL is not set; start the server (infra/prefect/server.sh start) and export what it prints" >&2
      exit 2
    fi
    secret_env_if_made prefect-auth PREFECT_API_AUTH_STRING  # the server asks for it
    if [ -n "${SAGE_ADA_DVC_REMOTE:-}" ]; then  # the data version data.dvc records
      bash "$INFRA_ROOT/dvc/remote.sh" pull || exit 1
    fi
    prefect work-pool inspect "$POOL" >/dev/null 2>&1 \
      || prefect work-pool create "$POOL" --type process >/dev/null
    # A task concurrency limit per GPU of this machine, and one for its CPU: training tasks are
    # tagged with the devices they train on (flows/active_da.py: training_slots), so runs on
    # several workers share a GPU one training at a time (SAGE_ADA_TRAININGS_PER_DEVICE: more).
    host=$(python3 -c 'import socket; print(socket.gethostname())')
    gpus=$(python3 -c 'import glob; print(len(glob.glob("/dev/nvidia[0-9]*")))')
    # and one for the model registry: a run's registration and alias promotion (a read, then
    # a write) never overlap another's, on any worker (flows/active_da.py: REGISTRY_SLOT)
    prefect concurrency-limit inspect sage-ada-registry >/dev/null 2>&1 \
      || prefect concurrency-limit create sage-ada-registry 1 >/dev/null
    for slot in "sage-ada-cpu-$host" $(for i in $(seq 0 $((gpus - 1))); do echo "sage-ada-gpu-$host-$i"; done); do
      prefect concurrency-limit inspect "$slot" >/dev/null 2>&1 \
        || prefect concurrency-limit create "$slot" "${SAGE_ADA_TRAININGS_PER_DEVICE:-1}" >/dev/null
    done
    drop_server_secrets   # every flow run inherits what the worker has
    LAUNCH_CONFIG="pool $POOL, port $PORT, flows in $SAGE_ADA_CLONE, Prefect at $PREFECT_API_URL, MLflow at ${MLFLOW_TRACKING_URI:-a store in each clone}" \
    launch "prefect-worker-$POOL" "$PORT" "http://127.0.0.1:$PORT/health" \
      "${PREFECT_WORKER_START_TIMEOUT:-300}" \
      prefect worker start --pool "$POOL" --type process --with-healthcheck ;;
  stop) stop_named "prefect-worker-$POOL" ;;
  status) status_named "prefect-worker-$POOL" ;;
  *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
