#!/usr/bin/env bash
# An S3-compatible object store (SeaweedFS, `weed mini`) on 127.0.0.1: where runs put the images
# annotators see, under opaque keys, with label_studio.images: s3, and where Label Studio reads
# them (a source storage of each run's project; Label Studio proxies the bytes to annotators).
#   infra/s3/server.sh start|stop|status
# Settings (environment or a git-ignored .env at the repository root):
#   S3_PORT      the S3 API's port (default: the port of label_studio.s3.endpoint in params.yaml,
#                or in the file SAGE_ADA_PARAMS names, else 8333: one setting for run and server)
#   S3_DATA      objects, metadata and keys (default .sage-ada/s3; mode 700)
#   S3_BUCKET    created at start when missing (default: label_studio.s3.bucket, else sage-ada)
#   S3_START_TIMEOUT  seconds to wait for the API (default 120)
# Keys: every S3 request must be signed; there is no anonymous access. Two key pairs are
# generated once into $S3_DATA/credentials.env (mode 600; never printed): AWS_ACCESS_KEY_ID /
# AWS_SECRET_ACCESS_KEY may read and write (the run uploads with them; given in the environment
# at the first start, they are used instead of new ones), and LABEL_STUDIO_S3_ACCESS_KEY_ID /
# _SECRET_ACCESS_KEY may only list and read (what the run hands Label Studio, which keeps them in
# its database). label_studio.s3.credentials names that file.
# SeaweedFS's own servers (master, volume, filer, admin) listen on free ports of 127.0.0.1 chosen
# at the first start and kept in $S3_DATA/ports.env; the filer's and the volume server's HTTP
# require tokens signed with keys generated into $S3_DATA/internal.env, so objects are read
# through the S3 API, with the keys, only. The S3 API listens on 127.0.0.1 only: a team whose
# Label Studio or runs are on other hosts puts it behind a TLS reverse proxy, or uses its own S3.
source "$(dirname "$0")/../lib.sh"
[ -f "$REPO_ROOT/.env" ] && { set -a; source "$REPO_ROOT/.env"; set +a; }
VERSION=$(cat "$INFRA_ROOT/s3/VERSION")
VENV=${S3_VENV:-$HOME/.cache/sage-ada/seaweedfs-$VERSION}
PARAMS=${SAGE_ADA_PARAMS:-$REPO_ROOT/params.yaml}
DATA=${S3_DATA:-$REPO_ROOT/.sage-ada/s3}
CREDS="$DATA/credentials.env"
INTERNAL="$DATA/internal.env"
PORTS="$DATA/ports.env"

params_s3() {  # label_studio.s3.<key> in the params file: "port" (of endpoint) or "bucket"
  python3 - "$PARAMS" "$1" 2>/dev/null <<'PY' || true
import sys
from urllib.parse import urlparse

import yaml

s3 = (((yaml.safe_load(open(sys.argv[1])) or {}).get("label_studio") or {}).get("s3") or {})
if sys.argv[2] == "port":
    print(urlparse(s3.get("endpoint") or "").port or "")
else:
    print(s3.get(sys.argv[2]) or "")
PY
}
PORT=${S3_PORT:-$(params_s3 port)}
PORT=${PORT:-8333}
BUCKET=${S3_BUCKET:-$(params_s3 bucket)}
BUCKET=${BUCKET:-sage-ada}
NAME=s3-$PORT
export PORT_SETTING="S3_PORT=<port> (and the same port in label_studio.s3.endpoint)"

secret() { python3 -c "import secrets, string, sys; a = string.ascii_letters + string.digits; print(''.join(secrets.choice(a) for _ in range(int(sys.argv[1]))))" "$1"; }
key_id() { python3 -c "import secrets, string; print('SA' + ''.join(secrets.choice(string.ascii_uppercase + string.digits) for _ in range(18)))"; }

