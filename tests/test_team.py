"""A team's deployment with real servers (benchmarks/team_deployment.py runs the scenario):
PostgreSQL under MLflow and Label Studio, a Prefect server and workers, the webhook receiver."""
from __future__ import annotations

import glob
import importlib.util

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.slow

spec = importlib.util.spec_from_file_location("team_deployment",
                                              REPO / "benchmarks" / "team_deployment.py")
team = importlib.util.module_from_spec(spec)
spec.loader.exec_module(team)


def test_a_deployed_run_waits_holding_nothing_and_a_webhook_resumes_it_on_another_worker(
        tmp_path, digits_root, digits_manifest):
    from components.data.split import write_manifest

    if not glob.glob("/usr/lib/postgresql/*/bin/initdb"):
        pytest.skip("PostgreSQL is not installed: run scripts/system-packages.sh")
    manifest = tmp_path / "manifest.csv"
    write_manifest(digits_manifest, manifest)
    m = team.run_scenario(tmp_path / "work", digits_root, manifest, pretrain_steps=30,
                          steps_per_round=10)
    print(m)
    assert m["tracking_store"] == "postgresql"
    # while people label, none of the flow's processes exists: no memory, no GPU held
    assert m["held_while_waiting"]["processes"] == 0, m
    assert m["held_while_waiting"]["rss_mb"] == 0
    # worker B, in a clone that had never seen the run, continued it from MLflow's artifacts
    assert m["clone_b_had_the_run_before"] is False
    assert m["finished"] == "Completed" and m["finished_in_clone_b"]
    # the webhook brought it back (the receiver's fallback sweep is set to 10 minutes here)
    assert m["seconds_from_last_annotation_to_running"] is not None
    assert m["seconds_from_last_annotation_to_running"] < 60, m
    # the same lineage and the same numbers as the same settings run in one process
    assert m["deployed"] == m["embedded"], m
    assert m["deployed"]["n_labels"] == [0, 5]


def test_a_worker_clone_pulls_the_data_version_from_the_team_remote(tmp_path):
    """One clone builds the data and pushes it to the team's DVC remote (infra/dvc/remote.sh);
    a worker's fresh clone pulls the same bytes; an empty remote is one clear error."""
    import hashlib
    import os
    import subprocess

    def clone(name):
        subprocess.run(["git", "clone", "--quiet", str(REPO), str(tmp_path / name)], check=True)
        return tmp_path / name

    def remote(action, where, store):
        return subprocess.run(["bash", str(REPO / "infra/dvc/remote.sh"), action], text=True,
                              capture_output=True, timeout=600,
                              env={**os.environ, "SAGE_ADA_CLONE": str(where),
                                   "SAGE_ADA_DVC_REMOTE": str(store)})

    def digest(folder):
        files = sorted(p for p in folder.rglob("*") if p.is_file())
        return len(files), hashlib.sha256(b"".join(
            str(p.relative_to(folder)).encode() + p.read_bytes() for p in files)).hexdigest()

    first, worker = clone("first"), clone("worker")
    built = subprocess.run(["sage-ada", "data", "digits"], cwd=first, capture_output=True,
                           text=True, timeout=600)
    assert built.returncode == 0, built.stderr
    empty = remote("pull", worker, tmp_path / "empty")
    assert empty.returncode == 1 and "infra/dvc/remote.sh push" in empty.stderr
    pushed = remote("push", first, tmp_path / "team")
    assert pushed.returncode == 0, pushed.stderr
    pulled = remote("pull", worker, tmp_path / "team")
    assert pulled.returncode == 0, pulled.stderr
    assert digest(worker / "data") == digest(first / "data")
    assert digest(worker / "data")[0] > 6000
