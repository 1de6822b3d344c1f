"""What became of each run started here: live, waiting for annotators, stopped or finished.

A run whose process died (killed, crashed, the machine rebooted) would stay RUNNING in MLflow
forever; listing the runs marks such a run KILLED there and says how to resume it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from components.run import corrections
from components.run.saved import SavedRuns, UnreadableState


@dataclass
class RunSummary:
    run_id: str
    status: str          # running | waiting for annotators | stopped | finished | unknown
    rounds: str          # "2 of 5"
    accuracy: Optional[float]
    next_step: str       # the command that continues it, or ""


def summarise(store: SavedRuns, client, *, mark_killed: bool = True) -> list[RunSummary]:
    """One line per saved run, newest first; ``client``: an MLflow client of the run's store."""
    from mlflow.exceptions import MlflowException

    out = []
    for run_id in store.run_ids():
        try:
            state = store.load(run_id)
        except UnreadableState:
            out.append(RunSummary(run_id, "state unreadable", "?", None,
                                  f"see {store.dir(run_id) / 'state.json'}"))
            continue
        settings = store.settings(run_id) or {}
        total = settings.get("active", {}).get("rounds")
        try:
            mlflow_status = client.get_run(run_id).info.status
        except MlflowException:
            mlflow_status = None
        alive = store.alive(run_id)
        if mlflow_status == "FINISHED":
            changed = corrections.recorded(store, run_id)
            status = (f"finished; {changed} label(s) changed since" if changed else "finished")
        elif alive:
            waiting = state.pending is not None and state.pending.handle is not None \
                and state.pending.labels is None
            status = "waiting for annotators" if waiting else "running"
        elif alive is False or mlflow_status == "KILLED":
            status = "stopped"
            if mark_killed and mlflow_status == "RUNNING":
                client.set_terminated(run_id, status="KILLED")
        else:
            status = "unknown"
        resumable = status in ("stopped", "unknown") and mlflow_status is not None
        out.append(RunSummary(
            run_id, status if mlflow_status is not None else f"{status} (not in this MLflow store)",
            f"{max(state.rounds_done, 0)} of {total if total is not None else '?'}",
            state.history[-1]["accuracy"] if state.history else None,
            f"sage-ada run --resume {run_id}" if resumable else
            "sage-ada corrections lists them" if "changed since" in status else ""))
    return out
