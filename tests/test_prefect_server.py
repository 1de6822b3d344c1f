"""Prefect servers and workers from infra/: a cron deployment served by `sage-ada serve`, the
shipped prefect.yaml run by a worker, and training slots shared by two runs."""
from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time

import pytest

from tests.conftest import REPO, free_port, report_probes

pytestmark = pytest.mark.slow
SERVER, WORKER = str(REPO / "infra/prefect/server.sh"), str(REPO / "infra/prefect/worker.sh")


@contextlib.contextmanager
def prefect_servers(home, *, worker: bool = False, **env):
    """A Prefect server (and a process worker) from infra/, private to ``home``; yields the
    environment that reaches them, and stops them on the way out."""
    env = {**os.environ, "PREFECT_PORT": str(free_port()), "PREFECT_HOME": str(home),
           "SAGE_ADA_RUN_DIR": str(home / "run"), "PYTHONPATH": os.pathsep.join(sys.path),
           "PREFECT_WORKER_PORT": str(free_port()), "SAGE_ADA_SECRETS": str(home / "secrets"),
           **env}
    env.pop("PREFECT_API_AUTH_STRING", None)
    subprocess.run(["bash", SERVER, "start"], check=True, env=env, timeout=300)
    env["PREFECT_API_URL"] = f"http://127.0.0.1:{env['PREFECT_PORT']}/api"
    auth = home / "secrets" / "prefect-auth"               # the server asks for it (issue 32)
    assert oct(auth.stat().st_mode)[-3:] == "600"
    env["PREFECT_API_AUTH_STRING"] = auth.read_text().strip()   # as a client exports it
    try:
        if worker:
            subprocess.run(["bash", WORKER, "start"], check=True, env=env, timeout=300)
        yield env
    finally:
        stops = [subprocess.run(["bash", script, "stop"], env=env, timeout=90,
                                capture_output=True, text=True)
                 for script in ([WORKER] if worker else []) + [SERVER]]
    # each stops on SIGTERM, not killed after the wait (issue 35: the worker, started as a
    # background job with SIGINT ignored, never did)
    for stop in stops:
        assert stop.returncode == 0 and stop.stdout.strip().endswith("stopped"), \
            stop.stdout + stop.stderr


@contextlib.contextmanager
def api_client(env):
    from prefect import get_client
    from prefect.settings import PREFECT_API_AUTH_STRING, PREFECT_API_URL, temporary_settings

    with temporary_settings({PREFECT_API_URL: env["PREFECT_API_URL"],
                             PREFECT_API_AUTH_STRING: env["PREFECT_API_AUTH_STRING"]}):
        with get_client(sync_client=True) as client:
            yield client


