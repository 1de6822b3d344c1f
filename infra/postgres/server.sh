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

running() { as_owner "$BIN/pg_ctl" -D "$DATA" status >/dev/null 2>&1; }
running_port() { sed -n 4p "$DATA/postmaster.pid"; }   # the port the running server listens on
psql_admin() { as_owner "$BIN/psql" -h "$DATA" -p "$(running_port)" -U postgres -d postgres -qtA -v ON_ERROR_STOP=1 "$@"; }

case "${1:-}" in
  start)
    if [ ! -f "$DATA/PG_VERSION" ]; then
      mkdir -p "$DATA"; [ "$(id -u)" = 0 ] && chown postgres "$DATA"
      if [ "$(id -u)" = 0 ] && ! runuser -u postgres -- test -w "$DATA"; then
        echo "error: as root, PostgreSQL runs as the postgres user, who cannot reach $DATA (a folder" \
             "above it is private, /root say); set POSTGRES_DATA to a folder it can reach, such as" \
             "/var/lib/sage-ada/postgres" >&2; exit 1
      fi
      as_owner "$BIN/initdb" -D "$DATA" -U postgres --auth-local=trust --auth-host=scram-sha-256 >/dev/null
    fi
    if running && [ -n "$(running_port)" ]; then
      if [ "$(running_port)" != "$PORT" ]; then
        refuse_other postgres "port $(running_port), data $DATA" "port $PORT, data $DATA"; exit 1
      fi
      echo "postgres is already running with these settings (port $PORT, data $DATA); stop it with '$0 stop'"
    else
      if port_busy "$PORT"; then
        echo "error: port $PORT on 127.0.0.1 is taken; stop what uses it, or choose a free port with POSTGRES_PORT=<port>" >&2; exit 1
      fi
      as_owner "$BIN/pg_ctl" -D "$DATA" -l "$DATA/server.log" -w -t "${POSTGRES_START_TIMEOUT:-120}" \
        -o "-p $PORT -k $DATA -c listen_addresses=127.0.0.1" start >/dev/null \
        || { echo "error: postgres did not start; last log lines:" >&2; tail -20 "$DATA/server.log" >&2; exit 1; }
    fi
    # the user, made once (also when an earlier start stopped after initdb: a port taken, say);
    # by standard input: a password in -c would show in ps while psql runs
    if [ "$(psql_admin -c "SELECT 1 FROM pg_roles WHERE rolname = 'sage_ada'")" != 1 ]; then
      psql_admin <<<"CREATE ROLE sage_ada LOGIN PASSWORD '$(password)'"
    fi
    echo "postgres is up on 127.0.0.1:$PORT (data $DATA)" ;;
  url)
    name=${2:?usage: $0 url NAME}
    running || { echo "error: postgres is not running; start it with '$0 start'" >&2; exit 1; }
    [ "$(psql_admin -c "SELECT 1 FROM pg_database WHERE datname = '$name'")" = 1 ] \
      || psql_admin -c "CREATE DATABASE \"$name\" OWNER sage_ada"
    echo "postgresql://sage_ada:$(password)@127.0.0.1:$(running_port)/$name" ;;
  stop)  # fast (closes sessions), up to STOP_TIMEOUT_S (30) seconds, then immediate
    grace=${STOP_TIMEOUT_S:-30}
    if ! running; then echo "postgres is not running"; exit 0; fi
    if as_owner "$BIN/pg_ctl" -D "$DATA" -m fast -t "$grace" -w stop >/dev/null 2>&1; then
      echo "postgres stopped"
    elif ! running; then
      echo "postgres stopped"   # by another stop meanwhile
    elif as_owner "$BIN/pg_ctl" -D "$DATA" -m immediate -w stop >/dev/null 2>&1; then
      echo "error: postgres did not stop within $grace s and was stopped at once (immediate);" \
           "its log: $DATA/server.log" >&2; exit 1
    else
      echo "error: postgres did not stop (fast, then immediate); its log: $DATA/server.log" >&2; exit 1
    fi ;;
  status)
    if running; then echo "postgres running: port $(running_port), data in $DATA"
    else echo "postgres not running"; exit 1; fi ;;
  *) echo "usage: $0 start|stop|status|url NAME" >&2; exit 2 ;;
esac
