"""Issue 35: README "For a team", followed as written, gives the stack it describes.

The README's own blocks (marked ``<!-- team-path: ... -->``) run in a fresh clone on the
default ports: the first from nothing to a suspended run that people label, the labelling
script for each round, the second back to stopped servers. Checked on the way: the run waits
suspended and finishes, it is tracked in PostgreSQL (MLflow's and Prefect's databases), no
password appears in ``ps``, in Prefect's flow run records or logs, or in MLflow, and every
server is stopped at the end.
"""
from __future__ import annotations

import glob
import hashlib
import os
import re
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.slow

PORTS = {5432: "PostgreSQL", 5000: "MLflow", 8080: "Label Studio", 4200: "Prefect",
         8092: "the webhook receiver", 8091: "the Prefect worker"}


def readme_block(marker: str) -> str:
    """The fenced block right after ``<!-- team-path: marker ...-->`` in the README."""
    text = (REPO / "README.md").read_text()
    found = re.search(r"<!-- team-path: " + marker + r"\b[^>]*-->\n```(?:bash|python)\n(.*?)```",
                      text, re.S)
    assert found, f"README.md has no block marked team-path: {marker}"
    return found.group(1)


def port_busy(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def fresh_clone(where: Path) -> Path:
    """A clone of this repository as a newcomer has one after the two commands (the
    environment linked, the shipped benchmark built); uncommitted changes come along."""
    clone = where / "clone"
    subprocess.run(["git", "clone", "--quiet", str(REPO), str(clone)], check=True)
    changed = subprocess.run(["git", "ls-files", "-mo", "--exclude-standard"], cwd=REPO,
                             capture_output=True, text=True, check=True).stdout.split()
    for name in changed:
        if (REPO / name).is_file():
            (clone / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, clone / name)
    (clone / ".venv").symlink_to(os.path.realpath(REPO / ".venv"))
    return clone


def shell(script: str, clone: Path, env: dict, timeout: float) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", "-c", script], cwd=clone, env=env, capture_output=True,
                          text=True, timeout=timeout)


def secrets_of(clone: Path, folder: Path) -> dict[str, str]:
    """Every password and token the stack made: none may show anywhere."""
    found = {}
    for path in [clone / ".sage-ada/postgres.env", clone / ".sage-ada/label-studio/credentials.env"]:
        for line in path.read_text().splitlines():
            key, _, value = line.partition("=")
            if key.endswith(("PASSWORD", "TOKEN")) and value:
                found[key] = value
    for name in ("prefect-auth", "mlflow-password", "mlflow-flask-key", "webhook-secret"):
        value = (folder / name).read_text().strip()
        found[name] = value.split(":", 1)[-1]   # the auth string's password part
    assert all(len(v) >= 16 for v in found.values()), "a secret is too short to search for"
    return found


def shown_in_ps(secrets: dict[str, str]) -> list[str]:
    args = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    return [name for name, value in secrets.items() if value in args]


