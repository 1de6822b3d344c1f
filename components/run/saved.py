"""What a run needs to continue after a crash, written before the next step starts.

One JSON file per run (``.sage-ada/runs/<run id>/state.json``), replaced atomically, plus the
checkpoint of the last finished round beside it. A restarted run resumes from the last
finished step and never asks the oracle again for a sample it already has a label for.
Through a tracking server each file is kept in the run's MLflow artifacts too
(``components.tracking.artifact_mirror``), and read from there first, so any worker continues it.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional

from components.files import write_atomic


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
    asked_at: Optional[float] = None  # when the oracle got the request (epoch seconds)

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
    settings_hash: str = ""             # a resume must use the settings the run started with

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, raw: dict) -> "RunState":
        pending = raw.get("pending")
        raw = {**raw, "pending": PendingRound(**pending) if pending else None}
        if "config_hash" in raw:  # saved before the field's rename (issue 29)
            raw["settings_hash"] = raw.pop("config_hash")
        return cls(**raw)


class ResumeMismatch(ValueError):
    """A resume asked for with settings other than the run's own."""


class UnreadableState(ValueError):
    """A run's saved file that is not what this project writes (edited, or a disk fault)."""


# settings that may change within a run, which a resume takes from the current settings file:
# how long and how often to wait for people, how long a multi-GPU job may take
WAITING = {"label_studio": {"poll_interval_s", "on_timeout", "wait", "webhook_url"},
           "active": {"annotate_timeout_s"},
           "train": {"job_timeout_s", "collective_timeout_s"}}


def differing(started: dict, asked: dict) -> list[str]:
    """``key: started → asked`` for each setting that differs, but for the waiting ones."""
    return [f"{section}.{key}: {value!r} → {asked[section][key]!r}"
            for section, values in started.items() for key, value in values.items()
            if key not in WAITING.get(section, ()) and asked.get(section, {}).get(key) != value]


def settings_hash(cfg) -> str:
    """Settings that must not change within a run (everything but the oracle's waiting)."""
    relevant = cfg.model_dump(exclude=WAITING)
    return hashlib.sha256(json.dumps(relevant, sort_keys=True).encode()).hexdigest()[:16]


_HELD: dict[str, int] = {}  # settings claimed by this process → the open, locked file


