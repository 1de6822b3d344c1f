"""Checks a run's settings against this machine and its data before anything slow starts.

``load_config`` proves the settings are well formed; this proves they can run here: the GPU a
setting names exists, the labelling budget fits the pool, a resumed run exists. It reads only
small files (no torch, Prefect, MLflow or images), so a mistake is one line in a second, not a
traceback after a minute of start-up.
"""
from __future__ import annotations

import csv
import glob
from pathlib import Path
from typing import Optional

from components.config import Config, ConfigError
from components.data.shipped import check_channels, check_data_root
from components.run.saved import SavedRuns, UnreadableState, settings_hash


class ServerDown(ConnectionError):
    """A server the run needs does not answer; the message says how to start it."""


def check_run(cfg: Config, *, resume: Optional[str] = None, pretrain_only: bool = False,
              allow_duplicate: bool = False, store: SavedRuns | None = None) -> None:
    store = store or SavedRuns()
    if resume:  # a resumed run keeps its own settings, rounds included
        check_resumable(resume, store)
    else:
        check_rounds(cfg, pretrain_only)
        if not allow_duplicate:
            check_not_running(cfg, store)
    check_data_root(cfg)
    check_channels(cfg)
    check_device(cfg.train.device)
    check_gpus(cfg.train.gpus, cfg.train.device)
    check_budget(cfg)
    check_servers(cfg)
    if not allow_duplicate:  # last: a refused start writes nothing
        claim_settings(cfg, store)


def check_rounds(cfg: Config, pretrain_only: bool) -> None:
    """No rounds means no labels: only asked for on purpose, and then nothing is registered."""
    if cfg.active.rounds == 0 and not pretrain_only:
        raise ConfigError("active.rounds = 0 runs no labelling round (pretraining only); pass "
                          "--pretrain-only if that is what you want (nothing is registered), or "
                          "set --rounds N")


def visible_gpus() -> Optional[int]:
    """NVIDIA GPUs this machine shows (device files, so torch need not load); None when another
    kind of accelerator may be present (ROCm), which torch decides later."""
    if Path("/dev/kfd").exists():
        return None
    return len(glob.glob("/dev/nvidia[0-9]*"))


def check_device(device: str) -> None:
    if not device.startswith("cuda"):
        return
    count = visible_gpus()
    if count is None:
        return
    if count == 0:
        raise ConfigError(f"train.device = {device!r}, but this machine has no GPU; set "
                          "train.device: auto or cpu (--device cpu)")
    index = int(device.split(":", 1)[1]) if ":" in device else 0
    if index >= count:
        raise ConfigError(f"train.device = {device!r}, but this machine has {count} GPU(s): "
                          f"cuda:0 to cuda:{count - 1}")


def check_gpus(gpus: int, device: str) -> None:
    """``train.gpus`` processes need that many GPUs, unless CPU processes are asked for."""
    if gpus == 1 or device == "cpu":
        return
    if ":" in device:
        raise ConfigError(f"train.device = {device!r} picks one GPU, but train.gpus = {gpus}; "
                          "set train.device: cuda (choose the GPUs with CUDA_VISIBLE_DEVICES)")
    count = visible_gpus()
    if count is not None and count < gpus:
        raise ConfigError(f"train.gpus = {gpus}, but this machine has {count} GPU(s); set "
                          f"train.gpus to at most {max(count, 1)} (train.device: cpu runs that "
                          "many CPU processes instead)")


def pool_size(manifest: Path) -> Optional[int]:
    """Unlabelled target samples in the manifest; None when it is not built yet."""
    if not manifest.is_file():
        return None
    with open(manifest, newline="") as fh:
        return sum(1 for row in csv.DictReader(fh) if row.get("split") == "target_train")


def check_budget(cfg: Config) -> None:
    rounds, budget = cfg.active.rounds, cfg.active.budget
    pool = pool_size(Path(cfg.data.manifest))
    if pool is not None and rounds * budget > pool:
        raise ConfigError(
            f"active.rounds × active.budget = {rounds} × {budget} = {rounds * budget} labels, but "
            f"the pool has {pool} unlabelled target samples ({cfg.data.manifest}); lower --rounds "
            "or --budget")


def check_not_running(cfg: Config, store: SavedRuns) -> None:
    """Two runs of the same settings side by side would compute the same thing twice and
    register two versions of it: refused while the first one's process lives."""
    mine = settings_hash(cfg)
    for run_id in store.run_ids():
        try:
            state = store.load(run_id)
        except UnreadableState:
            continue  # told by `sage-ada runs` and by a resume of that run
        if (state.settings_hash == mine and state.rounds_done < cfg.active.rounds
                and store.alive(run_id)):
            raise ConfigError(f"a run with the same settings is in progress ({run_id}; see "
                              "`sage-ada runs`); wait for it, or pass --allow-duplicate to start "
                              "another anyway")


def claim_settings(cfg: Config, store: SavedRuns) -> None:
    """Take this run's settings before any slow work: a second start of the same settings
    (even 0.1 s later, before either has written a state file) is refused at once. The claim
    is an flock, so it ends with the process however that ends."""
    holder = store.claim_settings(settings_hash(cfg))
    if holder is not None:
        raise ConfigError(f"a run with the same settings is in progress ({holder}; see "
                          "`sage-ada runs`); wait for it, or pass "
                          "--allow-duplicate to start another anyway")


