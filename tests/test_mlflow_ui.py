"""The MLflow UI opens where README and `sage-ada ui` send people: the project's experiment on its
training runs, not MLflow 3.17's GenAI pages (issue 30). The 3.17 UI picks its pages by a
"workflow type" (the page's ``workflowType=`` parameter, else the browser's choice at the top of
the sidebar, kept in localStorage, else GenAI), not by the experiment's ``mlflow.experimentKind``
tag, and the server has no setting for it: the links carry the parameter."""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from selenium.common.exceptions import StaleElementReferenceException

from tests.conftest import REPO, chromium

RUN_NAME = "sage seed 0"
# The UI re-renders while it loads: an element read a moment ago may be gone; a wait tries again
STALE = (StaleElementReferenceException,)
EXPERIMENT = "mnist→optdigits"


def _pipeline_run(tracker) -> tuple[str, str]:
    """A parent run and one round's child run, logged the way a pipeline run logs them
    (without the model). Returns (parent id, child id)."""
    parent = tracker.start_parent(params={"active": {"strategy": "sage", "seed": 0}},
                                  tags={"sage_ada.strategy": "sage"}, run_name=RUN_NAME)
    history = [{"round": 0, "accuracy": 0.5, "n_labels": 0}]
    child = tracker.log_round(parent, round=0, metrics={"accuracy": 0.5, "n_labels": 0},
                              per_class={"0": 0.5}, selection=[], history=history)
    tracker.client.set_terminated(parent)
    return parent, child


def _links(output: str) -> dict[str, str]:
    """``name: URL`` lines of `sage-ada ui`, by experiment name."""
    return dict(re.findall(r"^  (.+?): (http\S+)$", output, flags=re.M))


def test_ui_links_open_each_experiment_on_its_runs(tmp_path, monkeypatch, capsys):
    """`sage-ada ui` on the local store: one link per experiment (one made by a run, one made
    before the project tagged experiments), each to its runs table in the machine-learning view,
    then MLflow's UI on the port asked for."""
    import mlflow

    from components.tracking.lineage import Tracker, ui_url
    from flows import cli

    assert ui_url("http://h:1/") == "http://h:1/#/experiments?workflowType=machine_learning"
    assert (ui_url("http://h:1", "7", "abc")
            == "http://h:1/#/experiments/7/runs/abc?workflowType=machine_learning")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    tracker = Tracker(EXPERIMENT, root=tmp_path)
    _pipeline_run(tracker)
    old = tracker.client.create_experiment("made by hand")  # no kind tag, no run
    started = []
    monkeypatch.setattr(os, "execvp", lambda file, cmd: started.append(cmd))
    assert cli.main(["ui", "--port", "5123"]) == 0
    out = capsys.readouterr().out
    base = "http://127.0.0.1:5123"
    assert _links(out) == {EXPERIMENT: ui_url(base, tracker.experiment_id),
                           "made by hand": ui_url(base, old),
                           "all experiments": ui_url(base)}, out
    assert "Default" not in out  # MLflow's own, empty
    assert started and started[0][:2] == ["mlflow", "ui"] and started[0][-2:] == ["--port", "5123"]
    assert started[0][started[0].index("--backend-store-uri") + 1] == tracker.uri
    mlflow.set_tracking_uri(tracker.uri)  # the process-wide URI: a later test sets its own


def _cli(args: list[str], env: dict, cwd: Path, wait: float = 120) -> str:
    """`sage-ada …` as a user runs it; a command that is still running after ``wait`` seconds
    (a UI it started) is ended, with what it started (its own session)."""
    proc = subprocess.Popen([sys.executable, "-m", "flows.cli", *args], cwd=cwd,
                            env={**env, "PYTHONPATH": str(REPO)}, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=wait)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
    return out


def _log_in(driver, user: str, password: str) -> None:
    """What a browser sends once a person has signed in to the server's login dialog (MLflow's
    basic-auth app, issue 32): the same credentials on every request to it."""
    import base64

    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    driver.execute_cdp_cmd("Network.enable", {})
    driver.execute_cdp_cmd("Network.setExtraHTTPHeaders",
                           {"headers": {"Authorization": f"Basic {token}"}})


def _open(driver, url: str) -> None:
    """A fresh page load (a change of the part after '#' alone would keep the app's state)."""
    driver.get("about:blank")
    driver.get(url)


