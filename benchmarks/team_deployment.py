"""A team's deployment, end to end, measured: what a run holds while people label, how fast a
webhook brings it back, and that another worker in another clone finishes it.

Starts every server from infra/ on free ports, private to a scratch folder: PostgreSQL (Debian's
package), MLflow on PostgreSQL with proxied artifacts, Label Studio on PostgreSQL, the Prefect
server, the webhook receiver, and a process worker in clone A. It deploys prefect.yaml from A and
runs it with people as the oracle and ``label_studio.wait: suspend``:

1. the flow pretrains, pushes round 1 to Label Studio and suspends; measured: the flow's
   processes, their memory (and GPU memory, where there is a GPU) while it waits;
2. worker A stops; worker B starts in clone B, which has never seen the run;
3. "annotators" label round 1 through Label Studio's API (the true labels); measured: seconds
   from the last annotation to the flow run running again (webhook → receiver → Prefect → B);
4. the run finishes on B from the state and checkpoint kept in MLflow's artifacts;
5. the same settings run embedded (one process, its own SQLite store), for the lineage.

``tests/test_team.py`` runs it on the test data and checks each step;
``python benchmarks/team_deployment.py`` runs it on the shipped benchmark (data/ and
splits/manifest.csv, as after README command 1) and writes
``benchmarks/results/team_deployment.json``.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from unittest import mock

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
INFRA = REPO / "infra"
FLOW = "active-domain-adaptation/manual"
LINEAGE = ("data_hash", "git_commit", "strategy", "seed", "regulariser", "adversarial",
           "cpu_kernels")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def script(path: str, *args: str, env: dict, timeout: float = 400) -> str:
    out = subprocess.run(["bash", str(INFRA / path), *args], env=env, capture_output=True,
                         text=True, timeout=timeout)
    if out.returncode != 0:
        raise RuntimeError(f"{path} {' '.join(args)} failed:\n{out.stdout[-2000:]}\n"
                           f"{out.stderr[-2000:]}")
    return out.stdout.strip()


@contextlib.contextmanager
def team_servers(work: Path):
    """Every server a team runs, from infra/, private to ``work``; yields the environment
    that reaches them (and the URLs), and stops them all on the way out."""
    pg = Path(tempfile.mkdtemp(prefix="sage-ada-pg-"))  # the postgres user must reach it
    os.chmod(pg, 0o755)
    env = {**os.environ, "SAGE_ADA_RUN_DIR": str(work / "servers"), "OMP_NUM_THREADS": "1",
           "PYTHONPATH": str(REPO), "POSTGRES_PORT": str(free_port()),
           "POSTGRES_DATA": str(pg / "data"), "MLFLOW_PORT": str(free_port()),
           "MLFLOW_STORE": str(work / "mlflow"), "PREFECT_PORT": str(free_port()),
           "PREFECT_HOME": str(work / "prefect"), "SAGE_ADA_WEBHOOK_PORT": str(free_port()),
           "SAGE_ADA_SWEEP_S": "600", "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
           "SAGE_ADA_SECRETS": str(work / "secrets")}   # the webhook secret, for all of them
    for name in ("MLFLOW_TRACKING_URI", "PREFECT_API_AUTH_STRING", "MLFLOW_TRACKING_USERNAME",
                 "MLFLOW_TRACKING_PASSWORD", "MLFLOW_AUTH_ADMIN_PASSWORD"):
        env.pop(name, None)   # these servers' own logins, made below
    ls_port = free_port()
    (work / "ls").mkdir(parents=True, exist_ok=True)
    (work / "ls" / "params.yaml").write_text(  # one folder of the images, for server and runs
        f"label_studio:\n  url: http://127.0.0.1:{ls_port}\n  media_root: {work / 'ls' / 'media'}\n")
    stops = []
    try:
        script("postgres/server.sh", "start", env=env)
        stops.append(("postgres/server.sh", env))
        env["MLFLOW_BACKEND_STORE_URI"] = script("postgres/server.sh", "url", "mlflow", env=env)
        ls_env = {**env, "LABEL_STUDIO_DATA": str(work / "ls"),
                  "SAGE_ADA_PARAMS": str(work / "ls" / "params.yaml"),
                  "LABEL_STUDIO_DATABASE_URL": script("postgres/server.sh", "url", "labelstudio",
                                                      env=env)}
        ls_env.pop("LABEL_STUDIO_PORT", None)
        script("mlflow/server.sh", "start", env=env)
        stops.append(("mlflow/server.sh", env))
        env.update(MLFLOW_TRACKING_USERNAME="sage-ada",   # the admin's login, as exported
                   MLFLOW_TRACKING_PASSWORD=(work / "secrets" / "mlflow-password").read_text().strip())
        script("label-studio/install.sh", env=env, timeout=900)
        script("label-studio/server.sh", "start", env=ls_env)
        stops.append(("label-studio/server.sh", ls_env))
        script("prefect/server.sh", "start", env=env)
        stops.append(("prefect/server.sh", env))
        # a client's login, as the server script says to export it (issue 32)
        env["PREFECT_API_AUTH_STRING"] = (work / "secrets" / "prefect-auth").read_text().strip()
        env.update(MLFLOW_TRACKING_URI=f"http://127.0.0.1:{env['MLFLOW_PORT']}",
                   PREFECT_API_URL=f"http://127.0.0.1:{env['PREFECT_PORT']}/api",
                   LABEL_STUDIO_URL=f"http://127.0.0.1:{ls_port}",
                   LABEL_STUDIO_CREDENTIALS=str(work / "ls" / "credentials.env"),
                   LABEL_STUDIO_MEDIA_ROOT=str(work / "ls" / "media"))
        script("webhooks/server.sh", "start", env=env)
        stops.append(("webhooks/server.sh", env))
        yield env
    finally:
        for path, e in reversed(stops):
            subprocess.run(["bash", str(INFRA / path), "stop"], env=e, capture_output=True,
                           timeout=120)
        shutil.rmtree(pg, ignore_errors=True)


def make_clone(folder: Path, params: dict) -> Path:
    """A working copy as a worker has one: the code, prefect.yaml and params.yaml."""
    folder.mkdir(parents=True)
    for name in ("flows", "components"):
        (folder / name).symlink_to(REPO / name)
    shutil.copy(REPO / "prefect.yaml", folder / "prefect.yaml")
    (folder / "params.yaml").write_text(yaml.safe_dump(params))
    return folder


def scenario_params(env: dict, data_root: Path, manifest: Path, **train) -> dict:
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    raw["data"].update(root=str(data_root), manifest=str(manifest))
    raw["train"].update(**train)
    raw["active"].update(oracle="label_studio", rounds=1, budget=5, annotate_timeout_s=3600)
    raw["label_studio"].update(
        url=env["LABEL_STUDIO_URL"], credentials=env["LABEL_STUDIO_CREDENTIALS"],
        media_root=env["LABEL_STUDIO_MEDIA_ROOT"],
        poll_interval_s=0.5, wait="suspend",
        webhook_url=f"http://127.0.0.1:{env['SAGE_ADA_WEBHOOK_PORT']}")
    raw["tracking"].update(experiment="team")
    return raw


@contextlib.contextmanager
def worker(env: dict, clone: Path):
    """A process worker from infra/ that runs flows in ``clone``; yields its pid."""
    wenv = {**env, "SAGE_ADA_CLONE": str(clone), "PREFECT_WORKER_PORT": str(free_port()),
            "SAGE_ADA_RUN_DIR": str(clone / ".servers")}
    script("prefect/worker.sh", "start", env=wenv)
    try:
        yield int((clone / ".servers" / "prefect-worker-sage-ada.pid").read_text())
    finally:
        subprocess.run(["bash", str(INFRA / "prefect/worker.sh"), "stop"], env=wenv,
                       capture_output=True, timeout=120)


def wait_for(client, flow_run_id, done, what: str, timeout: float = 600):
    deadline = time.time() + timeout
    while True:
        run = client.read_flow_run(flow_run_id)
        if done(run.state):
            return run
        if run.state.is_final() or time.time() > deadline:
            raise RuntimeError(f"flow run {flow_run_id} is {run.state.name} "
                               f"({run.state.message}), not {what}")
        time.sleep(0.5)


def held_by(pid: int) -> dict:
    """What a worker's flow-run processes hold: how many, their resident memory, GPU memory."""
    import psutil

    children = psutil.Process(pid).children(recursive=True)
    rss = sum(p.memory_info().rss for p in children if p.is_running())
    gpu = None
    if shutil.which("nvidia-smi"):
        pids = {str(p.pid) for p in children}
        out = subprocess.run(["nvidia-smi", "--query-compute-apps=pid,used_memory",
                              "--format=csv,noheader,nounits"], capture_output=True, text=True)
        gpu = sum(int(m) for p, m in (l.split(", ") for l in out.stdout.splitlines() if l)
                  if p in pids)
    return {"processes": len(children), "rss_mb": round(rss / 2**20, 1), "gpu_mb": gpu}


