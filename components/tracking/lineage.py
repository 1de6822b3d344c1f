"""MLflow lineage for one pipeline run.

* tracking URI: ``MLFLOW_TRACKING_URI`` if set, else SQLite under ``mlflow/`` with artifacts
  beside it (``mlflow/artifacts``);
* one experiment per task (``mnist→optdigits``); a parent run per pipeline run with every
  parameter, the data hash, git commit, strategy and seed; a child run per round with the
  accuracy (overall and per class), labels so far, selection and training time, the selected
  samples with scores and oracle labels, and the model; the final model is registered with its
  lineage in the version tags.
"""
from __future__ import annotations

import contextlib
import csv
import json
import os
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any, Optional

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")  # before mlflow is imported
# A tracking server that stopped answering: MLflow's defaults retry each call 7 times with
# doubling waits (minutes per call, times the task's retries); three quick tries ride out a
# restart and then say so (set the variables to wait longer).
os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "3")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")

import matplotlib.pyplot as plt  # noqa: E402
import mlflow  # noqa: E402
from mlflow.entities import Metric, Param  # noqa: E402
from mlflow.tracking import MlflowClient  # noqa: E402

from components.files import exclusive  # noqa: E402
from components.tracking.plots import accuracy_curve  # noqa: E402

ROUND_TAG = "sage_ada.round"
KIND_TAG = "sage_ada.kind"
STATE_TAG = "sage_ada.state_dir"


def tracking_server_lost(err: BaseException) -> bool:
    """The error, or one it was raised from, is the MLflow tracking server not answering
    (a refused or dropped connection to the tracking URI, after MLflow's own retries)."""
    uri = mlflow.get_tracking_uri().rstrip("/")
    if not uri.startswith(("http://", "https://")):
        return False
    seen = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        text = str(err)
        if uri in text and any(sign in text for sign in (
                "Max retries exceeded", "Connection refused", "Connection aborted")):
            return True
        err = err.__cause__ or err.__context__
    return False


def default_tracking_uri(root: Path | None = None) -> str:
    root = Path(root or Path.cwd()) / "mlflow"
    root.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{(root / 'mlflow.db').resolve()}"


def configure_mlflow(root: Path | None = None) -> str:
    """Point MLflow at the configured store; returns the tracking URI in use."""
    uri = os.environ.get("MLFLOW_TRACKING_URI") or default_tracking_uri(root)
    if uri.startswith(("http://", "https://")):   # the server asks who you are (issue 32)
        from components.secrets import mlflow_login

        mlflow_login(uri)
    mlflow.set_tracking_uri(uri)
    return uri


def git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return out + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def flatten(prefix: str, value: Any) -> dict[str, str]:
    if isinstance(value, dict):
        out: dict[str, str] = {}
        for key, sub in value.items():
            out.update(flatten(f"{prefix}.{key}" if prefix else key, sub))
        return out
    return {prefix: str(value)}


EXPERIMENT_KIND = "mlflow.experimentKind"

# Which pages the MLflow UI (3.17) shows, its GenAI ones (overview, traces, tokens, cost;
# runs called "Evaluations") or its machine-learning ones (the runs table), is not the
# experiment's kind tag: it is the "workflow type" of the page's URL (``workflowType=``), else
# the one this browser last chose with the switch at the top of the sidebar ("GenAI" | "Model
# training", kept in its localStorage as ``mlflow.workflowType_v1``), else GenAI. No server
# setting changes that default; links the project prints carry the parameter.
UI_WORKFLOW = "workflowType=machine_learning"


def ui_url(base: str, experiment_id: str | None = None, run_id: str | None = None) -> str:
    """The page of the MLflow UI served at ``base`` (``http://127.0.0.1:5000``) that shows the
    training runs of an experiment (or one run of it; without an experiment: the list of
    experiments), in the UI's machine-learning view, whatever the browser chose before."""
    base = base.rstrip("/")
    if experiment_id is None:
        return f"{base}/#/experiments?{UI_WORKFLOW}"
    run = f"/{run_id}" if run_id else ""
    return f"{base}/#/experiments/{experiment_id}/runs{run}?{UI_WORKFLOW}"


def ui_links(tracking_uri: str, base: str, limit: int = 20) -> list[tuple[str, str]]:
    """(name, ``ui_url``) of the experiments in the store, most recently changed first
    (MLflow's own "Default" experiment left out when nothing ran in it)."""
    from mlflow.entities import ViewType

    client = MlflowClient(tracking_uri)
    found = client.search_experiments(view_type=ViewType.ACTIVE_ONLY, max_results=limit + 1,
                                      order_by=["last_update_time DESC"])
    links = []
    for exp in found:
        if exp.experiment_id == "0" and not client.search_runs(["0"], max_results=1):
            continue
        links.append((exp.name, ui_url(base, exp.experiment_id)))
    return links[:limit]


