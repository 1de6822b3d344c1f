"""`dvc repro` on a fresh clone: the data hash, the split, and the committed results."""
from __future__ import annotations

import json
import os
import subprocess

import pytest
import yaml

from tests.conftest import REPO

pytestmark = pytest.mark.slow


def sh(*cmd, cwd):
    out = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=900,
                         env={**os.environ, "MLFLOW_TRACKING_URI": ""})
    assert out.returncode == 0, f"{' '.join(cmd)} failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
    return out.stdout + out.stderr


@pytest.fixture(scope="module")
def clone(tmp_path_factory):
    path = tmp_path_factory.mktemp("clone") / "repo"
    sh("git", "clone", "--quiet", str(REPO), str(path), cwd=REPO)
    return path


def test_fresh_clone_rebuilds_the_tracked_data_and_reproduces_results(clone):
    committed = json.loads((clone / "results" / "metrics.json").read_text())
    sh("sage-ada", "data", "digits", cwd=clone)
    assert "up to date" in sh("dvc", "status", "data.dvc", cwd=clone)   # same hash as data.dvc
    sh("dvc", "repro", cwd=clone)
    assert (clone / "splits" / "manifest.csv").exists()
    assert "up to date" in sh("dvc", "repro", cwd=clone)                 # nothing left to do
    assert "up to date" in sh("dvc", "status", cwd=clone)
    # rerunning the active stage (the whole flow) gives the committed numbers again
    sh("dvc", "repro", "--force", "--single-item", "active", cwd=clone)
    assert json.loads((clone / "results" / "metrics.json").read_text()) == committed
    assert "accuracy_per_round" in sh("dvc", "metrics", "show", cwd=clone)


def test_changing_a_parameter_reruns_only_what_depends_on_it(clone):
    params = yaml.safe_load((clone / "params.yaml").read_text())
    params["active"]["budget"] = 7
    (clone / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    status = sh("dvc", "status", cwd=clone)
    assert "active:" in status and "split:" not in status
