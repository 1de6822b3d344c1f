"""``tracking.keep_round_models``: a run's rounds, finished the way the pipeline finishes them,
leave the last k rounds' models and checkpoints in a real MLflow store, plus every registered
version, and the bytes go from disk (issue 31, part 5)."""
from __future__ import annotations

import os
from pathlib import Path

import mlflow
import numpy as np
import pytest
import torch

from components.config import Config
from components.models.checkpoints import save_checkpoint
from components.run.active_run import ActiveRun
from components.run.saved import RunState, SavedRuns
from components.tracking.artifact_mirror import ARTIFACT_DIR, ArtifactMirror
from components.tracking.lineage import Tracker

REGISTERED = "sage-ada-a-to-b"


class Steps:
    """What ``ActiveRun._finish_round`` asks of the run's steps, for a small network."""

    def evaluate(self, net):
        return {"accuracy": 0.5, "per_class": {"0": 0.5}}

    def save(self, net, path):
        save_checkpoint(net, path)

    def example_input(self, net):
        return np.zeros((2, 64), dtype=np.float32)


def store_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def finish_rounds(tmp_path: Path, keep, *, rounds: int = 5, register_round: int | None = None,
                  name: str = "run", uri: str | None = None):
    """Rounds 0..``rounds`` of one pipeline run, each finished by ``ActiveRun`` (its model
    logged, its checkpoint kept in the run's artifacts as through a tracking server, then the
    retention pass). ``register_round``: that round's model is registered (as ``finish`` does)
    right after it. The store: ``uri``, else SQLite and artifacts in ``tmp_path/mlflow``, the
    project's default. Returns (tracker, parent run id, store bytes after each round)."""
    (tmp_path / "mlflow").mkdir(exist_ok=True)
    uri = uri or f"sqlite:///{tmp_path / 'mlflow' / 'mlflow.db'}"
    os.environ["MLFLOW_TRACKING_URI"] = uri
    mlflow.set_tracking_uri(uri)  # register_model reads the process-wide URI
    torch.manual_seed(0)
    tracker = Tracker("task", root=tmp_path)
    cfg = Config().with_overrides({"tracking.keep_round_models": keep})
    parent = tracker.start_parent(params={}, tags={}, run_name=name)
    store = SavedRuns(tmp_path / "runs", mirror=ArtifactMirror(tracker.client))
    run = ActiveRun(cfg, Steps(), tracker, store, oracle=None, state=RunState(run_id=parent))
    run.net = torch.nn.Sequential(torch.nn.Linear(64, 256), torch.nn.ReLU(),
                                  torch.nn.Linear(256, 10))
    sizes = []
    for r in range(rounds + 1):
        run._finish_round(r, labelled={}, selection=[], select_seconds=0.0)
        if r == register_round:
            uri = tracker.round_runs(parent)[r].data.tags["sage_ada.model_uri"]
            version = mlflow.register_model(uri, REGISTERED, tags={"round": str(r)})
            tracker.set_aliases(REGISTERED, version)
        sizes.append(store_bytes(tmp_path / "mlflow"))
    return tracker, parent, sizes


def alive(tracker, parent) -> dict[int, Path]:
    """Rounds whose model the store still has: round → the model's artifact folder."""
    from urllib.parse import unquote, urlparse

    rounds = tracker.round_runs(parent)
    by_run = {r.info.run_id: k for k, r in rounds.items()}
    found = tracker.client.search_logged_models(
        [tracker.experiment_id],
        filter_string="source_run_id IN ({})".format(", ".join(f"'{i}'" for i in by_run)))
    return {by_run[m.source_run_id]: Path(unquote(urlparse(m.artifact_location).path))
            for m in found}


def checkpoints(tracker, parent) -> set[str]:
    return {a.path.rsplit("/", 1)[-1] for a in tracker.client.list_artifacts(parent, ARTIFACT_DIR)
            if a.path.endswith(".pt")}


@pytest.fixture
def local_store(tmp_path, monkeypatch):
    """A folder for stores; the tracking URI a test sets is undone after it."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "")
    yield tmp_path
    mlflow.set_tracking_uri(None)


def test_keep_two_leaves_the_last_two_rounds_and_the_registered_one(local_store):
    tracker, parent, sizes = finish_rounds(local_store, 2, register_round=2)

    models = alive(tracker, parent)
    assert sorted(models) == [2, 4, 5]               # last two, and the registered round 2
    assert all((folder / "data" / "model.pt2").is_file() for folder in models.values())
    left = list((local_store / "mlflow" / "artifacts" / "models").glob("*/artifacts"))
    assert len(left) == 3                            # the files of rounds 0, 1 and 3 are gone
    assert checkpoints(tracker, parent) == {"checkpoint-r4.pt", "checkpoint-r5.pt"}
    # the registered version still loads, with its aliases
    version = tracker.client.get_model_version_by_alias(REGISTERED, "champion")
    assert version.tags["round"] == "2"
    net = mlflow.pytorch.load_model(f"models:/{REGISTERED}/{version.version}")
    assert net(torch.zeros(2, 64)).shape == (2, 10)
    # a deleted round's model is marked deleted (metadata until `mlflow gc`), not live
    round_1 = tracker.round_runs(parent)[1].data.tags["sage_ada.model_uri"].split("/")[-1]
    with pytest.raises(mlflow.exceptions.MlflowException):
        tracker.client.get_logged_model(round_1)

    # against the same rounds kept whole (a model and a checkpoint more each round), the store
    # stops growing once two rounds are kept, except by the registered model round 4 keeps
    everything = local_store / "all"
    everything.mkdir()
    _, _, full = finish_rounds(everything, None, name="all")
    per_round = full[1] - full[0]
    assert all(full[r + 1] - full[r] > per_round * 0.9 for r in range(5))
    assert all(sizes[r + 1] - sizes[r] < per_round * 0.1 for r in (1, 2, 4))
    assert full[-1] - sizes[-1] > 3 * per_round      # 3 models and 4 checkpoints fewer


def test_keeping_all_is_todays_behaviour(local_store):
    tracker, parent, _ = finish_rounds(local_store, 0, rounds=3)
    assert sorted(alive(tracker, parent)) == [0, 1, 2, 3]
    assert checkpoints(tracker, parent) == {f"checkpoint-r{r}.pt" for r in range(4)}


def test_the_setting_is_a_count():
    from components.config import ConfigError

    assert Config().tracking.keep_round_models is None
    with pytest.raises(ConfigError, match="tracking.keep_round_models = -1"):
        Config().with_overrides({"tracking.keep_round_models": -1})


@pytest.mark.slow
def test_through_a_tracking_server_the_bytes_leave_the_servers_folder(tmp_path, monkeypatch,
                                                                     mlflow_server):
    """Proxied artifacts (``mlflow-artifacts:/``): removed through the server's own API."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server.uri)
    try:
        tracker, parent, _ = finish_rounds(tmp_path, 1, rounds=3, register_round=1,
                                           uri=mlflow_server.uri)
    finally:
        mlflow.set_tracking_uri(None)
    rounds = tracker.round_runs(parent)
    found = {m.source_run_id for m in tracker.client.search_logged_models(
        [tracker.experiment_id])}
    assert {k for k, r in rounds.items() if r.info.run_id in found} == {1, 3}
    served = tmp_path / "store" / "artifacts"
    assert len(list(served.rglob("model.pt2"))) == 2
    assert {p.name for p in served.rglob("checkpoint-r*.pt")} == {"checkpoint-r3.pt"}