def test_the_readme_team_path_runs_as_written(monkeypatch):
    if not glob.glob("/usr/lib/postgresql/*/bin/initdb"):
        pytest.skip("PostgreSQL is not installed: run scripts/system-packages.sh")
    busy = [f"{port} ({who})" for port, who in PORTS.items() if port_busy(port)]
    assert not busy, (f"the README's team path uses the default ports, and these are taken: "
                      f"{', '.join(busy)}; stop what uses them, or skip with -m 'not slow'")
    start, label, finish = (readme_block(m) for m in ("start", "label", "finish"))
    where = Path(tempfile.mkdtemp(prefix="sage-ada-team-path-"))
    os.chmod(where, 0o755)   # PostgreSQL runs as its own user (as root: postgres) and must enter
    clone = fresh_clone(where)
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PREFECT_API", "MLFLOW_", "LABEL_STUDIO_", "SAGE_ADA_"))}
    env.update(SAGE_ADA_SECRETS=os.environ["SAGE_ADA_SECRETS"], OMP_NUM_THREADS="1")
    saved = where / "shell.env"   # the README's second block runs "in the same shell"
    try:
        built = shell("source .venv/bin/activate && sage-ada data digits && sage-ada data split",
                      clone, env, 900)
        assert built.returncode == 0, built.stdout[-2000:] + built.stderr[-2000:]

        began = time.time()
        out = shell("set -euo pipefail\n" + start + f"\nexport -p > {saved}\n", clone, env, 1500)
        assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
        print(out.stdout[-3000:], f"\nstarted in {time.time() - began:.0f} s")
        flow_run_id = re.search(r"UUID: ([0-9a-f-]{36})", out.stdout).group(1)
        secrets = secrets_of(clone, Path(env["SAGE_ADA_SECRETS"]))
        assert shown_in_ps(secrets) == []
        # what every flow run inherits, the worker's environment, holds no secret but the
        # Prefect login it needs itself; the receiver's adds only what it checks rounds with
        for name, needs in (("prefect-worker-sage-ada", {"prefect-auth"}),
                            ("webhook-receiver", {"prefect-auth", "webhook-secret",
                                                  "LABEL_STUDIO_USER_TOKEN"})):
            pid = (clone / ".sage-ada/servers" / f"{name}.pid").read_text().strip()
            environ = Path(f"/proc/{pid}/environ").read_text(errors="replace")
            assert [k for k, v in secrets.items() if v in environ and k not in needs] == [], name

        exported = dict(re.findall(r'^declare -x (\w+)="(.*)"$', saved.read_text(), re.M))
        for name in ("MLFLOW_TRACKING_URI", "PREFECT_API_URL", "PREFECT_API_AUTH_STRING"):
            monkeypatch.setenv(name, exported[name])
        creds = dict(line.split("=", 1) for line in
                     (clone / ".sage-ada/label-studio/credentials.env").read_text().splitlines())
        monkeypatch.setenv("LABEL_STUDIO_API_KEY", creds["LABEL_STUDIO_USER_TOKEN"])
        checked = follow_the_run(clone, flow_run_id, label, secrets)
        print(checked)

        done = shell(f"source {saved}\nset -euo pipefail\n" + finish, clone, env, 600)
        print(done.stdout[-3000:], done.stderr[-2000:])
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        assert re.search(rf"{checked['run_id']}\s+finished\s+2 of 2", done.stdout), done.stdout
        for server, store in (("mlflow-server", "runs in postgresql://sage_ada:***@"),
                              ("label-studio-8080", "projects in postgresql://sage_ada:***@"),
                              ("prefect-server", "state in postgresql+asyncpg://sage_ada:***@")):
            (line,) = [l for l in done.stdout.splitlines() if l.startswith(f"{server} running")]
            assert store in line, line
        assert not [name for name, v in secrets.items() if v in done.stdout + done.stderr]
        for name in ("prefect-worker-sage-ada", "webhook-receiver", "prefect-server",
                     "label-studio-8080", "mlflow-server", "postgres"):
            assert f"{name} stopped" in done.stdout, done.stdout
        after = shell("infra/team.sh status", clone, env, 120)
        assert after.returncode == 1 and after.stdout.count("not running") == 6, after.stdout
        assert [p for p in PORTS if port_busy(p)] == []
    finally:
        subprocess.run(["bash", "infra/team.sh", "stop"], cwd=clone, env=env,
                       capture_output=True, timeout=300)
        shutil.rmtree(where, ignore_errors=True)