def check_resumable(run_id: str, store: SavedRuns) -> None:
    if (store.dir(run_id) / "state.json").is_file():
        store.load(run_id)  # unreadable: told now, not after a minute of start-up
        return
    if store.mirror is not None and store.file(run_id, "state.json").is_file():
        return  # kept by the tracking server: started by another worker or clone
    known = store.run_ids()[:5]
    hint = (f"runs that can be resumed here: {', '.join(known)} (`sage-ada runs` lists them)"
            if known else f"no run can be resumed here ({store.root} is empty)")
    raise ConfigError(f"--resume {run_id}: no saved state for that run under {store.root}; "
                      f"{hint}")


def answers(url: str, timeout: float = 5.0) -> Optional[str]:
    """None when ``url`` answers with a success, else why not (refused, timed out, status)."""
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=timeout):
            return None
    except urllib.error.HTTPError as err:
        return f"HTTP {err.code}"
    except (urllib.error.URLError, OSError) as err:
        return str(getattr(err, "reason", err))


def asks_login(url: str, user: str, password: Optional[str], timeout: float = 5.0,
               method: str = "GET", data: Optional[bytes] = None) -> Optional[str]:
    """Why ``url`` refuses this login (None: let in, or some other answer, left to the client's
    own errors): no login given, or a wrong one."""
    import base64
    import urllib.error
    import urllib.request

    request = urllib.request.Request(url, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
    if password:
        token = base64.b64encode(f"{user}:{password}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    try:
        urllib.request.urlopen(request, timeout=timeout).close()
    except urllib.error.HTTPError as err:
        if err.code == 401:
            return "a wrong login" if password else "it asks for a login"
    except (urllib.error.URLError, OSError):
        pass
    return None


def check_tracking_server(timeout: float = 5.0) -> None:
    """When ``MLFLOW_TRACKING_URI`` names a server, it answers now (one message in seconds,
    not MLflow's minutes of retries per call)."""
    import os

    uri = os.environ.get("MLFLOW_TRACKING_URI", "")
    if uri.startswith(("http://", "https://")):
        why = answers(uri.rstrip("/") + "/health", timeout)
        if why:
            raise ServerDown(f"the MLflow server at {uri} does not answer ({why}); start it with "
                             "`infra/mlflow/server.sh start`, or unset MLFLOW_TRACKING_URI to use "
                             "the local store under mlflow/")
        from components.secrets import MLFLOW_PASSWORD, mlflow_login, secrets_dir

        mlflow_login(uri)
        user = os.environ.get("MLFLOW_TRACKING_USERNAME", "")
        refused = asks_login(uri.rstrip("/") + "/api/2.0/mlflow/experiments/search?max_results=1",
                             user, os.environ.get("MLFLOW_TRACKING_PASSWORD"), timeout)
        if refused:
            raise ServerDown(
                f"the MLflow server at {uri} refused this process ({refused}): set "
                "MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD to your account (`infra/"
                "mlflow/add-user.sh <name>` makes one), or, on the server's machine, leave them "
                f"unset to log in as its admin from {secrets_dir() / MLFLOW_PASSWORD[0]}")


def check_prefect_server(timeout: float = 5.0) -> None:
    """When ``PREFECT_API_URL`` names a server, it answers now and lets this process in (it
    asks for the auth string of infra/prefect/server.sh): one line, not Prefect's traceback."""
    import os

    url = os.environ.get("PREFECT_API_URL", "").rstrip("/")
    if not url.startswith(("http://", "https://")):
        return
    why = answers(url + "/health", timeout)
    if why:
        raise ServerDown(f"the Prefect server at {url} does not answer ({why}); start it with "
                         "`infra/prefect/server.sh start`, or unset PREFECT_API_URL to run "
                         "without one")
    auth = os.environ.get("PREFECT_API_AUTH_STRING") or ""
    user, _, password = auth.partition(":")
    if asks_login(url + "/flow_runs/count", user, password or None, timeout, "POST", b"{}"):
        from components.secrets import PREFECT_AUTH, secrets_dir

        raise ServerDown(
            f"the Prefect server at {url} refused this process: "
            + ("PREFECT_API_AUTH_STRING is not its auth string" if auth else
               "it asks for its auth string") + "; export PREFECT_API_AUTH_STRING=\"$(cat "
            f"{secrets_dir() / PREFECT_AUTH[0]})\" (written by infra/prefect/server.sh; ask "
            "whoever runs the server for it)")


def check_servers(cfg: Config, timeout: float = 5.0) -> None:
    """The tracking server (when ``MLFLOW_TRACKING_URI`` names one), the Prefect server (when
    ``PREFECT_API_URL`` does) and Label Studio (when people annotate) must answer now: a closed
    port or a missing login is one message in seconds, not minutes of retries and a failed run."""
    check_tracking_server(timeout)
    check_prefect_server(timeout)
    if cfg.active.oracle == "label_studio":
        why = answers(cfg.label_studio.url.rstrip("/") + "/health", timeout)
        if why:
            raise ServerDown(f"Label Studio at {cfg.label_studio.url} does not answer ({why}); "
                             "start it with `infra/label-studio/server.sh start` (install it "
                             "once with `infra/label-studio/install.sh`), or set label_studio.url")