def test_cron_deployment_runs_unattended(project, tmp_path_factory):
    with prefect_servers(tmp_path_factory.mktemp("prefect")) as env:
        import httpx

        api, auth = env["PREFECT_API_URL"], tuple(env["PREFECT_API_AUTH_STRING"].split(":", 1))
        probes = []                                                        # issue 32

        def probe(name, expected, answer):
            probes.append({"probe": name, "expected": expected, "answer": answer})
            assert answer == expected, (name, answer)

        probe("Prefect /api/health without a login", 200, httpx.get(f"{api}/health").status_code)
        for what, who in (("without a login", None), ("with a wrong one", ("sage-ada", "guess"))):
            probe(f"Prefect API: list flow runs {what}", 401,
                  httpx.post(f"{api}/flow_runs/filter", json={}, auth=who).status_code)
            probe(f"Prefect API: start a run of a deployment {what}", 401, httpx.post(
                f"{api}/deployments/00000000-0000-0000-0000-000000000000/create_flow_run",
                json={}, auth=who).status_code)
        probe("Prefect API: list flow runs with the auth string", 200,
              httpx.post(f"{api}/flow_runs/filter", json={}, auth=auth).status_code)
        report_probes("prefect", probes)
        from unittest import mock

        from components.run.preflight import ServerDown, check_prefect_server

        for given, said in ((None, "it asks for its auth string"),
                            ("sage-ada:guess", "is not its auth string")):
            with mock.patch.dict(os.environ, {"PREFECT_API_URL": api}), \
                    pytest.raises(ServerDown, match=said + r".*export PREFECT_API_AUTH_STRING"):
                os.environ.pop("PREFECT_API_AUTH_STRING", None)
                if given:
                    os.environ["PREFECT_API_AUTH_STRING"] = given
                check_prefect_server()
        with mock.patch.dict(os.environ, {"PREFECT_API_URL": api,
                                          "PREFECT_API_AUTH_STRING": env["PREFECT_API_AUTH_STRING"]}):
            check_prefect_server()                                           # let in
        serve = subprocess.Popen([sys.executable, "-m", "flows.cli", "serve", "--name", "nightly",
                                  "--cron", "0 3 * * *"], cwd=project, env=env,
                                 stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                 start_new_session=True)
        try:
            with api_client(env) as client:
                deadline = time.time() + 180
                while True:
                    try:
                        dep = client.read_deployment_by_name("active-domain-adaptation/nightly")
                        break
                    except Exception:
                        assert serve.poll() is None, serve.stdout.read().decode()[-3000:]
                        assert time.time() < deadline, "the deployment never appeared"
                        time.sleep(1)
                crons = [s.schedule.cron for s in dep.schedules]
                assert crons == ["0 3 * * *"]
                run = client.create_flow_run_from_deployment(dep.id)   # as the scheduler would
                deadline = time.time() + 420
                while True:
                    state = client.read_flow_run(run.id).state
                    if state.is_final():
                        break
                    assert time.time() < deadline, f"run still {state.name}"
                    time.sleep(2)
                assert state.is_completed(), state.message
        finally:
            os.killpg(serve.pid, signal.SIGTERM)
            serve.wait(timeout=30)
    assert list((project / ".sage-ada" / "runs").glob("*/state.json"))


