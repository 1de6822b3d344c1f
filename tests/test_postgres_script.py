"""Issue 35: infra/postgres/server.sh as the team stack uses it. A start over a cluster that runs
with other settings is one error, not "already running"; status and url tell the port it really
listens on; stop says what happened; its password never shows on a command line."""
from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from tests.conftest import REPO, free_port

SCRIPT = str(REPO / "infra/postgres/server.sh")


@pytest.fixture
def cluster():
    """Settings for a cluster of its own (a folder the postgres user can enter when root)."""
    if not glob.glob("/usr/lib/postgresql/*/bin/initdb"):
        pytest.skip("PostgreSQL is not installed: run scripts/system-packages.sh")
    where = Path(tempfile.mkdtemp(prefix="sage-ada-postgres-"))
    os.chmod(where, 0o755)
    env = {**os.environ, "POSTGRES_PORT": str(free_port()), "POSTGRES_DATA": str(where / "pg"),
           "SAGE_ADA_RUN_DIR": str(where / "servers")}
    yield env, where
    subprocess.run(["bash", SCRIPT, "stop"], env=env, capture_output=True, timeout=120)
    shutil.rmtree(where, ignore_errors=True)


def script(env: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", SCRIPT, *args], env=env, capture_output=True, text=True,
                          timeout=180)


def test_the_database_script_says_what_runs_and_never_shows_its_password(cluster):
    env, where = cluster
    password = "b7c1f00d" * 4   # the script keeps a password it finds, so the test knows it
    (where / "postgres.env").write_text(f"POSTGRES_PASSWORD={password}\n")
    # every command the script runs, as bash expands it (-x): what `ps` could show of them
    started = subprocess.run(["bash", "-x", SCRIPT, "start"], env=env, capture_output=True,
                             text=True, timeout=180)
    assert started.returncode == 0, started.stderr[-3000:]
    assert "CREATE ROLE" in started.stderr or "/psql" in started.stderr   # the user was made
    assert password not in started.stderr + started.stdout
    port = env["POSTGRES_PORT"]

    url = script(env, "url", "mlflow")
    assert url.returncode == 0, url.stderr
    assert url.stdout.strip() == f"postgresql://sage_ada:{password}@127.0.0.1:{port}/mlflow"
    import psycopg
    with psycopg.connect(url.stdout.strip()) as db:   # the user and its database exist
        assert db.execute("SELECT current_user").fetchone()[0] == "sage_ada"

    again = script(env, "start")
    assert again.returncode == 0 and "already running with these settings" in again.stdout

    other = script({**env, "POSTGRES_PORT": str(free_port())}, "start")   # the README's trap
    assert other.returncode == 1
    (line,) = other.stderr.strip().splitlines()
    assert f"it has [port {port}" in line and "stop it first" in line, line
    status = script({**env, "POSTGRES_PORT": "1"}, "status")   # the port it listens on
    assert status.returncode == 0 and f"port {port}," in status.stdout, status.stdout

    stopped = script(env, "stop")
    assert (stopped.returncode, stopped.stdout.strip()) == (0, "postgres stopped"), stopped
    assert script(env, "status").returncode == 1
    assert script(env, "stop").stdout.strip() == "postgres is not running"
    gone = script(env, "url", "mlflow")
    assert gone.returncode == 1 and "start it with" in gone.stderr


def test_as_root_a_private_data_folder_is_one_error(cluster):
    """Run as root, PostgreSQL runs as the postgres user: a clone under a private folder (/root)
    used to fail deep in initdb; now it is one line that says what to set."""
    if os.geteuid() != 0:
        pytest.skip("only root hands the server to the postgres user")
    env, where = cluster
    private = where / "private"
    private.mkdir(mode=0o700)
    refused = script({**env, "POSTGRES_DATA": str(private / "pg")}, "start")
    assert refused.returncode == 1
    (line,) = refused.stderr.strip().splitlines()
    assert "cannot reach" in line and "POSTGRES_DATA" in line, line


def test_a_start_refused_for_a_taken_port_then_made_on_another_has_its_user(cluster):
    """The README's way out when Debian's own cluster holds 5432: the first start makes the
    cluster and stops at the taken port; the next, on POSTGRES_PORT=<free>, still makes the
    user the servers log in as (it used to be made only right after initdb)."""
    import socket

    env, _ = cluster
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = {**env, "POSTGRES_PORT": str(taken.getsockname()[1])}
        refused = script(busy, "start")
        assert refused.returncode == 1 and "is taken" in refused.stderr, refused.stderr
    started = script(env, "start")
    assert started.returncode == 0, started.stderr
    url = script(env, "url", "labelstudio")
    assert url.returncode == 0, url.stderr
    import psycopg
    with psycopg.connect(url.stdout.strip()) as db:
        assert db.execute("SELECT current_database()").fetchone()[0] == "labelstudio"