class SavedRuns:
    """Run states on disk, looked up by MLflow run id or by Prefect flow-run id; beside each,
    the settings it started with (``settings.json``), which a resume uses. ``mirror`` (a
    ``ArtifactMirror``; by default one when the tracking URI is a server) keeps every file in the
    run's MLflow artifacts too, where the state is read first."""

    def __init__(self, root: str | Path = ".sage-ada/runs", mirror: Any = "auto"):
        from components.tracking.artifact_mirror import ArtifactMirror, shares_runs

        self.root = Path(root)
        self.mirror = (ArtifactMirror() if shares_runs() else None) if mirror == "auto" else mirror

    def dir(self, run_id: str) -> Path:
        return self.root / run_id

    def _write(self, run_id: str, name: str, text: str) -> None:
        path = self.dir(run_id) / name
        write_atomic(path, text)
        self.keep(run_id, path)

    def keep(self, run_id: str, path: Path) -> None:
        """Copy a file of the run (its state, a checkpoint) to the mirror, if any."""
        if self.mirror is not None:
            self.mirror.put(run_id, path)

    def file(self, run_id: str, name: str) -> Path:
        """A file of the run, fetched from the mirror when this worker lacks it."""
        path = self.dir(run_id) / name
        if not path.is_file() and self.mirror is not None:
            self.mirror.get(run_id, name, path)
        return path

    def save(self, state: RunState) -> None:
        self._write(state.run_id, "state.json", json.dumps(state.to_json(), indent=1))

    def save_settings(self, run_id: str, settings: dict) -> None:
        self._write(run_id, "settings.json", json.dumps(settings, indent=1, ensure_ascii=False))

    def settings(self, run_id: str) -> Optional[dict]:
        """The settings run ``run_id`` started with; None for runs saved before they were kept."""
        path = self.file(run_id, "settings.json")
        return json.loads(path.read_text()) if path.is_file() else None

    def resume_config(self, run_id: str, overrides: Optional[dict] = None,
                      params: Optional[str | Path] = None):
        """The run's own settings, so ``--resume <id>`` needs neither its flags nor the
        params.yaml it started from; flags given again must agree with them. The ``WAITING``
        settings come from ``params`` (the current settings file) where it can be read, so a
        longer wait or time limit set there holds for the resumed run. None when the run kept
        no settings (the caller then uses params.yaml, checked by hash)."""
        from components.config import ConfigError, load_config, parse_config

        started = self.settings(run_id)
        if started is None:
            return None
        if params is not None and Path(params).is_file():
            try:
                current = load_config(params).model_dump()
            except ConfigError:
                current = {}
            for section, keys in WAITING.items():
                for key in keys & current.get(section, {}).keys():
                    started.setdefault(section, {})[key] = current[section][key]
        cfg = parse_config(started, f"the settings run {run_id} started with")
        asked = cfg.with_overrides(overrides) if overrides else cfg
        changed = differing(cfg.model_dump(), asked.model_dump())
        if changed:
            raise ResumeMismatch(f"run {run_id} started with other settings than asked for now "
                                 f"({'; '.join(changed)}); resume without those flags (the run "
                                 "keeps its own settings), or start a new run")
        return asked

    def claim(self, run_id: str) -> None:
        """Record which process works on the run now (a resume takes it over), so ``sage-ada
        runs`` can tell a live run from one whose process died."""
        import socket

        import psutil

        me = psutil.Process()
        write_atomic(self.dir(run_id) / "owner.json", json.dumps({"pid": me.pid, "host": socket.gethostname(),
                                    "created": me.create_time()}))

    def claim_settings(self, digest: str) -> Optional[str]:
        """Hold ``digest`` (a ``settings_hash``) for this process's life; None when taken
        now (or already held by this process), else who holds it (``process <pid> on <host>``)."""
        import fcntl
        import os
        import socket

        if digest in _HELD:
            return None
        path = self.root / ".settings-claims" / f"{digest}.lock"
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 200).decode(errors="replace").strip() or "another process"
            os.close(fd)
            return holder
        os.ftruncate(fd, 0)
        os.write(fd, f"process {os.getpid()} on {socket.gethostname()}".encode())
        _HELD[digest] = fd  # kept open: the lock lasts as long as the process
        return None

    def alive(self, run_id: str) -> Optional[bool]:
        """Whether the process that last claimed the run still runs (None: unknown, another
        host or a run saved before owners were kept)."""
        import socket

        import psutil

        path = self.dir(run_id) / "owner.json"
        if not path.is_file():
            return None
        owner = json.loads(path.read_text())
        if owner["host"] != socket.gethostname():
            return None
        try:  # the same pid with another start time is another process
            return abs(psutil.Process(owner["pid"]).create_time() - owner["created"]) < 1
        except psutil.NoSuchProcess:
            return False

    def run_ids(self) -> list[str]:
        """Saved runs, newest first."""
        if not self.root.is_dir():
            return []
        found = sorted(self.root.glob("*/state.json"), key=lambda p: p.stat().st_mtime,
                       reverse=True)
        return [p.parent.name for p in found]

    def load(self, run_id: str) -> RunState:
        """The run's state: the mirror's (the newest, whichever worker wrote it), else ours."""
        path = self.dir(run_id) / "state.json"
        if self.mirror is not None:
            self.mirror.get(run_id, "state.json", path)
        if not path.exists():
            where = f"under {self.root}" + (" nor in its MLflow artifacts" if self.mirror else "")
            raise FileNotFoundError(
                f"no saved state for run {run_id} {where}; resume needs the machine (or copied "
                ".sage-ada/runs folder) that ran it, or a tracking server that keeps runs.")
        return _read_state(path, run_id)

    def find_by_flow_run(self, flow_run_id: str) -> Optional[RunState]:
        if not flow_run_id:
            return None
        if self.mirror is not None:
            run_id = self.mirror.run_of_flow_run(flow_run_id)
            return self.load(run_id) if run_id else None
        if not self.root.exists():
            return None
        for path in sorted(self.root.glob("*/state.json")):
            try:
                raw = json.loads(path.read_text())
            except ValueError:
                continue  # not this run's: told when that run is resumed or listed
            if raw.get("flow_run_id") == flow_run_id:
                return _read_state(path, path.parent.name)
        return None


def _read_state(path: Path, run_id: str) -> RunState:
    """The state in ``path``; a file this project did not write is one clear error (writes are
    atomic, so a crash cannot leave half a file: someone edited it, or the disk failed)."""
    try:
        return RunState.from_json(json.loads(path.read_text()))
    except (ValueError, TypeError, KeyError) as err:
        raise UnreadableState(
            f"run {run_id}'s saved state {path} is unreadable ({type(err).__name__}: {err}); "
            f"restore it from a backup, or move {path.parent} away to forget the run (it cannot "
            "be resumed without it)") from None
