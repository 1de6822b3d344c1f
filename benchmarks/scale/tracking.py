"""Part "tracking" of ``benchmarks/team_scale.py`` (issue 31, part 5): how fast the tracking
store grows when every round logs a ResNet-50, and what ``tracking.keep_round_models`` does.

A tracking server started by ``infra/mlflow/server.sh`` (SQLite and proxied artifacts in a
folder of ``work``: a team's setup) receives one pipeline run of round 0 and ``args.rounds``
rounds, each finished by the project's own ``ActiveRun._finish_round``: the round's state
checkpoint written and kept in the run's artifacts (``ArtifactMirror``, as through any server),
the network logged as an MLflow LoggedModel in pt2 (``Tracker.log_round``), then the retention
pass; at the end the last round's model is registered (``Tracker.finish``). The network is
torchvision's resnet50 with random weights (nothing downloaded); evaluation is stubbed. Once
with every round kept, once with ``keep_round_models: 2``, each on a fresh store; the store's
size is the server folder's bytes on disk (database and artifacts) after each round.
"""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

from benchmarks.scale import figure

REPO = Path(__file__).resolve().parents[2]
MIB = 2 ** 20


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


class Server:
    """``infra/mlflow/server.sh`` over a store in ``folder``."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.uri = f"http://127.0.0.1:{free_port()}"
        self.env = {**os.environ, "MLFLOW_PORT": self.uri.rsplit(":", 1)[1],
                    "MLFLOW_STORE": str(folder / "store"),
                    "SAGE_ADA_RUN_DIR": str(folder / "servers")}

    def __call__(self, action: str) -> None:
        subprocess.run(["bash", str(REPO / "infra/mlflow/server.sh"), action], env=self.env,
                       check=action == "start", capture_output=True, timeout=600)


class Steps:
    """What ``_finish_round`` asks of the run's steps; evaluation is not measured here."""

    def evaluate(self, net):
        return {"accuracy": 0.5, "per_class": {"0": 0.5}}

    def save(self, net, path):
        from components.models.checkpoints import save_checkpoint

        save_checkpoint(net, path)

    def example_input(self, net):
        import numpy as np

        return np.zeros((2, 3, 224, 224), dtype=np.float32)  # two images, as the project's


def one_run(folder: Path, rounds: int, keep) -> dict:
    """Rounds 0..``rounds`` of one run on a fresh server; sizes and seconds per round."""
    from unittest import mock

    import mlflow
    import torch
    import torchvision

    import components.run.active_run as active_run
    from components.config import Config
    from components.run.saved import RunState, SavedRuns
    from components.tracking.artifact_mirror import ArtifactMirror
    from components.tracking.lineage import Tracker

    prune_seconds: list[float] = []
    real_prune = active_run.prune_rounds

    def timed_prune(*args, **kwargs):  # the retention pass _finish_round makes, timed
        start = time.perf_counter()
        try:
            return real_prune(*args, **kwargs)
        finally:
            prune_seconds.append(time.perf_counter() - start)

    server = Server(folder)
    server("start")
    old_uri = os.environ.get("MLFLOW_TRACKING_URI")
    os.environ["MLFLOW_TRACKING_URI"] = server.uri
    mlflow.set_tracking_uri(server.uri)
    try:
        tracker = Tracker("team-scale tracking")
        cfg = Config().with_overrides({"tracking.keep_round_models": keep})
        parent = tracker.start_parent(params={}, tags={}, run_name=f"keep {keep}")
        store = SavedRuns(folder / "runs", mirror=ArtifactMirror(tracker.client))
        run = active_run.ActiveRun(cfg, Steps(), tracker, store, oracle=None,
                                   state=RunState(run_id=parent))
        torch.manual_seed(0)
        run.net = torchvision.models.resnet50(weights=None)
        sizes, seconds = [], []
        with mock.patch.object(active_run, "prune_rounds", timed_prune):
            for r in range(rounds + 1):
                start = time.perf_counter()
                run._finish_round(r, labelled={}, selection=[], select_seconds=0.0)
                seconds.append(time.perf_counter() - start)
                sizes.append(folder_bytes(folder / "store"))
        tracker.finish(parent, registered_model="team-scale-resnet50", lineage={})
        registered = folder_bytes(folder / "store")
        artifacts = folder / "store" / "artifacts"
        model = max((p.stat().st_size for p in artifacts.rglob("model.pt2")), default=0)
        checkpoint = max((p.stat().st_size for p in artifacts.rglob("checkpoint-r*.pt")),
                         default=0)
        db = (folder / "store" / "mlflow.db").stat().st_size
    finally:
        server("stop")
        if old_uri is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
        else:
            os.environ["MLFLOW_TRACKING_URI"] = old_uri
        mlflow.set_tracking_uri(None)
    shutil.rmtree(folder, ignore_errors=True)  # gigabytes
    return {"sizes": sizes, "seconds": seconds, "prune": prune_seconds, "end": registered,
            "model": model, "checkpoint": checkpoint, "db": db}


