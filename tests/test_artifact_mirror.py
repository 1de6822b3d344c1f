"""A run's state kept in its MLflow artifacts: another clone continues it, and never from a stale
copy of its own."""
from __future__ import annotations

import pytest
from mlflow.tracking import MlflowClient

from components.run.saved import PendingRound, RunState, SavedRuns
from components.tracking.artifact_mirror import FLOW_RUN_TAG, ArtifactMirror, shares_runs


@pytest.fixture
def store_run(tmp_path):
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = client.create_experiment("x", artifact_location=(tmp_path / "art").as_uri())
    run = client.create_run(experiment, tags={FLOW_RUN_TAG: "flow-1"})
    return ArtifactMirror(client), run.info.run_id


def test_another_clone_loads_the_newest_state_settings_and_checkpoint(tmp_path, store_run):
    files, run_id = store_run
    a = SavedRuns(tmp_path / "a", mirror=files)
    b = SavedRuns(tmp_path / "b", mirror=files)
    a.save_settings(run_id, {"active": {"rounds": 3}})
    a.save(RunState(run_id=run_id, rounds_done=0, flow_run_id="flow-1"))
    checkpoint = a.dir(run_id) / "checkpoint-r0.pt"
    checkpoint.write_bytes(b"weights of round 0")
    a.keep(run_id, checkpoint)

    assert b.find_by_flow_run("flow-1").rounds_done == 0          # b never saw the run
    assert b.settings(run_id) == {"active": {"rounds": 3}}
    assert b.file(run_id, "checkpoint-r0.pt").read_bytes() == b"weights of round 0"
    assert b.find_by_flow_run("flow-2") is None

    b.save(RunState(run_id=run_id, rounds_done=1, labelled={"s": "3"},
                    pending=PendingRound(2, ["t"], [0.5], 0.1, asked_at=12.0)))
    again = a.load(run_id)                 # a's own copy says round 0: the mirror's wins
    assert again.rounds_done == 1 and again.labelled == {"s": "3"}
    assert again.pending.asked_at == 12.0


def test_without_a_mirror_a_clone_only_knows_its_own_runs(tmp_path, store_run):
    files, run_id = store_run
    SavedRuns(tmp_path / "a", mirror=files).save(RunState(run_id=run_id, flow_run_id="flow-1"))
    alone = SavedRuns(tmp_path / "b", mirror=None)
    assert alone.find_by_flow_run("flow-1") is None
    with pytest.raises(FileNotFoundError, match="no saved state"):
        alone.load(run_id)


def test_runs_are_shared_through_a_tracking_server_only():
    assert shares_runs("http://mlflow:5000") and shares_runs("https://x")
    assert not shares_runs("sqlite:///mlflow/mlflow.db") and not shares_runs("")


def test_a_state_saved_before_the_vocabulary_change_still_loads(tmp_path):
    """Runs saved (on disk or in a team's MLflow) before ``config_hash`` became
    ``settings_hash`` stay listable and resumable."""
    import json

    from components.run.saved import SavedRuns

    folder = tmp_path / "runs" / "old"
    folder.mkdir(parents=True)
    (folder / "state.json").write_text(json.dumps({
        "run_id": "old", "rounds_done": 2, "labelled": {"t/1": "3"}, "history": [],
        "pending": None, "flow_run_id": None, "config_hash": "abc123"}))
    state = SavedRuns(tmp_path / "runs", mirror=None).load("old")
    assert state.settings_hash == "abc123" and state.labelled == {"t/1": "3"}
