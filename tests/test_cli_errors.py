"""Every mistake a user can make on the command line, typed as a user types it: one line that
says what to change, exit code 2, no traceback, and nothing started or written (Prefect, MLflow
and training never begin)."""
from __future__ import annotations

import glob
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO


@pytest.fixture
def workdir(tmp_path, digits_root, digits_manifest) -> Path:
    """The project's settings over the digits benchmark, in a folder of its own, so whatever a
    command writes shows."""
    from components.data.split import write_manifest

    write_manifest(digits_manifest, tmp_path / "splits" / "manifest.csv")
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    raw["data"]["root"] = str(digits_root)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw, allow_unicode=True))
    return tmp_path


def _typo_in_file(workdir: Path) -> None:
    raw = yaml.safe_load((workdir / "params.yaml").read_text())
    raw["train"]["learning_rate"] = 0.1
    (workdir / "params.yaml").write_text(yaml.safe_dump(raw, allow_unicode=True))


def _a_saved_run(workdir: Path) -> None:
    """A run started with --budget 3, as the state store keeps it."""
    from components.config import load_config
    from components.run.saved import RunState, SavedRuns

    store = SavedRuns(workdir / ".sage-ada" / "runs")
    cfg = load_config(workdir / "params.yaml", {"active.budget": 3})
    store.save(RunState(run_id="r3", rounds_done=0))
    store.save_settings("r3", cfg.model_dump())


def _a_live_identical_run(workdir: Path) -> None:
    """A run of the same settings whose process (this test's) still runs."""
    from components.config import load_config
    from components.run.saved import RunState, SavedRuns, settings_hash

    store = SavedRuns(workdir / ".sage-ada" / "runs")
    cfg = load_config(workdir / "params.yaml")
    store.save(RunState(run_id="twin", rounds_done=0, settings_hash=settings_hash(cfg)))
    store.claim("twin")


NO_GPU = not glob.glob("/dev/nvidia[0-9]*") and not Path("/dev/kfd").exists()

CASES = [  # (arguments, what the one line must say, a change to the working folder first)
    ("run --budget 0", "active.budget = 0: Input should be greater than 0", None),
    ("run --budget -3", "active.budget = -3", None),
    ("run --budget ten", "argument --budget: invalid int value: 'ten'", None),
    ("run --strategy magic", "active.strategy = 'magic' is not a strategy; choose one of", None),
    ("run --strategy aada", "needs the DANN domain discriminator: set train.adversarial: dann",
     None),
    ("run --regulariser mme --adversarial maybe", "argument --adversarial: invalid choice", None),
    ("run --oracle people", "argument --oracle: invalid choice: 'people'", None),
    ("run --rounds 0", "pass --pretrain-only if that is what you want", None),
    ("run --rounds 3 --budget 400",
     "active.rounds × active.budget = 3 × 400 = 1200 labels, but the pool has 899", None),
    ("run --resume 0123456789abcdef", "--resume 0123456789abcdef: no saved state for that run",
     None),
    ("run --source optdigits", "data.source and data.target name the same domain", None),
    ("run --channels 2", "argument --channels: invalid choice: 2", None),
    ("run --source mnist-colour --target optdigits-texture", "mnist-colour and "
     "optdigits-texture are colour domains but data.channels = 1; pass --channels 3", None),
    ("run", "train.learning_rate is not a setting (misspelt?)", _typo_in_file),
    ("--params nowhere.yaml run", "nowhere.yaml not found", None),
    ("run", "a run with the same settings is in progress (twin; see `sage-ada runs`); wait for "
     "it, or pass --allow-duplicate", _a_live_identical_run),
    ("run --resume r3 --budget 5", "run r3 started with other settings than asked for now "
     "(active.budget: 3 → 5)", _a_saved_run),
    ("compare --strategies sage,magic", "active.strategy = 'magic' is not a strategy", None),
    ("run --frobnicate", "unrecognized arguments: --frobnicate", None),
    ("run", "data.root = 'dat' is not a folder; fix data.root, or build the shipped digits "
     "benchmark there on purpose with `sage-ada data digits --root dat`",
     lambda w: _set(w, "data", "root", "dat")),
] + ([("run --device cuda", "train.device = 'cuda', but this machine has no GPU", None),
      ("run --device cuda:1", "train.device = 'cuda:1', but this machine has no GPU", None),
      ("run", "train.gpus = 2, but this machine has 0 GPU(s); set train.gpus to at most 1 "
       "(train.device: cpu runs that many CPU processes instead)",
       lambda w: _set(w, "train", "gpus", 2))]
     if NO_GPU else [])


