"""infra/compose.yaml: the team's servers as containers, checked as far as this machine can."""
from __future__ import annotations

import re
import shutil
import subprocess

import pytest
import yaml

from tests.conftest import REPO

COMPOSE = REPO / "infra" / "compose.yaml"


def test_compose_runs_every_team_server_on_postgresql():
    spec = yaml.safe_load(COMPOSE.read_text())
    services = spec["services"]
    assert set(services) == {"postgres", "mlflow", "prefect-server", "prefect-worker",
                             "label-studio", "webhooks"}
    assert services["mlflow"]["environment"]["MLFLOW_BACKEND_STORE_URI"].startswith("postgresql://")
    assert "postgresql://" not in services["mlflow"]["command"]      # no password in `ps`
    assert "--serve-artifacts" in services["mlflow"]["command"]   # no client writes its own disk
    assert services["prefect-server"]["environment"]["PREFECT_API_DATABASE_CONNECTION_URL"] \
        .startswith("postgresql+asyncpg://")
    assert services["label-studio"]["environment"]["DJANGO_DB"] == "default"
    databases = re.findall(r"CREATE DATABASE (\w+)", (REPO / "infra/postgres/init.sql").read_text())
    named = re.findall(r"@postgres:5432/(\w+)", COMPOSE.read_text())
    named.append(services["label-studio"]["environment"]["POSTGRE_NAME"])
    assert set(named) == set(databases)
    # every file a service mounts or runs exists in the repository
    assert (REPO / "infra/webhooks/receiver.py").is_file()
    assert (REPO / "infra" / services["mlflow"]["build"]["dockerfile"].split("/")[-1]).is_file()
    # every secret it needs is named in the example env file, and none has a default
    needed = set(re.findall(r"\$\{(\w+)", COMPOSE.read_text()))
    example = (REPO / "infra/team.env.example").read_text()
    assert needed <= set(re.findall(r"^(\w+)=", example, re.M))


@pytest.mark.skipif(not shutil.which("docker") or subprocess.run(
    ["docker", "compose", "version"], capture_output=True).returncode != 0,
    reason="docker compose is not installed here")
def test_docker_compose_accepts_the_file(tmp_path):
    env = tmp_path / "team.env"
    env.write_text("POSTGRES_PASSWORD=p\nLABEL_STUDIO_PASSWORD=p\nLABEL_STUDIO_USER_TOKEN=t\n"
                   "SAGE_ADA_WEBHOOK_SECRET=s\nPREFECT_API_AUTH_STRING=u:p\n"
                   "MLFLOW_ADMIN_PASSWORD=p\nMLFLOW_FLASK_SERVER_SECRET_KEY=k\n")
    out = subprocess.run(["docker", "compose", "-f", str(COMPOSE), "--env-file", str(env),
                          "config", "--quiet"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
