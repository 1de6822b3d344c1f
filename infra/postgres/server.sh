#!/usr/bin/env bash
# PostgreSQL for the team servers (MLflow's runs, Label Studio's projects), from Debian's
# postgresql package, on 127.0.0.1.
#   infra/postgres/server.sh start|stop|status
#   infra/postgres/server.sh url NAME     the connection URL of database NAME (created if missing)
# Settings: POSTGRES_PORT (5432); POSTGRES_DATA (.sage-ada/postgres): the cluster, made once,
# with a user sage_ada whose generated password is kept in POSTGRES_DATA/../postgres.env (mode 600).
# Run as root it runs the server as the postgres user (PostgreSQL refuses root).
source "$(dirname "$0")/../lib.sh"
PORT=${POSTGRES_PORT:-5432}
export PORT_SETTING="POSTGRES_PORT=<port>"  # named by the "port taken" error
DATA=${POSTGRES_DATA:-$REPO_ROOT/.sage-ada/postgres}
CREDS="$(dirname "$DATA")/postgres.env"
BIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
if [ -z "$BIN" ]; then
  echo "error: PostgreSQL is not installed; install Debian's postgresql package (apt-get install postgresql)" >&2
  exit 1
fi
as_owner() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }

password() {
  if [ ! -f "$CREDS" ]; then
    (umask 077; echo "POSTGRES_PASSWORD=$(python3 -c 'import secrets; print(secrets.token_hex(16))')" >"$CREDS")
  fi
  sed -n 's/^POSTGRES_PASSWORD=//p' "$CREDS"
}

psql_admin() { as_owner "$BIN/psql" -h "$DATA" -p "$PORT" -U postgres -d postgres -qtA "$@"; }

case "${1:-}" in
  start)
    if [ ! -f "$DATA/PG_VERSION" ]; then
      mkdir -p "$DATA"; [ "$(id -u)" = 0 ] && chown postgres "$DATA"
      as_owner "$BIN/initdb" -D "$DATA" -U postgres --auth-local=trust --auth-host=scram-sha-256 >/dev/null
      fresh=1
    fi
    if as_owner "$BIN/pg_ctl" -D "$DATA" status >/dev/null 2>&1; then
      echo "postgres is already running ($DATA)"
    else
      if port_busy "$PORT"; then
        echo "error: port $PORT on 127.0.0.1 is taken; stop what uses it, or choose a free port with POSTGRES_PORT=<port>" >&2; exit 1
      fi
      as_owner "$BIN/pg_ctl" -D "$DATA" -l "$DATA/server.log" -w -t "${POSTGRES_START_TIMEOUT:-120}" \
        -o "-p $PORT -k $DATA -c listen_addresses=127.0.0.1" start >/dev/null \
        || { echo "error: postgres did not start; last log lines:" >&2; tail -20 "$DATA/server.log" >&2; exit 1; }
    fi
    if [ -n "${fresh:-}" ]; then
      psql_admin -c "CREATE ROLE sage_ada LOGIN PASSWORD '$(password)'"
    fi
    echo "postgres is up on 127.0.0.1:$PORT (data $DATA)" ;;
  url)
    name=${2:?usage: $0 url NAME}
    [ "$(psql_admin -c "SELECT 1 FROM pg_database WHERE datname = '$name'")" = 1 ] \
      || psql_admin -c "CREATE DATABASE \"$name\" OWNER sage_ada"
    echo "postgresql://sage_ada:$(password)@127.0.0.1:$PORT/$name" ;;
  stop) as_owner "$BIN/pg_ctl" -D "$DATA" -m fast stop >/dev/null 2>&1 && echo "postgres stopped" || echo "postgres is not running" ;;
  status) as_owner "$BIN/pg_ctl" -D "$DATA" status >/dev/null 2>&1 && echo "postgres running: port $PORT, data in $DATA" || { echo "postgres not running"; exit 1; } ;;
  *) echo "usage: $0 start|stop|status|url NAME" >&2; exit 2 ;;
esac
