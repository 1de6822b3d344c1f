"""The fault table: every bad input or fault a user can cause, one row each, with what the user
must see. A command row is typed as a user types it (``sage-ada ...`` or an ``infra/`` script)
in a folder of its own and must end with exit code 2 (1 for the shell scripts), exactly one
``error:`` line that says what to change, no traceback, nothing written where it ran and
nothing lost (the manifest and the data unchanged). Rows that need a fault no command can
cause (numbers that overflow, a training job that hangs) call the part itself; rows that need
servers or a SIGKILL are marked slow (CI runs them).

README's "When something goes wrong" is checked against this table: each message it lists is
one that a row here (or the test a row names) makes happen.
"""
from __future__ import annotations

import glob
import hashlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Union

import pytest
import yaml

from tests.conftest import REPO, free_port


@dataclass
class Fault:
    """``command``: as typed (``{port}``: a port where nothing listens). ``says``: what its one
    error line holds. ``prepare``: a change to the working folder first, which may return
    extra environment variables (a dict) or the files the line must name (a list of paths);
    or environment variables."""

    command: str
    says: str
    prepare: Union[Callable[[Path], Optional[dict]], dict, None] = None
    code: int = 2
    data: bool = False            # works on a copy of the images (the data rows)
    may_write: frozenset = field(default_factory=frozenset)  # caches the command may create
    within_s: float = 20          # longer is a failure: a mistake is told before slow work
    hint: str = ""                # also in what it prints (a message's later lines)

    why: str = ""                 # names the row where the command alone does not

    def __post_init__(self):
        if self.data and self.within_s == 20:
            self.within_s = 90  # a first validation hashes and decodes every image

    @property
    def id(self) -> str:
        name = self.why or getattr(self.prepare, "__name__", "")
        return f"{self.command} [{name.strip('_')}]" if name else self.command


# --- what the rows change first ------------------------------------------------------------

def _set(workdir: Path, section: str, key: str, value) -> None:
    raw = yaml.safe_load((workdir / "params.yaml").read_text())
    raw[section][key] = value
    (workdir / "params.yaml").write_text(yaml.safe_dump(raw, allow_unicode=True))


def _setting(section: str, key: str, value):
    def prepare(workdir: Path) -> None:
        _set(workdir, section, key, value)
    prepare.__name__ = f"{section}.{key}={value}"
    return prepare


def _typo_in_file(workdir: Path) -> None:
    raw = yaml.safe_load((workdir / "params.yaml").read_text())
    raw["train"]["learning_rate"] = 0.1
    (workdir / "params.yaml").write_text(yaml.safe_dump(raw, allow_unicode=True))


def _other_params_file(workdir: Path) -> None:
    """The settings under another name, with a bad value: the error names that file."""
    raw = yaml.safe_load((workdir / "params.yaml").read_text())
    raw["split"]["seed"] = -2
    (workdir / "team.yaml").write_text(yaml.safe_dump(raw, allow_unicode=True))


def _write(name: str, text: str):
    def prepare(workdir: Path) -> None:
        (workdir / name).write_text(text)
    prepare.__name__ = f"_{name}_written"
    return prepare


def _saved_run(run_id: str = "r3", **changes):
    """A run saved as the state store keeps it; ``changes``: its settings as saved (a run
    saved by an older version may hold what today's checks refuse)."""
    def prepare(workdir: Path) -> None:
        import json

        from components.config import load_config
        from components.run.saved import RunState, SavedRuns

        store = SavedRuns(workdir / ".sage-ada" / "runs", mirror=None)
        cfg = load_config(workdir / "params.yaml", {"active.budget": 3})
        store.save(RunState(run_id=run_id, rounds_done=0))
        settings = cfg.model_dump()
        for dotted, value in changes.items():
            section, key = dotted.split("__")
            settings[section][key] = value
        (store.dir(run_id) / "settings.json").write_text(json.dumps(settings))
    prepare.__name__ = f"a saved run {run_id}" + "".join(
        f", {k.replace('__', '.')}={v}" for k, v in changes.items())
    return prepare


def _garbled_state(workdir: Path) -> None:
    _saved_run("r4")(workdir)
    (workdir / ".sage-ada" / "runs" / "r4" / "state.json").write_text('{"run_id": "r4", "rou')


