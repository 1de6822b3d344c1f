"""The ``active-domain-adaptation`` flow: the design card's steps, as named Prefect tasks.

prepare/split → validate → pretrain (round 0) → for each round: select → annotate → adapt →
evaluate. The science lives in ``components``; this file only orchestrates: retries on I/O,
a timeout on annotation, readable task-run names, resume after a crash, and, for a deployed
run with ``label_studio.wait: suspend``, a wait for annotators that holds no process.
"""
import os
import socket
import uuid
from typing import Any, Optional

import mlflow
from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from components.config import Config, load_config
from components.data import prepare as data_steps
from components.data.versioning import data_hash
from components.oracle import OracleTimeout, make_oracle
from components.oracle.label_studio import WAIT_TAG
from components.run import watchdog
from components.run.active_run import ActiveRun
from components.run.preflight import ServerDown, claim_settings
from components.run.saved import SavedRuns
from components.run.steps import RunSteps
from components.tracking.lineage import git_commit, tracking_server_lost

IO = dict(retries=2, retry_delay_seconds=2, cache_policy=NO_CACHE)
# the model registry's slot: infra/prefect/worker.sh gives this tag a concurrency limit of one,
# so two runs finishing together promote `champion` one after the other (a read, then a write)
REGISTRY_SLOT = "sage-ada-registry"
PURE = dict(cache_policy=NO_CACHE)


@task(name="prepare", task_run_name="prepare data", **IO)
def prepare(cfg: Config) -> dict:
    """Build the shipped data if missing and the manifest if missing (the DVC split stage)."""
    data_steps.ensure_data(cfg)
    if not os.path.exists(cfg.data.manifest):
        data_steps.split_and_validate(cfg)
    return {"data_hash": data_hash(root=cfg.data.root, manifest=cfg.data.manifest),
            "git_commit": git_commit()}


@task(name="validate", task_run_name="validate manifest", **PURE)
def validate(cfg: Config) -> None:
    data_steps.validate(cfg)


@task(name="load", task_run_name="load data", **PURE)
def load(cfg: Config, progress: bool) -> RunSteps:
    return RunSteps(cfg, progress=progress)


@task(name="open run", task_run_name="open run", **IO)
def open_run(cfg: Config, steps: RunSteps, resume: Optional[str],
             auto_annotate: bool) -> ActiveRun:
    from prefect.runtime import flow_run

    oracle = make_oracle(cfg, steps.manifest, steps.classes, auto_annotate=auto_annotate,
                         progress=steps.progress)
    return ActiveRun.open(cfg, steps, oracle, resume=resume, flow_run_id=str(flow_run.id or ""))


def training_slots(device, gpus: int) -> list[str]:
    """The tags of a training task, one per GPU it uses (physical ids, through
    ``CUDA_VISIBLE_DEVICES``) or this machine's CPU. A tag with a Prefect concurrency limit
    makes the task wait for a slot before it runs; ``infra/prefect/worker.sh`` creates the
    limits (one training per device); without them nothing waits."""
    host = socket.gethostname()
    if device.type != "cuda":
        return [f"sage-ada-cpu-{host}"]
    first = device.index or 0
    ids = [str(first + i) for i in range(gpus)]
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible:
        physical = [v.strip() for v in visible.split(",")]
        ids = [physical[int(i)] if int(i) < len(physical) else i for i in ids]
    return [f"sage-ada-gpu-{host}-{i}" for i in ids]


@task(name="pretrain", task_run_name="pretrain round 0", **IO)
def pretrain(run: ActiveRun) -> dict:
    return run.pretrain()


@task(name="select", task_run_name="select round {round}", **PURE)
def select(run: ActiveRun, round: int) -> list[str]:
    return run.select(round)


def _not_a_timeout(task, task_run, state) -> bool:
    """Retry I/O faults, but not annotators being slow: that is the timeout policy's call."""
    return not isinstance(getattr(state, "data", None), OracleTimeout)


@task(name="annotate", task_run_name="annotate round {round}", retry_condition_fn=_not_a_timeout,
      **IO)