def check_artifacts_reachable(uri: str, experiment) -> None:
    """An experiment made on a local store keeps a ``file://`` artifact location. Through a
    tracking server, MLflow clients write such artifacts to that path on their own machine:
    on the server's machine it is the server's folder, anywhere else models and selections
    would land on the client's disk, out of everyone else's reach."""
    from urllib.parse import unquote, urlparse

    from components.config import ConfigError

    location = experiment.artifact_location or ""
    if not uri.startswith(("http://", "https://")) or not location.startswith("file:"):
        return
    folder = Path(unquote(urlparse(location).path))
    if not folder.is_dir():
        raise ConfigError(
            f"experiment '{experiment.name}' keeps its artifacts in {folder}, a folder of the "
            f"machine that created it (it is not on this one), so the server at {uri} would not "
            "get this run's models; set tracking.experiment to a new name (the server then "
            "stores its artifacts), or run where that folder is")


class Tracker:
    """The MLflow run hierarchy of one pipeline run (client API: safe from any thread)."""

    def __init__(self, experiment: str, *, root: Path | None = None):
        self.uri = configure_mlflow(root)
        local = Path(self.uri[len("sqlite:///"):]) if self.uri.startswith("sqlite:///") else None
        # Two runs started together on a fresh local store would both create its tables (and
        # the experiment): the second would fail half-way through MLflow's migrations.
        with exclusive(local.with_suffix(".lock")) if local else contextlib.nullcontext():
            self.client = MlflowClient(self.uri)
            found = self.client.get_experiment_by_name(experiment)
            if found is None:
                location = (local.parent / "artifacts").as_uri() if local else None  # beside it
                self.experiment_id = self.client.create_experiment(experiment,
                                                                   artifact_location=location)
        if found is not None:
            check_artifacts_reachable(self.uri, found)
            if found.lifecycle_stage == "deleted":
                self.client.restore_experiment(found.experiment_id)
            self.experiment_id = found.experiment_id
        if (found is None or found.tags.get(EXPERIMENT_KIND) != "custom_model_development"):
            # MLflow's "Machine learning" experiment type (its API and UIs without the workflow
            # switch read it); the 3.17 UI picks its pages by the workflow type instead: ui_url
            self.client.set_experiment_tag(self.experiment_id, EXPERIMENT_KIND,
                                           "custom_model_development")
        self.experiment = experiment

    def log_dataset(self, run_id: str, *, name: str, digest: str, source: str | Path) -> None:
        """The data a run trained on as an MLflow dataset input: the UI's Datasets column then
        shows its version (``digest``: the run's data hash)."""
        from mlflow.data.meta_dataset import MetaDataset
        from mlflow.data.sources import LocalArtifactDatasetSource
        from mlflow.entities import DatasetInput, InputTag

        dataset = MetaDataset(LocalArtifactDatasetSource(Path(source).resolve().as_uri()),
                              name=name, digest=digest[:36])
        self.client.log_inputs(run_id, datasets=[DatasetInput(
            dataset._to_mlflow_entity(), tags=[InputTag("mlflow.data.context", "training")])])

    def has_run(self, run_id: str) -> bool:
        from mlflow.exceptions import MlflowException

        try:
            self.client.get_run(run_id)
            return True
        except MlflowException:
            return False

    # ------------------------------------------------------------------ parent
    def start_parent(self, *, params: dict, tags: dict[str, str], run_name: str) -> str:
        run = self.client.create_run(self.experiment_id, run_name=run_name,
                                     tags={KIND_TAG: "pipeline", **tags})
        flat = flatten("", params)
        items = [Param(k, v[:6000]) for k, v in sorted(flat.items())]
        for start in range(0, len(items), 100):
            self.client.log_batch(run.info.run_id, params=items[start:start + 100])
        return run.info.run_id

    def set_tags(self, run_id: str, tags: dict[str, str]) -> None:
        for key, value in tags.items():
            self.client.set_tag(run_id, key, value)

    def round_runs(self, parent_id: str) -> dict[int, Any]:
        """Child runs of ``parent_id`` by round number."""
        runs = self.client.search_runs(
            [self.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{parent_id}'",
            max_results=1000)
        return {int(r.data.tags[ROUND_TAG]): r for r in runs if ROUND_TAG in r.data.tags}

    # ------------------------------------------------------------------ rounds
    def log_round(self, parent_id: str, *, round: int, metrics: dict[str, float],
                  per_class: dict[str, float], selection: list[dict], model=None,
                  example=None, history: list[dict]) -> str:
        """One child run per round; a stale one from a crashed attempt is replaced."""
        stale = self.round_runs(parent_id).get(round)
        if stale is not None:
            self.client.delete_run(stale.info.run_id)
        child = self.client.create_run(
            self.experiment_id, run_name=f"round {round}",
            tags={"mlflow.parentRunId": parent_id, ROUND_TAG: str(round), KIND_TAG: "round"})
        run_id = child.info.run_id
        now = int(time.time() * 1000)
        values = {**metrics, **{f"accuracy_class_{k}": v for k, v in per_class.items()}}
        self.client.log_batch(run_id, metrics=[Metric(k, float(v), now, round)
                                               for k, v in values.items()])
        with tempfile.TemporaryDirectory() as tmp:
            if selection:
                write_selection(selection, Path(tmp))
                self.client.log_artifact(run_id, str(Path(tmp) / "selection.csv"))
                self.client.log_artifact(run_id, str(Path(tmp) / "selection.json"))
        if model is not None:
            with mlflow.start_run(run_id=run_id):
                info = log_torch_model(model, example)
            self.client.set_tag(run_id, "sage_ada.model_uri", info.model_uri)
        else:
            self.client.set_terminated(run_id)
        self.log_curve(parent_id, history)
        return run_id

    def log_curve(self, parent_id: str, history: list[dict]) -> None:
        """The parent's accuracy curve as metrics (step = round) and as a plot."""
        now = int(time.time() * 1000)
        last = history[-1]
        self.client.log_batch(parent_id, metrics=[  # step = round: MLflow charts each
            Metric(key, last[key], now, last["round"])
            for key in ("accuracy", "n_labels", "suggestions_accepted", "annotator_agreement")
            if key in last])
        fig = accuracy_curve(history, f"{self.experiment}")
        self.client.log_figure(parent_id, fig, "accuracy_vs_labels.png")
        plt.close(fig)
        self.client.log_dict(parent_id, history, "history.json")

    def log_corrections(self, parent_id: str, rows: list[dict], name: str) -> None:
        self.client.log_dict(parent_id, rows, name)
        self.client.log_metric(parent_id, "n_corrected_after_last_round", len(rows))

    # ------------------------------------------------------------------ end
    def set_aliases(self, name: str, version) -> bool:
        """``candidate``: the newest version; ``champion``: by ``promotes``. Returns whether
        the new version became the champion."""
        from mlflow.exceptions import MlflowException

        self.client.set_registered_model_alias(name, CANDIDATE, version.version)
        try:
            champion = self.client.get_model_version_by_alias(name, CHAMPION)
        except MlflowException:
            champion = None
        if promotes(version.tags, champion.tags if champion else None):
            self.client.set_registered_model_alias(name, CHAMPION, version.version)
            return True
        return False

    def finish(self, parent_id: str, *, registered_model: str, lineage: dict[str, str],
               register: bool = True) -> Optional[str]:
        """Register the last round's model with the lineage in its tags (unless ``register``
        is off: a pretraining-only run is no new model version); close the parent."""
        done = self.client.get_run(parent_id).data.tags.get("sage_ada.registered_version")
        if done:  # a resumed run that had already finished: register nothing twice
            return done.rsplit("/", 1)[-1]
        rounds = self.round_runs(parent_id) if register else {}
        version = None
        if rounds:
            last = rounds[max(rounds)]
            uri = last.data.tags.get("sage_ada.model_uri")
            if uri:
                accuracy = last.data.metrics.get("accuracy")
                mv = mlflow.register_model(uri, registered_model,
                                           tags={**lineage, "parent_run_id": parent_id,
                                                 "round": str(max(rounds)),
                                                 "accuracy": f"{accuracy:.6f}"})
                version = mv.version
                self.set_aliases(registered_model, mv)
                self.client.set_tag(parent_id, "sage_ada.registered_version",
                                    f"{registered_model}/{version}")
        self.client.set_terminated(parent_id)
        return version


CANDIDATE, CHAMPION = "candidate", "champion"


def promotes(new: dict[str, str], champion: Optional[dict[str, str]]) -> bool:
    """The rule for ``champion``: the new version takes it when there is none, when the
    champion was evaluated on another data version (accuracies on other test sets do not
    compare), or when its target-test accuracy is at least the champion's."""
    if champion is None or champion.get("data_hash") != new.get("data_hash"):
        return True
    return float(new.get("accuracy", "nan")) >= float(champion.get("accuracy", "nan"))


def write_selection(rows: list[dict], folder: Path) -> None:
    columns = list(dict.fromkeys(k for row in rows for k in row))  # corrections add a column
    with open(folder / "selection.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    (folder / "selection.json").write_text(json.dumps(rows, indent=1))


def log_torch_model(model, example):
    """Log ``model`` in PyTorch's exported (pt2, pickle-free) format, traced on ``example``."""
    was_training = model.training
    model.eval()
    try:
        return mlflow.pytorch.log_model(model, name="model", input_example=example,
                                        serialization_format="pt2",
                                        pip_requirements=_requirements())
    finally:
        model.train(was_training)


def _requirements() -> list[str]:
    """Pinned requirements for logged models (skips MLflow's slow inference step)."""
    import torch

    return [f"torch=={torch.__version__.split('+')[0]}"]
