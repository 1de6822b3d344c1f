"""A multi-GPU phase's ``torchrun`` job ends with whatever ends the wait for it (its time limit,
an error, a Ctrl-C), ranks included; while it runs, the flow's own process holds nothing on the
GPU rank 0 trains on; its processes give up on each other after ``train.collective_timeout_s``."""
from __future__ import annotations

import json
import os
import signal
import threading
import time
import uuid
from datetime import timedelta

import psutil
import pytest
import torch
import yaml

SLEEPER = """\
import os, sys, time
from pathlib import Path
Path(sys.argv[1], f"rank-{os.getpid()}").write_text("")
time.sleep(3600)
"""


@pytest.fixture
def sleeper(tmp_path, monkeypatch):
    """A worker module that never ends (its ranks write ``rank-<pid>`` into the job folder),
    named uniquely so that its processes can be found by name; whatever is left of them after
    the test is ended there, and counted as a failure."""
    name = f"sleeper_{uuid.uuid4().hex[:10]}"
    (tmp_path / f"{name}.py").write_text(SLEEPER)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")]))
    job = tmp_path / "job"
    job.mkdir()
    yield name, job
    left = _processes_of(name)
    for p in left:
        p.kill()
    assert not left, f"left running: {[p.cmdline() for p in left]}"


def _processes_of(name: str) -> list[psutil.Process]:
    found = []
    for p in psutil.process_iter(["cmdline"]):
        try:
            if name in " ".join(p.info["cmdline"] or []) and p.status() != psutil.STATUS_ZOMBIE:
                found.append(p)
        except psutil.Error:
            pass
    return found


def _gone(name: str, within: float = 10.0) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if not _processes_of(name):
            return True
        time.sleep(0.1)
    return False


def test_a_job_past_its_time_limit_is_stopped_ranks_and_all(sleeper, tmp_path):
    from components.run.torchrun import DistributedError, launch

    name, job = sleeper
    start = time.monotonic()
    with pytest.raises(DistributedError, match=r"time limit, train\.job_timeout_s = 6 s.*raise "
                                               r"train\.job_timeout_s .*log is .*log\.txt"):
        launch(name, job, 2, log=tmp_path / "log.txt", timeout_s=6)
    assert time.monotonic() - start < 6 + 15
    assert _gone(name, within=2), [p.cmdline() for p in _processes_of(name)]


def test_an_interrupted_launch_ends_its_job_ranks_and_all(sleeper, tmp_path):
    """Ctrl-C (or any error) in the launching process while the ranks run: torchrun and its
    ranks (each in a session of its own) end with the launch."""
    from components.run.torchrun import launch

    name, job = sleeper

    def interrupt_once_the_ranks_run():
        deadline = time.monotonic() + 120
        while len(list(job.glob("rank-*"))) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        os.kill(os.getpid(), signal.SIGUSR1)

    def raise_interrupt(*_):
        raise KeyboardInterrupt

    before = signal.signal(signal.SIGUSR1, raise_interrupt)
    try:
        threading.Thread(target=interrupt_once_the_ranks_run, daemon=True).start()
        with pytest.raises(KeyboardInterrupt):
            launch(name, job, 2, log=tmp_path / "log.txt")
    finally:
        signal.signal(signal.SIGUSR1, before)
    ranks = [int(f.name.removeprefix("rank-")) for f in job.glob("rank-*")]
    assert len(ranks) == 2
    assert _gone(name), [p.cmdline() for p in _processes_of(name)]


def test_the_job_leads_a_session_of_its_own(sleeper, tmp_path):
    """So that it can be ended as one group, and a signal to the launcher's group (a terminal's
    Ctrl-C) reaches the launcher, which ends the job, rather than the job first."""
    from components.run.torchrun import DistributedError, launch

    name, job = sleeper
    sessions = {}

    def note_sessions():
        deadline = time.monotonic() + 120
        while len(list(job.glob("rank-*"))) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        for p in _processes_of(name):
            if "torch.distributed.run" in " ".join(p.cmdline()):
                sessions["torchrun"] = (p.pid, os.getsid(p.pid))

    watcher = threading.Thread(target=note_sessions, daemon=True)
    watcher.start()
    with pytest.raises(DistributedError):
        launch(name, job, 2, log=tmp_path / "log.txt", timeout_s=8)
    watcher.join(timeout=120)
    pid, session = sessions["torchrun"]
    assert session == pid != os.getsid(0)


