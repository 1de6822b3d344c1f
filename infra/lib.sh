# Shared by the server scripts: start a process in the background on 127.0.0.1, wait until it
# answers, and stop it by its PID file. Sourced, not run.
set -euo pipefail
INFRA_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(dirname "$INFRA_ROOT")"
RUN_DIR="${SAGE_ADA_RUN_DIR:-$REPO_ROOT/.sage-ada/servers}"
mkdir -p "$RUN_DIR"
[ -x "$REPO_ROOT/.venv/bin/python" ] && export PATH="$REPO_ROOT/.venv/bin:$PATH"

port_busy() { python3 -c "import socket,sys; s=socket.socket(); sys.exit(0 if s.connect_ex(('127.0.0.1', int(sys.argv[1])))==0 else 1)" "$1"; }

wait_http() {  # url timeout_s [pid]: a line every 15 s while waiting; gives up if pid dies
  local url=$1 timeout=$2 pid=${3:-} start=$SECONDS
  until python3 -c "import urllib.request,sys; urllib.request.urlopen(sys.argv[1], timeout=2)" "$url" 2>/dev/null; do
    local waited=$((SECONDS - start))
    if [ $waited -ge "$timeout" ]; then return 1; fi
    if [ -n "$pid" ] && ! kill -0 "$pid" 2>/dev/null; then return 1; fi
    if [ $waited -gt 0 ] && [ $((waited % 15)) -eq 0 ]; then
      echo "  waiting for $url (${waited} s of ${timeout} s)"
    fi
    sleep 1
  done
}

redact() {  # a URL without its password: postgresql://user:***@host/db
  sed -E 's#(://[^:/@]*):[^@/]*@#\1:***@#g' <<<"$1"
}

refuse_other() {  # NAME HAS WANT: a server running with other settings than asked, in one line
  echo "error: $1 is running with other settings than asked: it has [$2], asked [$3];" \
       "stop it first ('${SCRIPT:-$0} stop'), then start it again" >&2
}

running_over() {  # PREFIX [TEXT]: the live server $RUN_DIR/PREFIX-<port> (any port) whose
  # settings hold TEXT: one server over one store, whichever port it was started on
  local pidfile
  for pidfile in "$RUN_DIR/$1"-*.pid; do
    [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null || continue
    [ -z "${2:-}" ] || grep -qF "$2" "${pidfile%.pid}.config" 2>/dev/null || continue
    basename "$pidfile" .pid; return
  done
  return 0
}

launch() {  # name port health_url timeout_s command...
  # LAUNCH_CONFIG (set by the calling script, passwords redacted): what this server was asked to
  # serve; a server already running with another is an error, not "already running"
  local name=$1 port=$2 url=$3 timeout=$4; shift 4
  local pidfile="$RUN_DIR/$name.pid" log="$RUN_DIR/$name.log" config="$RUN_DIR/$name.config"
  local want="${LAUNCH_CONFIG:-$*}"
  if [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
    local has; has=$(cat "$config" 2>/dev/null || true)
    if [ -n "$has" ] && [ "$has" != "$want" ]; then
      refuse_other "$name" "$has" "$want"; return 1
    fi
    echo "$name is already running (pid $(cat "$pidfile")) with these settings; stop it with '${SCRIPT:-$0} stop'"
    return 0
  fi
  if port_busy "$port"; then
    echo "error: port $port on 127.0.0.1 is taken; stop what uses it, or choose a free port" \
         "with ${PORT_SETTING:-PORT=<port>}" >&2; return 1
  fi
  # SIGINT back to its default first: a background job of a script (and anything started from
  # one, a CI runner say) inherits it ignored, and a Python server then never stops on SIGTERM
  # (Prefect's worker turns SIGTERM into SIGINT)
  # (and job control on: each server in a process group of its own, as a person's shell starts it)
  set -m
  nohup python3 -c 'import os, signal, sys
signal.signal(signal.SIGINT, signal.SIG_DFL)
os.execvp(sys.argv[1], sys.argv[1:])' "$@" >"$log" 2>&1 &
  echo $! >"$pidfile"
  set +m
  (umask 077; printf '%s\n' "$want" >"$config")
  if ! wait_http "$url" "$timeout" "$(cat "$pidfile")"; then
    echo "error: $name did not answer at $url within ${timeout}s (or it exited; a busy machine may need a longer wait: see the script's *_START_TIMEOUT); last log lines:" >&2
    tail -20 "$log" >&2; stop_named "$name"; return 1
  fi
  echo "$name is up at $url (pid $(cat "$pidfile"), log $log)"
}

stop_named() {  # SIGTERM, then up to STOP_TIMEOUT_S (30) seconds to exit before kill -9
  local pidfile="$RUN_DIR/$1.pid" grace=${STOP_TIMEOUT_S:-30}
  if [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
    local pid start=$SECONDS; pid=$(cat "$pidfile")
    kill "$pid" 2>/dev/null || true
    while kill -0 "$pid" 2>/dev/null && [ $((SECONDS - start)) -lt "$grace" ]; do sleep 0.2; done
    rm -f "$pidfile" "$RUN_DIR/$1.config"
    if kill -0 "$pid" 2>/dev/null; then
      kill -9 "$pid" 2>/dev/null || true
      echo "error: $1 (pid $pid) did not stop within ${grace} s of SIGTERM and was killed;" \
           "its log: $RUN_DIR/$1.log" >&2
      return 1
    fi
    echo "$1 stopped"
  else
    rm -f "$pidfile" "$RUN_DIR/$1.config"
    echo "$1 is not running"
  fi
}

status_named() {  # running or not, and with which settings (passwords redacted)
  local pidfile="$RUN_DIR/$1.pid"
  if [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
    local config; config=$(cat "$RUN_DIR/$1.config" 2>/dev/null || true)
    echo "$1 running (pid $(cat "$pidfile"))${config:+: $config}"
  else
    echo "$1 not running"; return 1
  fi
}

secret_env() {  # NAME VAR: export VAR from the secret NAME (components/secrets.py), made once
  # when missing; a VAR already set is kept. Never printed: the value goes to the environment
  # of this script's processes only, never onto a command line.
  local file
  (cd "$REPO_ROOT" && python -m components.secrets ensure "$1") || return 1
  file=$(cd "$REPO_ROOT" && python -m components.secrets path "$1")
  if [ -z "${!2:-}" ]; then
    local value; value=$(cat "$file")
    [ -n "$value" ] || { echo "error: the secret $file is empty; remove it and start again" >&2; return 1; }
    export "$2"="$value"
  fi
}

secret_env_if_made() {  # NAME VAR: as secret_env, but only where the secret's file exists
  local file
  file=$(cd "$REPO_ROOT" && python -m components.secrets path "$1") || return 0
  if [ -z "${!2:-}" ] && [ -f "$file" ]; then export "$2"="$(cat "$file")"; fi
}

# What only the servers need: database URLs (with their passwords) and the servers' own
# secrets. A worker passes its environment to every flow run it starts, and the receiver needs
# none of it, so their scripts start them without these.
SERVER_ONLY="MLFLOW_BACKEND_STORE_URI LABEL_STUDIO_DATABASE_URL PREFECT_API_DATABASE_CONNECTION_URL
  MLFLOW_AUTH_ADMIN_PASSWORD MLFLOW_FLASK_SERVER_SECRET_KEY PREFECT_SERVER_API_AUTH_STRING
  POSTGRES_PASSWORD MLFLOW_AUTH_DATABASE_URI"
drop_server_secrets() { local v; for v in $SERVER_ONLY; do unset "$v"; done; }
