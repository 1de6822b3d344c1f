"""The team stack's shared secrets, read from one place by the scripts, the flow and the servers.

Each secret is a file of mode 600 in ``SAGE_ADA_SECRETS`` (default ``~/.config/sage-ada``, mode
700), generated once by the server script that needs it and never printed; or, where a file
cannot be shared (containers, another host), the environment variable of the same meaning
(``infra/compose.yaml`` reads them from ``infra/team.env``). A secret never goes on a command
line, into a flow run's parameters, or into MLflow.
"""
from __future__ import annotations

import os
import secrets
from pathlib import Path

# (file name, the environment variable that may hold it instead of the file)
WEBHOOK_SECRET = ("webhook-secret", "SAGE_ADA_WEBHOOK_SECRET")
# Prefect's API auth string, "user:password": the server's PREFECT_SERVER_API_AUTH_STRING and
# every client's PREFECT_API_AUTH_STRING
PREFECT_AUTH = ("prefect-auth", "PREFECT_API_AUTH_STRING")
# the MLflow server's admin password (infra/mlflow/server.sh: --app-name basic-auth; MLflow's
# own MLFLOW_AUTH_ADMIN_PASSWORD where set); a person logs in with MLFLOW_TRACKING_USERNAME and
# MLFLOW_TRACKING_PASSWORD
MLFLOW_PASSWORD = ("mlflow-password", "MLFLOW_AUTH_ADMIN_PASSWORD")
MLFLOW_ADMIN = "sage-ada"
# the key that signs the MLflow server's CSRF tokens (its basic-auth app asks for one)
MLFLOW_FLASK_KEY = ("mlflow-flask-key", "MLFLOW_FLASK_SERVER_SECRET_KEY")
KNOWN = {s[0]: s for s in (WEBHOOK_SECRET, PREFECT_AUTH, MLFLOW_PASSWORD, MLFLOW_FLASK_KEY)}
# what a generated secret looks like, by name
_PREFIX = {PREFECT_AUTH[0]: "sage-ada:"}


def secrets_dir() -> Path:
    return Path(os.environ.get("SAGE_ADA_SECRETS") or "~/.config/sage-ada").expanduser()


def read_secret(which: tuple[str, str]) -> str | None:
    """The secret from its environment variable, else from its file; None where neither is."""
    name, env = which
    if os.environ.get(env):
        return os.environ[env]
    path = secrets_dir() / name
    return path.read_text().strip() or None if path.is_file() else None


def ensure_secret(which: tuple[str, str]) -> Path:
    """Make the secret's file once (random, 256 bits, mode 600); its path. An existing file, or
    the environment variable, is kept as it is."""
    name, env = which
    folder = secrets_dir()
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = folder / name
    if not path.exists() and not os.environ.get(env):
        # written whole under another name, then linked in place: nobody reads it half made
        part = folder / f".{name}.{os.getpid()}.{secrets.token_hex(4)}"
        fd = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(_PREFIX.get(name, "") + secrets.token_urlsafe(32) + "\n")
        try:
            os.link(part, path)
        except FileExistsError:      # another script made it first: theirs stands
            pass
        finally:
            part.unlink()
    return path


def mlflow_login(uri: str = "") -> bool:
    """Log this process's MLflow client in (MLflow reads ``MLFLOW_TRACKING_USERNAME`` and
    ``MLFLOW_TRACKING_PASSWORD``): where neither is set, the server at ``uri`` runs on this
    machine (a loopback address: the admin's password never travels to another host) and
    this machine has its admin password, as the admin. Whether a login is set now."""
    from urllib.parse import urlparse

    if os.environ.get("MLFLOW_TRACKING_PASSWORD"):
        return True
    host = (urlparse(uri).hostname or "") if uri else "localhost"
    if host not in ("localhost", "::1") and not host.startswith("127."):
        return False
    password = read_secret(MLFLOW_PASSWORD)
    if not password:
        return False
    os.environ.setdefault("MLFLOW_TRACKING_USERNAME", MLFLOW_ADMIN)
    os.environ["MLFLOW_TRACKING_PASSWORD"] = password
    return True


def main(argv: list[str] | None = None) -> int:
    """For the server scripts: ``python -m components.secrets ensure NAME`` makes the secret
    once; ``python -m components.secrets path NAME`` says where its file is."""
    import sys

    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2 or args[0] not in ("ensure", "path") or args[1] not in KNOWN:
        print(f"usage: python -m components.secrets ensure|path {'|'.join(KNOWN)}",
              file=sys.stderr)
        return 2
    path = ensure_secret(KNOWN[args[1]]) if args[0] == "ensure" else secrets_dir() / args[1]
    if args[0] == "path":
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