def test_prefect_yaml_deploys_to_a_process_worker_that_runs_the_flow_in_its_clone(
        project, tmp_path_factory):
    """The shipped prefect.yaml, deployed with Prefect's CLI to a server from infra/, run by a
    worker from infra/ in the clone it was deployed from (state, MLflow store and registry
    there), with settings passed as deployment parameters (typed ones the UI shows as a form,
    any other by dotted key); the same settings submitted twice run once."""
    import json
    import shutil

    import mlflow

    for name in ("flows", "components"):
        (project / name).symlink_to(REPO / name)
    shutil.copy(REPO / "prefect.yaml", project / "prefect.yaml")
    store = f"sqlite:///{project / 'mlflow.db'}"
    with prefect_servers(tmp_path_factory.mktemp("prefect-pool"), worker=True,
                         MLFLOW_TRACKING_URI=store, SAGE_ADA_CLONE=str(project)) as env:
        deployed = subprocess.run(["prefect", "--no-prompt", "deploy", "--all"], cwd=project,
                                  env=env, capture_output=True, text=True, timeout=300)
        assert deployed.returncode == 0, deployed.stdout[-3000:] + deployed.stderr[-3000:]
        def submit():  # as typed: the form's fields, and any other setting in `overrides`
            started = subprocess.run(
                ["prefect", "deployment", "run", "active-domain-adaptation/manual",
                 "--param", "strategy=entropy", "--param", "rounds=1", "--param",
                 "overrides=" + json.dumps({"train.steps_per_round": 10})],
                cwd=project, env=env, capture_output=True, text=True, timeout=120)
            assert started.returncode == 0, started.stdout[-3000:] + started.stderr[-3000:]

        submit()
        submit()   # the same form submitted twice: one run, the other refused by the same rule
        with api_client(env) as client:
            nightly = client.read_deployment_by_name("active-domain-adaptation/nightly")
            form = nightly.parameter_openapi_schema["properties"]   # what the UI shows
            assert "badge" in form["strategy"]["enum"]             # a menu, no type toggle
            assert form["strategy"]["default"] == "sage" and form["budget"]["default"] == 5
            assert form["budget"]["type"] == "integer" and form["budget"]["minimum"] == 1
            assert [s.schedule.cron for s in nightly.schedules] == ["0 2 * * *"]
            # README "For a team": the people deployment's form, ready for a suspended run
            people = client.read_deployment_by_name("active-domain-adaptation/people")
            assert (people.parameters["oracle"], people.parameters["wait"]) == \
                ("label_studio", "suspend")
            assert people.parameter_openapi_schema["properties"]["wait"]["enum"] == \
                ["block", "suspend"]
            assert not any(s.active for s in nightly.schedules)    # paused until resumed
            with pytest.raises(Exception, match="budget"):         # refused, with why
                client.create_flow_run_from_deployment(nightly.id, parameters={"budget": 0})
            deadline = time.time() + 480
            while True:
                runs = client.read_flow_runs()
                if all(r.state.is_final() for r in runs):
                    break
                assert time.time() < deadline, [r.state.name for r in runs]
                time.sleep(2)
            assert len(runs) == 2, [r.name for r in runs]
            done = [r for r in runs if r.state.is_completed()]
            refused = [r for r in runs if r.state.is_failed()]
            assert len(done) == len(refused) == 1, [r.state.message for r in runs]
            assert "a run with the same settings is in progress" in refused[0].state.message
            assert done[0].name == "entropy b=5 ×1 seed 0"              # the clone's budget
    (state,) = list((project / ".sage-ada" / "runs").glob("*/state.json"))
    mlflow.set_tracking_uri(store)
    parent = mlflow.get_run(state.parent.name)
    assert parent.data.params["active.strategy"] == "entropy"
    versions = mlflow.MlflowClient().search_model_versions("name = 'sage-ada-mnist-to-optdigits'")
    assert [v.tags["parent_run_id"] for v in versions] == [parent.info.run_id]


def test_two_runs_take_turns_on_the_machines_training_slot(project, tmp_path_factory):
    """The worker script creates this machine's training slot (the CPU's here; one per GPU on a
    GPU machine); two runs started together then never train at the same time, and both
    finish."""
    import socket

    with prefect_servers(tmp_path_factory.mktemp("prefect-slots"), worker=True,
                         OMP_NUM_THREADS="1",
                         MLFLOW_TRACKING_URI=f"sqlite:///{project / 'mlflow.db'}") as env:
        runs = [subprocess.Popen([sys.executable, "-m", "flows.cli", "run", "--no-progress",
                                  "--strategy", strategy], cwd=project, env=env,
                                 stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
                for strategy in ("entropy", "random")]
        for run in runs:
            out, _ = run.communicate(timeout=600)
            assert run.returncode == 0, out[-3000:]
        with api_client(env) as client:
            limit = client.read_concurrency_limit_by_tag(f"sage-ada-cpu-{socket.gethostname()}")
            assert limit.concurrency_limit == 1
            training = [(t.start_time, t.end_time, t.flow_run_id)
                        for t in client.read_task_runs()
                        if t.name.startswith(("pretrain", "adapt")) and t.state.is_completed()]
            # the registry's slot too (issue 32): two champion promotions never interleave
            assert client.read_concurrency_limit_by_tag("sage-ada-registry").concurrency_limit == 1
            registering = sorted((t.start_time, t.end_time) for t in client.read_task_runs()
                                 if t.name.startswith("register") and t.state.is_completed())
    assert len({flow for _, _, flow in training}) == 2 and len(training) == 6
    assert len(registering) == 2 and registering[0][1] <= registering[1][0]
    training.sort()
    for (_, end, a), (start, _, b) in zip(training, training[1:]):
        assert end <= start, f"two trainings at once ({a} and {b})"
