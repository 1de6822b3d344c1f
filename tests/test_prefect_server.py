"""A Prefect server from infra/, a cron deployment served by `sage-ada serve`, and a run of it."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from tests.conftest import REPO, free_port

pytestmark = pytest.mark.slow


def test_cron_deployment_runs_unattended(project, tmp_path_factory):
    port = free_port()
    home = tmp_path_factory.mktemp("prefect")
    env = {**os.environ, "PREFECT_PORT": str(port), "PREFECT_HOME": str(home),
           "SAGE_ADA_RUN_DIR": str(home / "run"), "PYTHONPATH": os.pathsep.join(sys.path)}
    script = str(REPO / "infra/prefect/server.sh")
    subprocess.run(["bash", script, "start"], check=True, env=env, timeout=300)
    api = f"http://127.0.0.1:{port}/api"
    env["PREFECT_API_URL"] = api
    serve = subprocess.Popen([sys.executable, "-m", "flows.cli", "serve", "--name", "nightly",
                              "--cron", "0 3 * * *"], cwd=project, env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        from prefect.settings import PREFECT_API_URL, temporary_settings

        with temporary_settings({PREFECT_API_URL: api}):
            from prefect import get_client

            with get_client(sync_client=True) as client:
                deadline = time.time() + 180
                while True:
                    try:
                        dep = client.read_deployment_by_name("active-domain-adaptation/nightly")
                        break
                    except Exception:
                        assert serve.poll() is None, serve.stdout.read().decode()[-3000:]
                        assert time.time() < deadline, "the deployment never appeared"
                        time.sleep(1)
                crons = [s.schedule.cron for s in dep.schedules]
                assert crons == ["0 3 * * *"]
                run = client.create_flow_run_from_deployment(dep.id)   # as the scheduler would
                deadline = time.time() + 420
                while True:
                    state = client.read_flow_run(run.id).state
                    if state.is_final():
                        break
                    assert time.time() < deadline, f"run still {state.name}"
                    time.sleep(2)
                assert state.is_completed(), state.message
    finally:
        os.killpg(serve.pid, signal.SIGTERM)
        serve.wait(timeout=30)
        subprocess.run(["bash", script, "stop"], env=env, timeout=60)
    assert list((project / ".sage-ada" / "runs").glob("*/state.json"))