def annotate_round(env: dict, run_id: str, round: int, truth: dict[str, str]) -> float:
    """Label every task of the round with its true label, as people would in Label Studio;
    returns when the last annotation was saved (epoch seconds)."""
    from components.oracle.label_studio import choice_result, connect, item_id, read_api_key

    client = connect(env["LABEL_STUDIO_URL"], read_api_key(env["LABEL_STUDIO_CREDENTIALS"]))
    by_item = {item_id(run_id, sid): label for sid, label in truth.items()}
    (project,) = [p for p in client.projects.list() if run_id in p.title]
    tasks = [t for t in client.tasks.list(project=project.id, fields="all")
             if t.data.get("round") == round]
    for task in tasks:
        client.annotations.create(id=task.id, result=choice_result(by_item[task.data["item"]]))
    return time.time()


def lineage_of(client, run_id: str) -> dict:
    run = client.get_run(run_id)
    rounds = sorted(client.search_runs([run.info.experiment_id],
                                       f"tags.mlflow.parentRunId = '{run_id}'"),
                    key=lambda r: int(r.data.tags["sage_ada.round"]))
    return {"tags": {k: run.data.tags.get(f"sage_ada.{k}") for k in LINEAGE},
            "accuracy": [r.data.metrics["accuracy"] for r in rounds],
            "n_labels": [r.data.metrics["n_labels"] for r in rounds]}


