"""What a run needs to continue after a crash, written before the next step starts.

One JSON file per run (``.sage-ada/runs/<run id>/state.json``), replaced atomically, plus the
checkpoint of the last finished round beside it. A restarted run resumes from the last
finished step and never asks the oracle again for a sample it already has a label for.
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional


@dataclass
class PendingRound:
    """A round in progress: selection done; annotation and adaptation may be done too."""

    round: int
    selected: list[str]
    scores: list[float]
    select_seconds: float
    handle: Any = None
    labels: Optional[dict[str, str]] = None
    details: dict[str, dict] = field(default_factory=dict)  # annotator, lead time per sample
    # earlier rounds' labels changed by annotators since (sample_id → {old, new, by, at}),
    # read before this round's adaptation; None: not read yet
    corrections: Optional[dict[str, dict]] = None
    suggestions: dict[str, list] = field(default_factory=dict)  # the model's [guess, confidence]

    def __post_init__(self):
        if self.corrections:  # state saved before corrections named who and when: [old, new]
            self.corrections = {sid: c if isinstance(c, dict) else
                                {"old": c[0], "new": c[1], "by": None, "at": None}
                                for sid, c in self.corrections.items()}


@dataclass
class RunState:
    run_id: str                       # the MLflow parent run id
    rounds_done: int = -1             # -1: not pretrained; 0: round 0 (UDA) evaluated
    labelled: dict[str, str] = field(default_factory=dict)   # sample_id → class name
    history: list[dict] = field(default_factory=list)        # one row per finished round
    pending: Optional[PendingRound] = None
    flow_run_id: Optional[str] = None
    config_hash: str = ""             # a resume must use the settings the run started with

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, raw: dict) -> "RunState":
        pending = raw.get("pending")
        raw = {**raw, "pending": PendingRound(**pending) if pending else None}
        return cls(**raw)


class StateStore:
    """Run states on disk, looked up by MLflow run id or by Prefect flow-run id."""

    def __init__(self, root: str | Path = ".sage-ada/runs"):
        self.root = Path(root)

    def dir(self, run_id: str) -> Path:
        return self.root / run_id

    def save(self, state: RunState) -> None:
        path = self.dir(state.run_id) / "state.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(state.to_json(), indent=1))
        os.replace(tmp, path)

    def load(self, run_id: str) -> RunState:
        path = self.dir(run_id) / "state.json"
        if not path.exists():
            raise FileNotFoundError(
                f"no saved state for run {run_id} under {self.root}; resume needs the machine "
                "(or copied .sage-ada/runs folder) that ran it.")
        return RunState.from_json(json.loads(path.read_text()))

    def find_by_flow_run(self, flow_run_id: str) -> Optional[RunState]:
        if not flow_run_id or not self.root.exists():
            return None
        for path in sorted(self.root.glob("*/state.json")):
            raw = json.loads(path.read_text())
            if raw.get("flow_run_id") == flow_run_id:
                return RunState.from_json(raw)
        return None
