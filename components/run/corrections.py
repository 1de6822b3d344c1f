"""Labels changed in Label Studio after the run that used them ended.

A run reads corrections to earlier rounds before each adaptation, and the ones after its last
adaptation into ``corrections_after_last_round.json``; once it has ended nobody asks Label
Studio again, so a later fix would be lost. ``sage-ada corrections`` asks, for every run of
this folder that people labelled: each label whose annotations now say something else, who
changed it and when. It keeps what it found beside the run (``late_corrections.json``, which
``sage-ada runs`` reads) and in MLflow (``corrections_after_end.json`` and the tag
``sage_ada.labels_changed_after_end``), so the team sees which registered model trained on a
label people no longer agree with.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Optional

from components.files import write_atomic
from components.run.saved import SavedRuns, UnreadableState

RECORD = "late_corrections.json"
CHANGED_TAG = "sage_ada.labels_changed_after_end"


@dataclass
class LateCorrection:
    run_id: str
    sample_id: str
    old: str     # what the run trained on
    new: str     # what the annotations say now
    by: Optional[int]
    at: Optional[str]


def find(store: SavedRuns, run_ids: Optional[list[str]] = None) -> dict[str, list[LateCorrection]]:
    """Per run that people labelled (of ``run_ids``, default all of this folder's): the labels
    changed since. Runs without Label Studio, state or project are left out."""
    from components.config import parse_config
    from components.data.split import class_list, read_manifest
    from components.oracle import check_labels, make_oracle

    found: dict[str, list[LateCorrection]] = {}
    for run_id in run_ids or store.run_ids():
        settings = store.settings(run_id)
        if not settings or settings.get("active", {}).get("oracle") != "label_studio":
            continue
        try:
            state = store.load(run_id)
        except UnreadableState:
            continue
        if not state.labelled:
            continue
        cfg = parse_config(settings, f"the settings run {run_id} started with")
        manifest = read_manifest(cfg.data.manifest)
        oracle = make_oracle(cfg, manifest, class_list(manifest), progress=False)
        oracle.bind(run_id)
        if oracle.find_project() is None:
            continue
        changed = oracle.relabelled(state.labelled)
        valid = check_labels(sorted(changed), {s: c["new"] for s, c in changed.items()},
                             oracle.classes)
        found[run_id] = [LateCorrection(run_id, sid, changed[sid]["old"], changed[sid]["new"],
                                        changed[sid]["by"], changed[sid]["at"])
                         for sid in sorted(valid)]
    return found


def keep(store: SavedRuns, run_id: str, corrections: list[LateCorrection], client=None) -> None:
    """What was found, beside the run and (``client``: an MLflow client) on its MLflow run."""
    rows = [c.__dict__ for c in corrections]
    record = {"checked_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "changed": rows}
    write_atomic(store.dir(run_id) / RECORD, json.dumps(record, indent=1))
    if client is not None:
        client.log_dict(run_id, rows, "corrections_after_end.json")
        client.set_tag(run_id, CHANGED_TAG, str(len(rows)))


def recorded(store: SavedRuns, run_id: str) -> Optional[int]:
    """How many labels the last ``sage-ada corrections`` found changed (None: never asked)."""
    path = store.dir(run_id) / RECORD
    if not path.is_file():
        return None
    try:
        return len(json.loads(path.read_text())["changed"])
    except (ValueError, KeyError, TypeError):
        return None
