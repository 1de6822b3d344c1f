"""Whatever a run starts ends with it, even when the run is killed with SIGKILL: the watcher
(``components/run/watchdog.py``) ends the run's descendants, and nothing else."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import yaml

from tests.conftest import REPO

# A stand-in for a run: starts its watcher, then a child, a child that shrugs off SIGTERM, and
# a child whose own child leads a session of its own (as torchrun's ranks do) and outlives it.
PARENT = """
import json, subprocess, sys, time
import psutil
from components.run.watchdog import start

watcher = start(poll_s=0.2, grace_s=1.0)
sleep = [sys.executable, "-c", "import time; time.sleep(3600)"]
stubborn = [sys.executable, "-c", "import signal, time; signal.signal(signal.SIGTERM, "
            "signal.SIG_IGN); print('ready', flush=True); time.sleep(3600)"]
middle = [sys.executable, "-c", "import subprocess, sys, time; subprocess.Popen(" + repr(sleep)
          + ", start_new_session=True); time.sleep(1.5)"]
children = [subprocess.Popen(sleep), subprocess.Popen(stubborn, stdout=subprocess.PIPE, text=True),
            subprocess.Popen(middle)]
children[1].stdout.readline()
while len(psutil.Process().children(recursive=True)) < 5:   # watcher, 3 children, grandchild
    time.sleep(0.05)
print(json.dumps({"watcher": watcher.pid,
                  "descendants": [p.pid for p in psutil.Process().children(recursive=True)
                                  if p.pid != watcher.pid]}), flush=True)
time.sleep(3600 if sys.argv[1] == "wait" else 2)
"""


def _start_parent(how: str):
    return subprocess.Popen([sys.executable, "-c", PARENT, how], cwd=REPO, stdout=subprocess.PIPE,
                            text=True, start_new_session=True,
                            env={**os.environ, "PYTHONPATH": str(REPO)})


def _running(pid: int, created: float) -> bool:
    try:
        p = psutil.Process(pid)
        return p.create_time() == created and p.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _wait_gone(procs: dict[int, float], within: float) -> dict[int, float]:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        left = {pid: t for pid, t in procs.items() if _running(pid, t)}
        if not left:
            return {}
        time.sleep(0.1)
    return left


def _identities(pids) -> dict[int, float]:
    return {pid: psutil.Process(pid).create_time() for pid in pids}


def _end(procs: dict[int, float]) -> None:
    for pid, created in procs.items():
        if _running(pid, created):
            os.kill(pid, signal.SIGKILL)


@pytest.mark.parametrize("how", ["sigkill", "exit"])
def test_what_a_process_started_ends_with_it_and_nothing_else_does(how):
    """Killed with SIGKILL or ended normally, the parent's descendants end within seconds (the
    grandchild in its own session too, the one ignoring SIGTERM by SIGKILL), the watcher exits,
    and a process that was never the parent's keeps running."""
    bystander = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(3600)"])
    parent = _start_parent("wait" if how == "sigkill" else "exit")
    started = {}
    try:
        seen = json.loads(parent.stdout.readline())
        started = _identities(seen["descendants"] + [seen["watcher"]])
        assert len(seen["descendants"]) == 4
        watcher = psutil.Process(seen["watcher"])
        assert os.getsid(watcher.pid) == watcher.pid   # a kill of the run's group misses it
        assert "-I" in watcher.cmdline()               # psutil and the standard library only
        time.sleep(1.0)                                 # (it notes the descendants every 0.2 s)
        if how == "sigkill":
            parent.send_signal(signal.SIGKILL)
        parent.wait(timeout=30)
        left = _wait_gone(started, within=10)
        assert not left, [psutil.Process(pid).cmdline() for pid in left]
        assert bystander.poll() is None
    finally:
        _end(started)
        bystander.kill()
        bystander.wait()
        if parent.poll() is None:
            parent.kill()
        parent.wait()


def test_a_process_is_known_by_its_pid_and_its_start_time():
    from components.run.watchdog import alive

    me = psutil.Process()
    assert alive(me.pid, me.create_time())
    assert not alive(me.pid, me.create_time() - 5)      # the pid, reused by another process
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    created = psutil.Process(child.pid).create_time()
    child.wait()
    assert not alive(child.pid, created)


def test_the_watcher_costs_little():
    """One small process: no torch, Prefect or MLflow in it."""
    from tests.conftest import fresh_python

    out = fresh_python(
        "import json, time, psutil\n"
        "from components.run.watchdog import start\n"
        "w = psutil.Process(start().pid); time.sleep(1.5)\n"
        "print(json.dumps({'rss': w.memory_info().rss, 'cpu': sum(w.cpu_times()[:2]),"
        " 'maps': open(f'/proc/{w.pid}/maps').read()}))", env=dict(os.environ), timeout=60)
    assert out.returncode == 0, out.stderr
    seen = json.loads(out.stdout)
    assert seen["rss"] < 40e6 and seen["cpu"] < 1.0, seen["rss"]
    assert "torch" not in seen["maps"] and "_pydantic_core" not in seen["maps"]


# ------------------------------------------------------------------ end to end, as users run it
@pytest.fixture
def workdir(tmp_path, digits_root, digits_manifest) -> Path:
    """The project's settings over the digits benchmark, small, in a folder of its own."""
    from components.data.split import write_manifest

    write_manifest(digits_manifest, tmp_path / "splits" / "manifest.csv")
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    raw["data"]["root"] = str(digits_root)
    raw["train"].update(pretrain_steps=30, steps_per_round=10)
    raw["tracking"]["experiment"] = "tests"
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw, allow_unicode=True))
    return tmp_path


def _prefect_servers(pid: int) -> list[psutil.Process]:
    found = []
    try:
        for p in psutil.Process(pid).children(recursive=True):
            if "uvicorn" in " ".join(p.cmdline()):
                found.append(p)
    except psutil.Error:
        pass
    return found


@pytest.mark.slow
def test_a_killed_run_leaves_no_prefect_server_behind(workdir, tmp_path):
    """``sage-ada run`` without PREFECT_API_URL starts Prefect's temporary API server; SIGKILL
    the run (it alone, as the kernel's OOM killer would) and the server is gone within 15 s."""
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    env.update(PYTHONPATH=str(REPO), MLFLOW_TRACKING_URI="", PREFECT_HOME=str(tmp_path / "prefect"))
    run = subprocess.Popen([sys.executable, "-m", "flows.cli", "run", "--rounds", "1", "--budget",
                            "2", "--no-progress"], cwd=workdir, env=env, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, start_new_session=True)
    servers = []
    try:
        deadline = time.monotonic() + 300
        while not servers and time.monotonic() < deadline:
            assert run.poll() is None, run.stdout.read().decode()[-3000:]
            servers = _prefect_servers(run.pid)
            time.sleep(0.1)
        assert servers, "no Prefect server started"
        time.sleep(1.5)                                # the watcher notes it (every second)
        run.send_signal(signal.SIGKILL)
        run.wait(timeout=30)
        gone, left = psutil.wait_procs(servers, timeout=15)
        assert not left, [p.cmdline() for p in left]
    finally:
        for p in servers:
            try:
                p.kill()
            except psutil.Error:
                pass
        try:
            os.killpg(run.pid, signal.SIGKILL)
        except OSError:
            pass
        run.wait()