def _closed_port() -> int:
    from tests.conftest import free_port

    return free_port()  # nothing listens there


CASES += [
    ("run", "the MLflow server at http://127.0.0.1:{port} does not answer",
     {"MLFLOW_TRACKING_URI": "http://127.0.0.1:{port}"}),
    ("run --oracle label-studio", "Label Studio at http://127.0.0.1:{port} does not answer",
     lambda w: _set(w, "label_studio", "url", "http://127.0.0.1:{port}")),
]


def _set(workdir: Path, section: str, key: str, value) -> None:
    raw = yaml.safe_load((workdir / "params.yaml").read_text())
    raw[section][key] = value
    (workdir / "params.yaml").write_text(yaml.safe_dump(raw, allow_unicode=True))


@pytest.mark.parametrize("args, message, prepare", CASES, ids=[c[0] for c in CASES])
def test_a_mistake_is_one_line_and_exit_2_before_anything_starts(workdir, args, message, prepare):
    """``prepare``: a change to the working folder, or environment variables. ``{port}``: a
    port where no server listens."""
    port = _closed_port()
    message = message.format(port=port)
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    if isinstance(prepare, dict):
        env.update({k: v.format(port=port) for k, v in prepare.items()})
    elif prepare:
        prepare(workdir)
        text = (workdir / "params.yaml").read_text().replace("{port}", str(port))
        (workdir / "params.yaml").write_text(text)
    before = sorted(p.name for p in workdir.iterdir())
    out = subprocess.run(["sage-ada", *args.split()], cwd=workdir, capture_output=True,
                         text=True, timeout=120, env=env)
    assert out.returncode == 2, out.stderr
    assert message in out.stderr
    ours = [line for line in out.stderr.splitlines() if "error:" in line]
    assert len(ours) == 1 and "Traceback" not in out.stderr
    assert "prefect" not in (out.stdout + out.stderr).lower()          # nothing started
    assert sorted(p.name for p in workdir.iterdir()) == before         # nothing written


def test_debug_shows_the_traceback(workdir):
    out = subprocess.run(["sage-ada", "--debug", "run", "--budget", "0"], cwd=workdir,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode != 0 and "Traceback" in out.stderr and "ConfigError" in out.stderr


@pytest.mark.slow
def test_a_corrupt_image_found_inside_the_flow_is_one_message_without_tracebacks(workdir,
                                                                                digits_root):
    """Errors found once the flow runs (here: an image replaced by text after the split) are
    told once, by the CLI, not also as Prefect's tracebacks; nothing is trained."""
    shutil.copytree(digits_root, workdir / "data")
    _set(workdir, "data", "root", "data")
    manifest = (workdir / "splits" / "manifest.csv").read_text().splitlines()
    broken = manifest[-1].split(",")[4]
    (workdir / "data" / broken).write_text("not an image")
    out = subprocess.run(["sage-ada", "run", "--rounds", "1"], cwd=workdir, capture_output=True,
                         text=True, timeout=600)
    assert out.returncode == 2, out.stderr[-2000:]
    assert "error: manifest validation failed" in out.stderr and broken in out.stderr
    assert "Traceback" not in out.stderr + out.stdout
    assert "accuracy" not in out.stdout                               # no round was trained


@pytest.mark.slow
def test_an_mlflow_server_lost_mid_run_is_one_message_and_the_run_resumes(workdir,
                                                                        mlflow_server):
    """The tracking server dies after round 0: the run stops within a minute (not MLflow's
    minutes of retries per call), says so in one line with the command that continues it, and
    that command finishes the run once the server is back."""
    import re
    import time

    raw = yaml.safe_load((workdir / "params.yaml").read_text())
    raw["train"].update(pretrain_steps=30, steps_per_round=10)
    raw["active"].update(rounds=2, budget=5)
    (workdir / "params.yaml").write_text(yaml.safe_dump(raw, allow_unicode=True))
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


def test_an_os_error_is_one_line_that_says_what_to_do(workdir):
    """What the operating system refuses (here: the cache folder's place is taken by a file)
    is one line with what to check and how to get the traceback, not a traceback."""
    (workdir / ".sage-ada").write_text("not a folder")
    out = subprocess.run(["sage-ada", "data", "validate"], cwd=workdir, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 2, out.stderr[-2000:]
    (line,) = [ln for ln in out.stderr.splitlines() if ln.startswith("error:")]
    assert ".sage-ada" in line and "free disk space" in line and "--debug" in line
    assert "Traceback" not in out.stderr