def annotate(run: ActiveRun, round: int, timeout: float) -> dict[str, str]:
    return run.annotate(round, timeout, announce=_link_in_prefect)


def _link_in_prefect(round: int, url: str) -> None:
    """The round's annotation page as a link on the flow run's page in the Prefect UI."""
    from prefect.artifacts import create_link_artifact

    create_link_artifact(link=url, link_text=f"Label round {round} in Label Studio",
                         key=f"annotate-round-{round}",
                         description=f"Round {round} is waiting for annotators.")


@task(name="ask", task_run_name="ask annotators round {round}", **IO)
def ask(run: ActiveRun, round: int) -> None:
    run.ask(round, announce=_link_in_prefect)


@task(name="can collect", task_run_name="check answers round {round}", **IO)
def can_collect(run: ActiveRun, round: int, timeout: float) -> bool:
    return run.can_collect(timeout)


@task(name="watch", task_run_name="watch round {round}", **IO)
def watch(run: ActiveRun, round: int, timeout: float, stop: bool = False) -> None:
    """Have Label Studio call the receiver of infra/webhooks/ on each annotation (or no more).
    Which round the run waits on, how it is judged and when the wait times out go on the flow
    run in Prefect, as a tag: the receiver reads them there, never from a webhook or a request
    (issue 32)."""
    from prefect import get_client
    from prefect.runtime import flow_run

    if stop:
        run.unwatch()
        return
    with get_client(sync_client=True) as client:
        tags = [t for t in client.read_flow_run(flow_run.id).tags if not t.startswith(WAIT_TAG)]
        client.update_flow_run(flow_run.id, tags=tags + [run.wait_tag(timeout)])
    run.watch(str(flow_run.id))


def suspends(cfg: Config) -> bool:
    """A wait that holds nothing needs people as the oracle and a deployment to resume."""
    from prefect.runtime import deployment

    if cfg.active.oracle != "label_studio" or cfg.label_studio.wait != "suspend":
        return False
    if deployment.id is None:
        get_run_logger().warning("label_studio.wait: suspend needs a deployment (prefect.yaml) "
                                 "to resume the run; this run waits in its process instead")
        return False
    return True


def deployment_resume(run_id: str) -> str:
    """The command that continues ``run_id`` through this flow run's deployment (a worker runs
    it, and it suspends while people label), not in a process of the caller's."""
    from prefect.runtime import deployment, flow_run

    return (f"`prefect deployment run '{flow_run.flow_name}/{deployment.name}' "
            f"--param resume={run_id}`")


def wait_holding_nothing(run: ActiveRun, round: int, timeout: float) -> None:
    """Ask, and unless the round is already answered, suspend the flow run: its process exits
    (no model, data or GPU held) until the receiver resumes it; the run then starts over,
    skipping every finished step, and comes back here to find the answers (the receiver
    resumes on the run's own definition of answered, so it does not suspend again)."""
    from prefect.flow_runs import suspend_flow_run

    if run.state.pending.handle is not None and can_collect(run, round, timeout):
        return  # resumed with the round answered: nothing to ask or announce again
    ask(run, round)
    if can_collect(run, round, timeout):
        return
    watch(run, round, timeout)
    if can_collect(run, round, timeout):  # answered while the webhook was being set up
        return
    print(f"round {round}: waiting for annotators without a process; the run resumes when "
          "they finish", flush=True)
    # a fresh key each time: Prefect skips a suspend whose key it has seen in this flow run
    suspend_flow_run(timeout=None, key=f"round-{round}-{uuid.uuid4().hex[:8]}")


@task(name="adapt", task_run_name="adapt round {round}", **PURE)
def adapt(run: ActiveRun, round: int) -> None:
    run.adapt(round)


@task(name="evaluate", task_run_name="evaluate round {round}", **IO)
def evaluate(run: ActiveRun, round: int) -> dict:
    return run.evaluate(round)


@task(name="register", task_run_name="register model", **IO)
def register(run: ActiveRun) -> Optional[str]:
    return run.finish()


def print_row(row: dict) -> None:
    print(f"  round {row['round']:>2} | labels {row['n_labels']:>5} | accuracy "
          f"{100 * row['accuracy']:6.2f}% | select {row['select_seconds']:7.2f}s | "
          f"train {row['train_seconds']:7.2f}s", flush=True)