def run_scenario(work: Path, data_root: Path, manifest: Path, **train) -> dict:
    import pandas as pd
    from mlflow.tracking import MlflowClient
    from prefect import get_client
    from prefect.settings import PREFECT_API_AUTH_STRING, PREFECT_API_URL, temporary_settings

    pool = pd.read_csv(manifest)
    truth = dict(zip(pool["sample_id"], pool["label"].astype(str)))
    measured: dict = {}
    with team_servers(work) as env, mock.patch.dict(os.environ, {
            k: env[k] for k in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")}):
        params = scenario_params(env, data_root, manifest, **train)
        a, b = make_clone(work / "clone-a", params), make_clone(work / "clone-b", params)
        with temporary_settings({PREFECT_API_URL: env["PREFECT_API_URL"],
                                 PREFECT_API_AUTH_STRING: env["PREFECT_API_AUTH_STRING"]}), \
                get_client(sync_client=True) as prefect:
            with worker(env, a) as pid_a:
                deployed = subprocess.run(["prefect", "--no-prompt", "deploy", "--all"], cwd=a,
                                          env=env, capture_output=True, text=True, timeout=300)
                if deployed.returncode != 0:
                    raise RuntimeError(deployed.stdout[-2000:] + deployed.stderr[-2000:])
                dep = prefect.read_deployment_by_name(FLOW)
                flow_run = prefect.create_flow_run_from_deployment(dep.id)
                started = time.time()
                wait_for(prefect, flow_run.id, lambda s: s.is_paused(), "suspended", 600)
                measured["seconds_to_suspension"] = round(time.time() - started, 1)
                deadline = time.time() + 60  # the flow's process exits just after suspending
                while (held := held_by(pid_a))["processes"] and time.time() < deadline:
                    time.sleep(0.5)
                measured["held_while_waiting"] = held
            tracking = MlflowClient(env["MLFLOW_TRACKING_URI"])
            (parent,) = tracking.search_runs(
                [tracking.get_experiment_by_name("team").experiment_id],
                f"tags.`sage_ada.flow_run_id` = '{flow_run.id}'")
            run_id = parent.info.run_id
            measured["clone_b_had_the_run_before"] = (b / ".sage-ada" / "runs" / run_id).exists()
            with worker(env, b):
                last = annotate_round(env, run_id, 1, truth)
                done = wait_for(prefect, flow_run.id, lambda s: s.is_final(), "finished", 600)
                states = prefect.read_flow_run_states(flow_run.id)
            running = [s.timestamp.timestamp() for s in states
                       if s.is_running() and s.timestamp.timestamp() > last]
            measured["seconds_from_last_annotation_to_running"] = (
                round(running[0] - last, 2) if running else None)
            measured["finished"] = done.state.name
            measured["finished_in_clone_b"] = (b / ".sage-ada" / "runs" / run_id /
                                               "state.json").is_file()
            measured["deployed"] = lineage_of(tracking, run_id)
            measured["tracking_store"] = env["MLFLOW_BACKEND_STORE_URI"].split(":")[0]
        measured["embedded"] = embedded_run(work / "embedded", params, env)
    return measured


def embedded_run(folder: Path, params: dict, env: dict) -> dict:
    """The same settings in one process (``sage-ada run``) on its own SQLite store, with
    the simulated annotator giving Label Studio the same true labels."""
    from mlflow.tracking import MlflowClient

    raw = {**params, "label_studio": {**params["label_studio"], "wait": "block"}}
    clone = make_clone(folder, raw)
    store = f"sqlite:///{clone / 'mlflow.db'}"
    local = {k: v for k, v in env.items() if k != "PREFECT_API_URL"}  # Prefect's own, in-process
    out = subprocess.run([sys.executable, "-m", "flows.cli", "run", "--no-progress",
                          "--auto-annotate"], cwd=clone, capture_output=True, text=True,
                         env={**local, "MLFLOW_TRACKING_URI": store}, timeout=600)
    if out.returncode != 0:
        raise RuntimeError(out.stdout[-3000:] + out.stderr[-3000:])
    (state,) = (clone / ".sage-ada" / "runs").glob("*/state.json")
    return lineage_of(MlflowClient(store), state.parent.name)


def main() -> int:
    with tempfile.TemporaryDirectory() as work:
        measured = run_scenario(Path(work), REPO / "data", REPO / "splits" / "manifest.csv")
    measured["command"] = "python benchmarks/team_deployment.py"
    measured["machine"] = f"{os.cpu_count()} CPUs, no GPU" if not shutil.which("nvidia-smi") \
        else f"{os.cpu_count()} CPUs, GPU"
    out = REPO / "benchmarks" / "results" / "team_deployment.json"
    out.write_text(json.dumps(measured, indent=1) + "\n")
    print(json.dumps(measured, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