def _steps(project, **train):
    from components.config import load_config
    from components.run.steps import RunSteps

    raw = yaml.safe_load((project / "params.yaml").read_text())
    raw["train"].update({"steps_per_round": 2, "batch_size": 16, "device": "cpu", "gpus": 2,
                         **train})
    (project / "params.yaml").write_text(yaml.safe_dump(raw))
    return RunSteps(load_config(project / "params.yaml"), progress=False)


def test_during_the_job_the_flows_net_and_cached_memory_leave_the_gpu(project, monkeypatch):
    """The run's device is a GPU (simulated: there is none here, so the moves are recorded and
    only those to the CPU done): while torchrun trains, the flow's net is on the CPU and the
    CUDA cache was emptied; after, the net is back on the run's device with the job's weights."""
    import components.run.steps as steps_module
    from components.models.checkpoints import save_checkpoint

    steps = _steps(project)
    steps.device = torch.device("cuda:0")
    net = steps.new_network()
    moves, events = [], []
    cpu_to = net.to

    def to(device, *args, **kwargs):
        moves.append(torch.device(device))
        return cpu_to("cpu") if torch.device(device).type == "cpu" else net

    net.to = to
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: events.append("empty_cache"))
    trained = steps.new_network()
    with torch.no_grad():
        next(trained.parameters()).add_(1.0)

    def fake_launch(worker, job, nproc, *, log, **kwargs):
        events.append(("launch", moves[-1] if moves else None))
        save_checkpoint(trained, job / "end.pt")

    monkeypatch.setattr(steps_module, "launch", fake_launch)
    out = steps.train_phase(net, 1, dict.fromkeys(steps.pool.ids[:2], "0"))
    assert events == ["empty_cache", ("launch", torch.device("cpu"))]
    assert moves[-1] == torch.device("cuda:0")           # back on the run's device
    assert out is net and not net.training
    assert torch.equal(next(net.parameters()), next(trained.parameters()))


def test_the_job_gets_the_time_limit_of_its_settings(project, monkeypatch):
    import components.run.steps as steps_module
    from components.models.checkpoints import save_checkpoint

    steps = _steps(project, job_timeout_s=123)
    got = {}

    def fake_launch(worker, job, nproc, *, log, **kwargs):
        got.update(kwargs)
        save_checkpoint(steps.new_network(), job / "end.pt")

    monkeypatch.setattr(steps_module, "launch", fake_launch)
    steps.train_phase(steps.new_network(), 1, dict.fromkeys(steps.pool.ids[:2], "0"))
    assert got == {"timeout_s": 123}


def test_each_process_gives_up_on_the_others_after_the_collective_timeout(tmp_path, monkeypatch):
    """``dist.init_process_group`` gets ``train.collective_timeout_s`` from the job's settings
    (not the backend's default of 10 to 30 minutes)."""
    import torch.distributed as dist

    from components.config import Config
    from components.run.training_job import run_job

    cfg = Config().with_overrides({"train.collective_timeout_s": 42, "train.device": "cpu"})
    (tmp_path / "job.json").write_text(json.dumps({
        "config": cfg.model_dump(), "round": 1, "labelled": {}, "device": "cpu",
        "progress": False}))
    calls = []

    class Stop(Exception):
        pass

    def init_process_group(*args, **kwargs):
        calls.append((args, kwargs))
        raise Stop

    monkeypatch.setattr(dist, "init_process_group", init_process_group)
    with pytest.raises(Stop):
        run_job(tmp_path)
    ((args, kwargs),) = calls
    assert args == ("gloo",) and kwargs["timeout"] == timedelta(seconds=42)


def test_the_timeouts_are_settings_with_defaults():
    from components.config import Config, ConfigError, load_config
    from tests.conftest import REPO

    t = Config().train
    assert t.job_timeout_s >= 3600 and 60 <= t.collective_timeout_s <= 3600
    shipped = load_config(REPO / "params.yaml").train
    assert (shipped.job_timeout_s, shipped.collective_timeout_s) == (t.job_timeout_s,
                                                                     t.collective_timeout_s)
    for key in ("train.job_timeout_s", "train.collective_timeout_s"):
        with pytest.raises(ConfigError, match=key.replace(".", r"\.") + " = 0"):
            Config().with_overrides({key: 0})