def run(args, work: Path) -> dict:
    import torch

    os.environ.setdefault("OMP_NUM_THREADS", "1")
    torch.set_num_threads(1)
    rounds = args.rounds
    every = one_run(work / "tracking-keep-all", rounds, None)
    kept = one_run(work / "tracking-keep-2", rounds, 2)
    n = rounds

    def mib(x):
        return x / MIB

    def sizes_note(r):
        return "MiB after each round: " + ", ".join(f"{mib(s):.0f}" for s in r["sizes"])

    grow_all = (every["sizes"][-1] - every["sizes"][0]) / n
    steady = [kept["sizes"][r + 1] - kept["sizes"][r] for r in range(1, n)] or [0]
    out = {
        "ResNet-50 model logged per round (pt2)": figure(mib(every["model"]), "MiB",
            note="torchvision resnet50, random weights, 25.6 M parameters; Tracker.log_round "
                 "(mlflow.pytorch.log_model, serialization_format=pt2)"),
        "ResNet-50 state checkpoint per round": figure(mib(every["checkpoint"]), "MiB",
            note="checkpoint-r<k>.pt, kept in the run's artifacts (sage_ada_state/) through a "
                 "tracking server; the local default store (SQLite, no server) keeps no copy"),
        "store growth per round, every round kept": figure(mib(grow_all), "MiB/round",
            note=f"tracking server of infra/mlflow/server.sh (SQLite + proxied artifacts); "
                 f"rounds 1..{n} after round 0; {sizes_note(every)}"),
        f"store after round 0 + {n} rounds, every round kept": figure(
            mib(every["sizes"][-1]), "MiB", note="database and artifacts on disk"),
        "store growth per round, keep_round_models 2 (from round 2)": figure(
            mib(sum(steady) / len(steady)), "MiB/round",
            note="a round's model and checkpoint in, the one 2 rounds back out; "
                 + sizes_note(kept)),
        f"store after round 0 + {n} rounds, keep_round_models 2": figure(
            mib(kept["sizes"][-1]), "MiB",
            note="the last 2 rounds' models and checkpoints, plus metadata of every round "
                 "(deleted LoggedModels' rows stay until `mlflow gc`)"),
        "store after registering the last round, keep_round_models 2": figure(
            mib(kept["end"]), "MiB", note="registering copies no files: the version is the "
                                          "round's LoggedModel, which retention keeps"),
        "seconds per round's tracking, every round kept": figure(
            sum(every["seconds"][1:]) / n, "s",
            note="ActiveRun._finish_round minus evaluation: checkpoint saved and uploaded, model "
                 "exported and uploaded; first round (export warm-up) "
                 f"{every['seconds'][0]:.1f} s; slowest {max(every['seconds']):.1f} s"),
        "seconds per round's tracking, keep_round_models 2": figure(
            sum(kept["seconds"][1:]) / n, "s",
            note=f"the same, with the retention pass; slowest {max(kept['seconds']):.1f} s"),
        "seconds per retention pass, keep_round_models 2": figure(
            sum(kept["prune"]) / max(len(kept["prune"]), 1), "s",
            note="search rounds, logged models and registered versions; delete; remove bytes "
                 f"through the server; slowest {max(kept['prune'] or [0]):.2f} s"),
        "tracking database after the run, keep_round_models 2": figure(
            mib(kept["db"]), "MiB", note="SQLite backend of the server"),
    }
    return out
