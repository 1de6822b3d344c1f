"""Launching a multi-GPU training phase: ``torchrun`` over the run's worker module, waited for.

Apart from the training maths (``components.adaptation.distributed``), so editing how a job is
launched does not change what a cached pretrained model depends on.

The job leads a session of its own, so it is ended as one whatever ends the wait: the job's
time limit (``train.job_timeout_s``), an error or a Ctrl-C in the launching process. Its ranks
lead sessions of their own too (torchrun starts them so), so they are ended by name as well.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from components.run.watchdog import end_processes


class DistributedError(RuntimeError):
    """The distributed job failed; the message says where its log is."""


def launch(worker: str, job: Path, nproc: int, *, log: Path,
           timeout_s: float | None = None) -> None:
    """``torchrun`` over the module ``worker`` (its argument: the job folder), one process per
    GPU (or CPU process); waits for it, at most ``timeout_s`` seconds. The worker knows what a
    job holds; this does not."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
           f"--nproc_per_node={nproc}", "-m", worker, str(job)]
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env,
                                start_new_session=True)
        try:
            returncode = proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            end_job(proc)
            raise DistributedError(
                f"the {nproc}-process training job reached its time limit, train.job_timeout_s "
                f"= {timeout_s:g} s, and was stopped; if it needs longer, raise "
                f"train.job_timeout_s in the settings file and resume the run (a resume reads "
                f"it from there). Its log is {log}:\n" + _tail(log)) from None
        except BaseException:
            end_job(proc)
            raise
    if returncode != 0:
        raise DistributedError(f"the {nproc}-process training job failed (exit {returncode}); "
                               f"its log is {log}:\n" + _tail(log))


def end_job(proc: subprocess.Popen) -> None:
    """End a job started by :func:`launch`: its process group and every process under it."""
    import psutil

    try:
        job = psutil.Process(proc.pid)
    except psutil.Error:
        job = None
    if job is not None:
        end_processes([job], group_of=proc.pid)
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        pass


def _tail(log: Path) -> str:
    return "\n".join(log.read_text(errors="replace").strip().splitlines()[-15:])
