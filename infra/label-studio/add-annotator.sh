#!/usr/bin/env bash
# Give a person an annotator account on the project's Label Studio, without opening sign-up.
#   infra/label-studio/add-annotator.sh EMAIL [EMAIL ...]
# Each account gets a generated password, written to <LABEL_STUDIO_DATA>/annotators/<email>.env
# (mode 600, never printed): hand it over as you hand over other secrets. Uses the server's
# admin token (the credentials file of server.sh) and the port of label_studio.url.
[ $# -ge 1 ] || { echo "usage: $0 EMAIL [EMAIL ...]" >&2; exit 2; }
source "$(dirname "$0")/settings.sh"
[ -f "$CREDS" ] || { echo "error: no $CREDS: start the server first (infra/label-studio/server.sh start)" >&2; exit 1; }
umask 077
mkdir -p "$DATA/annotators"
PYTHONPATH="$REPO_ROOT${PYTHONPATH:+:$PYTHONPATH}" python3 - "$CREDS" "$DATA/annotators" \
  "http://127.0.0.1:$PORT" "$@" <<'PY'
import re
import secrets
import sys
from pathlib import Path

creds_file, folder, url, *emails = sys.argv[1:]
creds = dict(l.split("=", 1) for l in Path(creds_file).read_text().splitlines() if "=" in l)
try:
    from components.oracle.label_studio import connect
    client = connect(url, creds["LABEL_STUDIO_USER_TOKEN"])
except Exception as err:  # OracleError: says how to start the server
    sys.exit(f"error: {err}")
import httpx

auth = {"Authorization": f"Token {creds['LABEL_STUDIO_USER_TOKEN']}"}
known = {u.email for u in client.users.list()}
for email in emails:
    if not re.fullmatch(r"[^@\s]+@[^@\s]+\.[^@\s]+", email):
        sys.exit(f"error: {email!r} is not an e-mail address; nothing was created for it")
    if email in known:
        print(f"{email} already has an account; its password is unchanged")
        continue
    password = secrets.token_urlsafe(15)
    # Label Studio's user API ignores passwords: sign the person up through the organisation's
    # invite link, as the form in a browser would (it also puts them in the organisation).
    invite = httpx.get(f"{url}/api/invite", headers=auth).json()["invite_url"]
    with httpx.Client(base_url=url) as browser:
        browser.get(invite)
        answer = browser.post(invite, data={"email": email, "password": password,
                                            "csrfmiddlewaretoken": browser.cookies["csrftoken"]},
                              headers={"Referer": url + invite})
    if answer.status_code != 302:
        sys.exit(f"error: Label Studio refused the account for {email} (HTTP {answer.status_code});"
                 " its log under LABEL_STUDIO_DATA says why")
    path = Path(folder) / f"{email}.env"
    path.write_text(f"LABEL_STUDIO_URL={url}\nLABEL_STUDIO_USERNAME={email}\n"
                    f"LABEL_STUDIO_PASSWORD={password}\n")
    path.chmod(0o600)
    print(f"{email}: log in at {url}/user/login with the password in {path}")
PY
