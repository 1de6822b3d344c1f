"""Launching a multi-GPU training phase: ``torchrun`` over the run's worker module, waited for.

Apart from the training maths (``components.adaptation.distributed``), so editing how a job is
launched does not change what a cached pretrained model depends on.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


class DistributedError(RuntimeError):
    """The distributed job failed; the message says where its log is."""


def launch(worker: str, job: Path, nproc: int, *, log: Path) -> None:
    """``torchrun`` over the module ``worker`` (its argument: the job folder), one process per
    GPU (or CPU process); waits for it. The worker knows what a job holds; this does not."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
           f"--nproc_per_node={nproc}", "-m", worker, str(job)]
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    with open(log, "w") as out:
        done = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)
    if done.returncode != 0:
        tail = log.read_text().strip().splitlines()[-15:]
        raise DistributedError(f"the {nproc}-process training job failed (exit {done.returncode}); "
                               f"its log is {log}:\n" + "\n".join(tail))
