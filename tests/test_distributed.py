"""DDP under torchrun: two CPU processes (gloo) compute the update one process computes on the
same global batch, with BatchNorm over the whole batch and an odd labelled batch (5 = 3 + 2)."""
from __future__ import annotations

import pytest
import torch
import yaml


def _steps(project, **train):
    from components.config import load_config
    from components.run.steps import RunSteps

    raw = yaml.safe_load((project / "params.yaml").read_text())
    raw["train"].update({"steps_per_round": 6, "batch_size": 16, "device": "cpu", **train})
    (project / "params.yaml").write_text(yaml.safe_dump(raw))
    return RunSteps(load_config(project / "params.yaml"), progress=False)


@pytest.mark.parametrize("regulariser", ["sum", "mme"])
def test_two_gloo_processes_match_one_process_on_the_same_global_batch(project, regulariser):
    """Two updates; each tensor's difference must be a rounding error next to how far the
    updates moved it (measured: at most 4e-4 of it) (a dropped share weight, per-process BatchNorm or unsynchronised
    gradients move it by a tenth or more). Further updates only amplify rounding: the
    cosine classifier's temperature multiplies it by about 17 per update."""
    one = _steps(project, regulariser=regulariser, steps_per_round=2)
    labelled = dict(zip(one.pool.ids[:5], ["0", "1", "2", "3", "4"]))
    start = one.new_network()
    reference = one.new_network()
    reference.load_state_dict(start.state_dict())
    one.train_phase(reference, 1, labelled)

    two = _steps(project, regulariser=regulariser, steps_per_round=2, gpus=2)
    ddp = two.new_network()
    ddp.load_state_dict(start.state_dict())
    ddp = two.train_phase(ddp, 1, labelled)

    for key, before in start.state_dict().items():
        if not before.is_floating_point():
            assert torch.equal(ddp.state_dict()[key], reference.state_dict()[key]), key
            continue
        moved = float((reference.state_dict()[key] - before).abs().max())
        apart = float((ddp.state_dict()[key] - reference.state_dict()[key]).abs().max())
        # Biases that feed a BatchNorm have no gradient; they move by weight decay and rounding.
        tolerance = 2e-3 * moved if moved > 1e-4 else 1e-5
        assert apart <= tolerance, f"{key}: {apart:.2e} apart, {moved:.2e} moved"
    jobs = project / ".sage-ada" / "cache" / "jobs"
    assert not jobs.exists() or not any(jobs.iterdir())        # the job folder is cleaned up


def test_shares_of_a_global_batch_weigh_by_their_size():
    from components.adaptation.distributed import Shard

    positions = torch.arange(5)
    assert [Shard(r, 2).take(positions).tolist() for r in (0, 1)] == [[0, 2, 4], [1, 3]]
    assert [Shard(r, 2).scale(5) for r in (0, 1)] == [2 * 3 / 5, 2 * 2 / 5]
    assert Shard(1, 2).scale(1) == 0.0 and Shard().scale(7) == 1.0


def test_a_failing_job_says_where_its_log_is(project):
    from components.run.torchrun import DistributedError

    steps = _steps(project, gpus=2)
    steps.cfg.data.manifest = str(project / "nowhere.csv")   # each process fails to load it
    with pytest.raises(DistributedError, match=r"2-process training job failed .* log is .*log.txt"):
        steps.train_phase(steps.new_network(), 1, dict.fromkeys(steps.pool.ids[:2], "0"))


@pytest.mark.slow
def test_the_flow_runs_its_training_as_a_torchrun_job(project):
    """``sage-ada run`` with ``train.gpus: 2`` (CPU processes here): pretraining and the round's
    adaptation run under torchrun, launched by the flow's tasks, and the run finishes."""
    import os
    import subprocess

    raw = yaml.safe_load((project / "params.yaml").read_text())
    raw["train"].update(device="cpu", gpus=2)
    raw["active"].update(rounds=1)
    (project / "params.yaml").write_text(yaml.safe_dump(raw))
    out = subprocess.run(["sage-ada", "run", "--no-progress"], cwd=project, capture_output=True,
                         text=True, timeout=600, env={**os.environ, "MLFLOW_TRACKING_URI": ""})
    assert out.returncode == 0, out.stderr[-3000:]
    assert "round 0: training on 2 cpu processes (torchrun" in out.stdout
    assert "round 1: training on 2 cpu processes (torchrun" in out.stdout
    assert "round  1 | labels     5" in out.stdout


def test_training_holds_a_slot_per_physical_gpu(monkeypatch):
    import socket

    from flows.active_da import training_slots

    host = socket.gethostname()
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert training_slots(torch.device("cpu"), 1) == [f"sage-ada-cpu-{host}"]
    assert training_slots(torch.device("cuda:1"), 1) == [f"sage-ada-gpu-{host}-1"]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,3")
    assert training_slots(torch.device("cuda"), 2) == [f"sage-ada-gpu-{host}-2",
                                                      f"sage-ada-gpu-{host}-3"]