def follow_the_run(clone: Path, flow_run_id: str, label_script: str,
                   secrets: dict[str, str]) -> dict:
    """As the README says: the run suspends for each round, the README's labelling script
    answers it, the receiver resumes it; the run finishes. What the records hold is checked."""
    import pandas as pd
    import psycopg
    from mlflow.tracking import MlflowClient
    from prefect import get_client
    from prefect.client.schemas.filters import (ArtifactFilter, ArtifactFilterFlowRunId,
                                                LogFilter, LogFilterFlowRunId)

    from prefect.settings import PREFECT_API_AUTH_STRING, PREFECT_API_URL, temporary_settings

    from components.secrets import mlflow_login

    manifest = pd.read_csv(clone / "splits/manifest.csv")
    truth = dict(zip(manifest["sha256"], manifest["label"].astype(str)))

    def label_of(image: bytes) -> str:   # a labeller that knows the benchmark's answers
        return truth[hashlib.sha256(image).hexdigest()]

    mlflow_login(os.environ["MLFLOW_TRACKING_URI"])
    tracking = MlflowClient(os.environ["MLFLOW_TRACKING_URI"])
    checked: dict = {}
    with temporary_settings({PREFECT_API_URL: os.environ["PREFECT_API_URL"],
                             PREFECT_API_AUTH_STRING: os.environ["PREFECT_API_AUTH_STRING"]}), \
            get_client(sync_client=True) as prefect:
        seen = None
        for round in (1, 2):
            paused = wait_state(prefect, flow_run_id, lambda s: s.is_paused(), after=seen)
            seen = paused.state.timestamp
            assert paused.state.name == "Suspended", paused.state   # not a pause in a process
            assert shown_in_ps(secrets) == []   # while it waits: the servers, the worker
            if round == 1:
                (parent,) = tracking.search_runs(
                    [e.experiment_id for e in tracking.search_experiments()],
                    f"tags.`sage_ada.flow_run_id` = '{flow_run_id}'")
                checked["run_id"] = parent.info.run_id
            exec(label_script, {"RUN_ID": checked["run_id"], "ROUND": round,
                                "label_of": label_of})
        final = wait_state(prefect, flow_run_id, lambda s: s.is_final(), after=seen)
        assert final.state.is_completed(), final.state
        records = [str(final.parameters), str(final.job_variables), str(final.tags)]
        records += [log.message for log in prefect.read_logs(
            log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id])))]
        artifacts = prefect.read_artifacts(artifact_filter=ArtifactFilter(
            flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id])))
    # one link per round on the flow run's page, a resume does not post it again
    assert sorted(a.key for a in artifacts) == ["annotate-round-1", "annotate-round-2"]
    runs = tracking.search_runs([parent.info.experiment_id])
    records += [str(r.data.params) + str(r.data.tags) for r in runs]
    records += [f"{v.tags} {v.description} {v.source}" for v in tracking.search_model_versions()]
    leaked = [name for name, value in secrets.items() if any(value in r for r in records)]
    assert leaked == [], f"in Prefect's or MLflow's records: {leaked}"
    checked["logs_and_records"] = len(records)
    # tracked in PostgreSQL: MLflow's run and Prefect's flow run are rows of their databases
    for name, query, key, want in (
            ("mlflow", "SELECT status FROM runs WHERE run_uuid = %s", checked["run_id"],
             "FINISHED"),
            ("prefect", "SELECT state_type FROM flow_run WHERE id = %s", flow_run_id,
             "COMPLETED")):
        url = subprocess.run(["bash", "infra/postgres/server.sh", "url", name], cwd=clone,
                             capture_output=True, text=True, check=True).stdout.strip()
        with psycopg.connect(url) as db, db.cursor() as cursor:
            cursor.execute(query, (key,))
            assert str(cursor.fetchone()[0]).split(".")[-1] == want
    from label_studio_sdk import LabelStudio
    ls = LabelStudio(base_url="http://127.0.0.1:8080", api_key=os.environ["LABEL_STUDIO_API_KEY"])
    (project,) = [p for p in ls.projects.list() if p.title.endswith(checked["run_id"])]
    assert project.description.startswith("Round 2 is done: nothing to label")
    checked["rounds"] = 2
    return checked


def wait_state(prefect, flow_run_id: str, done, after=None, timeout: float = 900):
    """The flow run once ``done(state)``, in a state newer than ``after``."""
    deadline = time.time() + timeout
    while True:
        run = prefect.read_flow_run(flow_run_id)
        if done(run.state) and (after is None or run.state.timestamp > after):
            return run
        if (run.state.is_final() and not done(run.state)) or time.time() > deadline:
            raise AssertionError(f"flow run {flow_run_id} is {run.state.name} "
                                 f"({run.state.message})")
        time.sleep(0.5)