def _a_live_identical_run(workdir: Path) -> None:
    """A run of the same settings whose process (this test's) still runs."""
    from components.config import load_config
    from components.run.saved import RunState, SavedRuns, settings_hash

    store = SavedRuns(workdir / ".sage-ada" / "runs", mirror=None)
    cfg = load_config(workdir / "params.yaml")
    store.save(RunState(run_id="twin", rounds_done=0, settings_hash=settings_hash(cfg)))
    store.claim("twin")


_HOLDERS: list[subprocess.Popen] = []


def _a_run_starting_now(workdir: Path) -> None:
    """Another ``sage-ada run`` of the same settings that has passed its checks a moment ago
    and has written no state yet (two starts 0.3 s apart): it holds only its claim."""
    code = ("import sys, time\n"
            "from components.config import load_config\n"
            "from components.run.preflight import claim_settings\n"
            "from components.run.saved import SavedRuns\n"
            "claim_settings(load_config('params.yaml'), SavedRuns(mirror=None))\n"
            "print('claimed', flush=True); time.sleep(300)\n")
    holder = subprocess.Popen([sys.executable, "-c", code], cwd=workdir, stdout=subprocess.PIPE,
                              text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    _HOLDERS.append(holder)
    assert holder.stdout.readline().strip() == "claimed"


def _port_taken(workdir: Path) -> dict:
    """Something else listens on the port the MLflow server script is asked for."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    _SOCKETS.append(listener)
    return {"MLFLOW_PORT": str(listener.getsockname()[1]),
            "SAGE_ADA_RUN_DIR": str(workdir.parent / "servers")}


_SOCKETS: list[socket.socket] = []


# --- the data rows: a copy of the images, changed as a user or a tool would change them --------

def _manifest_rows(workdir: Path) -> list[list[str]]:
    lines = (workdir / "splits" / "manifest.csv").read_text().splitlines()
    return [line.split(",") for line in lines]


def _path_of(workdir: Path, split: str, nth: int = 0) -> Path:
    header, *rows = _manifest_rows(workdir)
    col = header.index("path")
    return workdir / "data" / [r for r in rows if r[header.index("split")] == split][nth][col]


def _edit_manifest(workdir: Path, edit: Callable[[list[str], list[list[str]]], None]) -> None:
    header, *rows = _manifest_rows(workdir)
    edit(header, rows)
    (workdir / "splits" / "manifest.csv").write_text(
        "\n".join(",".join(r) for r in [header, *rows]) + "\n")


def _small_copy_of_the_data(workdir: Path, digits_root: Path, per_class: int = 6) -> None:
    """The first ``per_class`` images of each class in each split, copied under ``data/``
    with their manifest: what a data row changes is a copy, and validating it takes a second."""
    header, *rows = _manifest_rows(workdir)
    split, label, col = (header.index(k) for k in ("split", "label", "path"))
    kept, seen = [], {}
    for row in rows:
        key = (row[split], row[label])
        seen[key] = seen.get(key, 0) + 1
        if seen[key] <= per_class:
            kept.append(row)
            (workdir / "data" / row[col]).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(digits_root / row[col], workdir / "data" / row[col])
    (workdir / "splits" / "manifest.csv").write_text(
        "\n".join(",".join(r) for r in [header, *kept]) + "\n")
    _set(workdir, "data", "root", "data")


def _validated(workdir: Path) -> None:
    """The manifest proved once (its hashes cached), as after `sage-ada data split`."""
    out = subprocess.run(["sage-ada", "data", "validate"], cwd=workdir, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]


def _text_instead_of_image(workdir: Path) -> list[Path]:
    path = _path_of(workdir, "target_test")
    path.write_text("not an image")
    return [path]


def _truncated_image(workdir: Path) -> list[Path]:
    path = _path_of(workdir, "source", 3)
    path.write_bytes(path.read_bytes()[:40])
    return [path]


def _missing_image(workdir: Path) -> list[Path]:
    path = _path_of(workdir, "target_train", 5)
    path.unlink()
    return [path]


def _unknown_label(workdir: Path) -> None:
    """An annotator's or a script's label that is not a class (in the test split: the classes
    are the source's)."""
    def edit(header, rows):
        row = next(r for r in rows if r[header.index("split")] == "target_test")
        row[header.index("label")] = "eleven"
    _edit_manifest(workdir, edit)


def _sample_in_two_splits(workdir: Path) -> None:
    def edit(header, rows):
        i = header.index("split")
        row = next(r for r in rows if r[i] == "target_train")
        rows.append([*row[:i], "target_test", *row[i + 1:]])
    _edit_manifest(workdir, edit)


def _copy_into_test(workdir: Path, reencode: bool) -> list[Path]:
    """A pool image copied into the test split under a new name: byte for byte, or decoded
    and saved again with other PNG settings (the same pixels, other bytes)."""
    from PIL import Image
    from PIL.PngImagePlugin import PngInfo

    pool = _path_of(workdir, "target_train", 2)
    test = _path_of(workdir, "target_test", 0)
    copy = test.with_name("copy-" + pool.name)
    if reencode:
        info = PngInfo()
        info.add_text("Software", "another tool")
        with Image.open(pool) as im:
            im.save(copy, compress_level=1, pnginfo=info)
        assert copy.read_bytes() != pool.read_bytes()
    else:
        shutil.copyfile(pool, copy)

    def edit(header, rows):
        i, col = header.index("split"), header.index("path")
        row = next(r for r in rows if r[i] == "target_test")
        new = list(row)
        new[header.index("sample_id")] = "copy-" + row[header.index("sample_id")]
        new[col] = str(copy.relative_to(workdir / "data"))
        new[header.index("sha256")] = hashlib.sha256(copy.read_bytes()).hexdigest()
        rows.append(new)
    _edit_manifest(workdir, edit)
    return [pool, copy]


def _same_size_other_image_mtime_restored(workdir: Path) -> list[Path]:
    """What ``cp -p`` or ``rsync -a`` do: another image of the same byte size over one that was
    validated, with the old modification time put back."""
    _validated(workdir)
    header, *rows = _manifest_rows(workdir)
    paths = [workdir / "data" / r[header.index("path")] for r in rows]
    by_size: dict[int, Path] = {}
    for path in paths:
        other = by_size.setdefault(path.stat().st_size, path)
        if other != path and other.read_bytes() != path.read_bytes():
            stat = path.stat()
            shutil.copyfile(other, path)
            os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
            assert path.stat().st_size == stat.st_size
            return [path]
    raise AssertionError("no two images of the same size")


NO_GPU = not glob.glob("/dev/nvidia[0-9]*") and not Path("/dev/kfd").exists()
CACHE = frozenset({".sage-ada"})

FAULTS = [
    # settings, as flags
    Fault("sage-ada run --budget 0", "active.budget = 0: Input should be greater than 0"),
    Fault("sage-ada run --budget -3", "active.budget = -3"),
    Fault("sage-ada run --budget ten", "argument --budget: invalid int value: 'ten'"),
    Fault("sage-ada run --strategy magic",
          "active.strategy = 'magic' is not a strategy; choose one of"),
    Fault("sage-ada run --strategy aada",
          "needs the DANN domain discriminator: set train.adversarial: dann"),
    Fault("sage-ada run --regulariser mme --adversarial maybe",
          "argument --adversarial: invalid choice"),
    Fault("sage-ada run --oracle people", "argument --oracle: invalid choice: 'people'"),
    Fault("sage-ada run --rounds 0", "active.rounds = 0 runs no labelling round (pretraining "
          "only); pass --pretrain-only if that is what you want"),
    Fault("sage-ada run --rounds 3 --budget 400",
          "active.rounds × active.budget = 3 × 400 = 1200 labels, but the pool has 899"),
    Fault("sage-ada run --source optdigits", "data.source and data.target name the same domain"),
    Fault("sage-ada run --channels 2", "argument --channels: invalid choice: 2"),
    Fault("sage-ada run --source mnist-colour --target optdigits-texture",
          "mnist-colour and optdigits-texture are colour domains but data.channels = 1; pass "
          "--channels 3"),
    Fault("sage-ada run --frobnicate", "unrecognized arguments: --frobnicate"),
    Fault("sage-ada run --seed -3", "active.seed = -3: Input should be greater than or equal "
          "to 0"),
    Fault("sage-ada run --strategy random --seed -1", "train.seed = -1: Input should be greater "
          "than or equal to 0"),
    Fault("sage-ada run --seed 4294967296", "active.seed = 4294967296: Input should be less than "
          "4294967296"),
    Fault("sage-ada run --cpu-threads 0", "train.cpu_threads = 0: Input should be greater than 0"),
    Fault("sage-ada run --device tpu", "train.device = 'tpu': String should match pattern"),
    Fault("sage-ada run --pretrain-steps x", "argument --pretrain-steps: invalid int value: 'x'"),
    Fault("sage-ada compare --strategies sage,magic", "active.strategy = 'magic' is not a "
          "strategy"),
    Fault("sage-ada compare --seeds 0,x", "argument --seeds: '0,x' is not a comma-separated "
          "list of whole numbers"),
    Fault("sage-ada compare --seeds 0,-1", "active.seed = -1: Input should be greater than or "
          "equal to 0"),
    Fault("sage-ada data frobnicate", "argument action: invalid choice: 'frobnicate'"),
    Fault("sage-ada", "the following arguments are required: command"),
    Fault("sage-ada ui --port web", "argument --port: invalid int value: 'web'"),
    # settings, in a file
    Fault("sage-ada run", "train.learning_rate is not a setting (misspelt?)", _typo_in_file),
    Fault("sage-ada --params nowhere.yaml run", "nowhere.yaml not found"),
    Fault("sage-ada --params team.yaml data split", "split.seed = -2: Input should be greater "
          "than or equal to 0 (in team.yaml or the flag", _other_params_file),
    Fault("sage-ada --params broken.yaml run", "broken.yaml is not valid YAML at line 2, column 10",
          _write("broken.yaml", "data: [\n  root: x")),
    Fault("sage-ada --params list.yaml run", "list.yaml holds a list, not settings",
          _write("list.yaml", "- data\n- train\n")),
    Fault("sage-ada --params splits run", "Is a directory: 'splits'; check the path, its "
          "permissions"),
    Fault("sage-ada run", "data.root = 'dat' is not a folder; fix data.root, or build the "
          "shipped digits benchmark there on purpose with `sage-ada data digits --root dat`",
          _setting("data", "root", "dat")),
    Fault("sage-ada run --oracle label_studio", "Label Studio at localhost:8080 does not answer "
          "(unknown url type", _setting("label_studio", "url", "localhost:8080")),
    # runs: resumed, twice, listed
    Fault("sage-ada run --resume 0123456789abcdef",
          "--resume 0123456789abcdef: no saved state for that run"),
    Fault("sage-ada run --resume r3 --budget 5", "run r3 started with other settings than asked "
          "for now (active.budget: 3 → 5)", _saved_run()),
    Fault("sage-ada run --resume r3", "train.seed = -3: Input should be greater than or equal "
          "to 0 (in the settings run r3 started with", _saved_run(train__seed=-3)),
    Fault("sage-ada run --resume r4", "run r4's saved state .sage-ada/runs/r4/state.json is "
          "unreadable", _garbled_state),
    Fault("sage-ada run", "a run with the same settings is in progress (twin; see `sage-ada "
          "runs`); wait for it, or pass --allow-duplicate", _a_live_identical_run),
    Fault("sage-ada run", "a run with the same settings is in progress (process ",
          _a_run_starting_now),
    # servers that do not answer
    Fault("sage-ada run", "the MLflow server at http://127.0.0.1:{port} does not answer",
          {"MLFLOW_TRACKING_URI": "http://127.0.0.1:{port}"}, why="tracking server down"),
    Fault("sage-ada runs", "the MLflow server at http://127.0.0.1:{port} does not answer",
          lambda w: _saved_run()(w) or {"MLFLOW_TRACKING_URI": "http://127.0.0.1:{port}"},
          within_s=30, why="tracking server down"),
    Fault("sage-ada run --oracle label_studio",
          "Label Studio at http://127.0.0.1:{port} does not answer",
          _setting("label_studio", "url", "http://127.0.0.1:{port}")),
    Fault("infra/mlflow/server.sh start", "on 127.0.0.1 is taken; stop what uses it, or choose "
          "a free port with MLFLOW_PORT=<port>", _port_taken, code=1),
    # the file system
    Fault("sage-ada data validate", "Not a directory: '.sage-ada/cache'; check the path, its "
          "permissions and the free disk space", _write(".sage-ada", "not a folder"), why="a file where the cache folder goes"),
    Fault("sage-ada data validate", "manifest splits/manifest.csv not found; build it first: "
          "`sage-ada data split`", lambda w: (w / "splits" / "manifest.csv").unlink(),
          why="manifest deleted"),
    # the images and the manifest
    Fault("sage-ada data validate", "manifest validation failed", _text_instead_of_image,
          data=True, may_write=CACHE, hint="rebuild the manifest: `sage-ada data split` (with "
          "your --params file, if you use one; `dvc repro split` for the DVC-tracked ./data)"),
    Fault("sage-ada data validate", "manifest validation failed", _truncated_image, data=True,
          may_write=CACHE, hint="image cannot be decoded (corrupt or truncated)"),
    Fault("sage-ada data validate", "manifest validation failed", _missing_image, data=True,
          may_write=CACHE, hint="image file missing"),
    Fault("sage-ada data validate", "manifest validation failed", _unknown_label, data=True,
          may_write=CACHE, hint="label outside the class list"),
    Fault("sage-ada data validate", "manifest validation failed", _sample_in_two_splits,
          data=True, may_write=CACHE, hint="the same image is listed more than once (a sample "
          "in two splits)"),
    Fault("sage-ada data validate", "manifest validation failed",
          lambda w: _copy_into_test(w, reencode=False), data=True, may_write=CACHE,
          why="a byte copy in the test split", hint="the same image content is listed more "
          "than once"),
    Fault("sage-ada data validate", "manifest validation failed",
          lambda w: _copy_into_test(w, reencode=True), data=True, may_write=CACHE,
          why="a re-encoded copy in the test split", hint="files that differ only in their "
          "encoding"),
    Fault("sage-ada data validate", "manifest validation failed",
          _same_size_other_image_mtime_restored, data=True, may_write=CACHE,
          hint="image content differs from the manifest's sha256"),
] + ([Fault("sage-ada run --device cuda", "train.device = 'cuda', but this machine has no GPU"),
      Fault("sage-ada run --device cuda:1", "train.device = 'cuda:1', but this machine has no GPU"),
      Fault("sage-ada run", "train.gpus = 2, but this machine has 0 GPU(s); set train.gpus to at "
            "most 1 (train.device: cpu runs that many CPU processes instead)",
            _setting("train", "gpus", 2))]
     if NO_GPU else [])


@pytest.fixture
def workdir(tmp_path, digits_root, digits_manifest) -> Path:
    """The project's settings over the digits benchmark, in a folder of its own, so whatever a
    command writes shows."""
    from components.data.split import write_manifest

    work = tmp_path / "work"
    write_manifest(digits_manifest, work / "splits" / "manifest.csv")
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    raw["data"]["root"] = str(digits_root)
    (work / "params.yaml").write_text(yaml.safe_dump(raw, allow_unicode=True))
    yield work
    for holder in _HOLDERS:
        holder.kill()
    for listener in _SOCKETS:
        listener.close()
    _HOLDERS.clear()
    _SOCKETS.clear()


def _snapshot(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` (but caches) → a hash of its bytes: what was lost shows."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()[:16]
            for p in sorted(folder.rglob("*")) if p.is_file() and ".sage-ada" not in p.parts}


def run_as_typed(fault: Fault, workdir: Path, digits_root: Path):
    """Prepare the folder, type the command, return (what it printed, env, the closed port)."""
    port, names = free_port(), []
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    if fault.data:
        _small_copy_of_the_data(workdir, digits_root)
    if isinstance(fault.prepare, dict):
        env.update({k: v.format(port=port) for k, v in fault.prepare.items()})
    elif fault.prepare:
        made = fault.prepare(workdir) or {}
        if isinstance(made, dict):
            env.update({k: v.format(port=port) for k, v in made.items()})
        else:
            names = [str(p.relative_to(workdir / "data")) for p in made]
        text = (workdir / "params.yaml").read_text().replace("{port}", str(port))
        (workdir / "params.yaml").write_text(text)
    command = fault.command.split()
    if command[0].startswith("infra/"):
        command = ["bash", str(REPO / command[0]), *command[1:]]
    before = _snapshot(workdir), set(p.name for p in workdir.iterdir())
    started = time.monotonic()
    out = subprocess.run(command, cwd=workdir, capture_output=True, text=True,
                         timeout=fault.within_s, env=env)
    print(f"{fault.command}: exit {out.returncode} after {time.monotonic() - started:.1f} s")
    return out, port, before, names


@pytest.mark.parametrize("fault", FAULTS, ids=[f.id for f in FAULTS])
def test_a_fault_is_one_line_and_loses_nothing(fault, workdir, digits_root):
    out, port, (files, top), names = run_as_typed(fault, workdir, digits_root)
    says = fault.says.format(port=port)
    assert out.returncode == fault.code, out.stderr[-3000:]
    ours = [line for line in out.stderr.splitlines() if "error:" in line]
    assert len(ours) == 1 and "Traceback" not in out.stderr, out.stderr[-3000:]
    assert says in ours[0], ours[0]
    assert all(name in out.stderr for name in names), (names, out.stderr[-2000:])  # and the files
    assert fault.hint in out.stderr, out.stderr[-2000:]
    assert "prefect" not in (out.stdout + out.stderr).lower()           # no flow started
    assert _snapshot(workdir) == files                                  # nothing changed or lost
    assert set(p.name for p in workdir.iterdir()) - top <= fault.may_write  # nothing new


def test_debug_shows_the_traceback(workdir):
    out = subprocess.run(["sage-ada", "--debug", "run", "--budget", "0"], cwd=workdir,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode != 0 and "Traceback" in out.stderr and "ConfigError" in out.stderr


# --- faults a command cannot show quickly -------------------------------------------------

def test_a_run_saved_before_the_time_limits_were_settings_still_resumes(workdir):
    """Settings added later (the multi-GPU time limits) neither change a saved run's settings
    hash (its resume was refused: 'other settings', with none listed) nor its resume, which
    takes them from the current settings file (where the time-limit error says to raise it)."""
    import json

    from components.config import load_config
    from components.run.saved import SavedRuns, settings_hash

    cfg = load_config(workdir / "params.yaml")
    before = cfg.model_dump()                      # as a run saved before those settings
    for key in ("job_timeout_s", "collective_timeout_s"):
        del before["train"][key]
    waiting = {"label_studio": {"poll_interval_s", "on_timeout", "wait", "webhook_url"},
               "active": {"annotate_timeout_s"}}
    relevant = {section: {k: v for k, v in values.items() if k not in waiting.get(section, ())}
                for section, values in before.items()}
    saved_hash = hashlib.sha256(json.dumps(relevant, sort_keys=True).encode()).hexdigest()[:16]
    assert settings_hash(cfg) == saved_hash

    store = SavedRuns(workdir / ".sage-ada" / "runs", mirror=None)
    store.save_settings("old", before)
    _set(workdir, "train", "job_timeout_s", 99)
    resumed = store.resume_config("old", None, workdir / "params.yaml")
    assert resumed.train.job_timeout_s == 99 and settings_hash(resumed) == saved_hash


# --- faults that need servers or a SIGKILL (slow) ------------------------------------------

def _fast_run(workdir: Path, **active) -> None:
    raw = yaml.safe_load((workdir / "params.yaml").read_text())
    raw["train"].update(pretrain_steps=30, steps_per_round=10)
    raw["active"].update(rounds=2, budget=5, **active)
    (workdir / "params.yaml").write_text(yaml.safe_dump(raw, allow_unicode=True))


@pytest.mark.slow
def test_two_runs_started_together_one_is_refused_at_once(workdir):
    """Two identical runs 0.3 s apart: before the guard claimed its place up front both
    trained and registered a model; now the second says so in seconds."""
    _fast_run(workdir)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("MLFLOW_TRACKING_URI", None)
    runs = []
    for _ in range(2):
        runs.append(subprocess.Popen(["sage-ada", "run", "--no-progress"], cwd=workdir, env=env,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
        time.sleep(0.3)
    ended = [(*run.communicate(timeout=600), run.returncode) for run in runs]
    ended = [(code, out, err) for out, err, code in ended]
    assert sorted(code for code, _, _ in ended) == [0, 2], [e[-3000:] for _, _, e in ended]
    (refused,) = [err for code, _, err in ended if code == 2]   # whichever came second
    ours = [line for line in refused.splitlines() if line.startswith("error:")]
    assert len(ours) == 1 and "a run with the same settings is in progress" in ours[0]
    assert "Traceback" not in refused


@pytest.mark.slow
def test_a_corrupt_image_found_inside_the_flow_is_one_message_without_tracebacks(workdir,
                                                                                digits_root):
    """Errors found once the flow runs (here: an image replaced by text after the split) are
    told once, by the CLI, not also as Prefect's tracebacks; nothing is trained."""
    shutil.copytree(digits_root, workdir / "data")
    _set(workdir, "data", "root", "data")
    broken = _path_of(workdir, "target_test", 4)
    broken.write_text("not an image")
    out = subprocess.run(["sage-ada", "run", "--rounds", "1"], cwd=workdir, capture_output=True,
                         text=True, timeout=600)
    assert out.returncode == 2, out.stderr[-2000:]
    assert "error: manifest validation failed" in out.stderr
    assert str(broken.relative_to(workdir / "data")) in out.stderr
    assert "Traceback" not in out.stderr + out.stdout
    assert "accuracy" not in out.stdout                               # no round was trained


@pytest.mark.slow
def test_an_mlflow_server_lost_mid_run_is_one_message_and_the_run_resumes(workdir,
                                                                        mlflow_server):
    """The tracking server dies after round 0: the run stops within a minute (not MLflow's
    minutes of retries per call), says so in one line with the command that continues it, and
    that command finishes the run once the server is back, pointing at that server."""
    _fast_run(workdir)
    env = mlflow_server.env
    run = subprocess.Popen(["sage-ada", "run", "--no-progress"], cwd=workdir, env=env,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for line in run.stdout:
        if line.startswith("  round  0"):
            mlflow_server.stop()
            stopped = time.monotonic()
            break
    out, err = run.communicate(timeout=300)
    waited = time.monotonic() - stopped
    print(f"the run gave up {waited:.1f} s after the tracking server stopped")
    assert run.returncode == 2, err[-3000:]
    assert waited < 90, f"{waited:.0f} s before the run gave up"
    ours = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(ours) == 1 and "Traceback" not in err, err[-3000:]
    assert f"the MLflow server at {mlflow_server.uri} stopped answering" in ours[0]
    run_id = re.search(r"--resume (\w+)`", ours[0]).group(1)

    mlflow_server.start()
    again = subprocess.run(["sage-ada", "run", "--no-progress", "--resume", run_id],
                           cwd=workdir, env=env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "round  2 | labels    10" in again.stdout
    assert f"Look at it: {mlflow_server.uri}/#/experiments/" in again.stdout
    assert f"/runs/{run_id}?" in again.stdout and ":5000" not in again.stdout


# --- README's table, checked against this one ----------------------------------------------

# README's messages, each with the row that makes it happen: a command row of FAULTS (its
# ``says`` holds the message's words), or a test (here or beside the code it pins) that needs
# what a command row cannot give: Label Studio, a multi-process job, a second store, a flow.
MADE_BY_A_TEST = {
    "run <id> is saved ... but not in the MLflow store":
        "tests/test_flow.py::test_a_resume_keeps_the_runs_own_settings_and_refuses_others",
    "the data differs from data.dvc (data hashes to ..., data.dvc records ...)":
        "tests/test_data.py::test_data_digits_refuses_a_folder_that_differs_from_data_dvc",
    "the MLflow server at ... stopped answering during run <id>":
        "tests/test_faults.py::test_an_mlflow_server_lost_mid_run_is_one_message_and_the_run_resumes",
    "experiment '...' keeps its artifacts in ..., a folder of the machine that created it":
        "tests/test_registry.py::"
        "test_an_experiment_pinned_to_another_machines_folder_is_refused_through_a_server",
    "the N-process training job failed (exit ...); its log is ...":
        "tests/test_distributed.py::test_a_failing_job_says_where_its_log_is",
    "the N-process training job reached its time limit, train.job_timeout_s = ... s":
        "tests/test_torchrun.py::test_a_job_past_its_time_limit_is_stopped_ranks_and_all",
    "Label Studio is not reachable at ...":
        "tests/test_label_studio.py::test_server_down_gives_a_clear_error",
    "Label Studio ... stopped answering while round N was being annotated":
        "tests/test_label_studio.py::test_a_server_down_past_the_rounds_timeout_is_one_clear_error",
    "N of M tasks of round R annotated after ...":
        "tests/test_label_studio.py::test_skips_unknown_labels_and_disagreements",
    "annotators tie on N image(s)":
        "tests/test_label_studio.py::test_ties_fail_with_one_error_naming_them",
}


# Faults no command can cause, or that need a GPU, a SIGKILL or a hanging job, pinned beside the
# code they fix: what happened → the test (each failed before its fix).
PINNED_BESIDE_THE_CODE = {
    "AADA's exp(a) overflowed to ties of inf for large discriminator logits":
        "tests/test_query_numerics.py::test_aada_large_domain_logits_give_finite_distinct_log_scores",
    "AADA gave nan for a one-hot prediction":
        "tests/test_query_numerics.py::test_aada_zero_entropy_ranks_last_without_nan_whatever_the_logit",
    "BADGE with the cosine classifier embedded the raw features":
        "tests/test_query_numerics.py::"
        "test_badge_with_the_cosine_head_embeds_the_normalised_tempered_features",
    "the hash cache trusted a same-size replacement with its mtime put back":
        "tests/test_data_faults.py::"
        "test_the_hash_cache_does_not_trust_a_same_size_replacement_with_its_mtime_put_back",
    "a proved manifest stayed proved after a same-size replacement":
        "tests/test_data_faults.py::test_a_proved_manifest_is_not_trusted_after_a_same_size_replacement",
    "a hash cache of another shape crashed validation":
        "tests/test_data_faults.py::test_a_hash_cache_of_unexpected_shape_is_ignored",
    "a re-encoded copy in target_test leaked":
        "tests/test_data_faults.py::test_a_reencoded_copy_in_target_test_is_a_leak",
    "a SIGKILLed run left its temporary Prefect server running":
        "tests/test_watchdog.py::test_a_killed_run_leaves_no_prefect_server_behind",
    "what a killed process started outlived it":
        "tests/test_watchdog.py::test_what_a_process_started_ends_with_it_and_nothing_else_does",
    "a torchrun job had no time limit":
        "tests/test_torchrun.py::test_a_job_past_its_time_limit_is_stopped_ranks_and_all",
    "an interrupted launch left torchrun's ranks running":
        "tests/test_torchrun.py::test_an_interrupted_launch_ends_its_job_ranks_and_all",
    "under DDP the flow kept its model and cached memory on GPU 0":
        "tests/test_torchrun.py::test_during_the_job_the_flows_net_and_cached_memory_leave_the_gpu",
    "collective timeouts were the backends' defaults (10 to 30 minutes)":
        "tests/test_torchrun.py::test_each_process_gives_up_on_the_others_after_the_collective_timeout",
    "two identical runs 0.3 s apart both trained (end to end)":
        "tests/test_faults.py::test_two_runs_started_together_one_is_refused_at_once",
    "an image found corrupt inside the flow printed Prefect's tracebacks":
        "tests/test_faults.py::"
        "test_a_corrupt_image_found_inside_the_flow_is_one_message_without_tracebacks",
    "the tracking server lost mid-run; the closing hint named port 5000 for another server":
        "tests/test_faults.py::test_an_mlflow_server_lost_mid_run_is_one_message_and_the_run_resumes",
}


def _defines(test: str) -> bool:
    import ast

    path, name = test.split("::")
    tree = ast.parse((REPO / path).read_text())
    return name in {n.name for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)}


def test_every_fault_pinned_elsewhere_names_a_test_that_exists():
    missing = [t for t in [*PINNED_BESIDE_THE_CODE.values(), *MADE_BY_A_TEST.values()]
               if not _defines(t)]
    assert not missing
    print(f"the fault table: {len(FAULTS)} command rows, {len(PINNED_BESIDE_THE_CODE)} pinned "
          f"beside the code, {len(MADE_BY_A_TEST)} README messages pinned by named tests")


def readme_messages() -> list[str]:
    text = (REPO / "README.md").read_text()
    table = text.split("## When something goes wrong", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in table.splitlines() if line.startswith("| `")]
    return [re.match(r"\| `(.+?)`", row).group(1) for row in rows]


def words_of(message: str) -> list[str]:
    """The literal words of a README message: ``...``, ``<id>``, ``N``, ``'x'`` and
    ``(key: old → new)`` stand for values."""
    parts = re.split(r"\.\.\.|<[^>]+>|\b[NMR]\b|'x'|\(key: old → new\)|\(any .*?\)", message)
    return [w for w in (p.strip(" ,.;:'`()-") for p in parts) if len(w) > 3]


def _source_text() -> str:
    files = [*REPO.glob("components/**/*.py"), *REPO.glob("flows/*.py"), *REPO.glob("infra/**/*")]
    text = "\n".join(p.read_text(errors="replace") for p in files if p.is_file())
    return re.sub(r"[\"']\s*\n\s*f?[\"']", "", text)  # a message's string pieces, joined


def test_readme_lists_real_messages_each_made_by_a_row():
    """Each message of README's table is made to happen by a row: a command row here (whose
    output holds its words), or the named test (and then its words are in the code or in that
    test's assertions)."""
    messages, code = readme_messages(), _source_text()
    assert len(messages) >= 20
    says = " ".join(f.says for f in FAULTS)
    for message in messages:
        words, test = words_of(message), MADE_BY_A_TEST.get(message)
        assert words, message
        if test is None:  # a row runs the command and reads these words in its output
            missing = [w for w in words if w not in says]
            assert not missing, f"README's `{message}`: no row of FAULTS says {missing}"
            continue
        pinned = (REPO / test.split("::")[0]).read_text()
        assert all(w in code or w in pinned for w in words), f"README's `{message}`: unsaid"
        assert _defines(test), test
    assert set(MADE_BY_A_TEST) <= set(messages), set(MADE_BY_A_TEST) - set(messages)
