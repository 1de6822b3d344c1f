# Sourced by the scripts: the project's environment and the switches every run needs.
export PATH="$(pwd)/.venv/bin:$PATH"
# The environment is shared between clones; this clone's code comes first whichever clone
# last re-pointed the editable install.
export PYTHONPATH="$(pwd)${PYTHONPATH:+:$PYTHONPATH}"
export PREFECT_SERVER_ANALYTICS_ENABLED=false
export PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS=${PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS:-120}
export DO_NOT_TRACK=1
export GX_ANALYTICS_ENABLED=False
export MLFLOW_DISABLE_TELEMETRY=true
export DVC_NO_ANALYTICS=1
export PYTHONUNBUFFERED=1