keys() {  # reuse, take from the environment, or generate once; never printed
  mkdir -p "$DATA"; chmod 700 "$DATA"
  if [ ! -f "$CREDS" ]; then
    (umask 077
     printf '%s\n' "# S3 keys of infra/s3/server.sh (label_studio.s3.credentials). Keep this file private." \
       "AWS_ACCESS_KEY_ID=${AWS_ACCESS_KEY_ID:-$(key_id)}" \
       "AWS_SECRET_ACCESS_KEY=${AWS_SECRET_ACCESS_KEY:-$(secret 40)}" \
       "LABEL_STUDIO_S3_ACCESS_KEY_ID=$(key_id)" \
       "LABEL_STUDIO_S3_SECRET_ACCESS_KEY=$(secret 40)" >"$CREDS")
  fi
  if [ ! -f "$INTERNAL" ]; then
    (umask 077
     printf '%s\n' "WEED_JWT_SIGNING_KEY=$(secret 32)" "WEED_JWT_SIGNING_READ_KEY=$(secret 32)" \
       "WEED_JWT_FILER_SIGNING_KEY=$(secret 32)" "WEED_JWT_FILER_SIGNING_READ_KEY=$(secret 32)" \
       >"$INTERNAL")
  fi
  (umask 077; python3 - "$CREDS" "$DATA/s3.json" <<'PY'
import json
import sys

keys = dict(line.split("=", 1) for line in open(sys.argv[1]).read().splitlines()
            if "=" in line and not line.startswith("#"))
identities = [
    {"name": "sage-ada", "actions": ["Admin", "Read", "List", "Tagging", "Write"],
     "credentials": [{"accessKey": keys["AWS_ACCESS_KEY_ID"],
                      "secretKey": keys["AWS_SECRET_ACCESS_KEY"]}]},
    {"name": "label-studio", "actions": ["Read", "List"],
     "credentials": [{"accessKey": keys["LABEL_STUDIO_S3_ACCESS_KEY_ID"],
                      "secretKey": keys["LABEL_STUDIO_S3_SECRET_ACCESS_KEY"]}]},
]
json.dump({"identities": identities}, open(sys.argv[2], "w"), indent=1)
PY
  )
}

internal_ports() {  # the ports of ports.env where all are free, else nine new free ones
  if [ -f "$PORTS" ]; then
    local busy=0
    # shellcheck disable=SC1090
    source "$PORTS"
    for p in $MASTER $MASTER_GRPC $VOLUME $VOLUME_GRPC $FILER $FILER_GRPC $S3_GRPC $ADMIN $ADMIN_GRPC; do
      port_busy "$p" && busy=1
    done
    [ $busy = 0 ] && return 0
  fi
  python3 - "$PORT" >"$PORTS" <<'PY'
import socket
import sys

socks, ports = [], []
while len(ports) < 9:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    if str(port) != sys.argv[1]:
        ports.append(port)
    socks.append(s)
for name, port in zip("MASTER MASTER_GRPC VOLUME VOLUME_GRPC FILER FILER_GRPC S3_GRPC ADMIN "
                      "ADMIN_GRPC".split(), ports):
    print(f"{name}={port}")
PY
  # shellcheck disable=SC1090
  source "$PORTS"
}

RUNNING=$(running_over s3 "$DATA/objects")   # the store over $DATA, on any port

case "${1:-}" in
  start)
    [ -x "$VENV/bin/weed" ] || {
      echo "error: SeaweedFS is not installed; run infra/s3/install.sh first" >&2; exit 1; }
    config="port $PORT, bucket $BUCKET, objects in $DATA/objects"
    if [ -n "$RUNNING" ]; then   # (checked before internal_ports: they are in use)
      has=$(cat "$RUN_DIR/$RUNNING.config" 2>/dev/null || true)
      case "$has" in   # an older script kept its command line: judged by its port only
        "port "*) [ "$has" = "$config" ] && same=1 ;;
        *) [ "$RUNNING" = "$NAME" ] && same=1 ;;
      esac
      if [ -z "${same:-}" ]; then
        refuse_other "$RUNNING" "$has" "$config"; exit 1
      fi
      echo "$RUNNING is already running with these settings; stop it with '$0 stop'"; exit 0
    fi
    keys
    internal_ports
    mkdir -p "$DATA/objects" "$DATA/master"
    # the internal signing keys reach weed by a mode-600 file its shell sources, never a
    # command line (`ps` shows those to every user)
    env -i PATH="$VENV/bin:/usr/bin:/bin" HOME="$DATA" LAUNCH_CONFIG="$config" \
      bash -c "set -a; source '$INTERNAL'; set +a
        $(declare -f launch refuse_other port_busy wait_http stop_named); RUN_DIR='$RUN_DIR' launch $NAME $PORT \
        http://127.0.0.1:$PORT/healthz ${S3_START_TIMEOUT:-120} \
        '$VENV/bin/weed' mini -dir='$DATA/objects' -master.dir='$DATA/master' \
          -ip=127.0.0.1 -ip.bind=127.0.0.1 -s3.port=$PORT -s3.port.grpc=$S3_GRPC \
          -s3.config='$DATA/s3.json' -bucket='$BUCKET' \
          -master.port=$MASTER -master.port.grpc=$MASTER_GRPC -volume.port=$VOLUME \
          -volume.port.grpc=$VOLUME_GRPC -filer.port=$FILER -filer.port.grpc=$FILER_GRPC \
          -admin.port=$ADMIN -admin.port.grpc=$ADMIN_GRPC -admin.ui=false -webdav=false \
          -s3.port.iceberg=0 -s3.port.lance=0 -master.telemetry=false"
    echo "S3 API at http://127.0.0.1:$PORT, bucket $BUCKET; keys in $CREDS (label_studio.s3.credentials)" ;;
  stop) stop_named "${RUNNING:-$NAME}" ;;   # weed stops in a few seconds on SIGTERM
  status) status_named "${RUNNING:-$NAME}" ;;
  *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
