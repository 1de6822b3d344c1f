"""The entry point of each ``torchrun`` process of a multi-GPU training phase.

``RunSteps`` writes a job folder (its settings, the labels so far, the starting weights)
and launches ``torchrun`` on this module; each process rebuilds the run's data, trains its
shard of every global batch, and rank 0 writes the weights back. It sits above the steps
(it builds one), so ``adaptation/`` knows nothing of runs and nothing imports in a circle.
"""
from __future__ import annotations

import json
import os
import sys
from datetime import timedelta
from pathlib import Path

import torch
import torch.distributed as dist

from components.adaptation.distributed import Shard
from components.config import Config
from components.models.checkpoints import load_checkpoint, save_checkpoint
from components.run.steps import RunSteps


def run_job(job_dir: Path) -> None:
    """One process of a job: train its shard; rank 0 saves."""
    spec = json.loads((job_dir / "job.json").read_text())
    cfg = Config.model_validate(spec["config"])
    cuda = spec["device"] != "cpu"
    # a rank that waits longer than this for the others (one died, or hangs) fails the job
    dist.init_process_group("nccl" if cuda else "gloo",
                            timeout=timedelta(seconds=cfg.train.collective_timeout_s))
    rank, world = dist.get_rank(), dist.get_world_size()
    local = int(os.environ.get("LOCAL_RANK", rank))
    device = torch.device(f"cuda:{local}") if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(device)
    try:
        steps = RunSteps(cfg, progress=spec["progress"] and rank == 0, device=device)
        net = steps.new_network()
        load_checkpoint(net, job_dir / "start.pt")
        steps.train_phase(net, spec["round"], spec["labelled"], shard=Shard(rank, world))
        if rank == 0:  # the synchronised BatchNorms keep the plain ones' state-dict keys
            save_checkpoint(net, job_dir / "end.pt")
        dist.barrier()
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    run_job(Path(sys.argv[1]))
