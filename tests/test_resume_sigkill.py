"""Kill a real `sage-ada run` with SIGKILL in the middle of a round, then resume it."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import yaml
from mlflow.tracking import MlflowClient

pytestmark = pytest.mark.slow


def _state(project):
    files = list((project / ".sage-ada" / "runs").glob("*/state.json"))
    return json.loads(files[0].read_text()) if files else None


def test_sigkill_mid_round_then_resume(project):
    raw = yaml.safe_load((project / "params.yaml").read_text())
    raw["train"]["steps_per_round"] = 150   # a few seconds per round: time to kill inside one
    raw["active"]["rounds"] = 3
    (project / "params.yaml").write_text(yaml.safe_dump(raw))
    cli = [sys.executable, "-m", "flows.cli", "run", "--no-progress"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}

    proc = subprocess.Popen(cli, cwd=project, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.time() + 600   # generous: the suite's workers share the cores
    state = None
    while time.time() < deadline:   # wait until round 2 is selected and annotated
        state = _state(project)
        if state and state["pending"] and state["pending"]["round"] == 2 \
                and state["pending"]["labels"]:
            break
        assert proc.poll() is None, proc.stdout.read().decode()[-3000:]
        time.sleep(0.05)
    else:
        pytest.fail("the run never reached round 2")
    # The whole process group, as a crash would: the run and its Prefect API server, which
    # would otherwise outlive the test.
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    killed = _state(project)
    assert killed["rounds_done"] == 1 and killed["pending"]["round"] == 2
    client = MlflowClient()
    assert client.get_run(killed["run_id"]).info.status == "RUNNING"   # nobody told MLflow
    runs = [sys.executable, "-m", "flows.cli", "runs"]
    listed = subprocess.run(runs, cwd=project, env=env, capture_output=True, text=True,
                            timeout=120).stdout
    (line,) = [l for l in listed.splitlines() if killed["run_id"] in l]
    assert "stopped" in line and "1 of 3" in line
    assert f"sage-ada run --resume {killed['run_id']}" in line
    assert client.get_run(killed["run_id"]).info.status == "KILLED"

    out = subprocess.run(cli + ["--resume", killed["run_id"]], cwd=project, env=env,
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    final = _state(project)
    assert final["rounds_done"] == 3 and final["pending"] is None
    assert len(final["labelled"]) == 15
    # the labels collected before the kill were kept, not asked again
    assert set(killed["pending"]["labels"]) <= set(final["labelled"])
    assert set(killed["labelled"]) <= set(final["labelled"])
    assert [h["round"] for h in final["history"]] == [0, 1, 2, 3]
    listed = subprocess.run(runs, cwd=project, env=env, capture_output=True, text=True,
                            timeout=120).stdout
    (line,) = [l for l in listed.splitlines() if killed["run_id"] in l]
    assert "finished" in line and "3 of 3" in line and "--resume" not in line
    assert client.get_run(killed["run_id"]).info.status == "FINISHED"

    exp = client.get_experiment_by_name("tests")
    children = client.search_runs([exp.experiment_id],
                                  f"tags.mlflow.parentRunId = '{final['run_id']}'")
    assert sorted(int(r.data.tags["sage_ada.round"]) for r in children) == [0, 1, 2, 3]
