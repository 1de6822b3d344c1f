#!/usr/bin/env bash
# Label Studio on 127.0.0.1, headless, with a known user and API token.
#   infra/label-studio/server.sh start|stop|status
# Settings (environment or a git-ignored .env at the repository root):
#   LABEL_STUDIO_PORT (default: the port of label_studio.url in params.yaml, or in the file
#   SAGE_ADA_PARAMS names; so the flow and the server agree by default), LABEL_STUDIO_DATA
#   (.sage-ada/label-studio), LABEL_STUDIO_USERNAME / _PASSWORD / _USER_TOKEN (generated once
#   into a mode-600 credentials file when not given; the token is never printed).
#   Images reach annotators by reference: the run copies each selected image, under an opaque
#   name, into label_studio.media_root (LABEL_STUDIO_MEDIA_ROOT overrides it), and Label Studio
#   serves that folder and nothing else (its LOCAL_FILES_DOCUMENT_ROOT), to users of the
#   project whose storage holds the run's folder. No URL names a dataset file, whose folder
#   would name its class.
#   LABEL_STUDIO_DATABASE_URL: postgresql://user:password@host:port/name keeps projects and
#   annotations in PostgreSQL (a team; infra/postgres/server.sh url labelstudio gives one);
#   default: SQLite under LABEL_STUDIO_DATA.
#   SSRF protection stays on: webhooks and S3 endpoints on private or loopback addresses are
#   refused, but for the origins of LABEL_STUDIO_TRUSTED_URLS (default: the webhook receiver,
#   SAGE_ADA_WEBHOOK_URL or http://127.0.0.1:$SAGE_ADA_WEBHOOK_PORT (8092), and params.yaml's
#   label_studio.webhook_url and label_studio.s3.endpoint), the one exception
#   (sage_ada_label_studio.py, TrustedUrls).
#   Sign-up needs the organisation's invite link (Label Studio: Organization → Add People), so
#   nobody who merely reaches the port can register; LABEL_STUDIO_DISABLE_SIGNUP_WITHOUT_LINK=false
#   opens it again. /user/signup without the link says so at once (sage_ada_label_studio.py:
#   Label Studio's settings plus that page) instead of a form that ends in a bare 403.
source "$(dirname "$0")/settings.sh"
NAME=label-studio-$PORT
RUN_DIR="$DATA"

RUNNING=$(running_over label-studio)   # the one over $DATA (its RUN_DIR), on any port

credentials() {  # reuse, take from the environment, or generate once
  mkdir -p "$DATA"
  if [ ! -f "$CREDS" ]; then
    (umask 077
     printf 'LABEL_STUDIO_USERNAME=%s\nLABEL_STUDIO_PASSWORD=%s\nLABEL_STUDIO_USER_TOKEN=%s\n' \
       "${LABEL_STUDIO_USERNAME:-annotator@sage-ada.local}" \
       "${LABEL_STUDIO_PASSWORD:-$(python3 -c 'import secrets; print(secrets.token_urlsafe(18))')}" \
       "${LABEL_STUDIO_USER_TOKEN:-$(python3 -c 'import secrets; print(secrets.token_hex(20))')}" >"$CREDS")
  fi
  set -a; source "$CREDS"; set +a
}

database_env() {  # LABEL_STUDIO_DATABASE_URL as Label Studio's own settings, lines for `source`
  [ -n "${LABEL_STUDIO_DATABASE_URL:-}" ] || { echo "DJANGO_DB=sqlite"; return; }
  python3 - "$LABEL_STUDIO_DATABASE_URL" <<'PY'
import shlex
import sys
from urllib.parse import unquote, urlparse

u = urlparse(sys.argv[1])
if u.scheme not in ("postgresql", "postgres"):
    sys.exit("error: LABEL_STUDIO_DATABASE_URL must be postgresql://user:password@host:port/name")
for key, value in {"DJANGO_DB": "default", "POSTGRE_USER": unquote(u.username or ""),
                   "POSTGRE_PASSWORD": unquote(u.password or ""),
                   "POSTGRE_HOST": u.hostname or "localhost", "POSTGRE_PORT": u.port or 5432,
                   "POSTGRE_NAME": u.path.lstrip("/")}.items():
    print(f"{key}={shlex.quote(str(value))}")
PY
}

case "${1:-}" in
  start)
    [ -x "$VENV/bin/label-studio" ] || {
      echo "error: Label Studio is not installed; run infra/label-studio/install.sh first" >&2; exit 1; }
    config="port $PORT, projects in $(redact "${LABEL_STUDIO_DATABASE_URL:-SQLite under $DATA}"), images from $MEDIA"
    if [ -n "$RUNNING" ] && [ "$RUNNING" != "$NAME" ]; then   # another port, the same data
      refuse_other "$RUNNING" "$(cat "$DATA/$RUNNING.config" 2>/dev/null)" "$config"; exit 1
    fi
    credentials
    mkdir -p "$DATA/home" "$MEDIA"
    # the database's password and the admin's login reach Label Studio through a mode-600 file
    # that its shell sources, never a command line (`ps` shows those to every user)
    secrets="$DATA/server.env"
    (umask 077; database_env >"$secrets.new") || { rm -f "$secrets.new"; exit 2; }
    cat "$CREDS" >>"$secrets.new" && mv "$secrets.new" "$secrets"
    trusted=${LABEL_STUDIO_TRUSTED_URLS:-"${SAGE_ADA_WEBHOOK_URL:-http://127.0.0.1:${SAGE_ADA_WEBHOOK_PORT:-8092}} $(params_trusted)"}
    env -i PATH="$VENV/bin:/usr/bin:/bin" HOME="$DATA/home" \
      SAGE_ADA_TRUSTED_URLS="$trusted" LAUNCH_CONFIG="$config" LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN=true \
      LABEL_STUDIO_DISABLE_SIGNUP_WITHOUT_LINK="${LABEL_STUDIO_DISABLE_SIGNUP_WITHOUT_LINK:-true}" \
      PYTHONPATH="$INFRA_ROOT/label-studio" DJANGO_SETTINGS_MODULE=sage_ada_label_studio \
      LABEL_STUDIO_BASE_DATA_DIR="$DATA/db" \
      LOCAL_FILES_SERVING_ENABLED=true LOCAL_FILES_DOCUMENT_ROOT="$MEDIA" \
      COLLECT_ANALYTICS=false LATEST_VERSION_CHECK=false SENTRY_DSN= FRONTEND_SENTRY_DSN= \
      bash -c "set -a; source '$secrets'; set +a; SCRIPT='$0'
        $(declare -f launch refuse_other port_busy wait_http stop_named); RUN_DIR='$RUN_DIR' launch $NAME $PORT \
        http://127.0.0.1:$PORT/health ${LABEL_STUDIO_START_TIMEOUT:-240} \
        label-studio start --no-browser --internal-host 127.0.0.1 --port $PORT --host http://127.0.0.1:$PORT"
    echo "annotators: open http://127.0.0.1:$PORT and log in as $LABEL_STUDIO_USERNAME (password in $CREDS)" ;;
  stop) stop_named "${RUNNING:-$NAME}" ;;     # the one running from $DATA, on any port
  status) status_named "${RUNNING:-$NAME}" ;;
  *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
