"""Whatever a run starts ends with it: a watcher process that outlives its parent by a second.

A ``sage-ada run`` starts processes of its own: Prefect's temporary API server (without
``PREFECT_API_URL``), ``torchrun`` and its ranks during a multi-GPU phase, the flow runs of
``sage-ada serve``. Killed with SIGKILL, the run cannot stop them, and they are no longer its
children once it is gone. So the CLI starts :func:`start` first: a small process, in a session
of its own (a kill of the run's process group does not take it first), that notes the run's
descendants every second while the run lives and, once the run is gone, ends the ones still
running (SIGTERM, then SIGKILL after a short grace), then exits. Each process is known by its
pid and its start time, so a pid the system gave to something else is never signalled.

The watcher runs this file by its path (``python -I``): it imports psutil and the standard
library only. Beneath every other module of ``components.run`` (``torchrun`` ends a job's
processes with :func:`end_processes`).
"""
from __future__ import annotations

import os
import signal
import sys
import time

import psutil

POLL_S = 1.0    # how often the watcher looks at the parent and its descendants
GRACE_S = 5.0   # between SIGTERM and SIGKILL


def descendants(pid: int) -> dict[int, psutil.Process]:
    """The live descendants of ``pid`` (children, theirs, ...), but this process; {} when
    ``pid`` is gone. Each ``psutil.Process`` knows its start time."""
    try:
        found = psutil.Process(pid).children(recursive=True)
    except psutil.Error:
        return {}
    return {p.pid: p for p in found if p.pid != os.getpid()}


def end_processes(procs, grace_s: float = GRACE_S, *, group_of=None) -> None:
    """End ``procs`` (``psutil.Process`` objects) and whatever they started since: SIGTERM, then
    SIGKILL to those left after ``grace_s``. A process whose pid now belongs to another one (its
    start time differs) is left alone. ``group_of``: a pid that leads a process group (a
    ``start_new_session`` child); the group is signalled too, while its leader is still the
    process it was."""
    alive = {}
    for p in procs:
        if _same(p):
            alive[p.pid] = p
            for child in _children(p):
                alive.setdefault(child.pid, child)
    alive.pop(os.getpid(), None)
    leader = alive.get(group_of) if group_of is not None else None
    _signal(alive.values(), leader, signal.SIGTERM)
    _, left = psutil.wait_procs(list(alive.values()), timeout=grace_s)
    left = [p for p in left if _same(p)]
    if left:
        _signal(left, leader if leader in left else None, signal.SIGKILL)
        psutil.wait_procs(left, timeout=grace_s)


def _same(p: psutil.Process) -> bool:
    """Still the process it was (``is_running`` compares the start time), not yet reaped."""
    try:
        return p.is_running() and p.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _children(p: psutil.Process) -> list[psutil.Process]:
    try:
        return p.children(recursive=True)
    except psutil.Error:
        return []


def _signal(procs, leader, sig) -> None:
    if leader is not None and _same(leader):
        try:
            os.killpg(leader.pid, sig)
        except OSError:
            pass
    for p in procs:
        try:
            if _same(p):
                p.send_signal(sig)
        except psutil.Error:
            pass


def alive(pid: int, created: float) -> bool:
    """``pid`` still runs and is the process that started at ``created``."""
    try:
        p = psutil.Process(pid)
        return abs(p.create_time() - created) < 0.01 and p.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def watch(parent: int, created: float, poll_s: float = POLL_S, grace_s: float = GRACE_S) -> None:
    """Note ``parent``'s descendants every ``poll_s`` while it lives (a descendant whose own
    parent died first stays noted while it runs); once it is gone, end those still running."""
    known: dict[int, psutil.Process] = {}
    while alive(parent, created):
        now = descendants(parent)
        known = {**{pid: p for pid, p in known.items() if pid not in now and _same(p)}, **now}
        time.sleep(poll_s)
    end_processes(known.values(), grace_s)


_STARTED = []  # the watcher's Popen, kept so it is not collected (and warned about) mid-run


def start(poll_s: float = POLL_S, grace_s: float = GRACE_S):
    """Start the watcher of this process (one per process: a second call returns the first)."""
    import subprocess

    if _STARTED:
        return _STARTED[0]
    me = psutil.Process()
    proc = subprocess.Popen(
        [sys.executable, "-I", os.path.abspath(__file__), str(me.pid), repr(me.create_time()),
         str(poll_s), str(grace_s)],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True, close_fds=True)
    _STARTED.append(proc)
    return proc


if __name__ == "__main__":
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a Ctrl-C is the run's to handle, not ours
    watch(int(sys.argv[1]), float(sys.argv[2]), *map(float, sys.argv[3:5]))
