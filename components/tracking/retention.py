"""How much of a pipeline run's rounds the tracking store keeps (``tracking.keep_round_models``).

Each round logs its network as an MLflow LoggedModel (``Tracker.log_round``: a pt2 export,
about the network's size in bytes) and, through a tracking server, its state checkpoint under
the parent run's ``sage_ada_state/`` artifacts (``ArtifactMirror``). Both grow by one network per
round. With ``keep = k`` the rounds before the last k lose them:

* the round's LoggedModel is deleted (``MlflowClient.delete_logged_model``: MLflow only marks it
  deleted) and its artifact folder removed through the store's artifact repository, the call
  ``mlflow gc`` makes for it, so the bytes go now. Its metadata row stays, marked deleted, until
  ``mlflow gc`` (which needs the backend database, not the server) removes it: a few hundred
  bytes per round;
* its checkpoint in the parent run's artifacts is removed (same repository call).

A LoggedModel behind any registered model version is kept, whatever its round (a version's
files are its LoggedModel's: registering copies nothing). Models of a round's earlier, replaced
attempts (a run that crashed after logging and was resumed) go with the rounds outside the
window, and at once when they are not the round's current model.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

from mlflow.entities import ViewType
from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

from components.tracking.artifact_mirror import ARTIFACT_DIR
from components.tracking.lineage import ROUND_TAG

CHECKPOINT = re.compile(r"checkpoint-r(\d+)\.pt")


@dataclass
class Pruned:
    """What one pass removed (model ids, checkpoint names) and the registered models it kept."""
    models: list[str] = field(default_factory=list)
    checkpoints: list[str] = field(default_factory=list)
    kept_registered: list[str] = field(default_factory=list)


def keeps_all(keep) -> bool:
    return not keep  # None or 0


def prune_rounds(client, experiment_id: str, parent_id: str, *, latest: int,
                 keep) -> Pruned:
    """Remove the models and checkpoints of ``parent_id``'s rounds up to ``latest - keep``
    (``latest``: the round that just finished), except models that a registered version uses.
    Idempotent: what an earlier pass removed is not looked at again."""
    done = Pruned()
    if keeps_all(keep):
        return done
    oldest_kept = latest - keep + 1
    children = client.search_runs(
        [experiment_id], filter_string=f"tags.mlflow.parentRunId = '{parent_id}'",
        run_view_type=ViewType.ALL, max_results=10_000)
    # a round's current run, inside the window or not; a replaced attempt is deleted
    current = {r.info.run_id for r in children if r.info.lifecycle_stage == "active"}
    old = {r.info.run_id for r in children if ROUND_TAG in r.data.tags
           and (int(r.data.tags[ROUND_TAG]) < oldest_kept or r.info.run_id not in current)}
    if old:
        models = _logged_models(client, experiment_id, sorted(old))
        registered = _registered(client, sorted(old), [m.model_id for m in models])
        for model in models:
            if model.model_id in registered or model.source_run_id in registered:
                done.kept_registered.append(model.model_id)
                continue
            client.delete_logged_model(model.model_id)  # first: never a live model without files
            get_artifact_repository(model.artifact_location,
                                    tracking_uri=client.tracking_uri).delete_artifacts()
            done.models.append(model.model_id)
    parent = client.get_run(parent_id)
    for item in client.list_artifacts(parent_id, ARTIFACT_DIR):
        name = item.path.rsplit("/", 1)[-1]
        found = CHECKPOINT.fullmatch(name)
        if found and int(found.group(1)) < oldest_kept:
            get_artifact_repository(parent.info.artifact_uri,
                                    tracking_uri=client.tracking_uri).delete_artifacts(item.path)
            done.checkpoints.append(name)
    return done


def _logged_models(client, experiment_id: str, run_ids: list[str]) -> list:
    """The live LoggedModels these runs logged (deleted ones are not returned)."""
    found = []
    for start in range(0, len(run_ids), 100):
        ids = ", ".join(f"'{r}'" for r in run_ids[start:start + 100])
        token = None
        while True:
            page = client.search_logged_models([experiment_id],
                                               filter_string=f"source_run_id IN ({ids})",
                                               page_token=token)
            found += list(page)
            token = page.token
            if not token:
                break
    return found


def _registered(client, run_ids: list[str], model_ids: list[str]) -> set[str]:
    """Runs and LoggedModels among these that a registered model version (any name) comes
    from: registered from ``models:/<id>`` (the project's way: the version's run is the
    model's run), or from a run's or the model's artifact path."""
    used: set[str] = set()

    def collect(filter_string: str) -> None:
        for mv in _all_versions(client, filter_string):
            used.update(x for x in (mv.run_id, getattr(mv, "model_id", None)) if x)
            used.update(m for m in model_ids if m in (mv.source or ""))
    for start in range(0, len(run_ids), 100):
        collect("run_id IN ({})".format(", ".join(f"'{r}'" for r in run_ids[start:start + 100])))
    for model_id in model_ids:
        collect(f"source_path LIKE '%{model_id}%'")
    return used


def _all_versions(client, filter_string: str) -> list:
    found, token = [], None
    while True:
        page = client.search_model_versions(filter_string, max_results=1000, page_token=token)
        found += list(page)
        token = page.token
        if not token:
            return found
