"""Issue 32: the team's MLflow server asks who you are. Probed against the server that
infra/mlflow/server.sh starts (its basic-auth app); Prefect's login is probed in
test_prefect_server.py, the webhook receiver's and Label Studio's in test_label_studio.py."""
from __future__ import annotations

import os
import subprocess
from unittest import mock

import httpx
import pytest

from tests.conftest import REPO, report_probes

pytestmark = pytest.mark.slow


def test_the_tracking_server_lets_in_only_those_with_an_account(mlflow_server, team_secrets):
    from components.run.preflight import ServerDown, check_tracking_server

    search = f"{mlflow_server.uri}/api/2.0/mlflow/experiments/search?max_results=5"
    admin = (os.environ["MLFLOW_TRACKING_USERNAME"], os.environ["MLFLOW_TRACKING_PASSWORD"])
    password_file = team_secrets / "mlflow-password"
    assert oct(password_file.stat().st_mode)[-3:] == "600"
    probes = []

    def probe(name, expected, answer):
        probes.append({"probe": name, "expected": expected, "answer": answer})
        assert answer == expected, (name, answer)

    probe("MLflow /health without a login", 200,
          httpx.get(f"{mlflow_server.uri}/health").status_code)
    for what, who in (("without a login", None), ("with a wrong password", ("sage-ada", "guess")),
                      ("as an unknown user", ("nobody", admin[1]))):
        probe(f"MLflow API: search experiments {what}", 401,
              httpx.get(search, auth=who).status_code)
        probe(f"MLflow API: move a model's champion alias {what}", 401, httpx.post(
            f"{mlflow_server.uri}/api/2.0/mlflow/registered-models/alias",
            json={"name": "m", "alias": "champion", "version": "1"}, auth=who).status_code)
        probe(f"MLflow artifacts: download {what}", 401, httpx.get(
            f"{mlflow_server.uri}/api/2.0/mlflow-artifacts/artifacts/x", auth=who).status_code)
    probe("MLflow UI without a login", 401, httpx.get(f"{mlflow_server.uri}/").status_code)
    probe("MLflow API: search experiments as the admin", 200,
          httpx.get(search, auth=admin).status_code)

    # an account per person: made by the script, password in a mode-600 file, never printed
    script = str(REPO / "infra/mlflow/add-user.sh")
    made = subprocess.run(["bash", script, "alice"], env=mlflow_server.env, capture_output=True,
                          text=True, timeout=120)
    assert made.returncode == 0, made.stderr
    alice_file = team_secrets / "mlflow-users" / "alice"
    alice = ("alice", alice_file.read_text().strip())
    assert oct(alice_file.stat().st_mode)[-3:] == "600"
    assert alice[1] not in made.stdout + made.stderr and admin[1] not in made.stdout + made.stderr
    again = subprocess.run(["bash", script, "alice"], env=mlflow_server.env, capture_output=True,
                           text=True, timeout=120)
    assert again.returncode == 0 and "already" in again.stdout
    assert alice_file.read_text().strip() == alice[1]                       # kept as it was
    probe("MLflow API: search experiments with a person's account", 200,
          httpx.get(search, auth=alice).status_code)

    # what one person made, another may read and log to, but not delete (default EDIT)
    created = httpx.post(f"{mlflow_server.uri}/api/2.0/mlflow/experiments/create",
                         json={"name": "admins-experiment"}, auth=admin)
    assert created.status_code == 200, created.text
    experiment = created.json()["experiment_id"]
    get = f"{mlflow_server.uri}/api/2.0/mlflow/experiments/get?experiment_id={experiment}"
    probe("MLflow API: a person reads another's experiment", 200,
          httpx.get(get, auth=alice).status_code)
    probe("MLflow API: a person logs a run in another's experiment", 200, httpx.post(
        f"{mlflow_server.uri}/api/2.0/mlflow/runs/create",
        json={"experiment_id": experiment}, auth=alice).status_code)
    probe("MLflow API: a person deletes another's experiment", 403, httpx.post(
        f"{mlflow_server.uri}/api/2.0/mlflow/experiments/delete",
        json={"experiment_id": experiment}, auth=alice).status_code)
    report_probes("mlflow", probes)

    # a run started without a login is one line that says what to set, before any work
    with mock.patch.dict(os.environ, {"MLFLOW_TRACKING_URI": mlflow_server.uri,
                                      "SAGE_ADA_SECRETS": str(team_secrets / "none")}):
        for name in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
            os.environ.pop(name)
        with pytest.raises(ServerDown, match=r"refused this process \(it asks for a login\).*"
                                             r"MLFLOW_TRACKING_PASSWORD.*add-user.sh"):
            check_tracking_server()
        os.environ.update(MLFLOW_TRACKING_USERNAME="alice", MLFLOW_TRACKING_PASSWORD="guess")
        with pytest.raises(ServerDown, match=r"\(a wrong login\)"):
            check_tracking_server()
        os.environ["MLFLOW_TRACKING_PASSWORD"] = alice[1]
        check_tracking_server()                                              # let in
    # on the server's machine, with nothing set, this project's clients log in as its admin
    with mock.patch.dict(os.environ, {"MLFLOW_TRACKING_URI": mlflow_server.uri}):
        for name in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
            os.environ.pop(name)
        check_tracking_server()


def test_a_running_server_asked_for_another_store_says_so(mlflow_server):
    """Issue 35 (in part): the README's second `server.sh start` with another store used to say
    "already running" and exit 0, leaving runs on the first store. Now it is one line naming
    both, with no password in it; and the store never goes on the server's command line."""
    from pathlib import Path

    import psutil

    server = str(REPO / "infra/mlflow/server.sh")
    pid = int((Path(mlflow_server.env["SAGE_ADA_RUN_DIR"]) / "mlflow-server.pid").read_text())
    command = " ".join(psutil.Process(pid).cmdline())
    assert "--backend-store-uri" not in command and "mlflow.db" not in command   # `ps` shows it
    other = {**mlflow_server.env, "MLFLOW_BACKEND_STORE_URI": "postgresql://u:hunter2@db:5432/x"}
    refused = subprocess.run(["bash", server, "start"], env=other, capture_output=True,
                             text=True, timeout=120)
    assert refused.returncode == 1
    (line,) = refused.stderr.strip().splitlines()
    assert "running" in line and "other settings" in line and "stop it first" in line
    assert "postgresql://u:***@db:5432/x" in line and "hunter2" not in line
    same = subprocess.run(["bash", server, "start"], env=mlflow_server.env, capture_output=True,
                          text=True, timeout=120)
    assert same.returncode == 0 and "already running" in same.stdout
