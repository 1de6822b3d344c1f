"""One registered model per task, the stated rule for its ``champion`` alias, and experiments
whose artifacts a shared server can reach."""
from __future__ import annotations

import pytest


def test_champion_moves_only_to_a_version_at_least_as_accurate_on_the_same_data(tmp_path,
                                                                                monkeypatch):
    import mlflow

    from components.tracking.lineage import Tracker

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    mlflow.set_tracking_uri(uri)
    tracker = Tracker("task", root=tmp_path)
    name = "sage-ada-a-to-b"
    tracker.client.create_registered_model(name)

    def register(accuracy: float, data: str) -> str:
        version = tracker.client.create_model_version(
            name, source=str(tmp_path), tags={"accuracy": f"{accuracy:.6f}", "data_hash": data})
        tracker.set_aliases(name, version)
        return version.version

    def alias(which: str) -> str:
        return tracker.client.get_model_version_by_alias(name, which).version

    first = register(0.80, "A")
    assert alias("champion") == alias("candidate") == first          # none before
    worse = register(0.75, "A")
    assert alias("candidate") == worse and alias("champion") == first
    tie = register(0.80, "A")
    assert alias("champion") == tie                                   # at least as accurate
    other_data = register(0.60, "B")
    assert alias("champion") == other_data                            # not comparable: newest


def test_each_task_registers_under_its_own_name():
    from components.config import Config

    cfg = Config().with_overrides({"data.source": "art", "data.target": "clipart"})
    assert cfg.registered_model_name == "sage-ada-art-to-clipart"
    fixed = cfg.with_overrides({"tracking.registered_model": "office"})
    assert fixed.registered_model_name == "office"


@pytest.mark.slow
def test_an_experiment_pinned_to_another_machines_folder_is_refused_through_a_server(
        tmp_path, monkeypatch, mlflow_server):
    """Made on a local store elsewhere, an experiment keeps a file:// artifact location; through
    a tracking server this machine's client would write the run's models into that path on its
    own disk. The run stops with one message instead (the server's own machine may go on)."""
    import mlflow

    from components.config import ConfigError
    from components.tracking.lineage import Tracker

    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server.uri)
    mlflow.set_tracking_uri(mlflow_server.uri)
    client = mlflow.MlflowClient(mlflow_server.uri)
    client.create_experiment("elsewhere", artifact_location="file:///nowhere/artifacts")
    here = tmp_path / "artifacts"
    here.mkdir()
    client.create_experiment("this machine", artifact_location=here.as_uri())
    with pytest.raises(ConfigError, match="experiment 'elsewhere' keeps its artifacts in "
                                          "/nowhere/artifacts, a folder of the machine"):
        Tracker("elsewhere")
    assert Tracker("this machine").experiment_id
    assert Tracker("made by the server").experiment_id   # proxied: mlflow-artifacts:/