@flow(name="active-domain-adaptation", log_prints=False)
def active_domain_adaptation(params: str = "params.yaml", overrides: Optional[dict[str, Any]] = None,
                             resume: Optional[str] = None, progress: bool = True,
                             auto_annotate: bool = False, allow_duplicate: bool = False) -> dict:
    """Run (or resume) one active domain adaptation run; returns its run id and history. A
    resumed run keeps the settings it started with (flags given again must agree). People start
    it from the Prefect UI's form through ``flows/deployment.py``.

    Args:
        params: the settings file, relative to the working directory.
        overrides: settings by dotted key, over the file's: {"train.regulariser": "mme"}.
        resume: an MLflow run id to continue.
        allow_duplicate: start even while a run with the same settings is in progress on this
            machine (refused otherwise, the command line's rule).
    """
    watchdog.start()  # what this run starts (torchrun, ...) ends with it, even if it is killed
    cfg = ((resume and SavedRuns().resume_config(resume, overrides, params))
           or load_config(params, overrides))
    if not allow_duplicate:
        claim(cfg)
    prepare(cfg)
    validate(cfg)
    steps = load(cfg, progress)
    run = open_run(cfg, steps, resume, auto_annotate)
    print(f"MLflow run {run.run_id} in experiment '{cfg.experiment_name}' "
          f"({cfg.active.strategy}, b={cfg.active.budget}, {cfg.active.rounds} rounds)", flush=True)
    try:
        return _rounds(cfg, run)
    except Exception as err:
        if not tracking_server_lost(err):
            run.failed()
            raise
        raise ServerDown(
            f"the MLflow server at {mlflow.get_tracking_uri()} stopped answering during run "
            f"{run.run_id}; every finished step is saved: start the server again "
            f"(`infra/mlflow/server.sh start`) and continue with `sage-ada run --resume "
            f"{run.run_id}`") from None


def claim(cfg: Config) -> None:
    """The command line's rule for every start, deployments included: the settings of a run
    in progress on this machine are refused to a second run, before any slow work. A flow
    run that already has saved state (resumed after a suspend or a crash) is that run."""
    from prefect.runtime import flow_run

    store = SavedRuns()
    if store.find_by_flow_run(str(flow_run.id or "")) is None:
        claim_settings(cfg, store)


def _rounds(cfg: Config, run: ActiveRun) -> dict:
    """Round 0, then select → annotate → adapt → evaluate per round, then register."""
    for row in run.state.history:
        print_row(row)
    slots = training_slots(run.steps.device, cfg.train.gpus)
    pretraining = pretrain.with_options(tags=slots)
    training = adapt.with_options(tags=slots)
    if run.state.rounds_done < 0:
        print_row(pretraining(run))
    else:
        pretraining(run)  # reloads the last finished round's checkpoint
    timeout = cfg.active.annotate_timeout_s
    # A hard Prefect timeout backs the oracle's own, except when the policy is to keep waiting.
    hard = None if (cfg.active.oracle == "label_studio"
                    and cfg.label_studio.on_timeout == "wait") else timeout + 120
    suspending = suspends(cfg)
    for r in range(run.state.rounds_done + 1, cfg.active.rounds + 1):
        select(run, r)
        if suspending:
            wait_holding_nothing(run, r, timeout)
        try:
            annotate.with_options(timeout_seconds=hard)(run, r, timeout)
        except OracleTimeout as err:
            if not suspending:
                raise
            raise OracleTimeout(f"{err}. This run was deployed: resume it through its "
                                f"deployment, so that it waits suspended again: "
                                f"{deployment_resume(run.run_id)}") from None
        if suspending:
            watch(run, r, timeout, stop=True)
        training(run, r)
        print_row(evaluate(run, r))
    version = register.with_options(tags=[REGISTRY_SLOT])(run)
    return {"run_id": run.run_id, "history": run.state.history,
            "labelled": run.state.labelled, "registered_version": version,
            "experiment": cfg.experiment_name}
