"""A run's state, settings and checkpoints kept in its MLflow run's artifacts too.

Through a tracking server that serves artifacts (``infra/mlflow/server.sh``), any worker that
reaches the server continues a run: a deployment resumed after an annotation wait may start on
another machine or in another clone than the one that began it. There the copy under
``.sage-ada/runs/`` is missing, or another worker's stale one, so the state is read from here.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Optional

from components.files import replacing

ARTIFACT_DIR = "sage_ada_state"
FLOW_RUN_TAG = "sage_ada.flow_run_id"


def shares_runs(uri: Optional[str] = None) -> bool:
    """Runs are shared where the tracking URI is a server (workers elsewhere reach it)."""
    uri = uri if uri is not None else os.environ.get("MLFLOW_TRACKING_URI", "")
    return uri.startswith(("http://", "https://"))


class ArtifactMirror:
    """Files of a run under its ``sage_ada_state/`` artifacts (MLflow client API)."""

    def __init__(self, client=None):
        self._client = client

    @property
    def client(self):
        if self._client is None:
            from mlflow.tracking import MlflowClient

            from components.tracking.lineage import configure_mlflow

            self._client = MlflowClient(configure_mlflow())
        return self._client

    def put(self, run_id: str, path: Path) -> None:
        self.client.log_artifact(run_id, str(path), ARTIFACT_DIR)

    def get(self, run_id: str, name: str, dest: Path) -> bool:
        """Download ``name`` to ``dest`` (replaced whole); False when the run has no such file."""
        from mlflow.exceptions import MlflowException

        dest.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=dest.parent) as tmp:
            try:
                got = self.client.download_artifacts(run_id, f"{ARTIFACT_DIR}/{name}", tmp)
            except (MlflowException, OSError):
                return False
            if not Path(got).is_file():
                return False
            with replacing(dest) as part:
                shutil.move(got, part)
        return True

    def run_of_flow_run(self, flow_run_id: str) -> Optional[str]:
        """The MLflow run a Prefect flow run works on (its tag), in any experiment."""
        experiments = [e.experiment_id for e in self.client.search_experiments()]
        if not experiments:
            return None
        found = self.client.search_runs(
            experiments, filter_string=f"tags.`{FLOW_RUN_TAG}` = '{flow_run_id}'", max_results=1)
        return found[0].info.run_id if found else None
