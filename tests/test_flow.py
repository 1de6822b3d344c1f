"""The flow end to end through Prefect and MLflow, resume after a crash, no label leaks."""
from __future__ import annotations

import json

import pytest
from mlflow.tracking import MlflowClient

from components.oracle import ORACLES
from components.oracle.simulated import SimulatedOracle

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module", autouse=True)
def prefect_api():
    """A real, temporary Prefect API (SQLite) for the flows of this module."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=180):
        yield


class CountingOracle(SimulatedOracle):
    """The simulated oracle, remembering every sample it was ever asked about."""

    log: list[str] = []

    def collect(self, handle, timeout):
        CountingOracle.log.extend(handle["sample_ids"])
        return super().collect(handle, timeout)


def _run(**kwargs):
    from flows.active_da import active_domain_adaptation

    return active_domain_adaptation(params="params.yaml", progress=False, **kwargs)


def test_flow_end_to_end_lineage_in_mlflow_and_prefect(project):
    from flows.active_da import active_domain_adaptation

    state = active_domain_adaptation(params="params.yaml", progress=False, return_state=True)
    result = state.result()
    assert [h["round"] for h in result["history"]] == [0, 1, 2]
    assert [h["n_labels"] for h in result["history"]] == [0, 5, 10]

    client = MlflowClient()
    parent = client.get_run(result["run_id"])
    tags, params = parent.data.tags, parent.data.params
    assert tags["sage_ada.strategy"] == "sage" and tags["sage_ada.seed"] == "0"
    # the data lives outside ./data (the folder data.dvc tracks): its own content's hash
    assert tags["sage_ada.data_hash"].startswith("sha256:") and tags["sage_ada.git_commit"]
    assert tags["sage_ada.cpu_kernels"].startswith("native (")
    assert params["active.budget"] == "5" and params["train.regulariser"] == "sum"
    (used,) = parent.inputs.dataset_inputs                      # the UI's Datasets column
    assert used.dataset.digest == tags["sage_ada.data_hash"] and used.dataset.name.endswith("manifest")
    exp = client.get_experiment(parent.info.experiment_id)      # opens on its training runs
    assert exp.tags["mlflow.experimentKind"] == "custom_model_development"

    exp = client.get_experiment_by_name("tests")
    children = client.search_runs([exp.experiment_id],
                                  f"tags.mlflow.parentRunId = '{result['run_id']}'")
    by_round = {int(r.data.tags["sage_ada.round"]): r for r in children}
    assert sorted(by_round) == [0, 1, 2]
    selected_all = []
    for h in result["history"]:
        child = by_round[h["round"]]
        assert child.data.metrics["accuracy"] == pytest.approx(h["accuracy"])
        assert child.data.metrics["n_labels"] == h["n_labels"]
        assert {"select_seconds", "train_seconds", "accuracy_class_0"} <= set(child.data.metrics)
        assert child.data.tags["sage_ada.model_uri"].startswith("models:/")
        if h["round"]:
            path = client.download_artifacts(child.info.run_id, "selection.json")
            rows = json.load(open(path))
            assert len(rows) == 5 and all(r["label"] in list("0123456789") for r in rows)
            selected_all += [r["sample_id"] for r in rows]
            # the model's guess beside each label, and the share of labels that equal it
            assert all(r["accepted_suggestion"] == (r["label"] == r["suggested"]) for r in rows)
            assert all(0 < r["suggestion_confidence"] <= 1 for r in rows)
            accepted = sum(r["accepted_suggestion"] for r in rows) / len(rows)
            assert child.data.metrics["suggestions_accepted"] == pytest.approx(accepted)
    assert sorted(selected_all) == sorted(result["labelled"])
    assert len(set(selected_all)) == 10

    curve = client.get_metric_history(result["run_id"], "suggestions_accepted")
    assert sorted(m.step for m in curve) == [1, 2]              # a chart per round in MLflow
    versions = client.search_model_versions("name = 'sage-ada-mnist-to-optdigits'")
    latest = max(versions, key=lambda v: int(v.version))
    assert client.get_model_version_by_alias(latest.name, "candidate").version == latest.version
    assert latest.tags["parent_run_id"] == result["run_id"] and latest.tags["round"] == "2"
    assert latest.tags["data_hash"] == tags["sage_ada.data_hash"]
    plot = client.list_artifacts(result["run_id"])
    assert "accuracy_vs_labels.png" in {a.path for a in plot}

    from prefect import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    with get_client(sync_client=True) as prefect:
        runs = prefect.read_task_runs(flow_run_filter=FlowRunFilter(
            id=FlowRunFilterId(any_=[state.state_details.flow_run_id])))
    names = {r.name for r in runs}
    assert {"select round 1", "annotate round 2", "adapt round 2", "evaluate round 1",
            "pretrain round 0", "validate manifest"} <= names


def test_crash_mid_round_then_resume_never_asks_twice(project, monkeypatch):
    from components.run.steps import RunSteps

    CountingOracle.log = []
    monkeypatch.setitem(ORACLES, "simulated", CountingOracle)
    real_adapt = RunSteps.adapt

    def crash_in_round_2(self, net, labelled, round):
        if round == 2:
            raise RuntimeError("simulated crash")
        return real_adapt(self, net, labelled, round)

    monkeypatch.setattr(RunSteps, "adapt", crash_in_round_2)
    with pytest.raises(RuntimeError, match="simulated crash"):
        _run()
    (state_file,) = list((project / ".sage-ada" / "runs").glob("*/state.json"))
    saved = json.loads(state_file.read_text())
    assert saved["rounds_done"] == 1 and saved["pending"]["labels"]  # labels kept
    assert MlflowClient().get_run(saved["run_id"]).info.status == "FAILED"  # not left RUNNING
    asked_before = list(CountingOracle.log)

    monkeypatch.setattr(RunSteps, "adapt", real_adapt)
    result = _run(resume=saved["run_id"])
    assert result["run_id"] == saved["run_id"]
    assert MlflowClient().get_run(saved["run_id"]).info.status == "FINISHED"
    assert [h["round"] for h in result["history"]] == [0, 1, 2]
    assert CountingOracle.log == asked_before          # round 2's labels were not re-asked
    assert len(CountingOracle.log) == len(set(CountingOracle.log)) == 10
    assert sorted(result["labelled"]) == sorted(CountingOracle.log)

    client = MlflowClient()
    exp = client.get_experiment_by_name("tests")
    children = client.search_runs([exp.experiment_id],
                                  f"tags.mlflow.parentRunId = '{result['run_id']}'")
    assert sorted(int(r.data.tags["sage_ada.round"]) for r in children) == [0, 1, 2]


def test_target_train_labels_only_come_from_the_oracle(project, monkeypatch):
    from components.config import load_config
    from components.run.steps import RunSteps

    steps = RunSteps(load_config("params.yaml"), progress=False)
    assert (steps.pool.labels == -1).all()          # withheld when loaded
    CountingOracle.log = []
    monkeypatch.setitem(ORACLES, "simulated", CountingOracle)
    result = _run()
    truth = dict(zip(steps.manifest.sample_id, steps.manifest.label))
    assert set(result["labelled"]) == set(CountingOracle.log)
    assert all(truth[s] == label for s, label in result["labelled"].items())


def test_compare_logs_a_comparison_plot(project):
    from flows.compare import compare

    summary = compare(params="params.yaml", strategies=["sage", "random"], seeds=[0, 1],
                      overrides={"active.rounds": 1}, progress=False)
    assert set(summary["final"]) == {"sage", "random"}
    assert all(len(v) == 2 for v in summary["final"].values())
    client = MlflowClient()
    run = client.get_run(summary["run_id"])
    assert run.data.tags["sage_ada.kind"] == "comparison"
    assert {"comparison.png", "comparison.json"} <= {a.path for a in client.list_artifacts(summary["run_id"])}
    assert len(run.data.params["runs"].split(",")) == 4


def test_a_resume_keeps_the_runs_own_settings_and_refuses_others(project, monkeypatch):
    """Started with flags, resumed with a plain ``--resume <id>``: the run's own settings, not
    params.yaml's. A flag that disagrees is refused, naming the key and both values; a run
    whose MLflow store is gone is one clear error."""
    from components.run.saved import ResumeMismatch

    result = _run(overrides={"active.rounds": 0, "active.budget": 3})
    assert result["registered_version"] is None          # pretraining only: no new version
    again = _run(resume=result["run_id"])                 # params.yaml says rounds 2, budget 5
    assert [h["round"] for h in again["history"]] == [0]
    with pytest.raises(ResumeMismatch, match=r"active.budget: 3 → 5"):
        _run(overrides={"active.budget": 5}, resume=result["run_id"])

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{project / 'elsewhere.db'}")
    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{project / 'elsewhere.db'}")
    with pytest.raises(ResumeMismatch, match="not in the MLflow store"):
        _run(resume=result["run_id"])


def test_a_cache_entry_is_filled_by_one_run_while_the_others_wait(tmp_path, capsys):
    """Two runs that need the same pretraining: the second waits for the first to fill the
    cache (then loads it) instead of computing it too."""
    import threading
    import time

    from components.files import exclusive

    lock, order = tmp_path / "pretrain-x.lock", []

    def second():
        with exclusive(lock):
            order.append("second")

    said = ""
    with exclusive(lock):
        other = threading.Thread(target=second)
        other.start()
        for _ in range(200):                 # until the second says it waits
            said += capsys.readouterr().out
            if "waiting for another run that is preparing pretrain-x" in said:
                break
            time.sleep(0.05)
        order.append("first")
    other.join(timeout=30)
    assert "waiting for another run that is preparing pretrain-x" in said
    assert order == ["first", "second"]