def _runs_table(driver, timeout: float = 90):
    """Waits for the runs table listing the pipeline run; returns the run's link. Fails with
    what the page shows instead (the GenAI overview: traces, tokens, cost)."""
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    def run_link(d):
        if "Run Name" not in d.find_element(By.TAG_NAME, "body").text:
            return False
        found = [e for e in d.find_elements(By.LINK_TEXT, RUN_NAME) if e.is_displayed()]
        return found[0] if found else False

    try:
        return WebDriverWait(driver, timeout, poll_frequency=0.5,
                             ignored_exceptions=STALE).until(run_link)
    except TimeoutException:
        body = driver.find_element(By.TAG_NAME, "body").text[:600].replace("\n", " | ")
        pytest.fail(f"no runs table listing '{RUN_NAME}' at {driver.current_url}: {body}")


def _click_text(driver, text: str) -> None:
    from selenium.webdriver.common.by import By

    driver.find_element(By.XPATH, f"//*[normalize-space(text())='{text}']").click()


@pytest.mark.slow
def test_mlflow_ui_opens_on_the_training_runs(mlflow_server, tmp_path, monkeypatch):
    """The tracking server from infra/ with a pipeline run logged through the Tracker; the link
    `sage-ada ui` prints (the README's address where it prints none) opens, in a browser that
    never used MLflow, on the runs table listing the run, not the GenAI overview. Choosing
    'Model training' in the sidebar (README) then sticks: the experiment's bare address and the
    run's page stay in that view ("Runs", not "Evaluations"). Screenshots in shots/ (or
    $SAGE_ADA_SHOTS)."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    from components.tracking.lineage import Tracker

    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server.uri)
    tracker = Tracker(EXPERIMENT)
    parent, _ = _pipeline_run(tracker)
    assert len(tracker.round_runs(parent)) == 1

    started = time.monotonic()
    out = _cli(["ui"], mlflow_server.env, tmp_path)
    told = _links(out).get(EXPERIMENT) or mlflow_server.uri  # README: "open http://127.0.0.1:5000"
    assert told.startswith(mlflow_server.uri), out
    shots = Path(os.environ.get("SAGE_ADA_SHOTS", tmp_path / "shots"))
    shots.mkdir(parents=True, exist_ok=True)
    driver = chromium()  # a fresh profile: a browser that never chose anything in MLflow's UI
    try:
        _open(driver, mlflow_server.uri + "/")                     # the server asks who you are
        assert "Model training" not in driver.find_element(By.TAG_NAME, "body").text  # refused
        _log_in(driver, os.environ["MLFLOW_TRACKING_USERNAME"],
                os.environ["MLFLOW_TRACKING_PASSWORD"])
        _open(driver, mlflow_server.uri + "/")
        WebDriverWait(driver, 90, ignored_exceptions=STALE).until(
            lambda d: "Model training" in d.find_element(By.TAG_NAME, "body").text)
        time.sleep(2)
        driver.save_screenshot(str(shots / "home.png"))

        _open(driver, told)
        link = _runs_table(driver)
        assert f"/experiments/{tracker.experiment_id}/runs" in driver.current_url
        body = driver.find_element(By.TAG_NAME, "body").text
        assert "Token Usage" not in body and "Evaluation runs" not in body
        time.sleep(2)  # the table's columns settle
        driver.save_screenshot(str(shots / "experiment.png"))

        # README: choose "Model training" once, on the home page ...
        _open(driver, mlflow_server.uri + "/")
        WebDriverWait(driver, 90, ignored_exceptions=STALE).until(
            lambda d: "Model training" in d.find_element(By.TAG_NAME, "body").text)
        _click_text(driver, "Model training")
        WebDriverWait(driver, 30, ignored_exceptions=STALE).until(lambda d: d.execute_script(
            "return window.localStorage.getItem('mlflow.workflowType_v1')") == '"machine_learning"')
        # ... and the experiment's bare address, then the run's page, stay in that view
        _open(driver, f"{mlflow_server.uri}/#/experiments/{tracker.experiment_id}")
        _runs_table(driver).click()
        WebDriverWait(driver, 60, ignored_exceptions=STALE).until(
            lambda d: f"/runs/{parent}" in d.current_url)
        crumbs = WebDriverWait(driver, 60, ignored_exceptions=STALE).until(lambda d: [
            e.text for e in d.find_elements(By.CSS_SELECTOR, "[class*='breadcrumb'] a")
            if e.text] or False)
        time.sleep(2)
        driver.save_screenshot(str(shots / "run.png"))
        assert "Evaluations" not in crumbs and "Runs" in crumbs, crumbs
    finally:
        driver.quit()
    print(f"browser part: {time.monotonic() - started:.1f} s; screenshots in {shots}")
