"""Annotators in the loop, against a real Label Studio server started from infra/."""
from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import os
import re
import subprocess
import time
from pathlib import Path

import pytest
import yaml
from mlflow.tracking import MlflowClient

from components.oracle import OracleError, OracleTimeout
from components.oracle.auto_annotator import AutoAnnotator
from components.oracle.label_studio import (LabelStudioOracle, choice_result, classes_digest,
                                            connect, item_id, label_config, project_classes,
                                            read_wait_tag, rejected_labels, resolve,
                                            round_answered, round_status, task_answered,
                                            wait_tag)
from tests.conftest import REPO, chromium, free_port, logged_in, report_probes

CLASSES = [str(c) for c in range(10)]


# ---------------------------------------------------------------- pure resolution rules (fast)
def _ann(i, label=None, cancelled=False):
    return {"id": i, "updated_at": f"2026-01-01T00:00:0{i}", "was_cancelled": cancelled,
            "result": choice_result(label) if label else [], "completed_by": 7, "lead_time": 1.5 * i}


def test_resolution_rules():
    assert resolve([_ann(1, "3"), _ann(2, "3"), _ann(3, "5")], CLASSES, "majority", "s").label == "3"
    assert resolve([_ann(1, "1"), _ann(2, "2")], CLASSES, "majority", "s").label == "2"  # tie: latest
    assert resolve([_ann(1, "3"), _ann(2, "3"), _ann(3, "5")], CLASSES, "latest", "s").label == "5"
    skipped = resolve([_ann(1, cancelled=True)], CLASSES, "majority", "s")
    assert skipped.label is None and skipped.skipped
    assert (skipped.annotator, skipped.lead_time_s) == (7, 1.5)     # who skipped, how long
    assert resolve([], CLASSES, "majority", "s").label is None
    one = resolve([_ann(2, "4")], CLASSES, "majority", "s")
    assert (one.annotator, one.lead_time_s, one.n_annotations) == (7, 3.0, 1)


def test_several_annotators_are_credited_and_their_agreement_kept():
    """Two people: the majority is credited to those who gave it; an annotation a second
    person edited is theirs (Label Studio keeps the creator in completed_by)."""
    a, b, c = _ann(1, "3"), {**_ann(2, "3"), "completed_by": 8}, {**_ann(3, "5"), "completed_by": 9}
    three = resolve([a, b, c], CLASSES, "majority", "s")
    assert three.label == "3" and set(three.annotators) == {7, 8}
    assert three.agreement == pytest.approx(2 / 3) and three.answered == 3
    edited = resolve([{**_ann(1, "6"), "updated_by": 8}], CLASSES, "majority", "s")
    assert edited.annotator == 8 and edited.annotators == (8,)
    split = resolve([_ann(1, "1"), _ann(2, cancelled=True)], CLASSES, "majority", "s")
    assert split.label == "1" and split.answered == 2 and split.agreement == 1.0


def test_a_majority_tie_is_left_unsettled_unless_the_latest_may_break_it():
    tie = [_ann(1, "1"), {**_ann(2, "2"), "completed_by": 8}]
    for policy in ("ask_another", "fail"):
        r = resolve(tie, CLASSES, "majority", "s", ties=policy)
        assert r.label is None and r.tied == ("1", "2") and not r.skipped
        assert r.answered == 2 and r.agreement == 0.5
    assert resolve(tie, CLASSES, "majority", "s", ties="latest").label == "2"
    broken = resolve(tie + [_ann(3, "1")], CLASSES, "majority", "s", ties="fail")
    assert broken.label == "1" and broken.tied == () and broken.agreement == pytest.approx(2 / 3)
    assert resolve(tie, CLASSES, "latest", "s", ties="fail").label == "2"   # no majority, no tie


def test_unknown_label_is_rejected_with_a_log_line(caplog):
    with caplog.at_level(logging.WARNING, logger="sage_ada.label_studio"):
        res = resolve([_ann(1, "eleven")], CLASSES, "majority", "optdigits/1/x")
    assert res.label is None and not res.skipped
    assert "rejected label 'eleven' for optdigits/1/x" in caplog.text
    assert res.rejected == ((1, "eleven"),) and res.answered == 0


def test_answered_is_defined_once_on_plain_tasks():
    """Issue 29: the one rule the run and the webhook receiver decide with. A task is answered
    when as many people as asked gave a class of the list or skipped; a label outside the list
    is no answer (the task waits, the annotation is kept and named)."""
    def task(i, *annotations, overlap=1):
        return {"id": i, "data": {"item": f"item{i}", "round": 1}, "overlap": overlap,
                "annotations": list(annotations)}

    assert task_answered([_ann(1, "3")], CLASSES)
    assert task_answered([_ann(1, cancelled=True)], CLASSES)              # a skip answers
    assert not task_answered([_ann(1, "eleven")], CLASSES)                # outside the list
    assert not task_answered([_ann(1)], CLASSES) and not task_answered([], CLASSES)
    assert not task_answered([_ann(1, "3")], CLASSES, per_task=2)         # two people asked
    assert not task_answered([_ann(1, "3"), _ann(2, "eleven")], CLASSES, per_task=2)
    assert task_answered([_ann(1, "3"), _ann(2, "5")], CLASSES, overlap=2)
    assert not task_answered([_ann(1, "3"), _ann(2, "5")], CLASSES, overlap=3)  # a tie: one more

    tasks = [task(1, _ann(1, "3")), task(2, _ann(2, "eleven"))]
    assert not round_answered(tasks, CLASSES) and not round_answered([], CLASSES)
    assert rejected_labels(tasks, CLASSES) == [
        {"task": 2, "item": "item2", "annotation": 2, "label": "eleven"}]
    tasks[1]["annotations"] = [_ann(2, "7")]                             # changed to a class
    assert round_answered(tasks, CLASSES) and rejected_labels(tasks, CLASSES) == []
    assert not round_answered(tasks, CLASSES, per_task=2)

    # the run's resolution of a task agrees with the rule: answered ⇔ a label or a skip
    for annotations in ([_ann(1, "3")], [_ann(1, "eleven")], [_ann(1, cancelled=True)],
                        [_ann(1, cancelled=True), _ann(2, "eleven")], [_ann(1)],
                        [_ann(1, "eleven"), _ann(2, "4")]):
        r = resolve(annotations, CLASSES, "majority", "s")
        assert task_answered(annotations, CLASSES) == (r.label is not None or r.skipped)

    # the receiver reads the class list from the project's labelling config
    assert project_classes(label_config(CLASSES)) == CLASSES
    assert project_classes(label_config(["cat", "dog"], pixelated=True)) == ["cat", "dog"]
    assert classes_digest(["b", "a"]) == classes_digest(["a", "b"]) != classes_digest(["a"])


def test_a_label_is_required_and_an_empty_annotation_is_no_answer():
    """Issue 30: pressing the key of the pre-selected guess un-ticked it, and Submit saved an
    annotation without a class, which Label Studio counted as done and the run did not. The
    choices are required now (with a message that says how to get the guess back), the
    instructions say how to accept the guess, and an empty annotation is no answer for the run
    and the receiver alike: it is found on tasks that are not answered, to be asked again."""
    from xml.etree import ElementTree

    from components.oracle.label_studio import (REQUIRED_MESSAGE, annotator_instructions,
                                                empty_annotations)

    (choices,) = ElementTree.fromstring(label_config(CLASSES)).iter("Choices")
    assert choices.get("required") == "true" and choices.get("requiredMessage") == REQUIRED_MESSAGE
    assert "press its key again" in REQUIRED_MESSAGE
    said = annotator_instructions("Pick the digit.")
    assert said.startswith("Pick the digit.") and "just Submit (or Ctrl+Enter)" in said
    assert "un-tick" in said and "pre-selected" not in annotator_instructions("", show_guess=False)

    empty = {**_ann(2), "completed_by": 8}
    assert not task_answered([empty], CLASSES)
    assert not task_answered([_ann(1, "3"), empty], CLASSES, per_task=2)
    tasks = [{"id": 1, "data": {"item": "a", "round": 1}, "overlap": 1, "annotations": [empty]},
             {"id": 2, "data": {"item": "b", "round": 1}, "overlap": 1,   # answered: left alone
              "annotations": [_ann(3, "4"), {**_ann(4), "id": 4}]},
             {"id": 3, "data": {"item": "c", "round": 1}, "overlap": 2,   # one more asked
              "annotations": [_ann(5, "4"), {**_ann(6), "updated_by": 9}]}]
    assert empty_annotations(tasks, CLASSES) == [
        {"task": 1, "item": "a", "round": 1, "annotation": 2, "by": 8},
        {"task": 3, "item": "c", "round": 1, "annotation": 6, "by": 9}]
    assert not round_answered(tasks, CLASSES)


def test_each_digit_is_its_own_keyboard_shortcut():
    """Label Studio's own numbering (1…9, 0 by position) made key 3 pick class "2"."""
    config = label_config(CLASSES)
    for c in CLASSES:
        assert f'<Choice value="{c}" hotkey="{c}"/>' in config
    named = label_config(["cat", "dog", "x"], {"cat": "c", "dog": "d"})
    assert 'value="cat" hotkey="c"' in named and 'value="x" hotkey="x"' in named
    assert '<Choice value="owl"/>' in label_config(["owl", "x"])   # Label Studio numbers it
    with pytest.raises(OracleError, match="share the hotkey 'x'"):
        label_config(["cat", "x"], {"cat": "x"})
    with pytest.raises(OracleError, match="do not exist: \\['cow'\\]"):
        label_config(["cat"], {"cow": "c"})


def test_images_go_inline_as_they_are_or_shrunk(tmp_path):
    from PIL import Image

    from components.oracle.label_studio import image_data_uri

    Image.new("L", (28, 28), 200).save(tmp_path / "small.png")
    Image.new("RGB", (3000, 1500), (10, 20, 30)).save(tmp_path / "big.jpg")
    Image.new("RGB", (40, 30)).save(tmp_path / "odd.bmp")
    uri = image_data_uri(tmp_path / "small.png")
    assert base64.b64decode(uri.split(",", 1)[1]) == (tmp_path / "small.png").read_bytes()
    big = image_data_uri(tmp_path / "big.jpg")
    assert big.startswith("data:image/jpeg;base64,")
    import io
    assert Image.open(io.BytesIO(base64.b64decode(big.split(",", 1)[1]))).size == (1024, 512)
    assert image_data_uri(tmp_path / "odd.bmp").startswith("data:image/png;base64,")
    (tmp_path / "broken.png").write_bytes(b"not a png")
    with pytest.raises(OracleError, match=r"broken\.png cannot be shown to annotators"):
        image_data_uri(tmp_path / "broken.png")


def test_images_by_reference_are_copies_under_opaque_names(tmp_path):
    """Issue 31: a task holds a URL of a copy named by its item in the run's folder, never the
    dataset's path (its folder names the class); copied once (a retried round finds it), other
    formats re-encoded, a broken file one error that says what to do."""
    from PIL import Image

    from components.oracle.media import LOCAL_FILES, MediaFolder

    cls = tmp_path / "data" / "optdigits" / "6"
    cls.mkdir(parents=True)
    Image.new("L", (28, 28), 200).save(cls / "img_0042.png")
    Image.new("RGB", (40, 30)).save(cls / "odd.bmp")
    media = MediaFolder(tmp_path / "media", "run-1")
    url = media.put("a1b2c3d4e5f6", cls / "img_0042.png")
    assert url == LOCAL_FILES + "run-1/a1b2c3d4e5f6.png"
    assert not any(word in url for word in ("optdigits", "/6/", "img_0042"))
    copy = tmp_path / "media" / "run-1" / "a1b2c3d4e5f6.png"
    assert copy.read_bytes() == (cls / "img_0042.png").read_bytes()
    stamp = copy.stat().st_mtime_ns
    assert media.put("a1b2c3d4e5f6", cls / "img_0042.png") == url and copy.stat().st_mtime_ns == stamp
    assert media.put("0f0f0f0f0f0f", cls / "odd.bmp").endswith("0f0f0f0f0f0f.png")
    assert Image.open(tmp_path / "media" / "run-1" / "0f0f0f0f0f0f.png").size == (40, 30)
    (cls / "cut.png").write_bytes((cls / "img_0042.png").read_bytes()[:60])    # truncated
    with pytest.raises(OracleError, match=r"cut\.png cannot be shown to annotators.*manifest"):
        media.put("ffffffffffff", cls / "cut.png")
    assert sorted(p.name for p in (tmp_path / "media" / "run-1").iterdir()) == [
        "0f0f0f0f0f0f.png", "a1b2c3d4e5f6.png"]                  # nothing half-written left


def test_the_server_script_takes_its_port_from_params(tmp_path):
    """One setting: server.sh listens where label_studio.url points; a LABEL_STUDIO_PORT that
    disagrees still wins but is named, since the flow would not find that server."""
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"label_studio": {"url": "http://127.0.0.1:8123"}}))
    env = {**os.environ, "SAGE_ADA_PARAMS": str(params), "LABEL_STUDIO_DATA": str(tmp_path)}
    env.pop("LABEL_STUDIO_PORT", None)
    script = str(REPO / "infra/label-studio/server.sh")
    out = subprocess.run(["bash", script, "status"], env=env, capture_output=True, text=True)
    assert "label-studio-8123 not running" in out.stdout and not out.stderr
    out = subprocess.run(["bash", script, "status"], env={**env, "LABEL_STUDIO_PORT": "9000"},
                         capture_output=True, text=True)
    assert "label-studio-9000" in out.stdout
    assert "LABEL_STUDIO_PORT=9000, but label_studio.url" in out.stderr and "8123" in out.stderr


def test_server_down_gives_a_clear_error():
    with pytest.raises(OracleError, match="infra/label-studio/server.sh start"):
        connect(f"http://127.0.0.1:{free_port()}", "token")


# ---------------------------------------------------------------- a real server (slow)
@pytest.fixture(scope="module")
def label_studio(tmp_path_factory):
    """Install (once per machine) and start Label Studio with the project's own scripts."""
    subprocess.run(["bash", str(REPO / "infra/label-studio/install.sh")], check=True, timeout=900)
    data = tmp_path_factory.mktemp("label-studio")
    port = free_port()
    params = data / "params.yaml"  # the port is set once, in label_studio.url, as users do
    media = data / "media"      # where runs copy the images annotators see; the server serves it
    receiver = f"http://127.0.0.1:{free_port()}"   # the webhook receiver's address, trusted
    params.write_text(yaml.safe_dump({"label_studio": {"url": f"http://127.0.0.1:{port}",
                                                       "media_root": str(media),
                                                       "webhook_url": receiver}}))
    env = {**os.environ, "LABEL_STUDIO_DATA": str(data), "SAGE_ADA_PARAMS": str(params)}
    env.pop("LABEL_STUDIO_PORT", None)
    script = str(REPO / "infra/label-studio/server.sh")
    subprocess.run(["bash", script, "start"], check=True, env=env, timeout=400)
    creds = data / "credentials.env"
    token = [l.split("=", 1)[1] for l in creds.read_text().splitlines() if "TOKEN" in l][0]
    assert oct(creds.stat().st_mode)[-3:] == "600"
    yield {"url": f"http://127.0.0.1:{port}", "credentials": str(creds), "env": env,
           "token": token, "media": str(media), "receiver": receiver,
           "server": lambda action: subprocess.run(["bash", script, action], env=env, check=True,
                                                   timeout=400)}
    subprocess.run(["bash", script, "stop"], env=env, timeout=60)


def test_a_label_studio_asked_for_another_port_says_which_runs(label_studio):
    """Issue 35: the pid file is named by port, so a start on another port used to start a
    second server on the same data, and status/stop on another port said "not running" while
    it ran. Now the server running from that data is found on whichever port."""
    script = str(REPO / "infra/label-studio/server.sh")
    port = label_studio["url"].rsplit(":", 1)[1]
    other = {**label_studio["env"], "LABEL_STUDIO_PORT": str(free_port())}
    refused = subprocess.run(["bash", script, "start"], env=other, capture_output=True,
                             text=True, timeout=120)
    assert refused.returncode == 1, refused.stdout
    # (after the warning that params.yaml names another port than LABEL_STUDIO_PORT)
    line = refused.stderr.strip().splitlines()[-1]
    assert f"label-studio-{port} is running with other settings" in line, line
    assert f"it has [port {port}," in line and "stop it first" in line, line
    status = subprocess.run(["bash", script, "status"], env=other, capture_output=True,
                            text=True, timeout=60)
    assert status.returncode == 0 and status.stdout.startswith(f"label-studio-{port} running")


def _ls_project(project, label_studio, **ls):
    raw = yaml.safe_load((project / "params.yaml").read_text())
    raw["active"].update(oracle="label_studio", rounds=1)
    raw["label_studio"].update(url=label_studio["url"], credentials=label_studio["credentials"],
                               media_root=label_studio["media"], poll_interval_s=0.3, **ls)
    raw["tracking"]["experiment"] = f"ls-{project.name[-12:]}"
    (project / "params.yaml").write_text(yaml.safe_dump(raw))
    return raw


@pytest.fixture(scope="module")
def prefect_api():
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=180):
        yield


def _oracle(label_studio, digits_root, name: str, **options) -> LabelStudioOracle:
    """An oracle on the test server, bound to a project of its own."""
    oracle = LabelStudioOracle(url=label_studio["url"], api_key=label_studio["token"],
                               classes=CLASSES, data_root=digits_root, experiment=name,
                               progress=False, **{"media_root": label_studio["media"], **options})
    oracle.bind(name)
    return oracle


def _tasks(label_studio, project_id):
    client = connect(label_studio["url"], label_studio["token"])
    return list(client.tasks.list(project=project_id, fields="all", page_size=500)), client


@pytest.mark.slow
def test_full_round_through_the_flow_with_the_simulated_annotator(project, label_studio,
                                                                  prefect_api, digits_manifest):
    from flows.active_da import active_domain_adaptation

    _ls_project(project, label_studio, annotators_per_task=2)
    result = active_domain_adaptation(params="params.yaml", progress=False, auto_annotate=True)
    truth = dict(zip(digits_manifest.sample_id, digits_manifest.label))
    assert len(result["labelled"]) == 5
    assert all(truth[s] == label for s, label in result["labelled"].items())
    client = MlflowClient()
    url = client.get_run(result["run_id"]).data.tags["sage_ada.annotation_url"]
    tasks, _ = _tasks(label_studio, int(url.split("/projects/")[1].split("/")[0]))
    items = {item_id(result["run_id"], s): s for s in result["labelled"]}
    assert sorted(t.data["item"] for t in tasks) == sorted(items)
    assert all(t.predictions for t in tasks)                     # the model's guess is shown
    exp = client.get_experiment_by_name(result["experiment"])
    (child,) = client.search_runs([exp.experiment_id], "tags.sage_ada.round = '1'")
    rows = json.load(open(client.download_artifacts(child.info.run_id, "selection.json")))
    assert all(r["annotator"] is not None and r["lead_time_s"] is not None for r in rows)
    assert all(r["n_annotations"] == 2 and r["agreement"] == 1.0 for r in rows)  # two people
    assert child.data.metrics["annotator_agreement"] == 1.0
    assert [m.step for m in client.get_metric_history(result["run_id"], "annotator_agreement")] == [1]
    from prefect import get_client                      # the round's link in the Prefect UI
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    async def links():
        async with get_client() as prefect:
            return await prefect.read_artifacts(
                artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["annotate-round-1"])))
    assert any(a.data == f"[Label round 1 in Label Studio]({url})" for a in asyncio.run(links()))
    assert "LABEL_STUDIO" not in json.dumps(client.get_run(result["run_id"]).data.params)
    assert label_studio["token"] not in json.dumps(client.get_run(result["run_id"]).data.params)


@pytest.mark.slow
def test_resume_while_waiting_loses_no_annotation_and_makes_no_duplicate(project, label_studio,
                                                                         prefect_api, capsys):
    from flows.active_da import active_domain_adaptation

    raw = _ls_project(project, label_studio, on_timeout="fail")
    raw["active"]["annotate_timeout_s"] = 1.5
    (project / "params.yaml").write_text(yaml.safe_dump(raw))
    with pytest.raises(OracleTimeout, match="resume the run"):
        active_domain_adaptation(params="params.yaml", progress=False)
    state = json.loads(next((project / ".sage-ada/runs").glob("*/state.json")).read_text())
    handle = state["pending"]["handle"]
    tasks, client = _tasks(label_studio, handle["project_id"])
    assert len(tasks) == 5
    # a person labels two tasks while the run is down (deliberately "wrong", to trace them)
    early = {}
    sample_of = {item_id(state["run_id"], s): s for s in handle["sample_ids"]}
    for task in tasks[:2]:
        sid = sample_of[task.data["item"]]
        label = "7" if sid.split("/")[1] != "7" else "8"
        client.annotations.create(id=task.id, result=choice_result(label))
        early[sid] = label

    capsys.readouterr()
    result = active_domain_adaptation(params="params.yaml", progress=False, auto_annotate=True,
                                      resume=state["run_id"])
    assert f"annotators: label round 1 (5 images) at {handle['url']}" in capsys.readouterr().out
    tasks, _ = _tasks(label_studio, handle["project_id"])
    assert len(tasks) == 5                                           # no duplicate task
    assert len({t.data["item"] for t in tasks}) == 5
    for sid, label in early.items():                                 # no annotation lost
        assert result["labelled"][sid] == label
    assert len(result["labelled"]) == 5


@pytest.mark.slow
def test_a_label_corrected_after_its_round_is_used_from_then_on(project, label_studio):
    """An annotator changes a round-1 label in Label Studio while round 2 runs: round 2's
    adaptation trains on the corrected label, and MLflow records the correction."""
    from components.config import load_config
    from components.oracle import make_oracle
    from components.run.active_run import ActiveRun
    from components.run.steps import RunSteps

    raw = _ls_project(project, label_studio)
    raw["active"]["rounds"] = 2
    (project / "params.yaml").write_text(yaml.safe_dump(raw))
    cfg = load_config("params.yaml")
    steps = RunSteps(cfg, progress=False)
    oracle = make_oracle(cfg, steps.manifest, steps.classes, auto_annotate=True,
                         progress=False)
    run = ActiveRun.open(cfg, steps, oracle)
    run.pretrain()
    run.select(1)
    first = run.annotate(1, timeout=60)
    run.adapt(1)
    run.evaluate(1)
    sid, old = sorted(first.items())[0]
    new = "1" if old != "1" else "2"
    task = oracle.tasks(oracle.project_id())[oracle.item(sid)]
    oracle.client.annotations.update(id=task.annotations[0]["id"], result=choice_result(new))

    trained_on = []
    adapt = steps.adapt
    steps.adapt = lambda net, labelled, round: trained_on.append(dict(labelled)) or adapt(
        net, labelled, round)
    run.select(2)
    run.annotate(2, timeout=60)
    run.adapt(2)
    (correction,) = run.state.pending.corrections.values()
    admin = oracle.client.users.whoami().id
    assert (correction["old"], correction["new"], correction["by"]) == (old, new, admin)
    assert correction["at"]                                # when, as Label Studio saved it
    assert trained_on[-1][sid] == new                      # round 2 trains on the correction
    run.evaluate(2)
    assert run.state.labelled[sid] == new
    client = MlflowClient()
    exp = client.get_experiment_by_name(cfg.experiment_name)
    (child,) = client.search_runs([exp.experiment_id], "tags.sage_ada.round = '2'")
    assert child.data.metrics["n_corrected"] == 1
    rows = json.load(open(client.download_artifacts(child.info.run_id, "selection.json")))
    assert {"sample_id": sid, "label": new, "corrected_from": old, "corrected_by": admin,
            "corrected_at": correction["at"]}.items() <= [
        r for r in rows if r.get("corrected_from")][0].items()

    # corrected after the last adaptation: nothing trains on it, the run says so
    late = next(s for s in sorted(run.state.labelled) if s != sid)
    task = oracle.tasks(oracle.project_id())[oracle.item(late)]
    wrong = "1" if run.state.labelled[late] != "1" else "2"
    oracle.client.annotations.update(id=task.annotations[0]["id"], result=choice_result(wrong))
    run.finish()
    rows = json.load(open(client.download_artifacts(run.run_id,
                                                    "corrections_after_last_round.json")))
    assert [(r["sample_id"], r["label"]) for r in rows] == [(late, wrong)]
    assert run.state.labelled[late] != wrong               # the labels the model trained on


@pytest.mark.slow
def test_a_task_waits_for_as_many_annotators_as_asked(label_studio, digits_manifest, digits_root):
    """annotators_per_task: 2: the project asks Label Studio for 2 annotations per task, a task
    with one is not done, and the two labels resolve with their agreement."""
    oracle = _oracle(label_studio, digits_root, "overlap", poll_interval_s=0.2, on_timeout="fail",
                     annotators_per_task=2, ties="latest")
    pool = digits_manifest[digits_manifest.split == "target_train"].head(2)
    ids = list(pool.sample_id)
    handle = oracle.request(ids, 1, context={s: {"path": p} for s, p in zip(ids, pool.path)})
    assert oracle.client.projects.get(id=handle["project_id"]).maximum_annotations == 2
    truth = dict(zip(pool.sample_id, pool.label))
    oracle.on_poll = AutoAnnotator(oracle.client, truth, item_of=oracle.item,
                                   answers={ids[0]: ["3", "3"], ids[1]: ["1"]})
    with pytest.raises(OracleTimeout, match="1 of 2"):
        oracle.collect(handle, timeout=1.0)
    task = oracle.tasks(handle["project_id"])[oracle.item(ids[1])]
    oracle.client.annotations.create(id=task.id, result=choice_result("2"))   # a second person
    assert oracle.collect(handle, timeout=5) == {ids[0]: "3", ids[1]: "2"}    # tie: the latest
    details = oracle.describe(handle)
    assert details[ids[0]]["agreement"] == 1.0 and details[ids[1]]["agreement"] == 0.5


@pytest.mark.slow
def test_ties_fail_with_one_error_naming_them(label_studio, digits_manifest, digits_root):
    oracle = _oracle(label_studio, digits_root, "ties-fail", poll_interval_s=0.2,
                     on_timeout="fail", annotators_per_task=2, ties="fail")
    pool = digits_manifest[digits_manifest.split == "target_train"].head(2)
    ids = list(pool.sample_id)
    handle = oracle.request(ids, 1, context={s: {"path": p} for s, p in zip(ids, pool.path)})
    oracle.on_poll = AutoAnnotator(oracle.client, dict(zip(pool.sample_id, pool.label)),
                                   item_of=oracle.item, answers={ids[0]: ["1", "2"]})
    with pytest.raises(OracleError, match=re.escape(f"tie on 1 image(s) ({ids[0]}: 1 vs 2)")
                       + ".*--resume"):
        oracle.collect(handle, timeout=5)


@pytest.mark.slow
def test_skips_unknown_labels_and_disagreements(label_studio, digits_manifest, digits_root):
    oracle = _oracle(label_studio, digits_root, "skips-and-disagreements", poll_interval_s=0.2,
                     on_timeout="partial", ties="latest")
    pool = digits_manifest[digits_manifest.split == "target_train"].head(4)
    ids = list(pool.sample_id)
    context = {sid: {"path": path, "score": 1.0, "prediction": "0", "confidence": 0.5}
               for sid, path in zip(pool.sample_id, pool.path)}
    handle = oracle.request(ids, 1, context=context)
    again = oracle.request(ids, 1, context=context)                 # a retry: no duplicates
    assert again["project_id"] == handle["project_id"]
    truth = dict(zip(pool.sample_id, pool.label))
    oracle.on_poll = AutoAnnotator(oracle.client, truth, item_of=oracle.item, skip=[ids[0]],
                                   answers={ids[1]: ["eleven"], ids[2]: ["3", "3", "5"],
                                            ids[3]: ["1", "2"]})
    labels = oracle.collect(handle, timeout=1.0)
    assert labels == {ids[2]: "3", ids[3]: "2"}                     # majority; tie → latest
    skipped = oracle.describe(handle)[ids[0]]
    assert skipped["skipped"] and skipped["annotator"] is not None  # back to the pool, by whom
    assert ids[1] not in labels                                      # unknown label rejected
    tasks = list(oracle.client.tasks.list(project=handle["project_id"], fields="all"))
    assert len(tasks) == 4
    project = oracle.client.projects.get(id=handle["project_id"])
    assert '<Choice value="3" hotkey="3"/>' in project.label_config      # as the server keeps it

    oracle.on_timeout = "fail"
    with pytest.raises(OracleTimeout, match="2 of 4|3 of 4"):
        oracle.collect(handle, timeout=0.5)                         # ids[1] is never resolved
    oracle.resolve_rule = "latest"
    oracle.on_timeout = "partial"
    assert oracle.collect(handle, timeout=0.3)[ids[2]] == "5"

    # the round closes: the skipped and the unresolved task leave the queue, the rest stay
    assert oracle.close(handle) == 2 and oracle.close(handle) == 0
    assert set(oracle.tasks(handle["project_id"])) == {oracle.item(s) for s in ids[2:]}
    # selected again later, a skipped sample gets a fresh task, not its old skip
    oracle.on_poll = None
    again = oracle.request([ids[0]], 2, context={ids[0]: context[ids[0]]})
    state = oracle.poll(again)[ids[0]]
    assert state.label is None and not state.skipped and state.n_annotations == 0


def _receiver_module():
    import importlib.util

    spec = importlib.util.spec_from_file_location("webhook_receiver",
                                                  REPO / "infra/webhooks/receiver.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class Runs:
    """What Prefect would say of the tests' made-up flow runs: the round one waits on (the
    flow's ``wait_tag``), and whether it is still on its way to suspending."""

    def __init__(self, project, round, per_task=1, deadline=None, suspending=False):
        self.wait = read_wait_tag([wait_tag(project, round, per_task, CLASSES, deadline)])
        self.is_suspending = suspending

    def waiting(self, flow_run):
        return self.wait

    def suspending(self, flow_run):
        return self.is_suspending


@contextlib.contextmanager
def serving(app, url: str):
    """``app`` served by uvicorn at ``url`` (http://127.0.0.1:<port>) in a thread, as
    receiver.py's main serves it."""
    import threading

    import uvicorn

    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=int(url.rsplit(":", 1)[1]),
                                           log_level="warning", access_log=False))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.started
    try:
        yield url
    finally:
        server.should_exit = True
        thread.join(10)


@pytest.mark.slow
def test_a_label_outside_the_class_list_neither_resumes_nor_loops(label_studio, digits_manifest,
                                                                    digits_root, monkeypatch,
                                                                    capsys):
    """Issue 29: the receiver counted a label outside the class list as an answer and resumed
    the run, which found its round unanswered and suspended again, on every sweep. Both now
    decide with ``task_answered``: such a label is no answer, the receiver does not resume and
    says which label to change, the run says the same, and nothing is lost; once the label is
    changed to a class, both say answered and the receiver resumes the run once."""
    import prefect.flow_runs

    resumed = []
    monkeypatch.setattr(prefect.flow_runs, "resume_flow_run",
                        lambda flow_run_id, *a, **k: resumed.append(flow_run_id))
    oracle = _oracle(label_studio, digits_root, "issue-29", poll_interval_s=0.2,
                     on_timeout="fail")
    pool = digits_manifest[digits_manifest.split == "target_train"].head(2)
    ids, truth = list(pool.sample_id), dict(zip(pool.sample_id, pool.label))
    handle = oracle.request(ids, 1, context={s: {"path": p} for s, p in zip(ids, pool.path)})
    project = handle["project_id"]
    receiver_url = label_studio["receiver"]                         # nothing listens: no call lands
    monkeypatch.setenv("SAGE_ADA_WEBHOOK_SECRET", "a-secret")
    oracle.watch(handle, receiver_url, "flow-run-29")
    (hook,) = [h for h in oracle.client.webhooks.list(project=str(project))
               if h.url.startswith(receiver_url)]
    from urllib.parse import parse_qs, urlparse
    query = {k: v[0] for k, v in parse_qs(urlparse(hook.url).query).items()}
    assert query["per_task"] == "1" and query["classes"] == classes_digest(CLASSES)

    tasks = oracle.tasks(project)
    oracle.client.annotations.create(id=tasks[oracle.item(ids[0])].id,
                                     result=choice_result(truth[ids[0]]))
    bad = oracle.client.annotations.create(id=tasks[oracle.item(ids[1])].id,
                                           result=choice_result("eleven"))
    receiver = _receiver_module().Receiver(oracle.client, receiver_url, runs=Runs(project, 1))
    capsys.readouterr()
    for _ in range(3):                       # webhook calls and sweeps: the same answer each time
        assert oracle.complete(handle) is False                     # what the run says
        assert round_status(oracle.client, project, 1).answered is False
        assert receiver.check(query, "sweep") == "waiting"
    receiver.sweep()
    assert resumed == []                                             # never resumed
    said = capsys.readouterr().out
    assert f"item {oracle.item(ids[1])}" in said and "'eleven'" in said
    assert "outside the class list" in said and "1 of 2 tasks answered" in said
    with pytest.raises(OracleTimeout, match=r"1 of 2 .*outside the class list \(.*'eleven'"):
        oracle.collect(handle, timeout=0.3)                           # the run names it too
    kept = oracle.tasks(project)[oracle.item(ids[1])].annotations     # nothing lost
    assert [(a["id"], a["result"][0]["value"]["choices"]) for a in kept] == [(bad.id, ["eleven"])]

    oracle.client.annotations.update(id=bad.id, result=choice_result(truth[ids[1]]))
    assert oracle.complete(handle) is True
    assert receiver.check(query, "webhook") == "resumed" and resumed == ["flow-run-29"]
    assert oracle.collect(handle, timeout=5) == truth

    # a class list changed in Label Studio: the receiver resumes the run, which says what to fix
    oracle.client.projects.update(id=project, label_config=label_config(CLASSES + ["eleven"]))
    assert receiver.check(query, "sweep") == "resumed" and len(resumed) == 2
    with pytest.raises(OracleError, match=r"labelling config .* was changed.*added: \['eleven'\]"):
        oracle.complete(handle)
    oracle.unwatch(handle, receiver_url)


@pytest.mark.slow
def test_the_receiver_merges_a_rounds_events(label_studio, digits_manifest, digits_root,
                                            monkeypatch):
    """Issue 31: the receiver checked the whole round once per annotation event, each in a
    thread of its own; five people labelling a round of 1,000 meant thousands of full checks.
    Now the events of a round that arrive while its check runs ask for one more check after it,
    however many they are; that check sees the last annotation, and resumes the run."""
    import concurrent.futures
    import threading

    import httpx
    import prefect.flow_runs

    resumed = []

    def resume(flow_run_id, *args, **kwargs):       # Prefect's answer to a second resume
        if flow_run_id in resumed:
            raise prefect.flow_runs.NotPausedError("not paused")
        resumed.append(flow_run_id)

    monkeypatch.setattr(prefect.flow_runs, "resume_flow_run", resume)
    oracle = _oracle(label_studio, digits_root, "merged-events")
    pool = digits_manifest[digits_manifest.split == "target_train"].head(3)
    ids, truth = list(pool.sample_id), dict(zip(pool.sample_id, pool.label))
    handle = oracle.request(ids, 1, context={s: {"path": p} for s, p in zip(ids, pool.path)})
    module = _receiver_module()
    monkeypatch.setenv("SAGE_ADA_WEBHOOK_SECRET", "a-secret")
    oracle.watch(handle, label_studio["receiver"], "fr-31")

    gate, starts, ends, queries = threading.Event(), [], [], []

    class SlowReceiver(module.Receiver):
        """A check that lasts until a burst of events has arrived (as one of 1,000 tasks,
        under five annotators, lasts), so what the burst does is the same on any machine."""
        def check(self, query, reason):
            starts.append(time.monotonic())
            queries.append(dict(query))
            gate.wait(30)
            try:
                return super().check(query, reason)
            finally:
                ends.append(time.monotonic())

    receiver = SlowReceiver(oracle.client, label_studio["receiver"],
                            runs=Runs(handle["project_id"], 1))
    url = (f"{label_studio['receiver']}/label-studio?flow_run=fr-31&project={handle['project_id']}"
           "&round=1")
    send = dict(json={"action": "ANNOTATION_CREATED"},
                headers={"X-Sage-Ada-Webhook-Secret": "a-secret"})
    tasks = oracle.tasks(handle["project_id"], 1)
    for sid in ids[:2]:
        oracle.client.annotations.create(id=tasks[oracle.item(sid)].id,
                                         result=choice_result(truth[sid]))

    def idle():
        deadline = time.monotonic() + 20
        while receiver._busy and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not receiver._busy

    with serving(module.create_app(receiver, "a-secret"), label_studio["receiver"]):
        with concurrent.futures.ThreadPoolExecutor(8) as pool_:          # a burst of 40 events
            answers = list(pool_.map(lambda _: httpx.post(url, **send).status_code, range(40)))
        assert answers == [202] * 40
        gate.set()
        idle()
        assert receiver.checks == 2 and resumed == []   # one check, one more for the rest
        gate.clear()
        receiver.gap_s = 1.0             # while events keep coming: a pause between two checks
        (hook,) = oracle.client.webhooks.list(project=str(handle["project_id"]))
        oracle.client.webhooks.update(id=hook.id, url=hook.url + "&v=2")    # registered anew
        receiver._hooks.clear()
        oracle.client.annotations.create(id=tasks[oracle.item(ids[2])].id,   # Label Studio
                                         result=choice_result(truth[ids[2]]))  # calls too
        for _ in range(5):                               # the last annotation's events
            assert httpx.post(url, **send).status_code == 202
        gate.set()
        idle()
        assert receiver.checks == 4 and resumed == ["fr-31"]
        assert starts[-1] - ends[-2] >= 1.0
        assert queries[-1].get("v") == "2"   # the merged check: what the webhook says now


def _client_without_the_check(label_studio, email: str):
    """A person (an account of add-annotator.sh) whose client saves annotations through Label
    Studio's API without its required check: returns their e-mail and a function that saves an
    empty annotation (no class, not skipped) on a task, as them."""
    import httpx

    email, password = _account(label_studio, email)
    url = label_studio["url"]

    def empty(task: int) -> int:
        with httpx.Client(base_url=url) as browser:
            browser.get("/user/login/")
            browser.post("/user/login/", data={"email": email, "password": password,
                                               "csrfmiddlewaretoken": browser.cookies["csrftoken"]},
                         headers={"Referer": url + "/user/login/"})
            saved = browser.post(f"/api/tasks/{task}/annotations/", json={"result": []},
                                 headers={"X-CSRFToken": browser.cookies["csrftoken"],
                                          "Referer": url})
        assert saved.status_code == 201, saved.text
        return saved.json()["id"]

    return email, empty


@pytest.mark.slow
def test_an_annotation_without_a_label_is_asked_again_and_named(label_studio, digits_manifest,
                                                                digits_root, monkeypatch,
                                                                caplog, capsys):
    """Issue 30: an annotation without a class (the API, an older project, a client that does
    not check) made Label Studio count its task as done and leave its queue, while the run
    waited in silence until its timeout. The run now says so in its log and on the round's
    notice (the project's description), naming the task and who, and asks again: the empty
    annotation is deleted, so the task is back in the queue, and the task's other annotation
    stays. Once a real label arrives, the round completes. The webhook receiver, checking a
    suspended run's round by the same definition, does the same."""
    import prefect.flow_runs

    resumed = []
    monkeypatch.setattr(prefect.flow_runs, "resume_flow_run",
                        lambda flow_run_id, *a, **k: resumed.append(flow_run_id))
    oracle = _oracle(label_studio, digits_root, "issue-30-api", poll_interval_s=0.2,
                     on_timeout="fail", annotators_per_task=2, ties="latest")
    pool = digits_manifest[digits_manifest.split == "target_train"].head(3)
    ids, truth = list(pool.sample_id), dict(zip(pool.sample_id, pool.label))
    context = {s: {"path": p} for s, p in zip(ids, pool.path)}
    handle = oracle.request(ids[:2], 1, context=context)
    project = handle["project_id"]
    who, empty = _client_without_the_check(label_studio, "dee@example.com")
    tasks = oracle.tasks(project)
    task, other = tasks[oracle.item(ids[0])].id, tasks[oracle.item(ids[1])].id
    kept = oracle.client.annotations.create(id=task, result=choice_result(truth[ids[0]]))
    empty(task)                                                    # dee: submitted, no class
    for _ in range(2):
        oracle.client.annotations.create(id=other, result=choice_result(truth[ids[1]]))
    assert oracle.tasks(project)[oracle.item(ids[0])].is_labeled  # Label Studio: done, unqueued
    assert round_status(oracle.client, project, 1).answered is False

    with caplog.at_level(logging.WARNING, logger="sage_ada.label_studio"), \
            pytest.raises(OracleTimeout, match="1 of 2"):
        oracle.collect(handle, timeout=0.5)
    said = f"task {task} (item {oracle.item(ids[0])}) was submitted without a label by {who}"
    assert said in caplog.text and "back in the annotators' queue" in caplog.text
    asked = oracle.tasks(project)[oracle.item(ids[0])]
    assert not asked.is_labeled                                      # back in the queue
    assert [a["id"] for a in asked.annotations] == [kept.id]         # the other label stays
    notice = oracle.client.projects.get(id=project).description
    assert "Round 1 is ready" in notice and f"task {task} (item {oracle.item(ids[0])}) by {who}" \
        in notice and "label it again" in notice
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="sage_ada.label_studio"), \
            pytest.raises(OracleTimeout):
        oracle.collect(handle, timeout=0.3)
    assert "without a label" not in caplog.text                      # asked once
    oracle.client.annotations.create(id=task, result=choice_result(truth[ids[0]]))  # a person
    assert oracle.collect(handle, timeout=5) == {s: truth[s] for s in ids[:2]}
    oracle.close(handle)
    notice = oracle.client.projects.get(id=project).description
    assert "label it again" not in notice and "Round 1 is ready" not in notice   # issue 35
    assert notice.startswith("Round 1 is done: nothing to label")

    # a suspended run's round: the receiver checks it, finds the empty annotation, asks again
    handle = oracle.request(ids[2:], 2, context=context)
    (task,) = [t.id for item, t in oracle.tasks(project).items() if item == oracle.item(ids[2])]
    oracle.client.annotations.create(id=task, result=choice_result(truth[ids[2]]))
    empty(task)
    receiver = _receiver_module().Receiver(oracle.client, f"http://127.0.0.1:{free_port()}",
                                           runs=Runs(project, 2, per_task=2))
    query = {"flow_run": "flow-run-30", "project": str(project), "round": "2", "per_task": "2",
             "classes": classes_digest(CLASSES)}
    capsys.readouterr()
    assert receiver.check(query, "webhook") == "waiting" and resumed == []
    out = capsys.readouterr().out
    assert f"round 2: 1 annotation(s) were submitted without a label (task {task} (item " \
           f"{oracle.item(ids[2])}) by {who})" in out and "back in the queue" in out
    assert len(oracle.tasks(project)[oracle.item(ids[2])].annotations) == 1
    assert not oracle.complete(handle)                             # the run agrees: not answered
    oracle.client.annotations.create(id=task, result=choice_result(truth[ids[2]]))
    assert receiver.check(query, "webhook") == "resumed" and resumed == ["flow-run-30"]
    assert oracle.collect(handle, timeout=5) == {ids[2]: truth[ids[2]]}


@pytest.mark.slow
def test_the_receiver_lets_in_only_the_webhooks_a_run_registered(label_studio, digits_manifest,
                                                                 digits_root, monkeypatch,
                                                                 capsys):
    """Issue 32, probed against the real Label Studio and the receiver's real web app: a call
    without the secret, with a wrong one, for a flow run no webhook names, with an oversized
    body or an action no run's webhook sends is refused (and logged without the secret); a
    forged deadline changes nothing (the deadline comes from Prefect); Label Studio refuses a
    webhook to any other private address. Label Studio's own calls get in, and a round answered
    while its run is still suspending is resumed as soon as the suspension lands."""
    import httpx
    import prefect.flow_runs
    from label_studio_sdk.core.api_error import ApiError

    secret = "probe-secret-" + os.urandom(8).hex()
    monkeypatch.setenv("SAGE_ADA_WEBHOOK_SECRET", secret)
    landed = {"at": float("inf")}            # when the run's suspension lands in Prefect
    resumed = []

    def resume(flow_run_id, *args, **kwargs):
        if time.monotonic() < landed["at"] or flow_run_id in resumed:
            raise prefect.flow_runs.NotPausedError("not paused")
        resumed.append((flow_run_id, time.monotonic()))

    monkeypatch.setattr(prefect.flow_runs, "resume_flow_run", resume)
    oracle = _oracle(label_studio, digits_root, "probed")
    pool = digits_manifest[digits_manifest.split == "target_train"].head(2)
    ids, truth = list(pool.sample_id), dict(zip(pool.sample_id, pool.label))
    handle = oracle.request(ids, 1, context={s: {"path": p} for s, p in zip(ids, pool.path)})
    project = handle["project_id"]
    oracle.watch(handle, label_studio["receiver"], "fr-32")
    module = _receiver_module()
    runs = Runs(project, 1, suspending=True)
    receiver = module.Receiver(oracle.client, label_studio["receiver"], runs=runs)
    base = f"{label_studio['receiver']}/label-studio"
    ok = f"{base}?flow_run=fr-32&project={project}&round=1"
    action = {"action": "ANNOTATION_CREATED"}
    right = {"X-Sage-Ada-Webhook-Secret": secret}
    probes = []

    def probe(name, expected, **request):
        url = request.pop("url", ok)
        answer = httpx.post(url, **{"json": action, **request}).status_code
        probes.append({"probe": name, "expected": expected, "answer": answer})
        assert answer == expected, (name, answer)

    with serving(module.create_app(receiver, secret), label_studio["receiver"]):
        probe("no secret", 401)
        probe("a wrong secret", 403, headers={"X-Sage-Ada-Webhook-Secret": secret[:-1] + "x"})
        probe("a flow run no webhook names", 403, headers=right,
              url=f"{base}?flow_run=someone-elses&project={project}&round=1")
        probe("another project", 403, headers=right,
              url=f"{base}?flow_run=fr-32&project={project + 1000}&round=1")
        probe("an oversized body", 413, headers=right, json=None,
              content=b"{" + b" " * (module.MAX_BODY + 1) + b"}")
        probe("an action no run's webhook sends", 400, headers=right,
              json={"action": "PROJECT_DELETED"})
        assert receiver.checks == 0                                       # none was acted on
        probe("a forged deadline=0: taken as one more event, the run not resumed", 202,
              headers=right, url=ok + "&deadline=0")
        deadline = time.monotonic() + 20
        while receiver._busy and time.monotonic() < deadline:
            time.sleep(0.05)
        assert receiver.checks == 1 and resumed == []                     # still waiting
        # a Label Studio user can read the secret and make a webhook: one for another round
        oracle.client.webhooks.create(
            url=f"{base}?flow_run=fr-32&project={project}&round=7&per_task=0", project=project,
            send_payload=False, headers=right, actions=["ANNOTATION_CREATED"])
        time.sleep(1.1)             # the receiver reads a project's webhooks at most once a second
        probe("a webhook a Label Studio user made for a round the run does not wait on", 202,
              headers=right, url=f"{base}?flow_run=fr-32&project={project}&round=7")
        time.sleep(1.0)
        assert receiver.checks == 1 and resumed == []            # Prefect says: not that round

        # Label Studio's own calls get in: the round answered while the run still suspends
        tasks = oracle.tasks(project, 1)
        for sid in ids:
            oracle.client.annotations.create(id=tasks[oracle.item(sid)].id,
                                             result=choice_result(truth[sid]))
        started = time.monotonic()
        while receiver.checks < 2 and time.monotonic() < started + 20:
            time.sleep(0.05)
        assert receiver.checks >= 2, "Label Studio's webhook did not reach the receiver"
        time.sleep(2.0)
        landed["at"] = time.monotonic()                  # the suspension lands 2 s later
        while not resumed and time.monotonic() < landed["at"] + 10:
            time.sleep(0.05)
        assert resumed and resumed[0][0] == "fr-32"
        probes.append({"probe": "round answered while its run suspends: resumed after it lands",
                       "expected": "< 3 s", "answer": f"{resumed[0][1] - landed['at']:.1f} s"})
        assert resumed[0][1] - landed["at"] < 3.0

    # Label Studio: no webhook to another private address (SSRF protection is on)
    trusted = label_studio["receiver"].removeprefix("http://")
    for elsewhere in (f"http://127.0.0.1:{free_port()}/x", "http://10.0.0.1/x",
                      "http://169.254.169.254/latest/meta-data/",
                      f"http://10.0.0.5:6379\\@{trusted}/",      # parsers disagree on the host
                      f"http://someone@{trusted}/label-studio"):
        with pytest.raises(ApiError) as refused:
            oracle.client.webhooks.create(url=elsewhere, project=project, send_payload=False,
                                          actions=["ANNOTATION_CREATED"])
        probes.append({"probe": f"Label Studio webhook to {elsewhere}", "expected": 403,
                       "answer": refused.value.status_code})
        assert refused.value.status_code == 403 and "network address" in str(refused.value.body)
    said = capsys.readouterr().out
    assert said.count("refused") >= 6 and secret not in said
    report_probes("webhook_receiver_and_label_studio", probes)
    oracle.unwatch(handle, label_studio["receiver"])


def _requests_of(client) -> list:
    """What ``client`` (the SDK's) asks Label Studio from now on: (request, response) pairs."""
    seen = []
    hooks = client._client_wrapper.httpx_client.httpx_client.event_hooks
    hooks["response"].append(lambda r: (r.read(), seen.append((r.request, r))))
    return seen


@pytest.mark.slow
def test_nothing_shown_to_annotators_reveals_the_label(label_studio, digits_manifest, digits_root):
    """Tasks carry an opaque item and the image by reference (issue 31): a URL of a copy named
    by the item, no bytes, no sample id, no path (which names the class folder, optdigits/6/…).
    Label Studio serves the copy to the project's users only; the project has the instructions
    (behind a button, not over each task), requires a label, and draws small digits pixelated."""
    import httpx

    oracle = _oracle(label_studio, digits_root, "nothing-revealed", pixelated=True,
                     instructions="Pick the digit.")
    pool = digits_manifest[digits_manifest.split == "target_train"].head(3)
    ids, paths = list(pool.sample_id), dict(zip(pool.sample_id, pool.path))
    handle = oracle.request(ids, 1, context={s: {"path": p, "score": 0.5}
                                             for s, p in zip(ids, pool.path)})
    tasks = list(oracle.client.tasks.list(project=handle["project_id"], fields="all"))
    assert {oracle.item(s) for s in ids} == {t.data["item"] for t in tasks}
    sample_of = {oracle.item(s): s for s in ids}
    login = logged_in(label_studio["url"], *_admin(label_studio))
    for task in tasks:
        assert set(task.data) == {"image", "item", "round", "score"}
        shown = json.dumps(task.data)
        assert len(shown) < 200 and "base64" not in shown                 # no bytes
        assert not any(s in shown or p in shown or Path(p).name in shown
                       for s, p in zip(ids, pool.path))
        assert "optdigits" not in shown and "mnist" not in shown
        assert task.data["image"].startswith("/data/local-files/?d=nothing-revealed/")
        original = (digits_root / paths[sample_of[task.data["item"]]]).read_bytes()
        assert login.get(task.data["image"]).content == original         # a project user sees it
        assert httpx.get(label_studio["url"] + task.data["image"]).status_code in (401, 403)
    login.close()
    project = oracle.client.projects.get(id=handle["project_id"])
    assert project.expert_instruction.startswith("Pick the digit.")
    assert "just Submit" in project.expert_instruction              # how to accept the guess
    assert not project.show_instruction               # not a modal over each task (issue 30)
    assert 'smoothing="false"' in project.label_config
    assert 'required="true"' in project.label_config                # a label to submit

    # inline, as before, where a team's Label Studio cannot see the media folder
    inline = _oracle(label_studio, digits_root, "inline-kept", images="inline")
    handle = inline.request(ids[:1], 1, context={ids[0]: {"path": paths[ids[0]]}})
    (task,) = inline.tasks(handle["project_id"]).values()
    head, data = task.data["image"].split(",", 1)
    assert head == "data:image/png;base64"
    assert base64.b64decode(data) == (digits_root / paths[ids[0]]).read_bytes()


@pytest.mark.slow
def test_a_media_folder_the_server_does_not_serve_is_one_clear_error(label_studio, digits_manifest,
                                                                     digits_root, tmp_path):
    """A run whose label_studio.media_root is not the folder the server serves (another
    settings file, a server started before images went by reference) fails at its first round
    with one error that says to restart the server, and leaves no half-made project behind."""
    oracle = _oracle(label_studio, digits_root, "media-elsewhere", media_root=tmp_path / "elsewhere")
    pool = digits_manifest[digits_manifest.split == "target_train"].head(1)
    with pytest.raises(OracleError, match=r"does not serve the folder of this run's images .*"
                                          r"server\.sh stop`, then `start"):
        oracle.request(list(pool.sample_id), 1, context={s: {"path": p} for s, p in
                                                         zip(pool.sample_id, pool.path)})
    assert oracle.find_project() is None


@pytest.mark.slow
def test_a_poll_asks_only_for_its_round(label_studio, digits_manifest, digits_root, monkeypatch):
    """Issue 31: a poll, a collect and the receiver's check read the round they check, filtered
    by Label Studio (not every task of every round, filtered here), and no image bytes; while
    people label, a poll reads only the tasks saved since the last one, and a round is called
    answered only from a whole read."""
    from datetime import timedelta

    import components.oracle.label_studio as ls_module


    oracle = _oracle(label_studio, digits_root, "one-round-asked", poll_interval_s=0.05)
    pool = digits_manifest[digits_manifest.split == "target_train"].head(12)
    ids, truth = list(pool.sample_id), dict(zip(pool.sample_id, pool.label))
    context = {s: {"path": p} for s, p in zip(ids, pool.path)}
    first = oracle.request(ids[:8], 1, context=context)
    second = oracle.request(ids[8:], 2, context=context)
    seen = _requests_of(oracle.client)
    state = oracle.poll(second)
    assert set(state) == set(ids[8:]) and not any(r.done for r in state.values())
    listings = [(q, r) for q, r in seen if q.url.path.rstrip("/") == "/api/tasks"
                and r.status_code == 200]      # (the pager's last ask is a 404: no next page)
    assert listings, [str(q.url) for q, _ in seen]
    for request, response in listings:
        query = json.loads(request.url.params["query"])
        assert query["filters"]["items"][0]["filter"] == "filter:tasks:data.round"
        assert query["filters"]["items"][0]["value"] == 2
        assert request.url.params["resolve_uri"] == "false"
        got = response.json()
        rows = got if isinstance(got, list) else got.get("tasks", got.get("results"))
        assert rows is not None, sorted(got)
        assert {t["data"]["round"] for t in rows} == {2} and len(rows) == 4
        assert b"base64" not in response.content

    def filters(request) -> list[str]:
        return [f["filter"] for f in json.loads(request.url.params["query"])["filters"]["items"]]

    monkeypatch.setattr(ls_module, "SETTLE", timedelta(0))  # no settling time: exact counts
    oracle.poll(second)
    one = oracle.tasks(second["project_id"], 2)[oracle.item(ids[8])]
    oracle.client.annotations.create(id=one.id, result=choice_result(truth[ids[8]]))
    seen.clear()
    state = oracle.poll(second)
    assert [s for s, r in state.items() if r.done] == [ids[8]]
    (request, response), = [(q, r) for q, r in seen
                            if q.url.path.rstrip("/") == "/api/tasks" and r.status_code == 200]
    assert filters(request) == ["filter:tasks:data.round", "filter:tasks:updated_at"]
    assert [t["id"] for t in response.json()["tasks"]] == [one.id]      # the one saved since

    AutoAnnotator(oracle.client, truth, item_of=oracle.item).annotate(first["project_id"])
    seen.clear()
    assert oracle.collect(second, timeout=5) == {s: truth[s] for s in ids[8:]}
    asked = [filters(q) for q, r in seen if q.url.path.rstrip("/") == "/api/tasks"
             and r.status_code == 200]
    assert asked == [["filter:tasks:data.round", "filter:tasks:updated_at"],
                     ["filter:tasks:data.round"]]          # the changes, then all to say so
    assert all(json.loads(q.url.params["query"])["filters"]["items"][0]["value"] == 2
               for q, _ in seen if q.url.path.rstrip("/") == "/api/tasks")
    seen.clear()
    status = round_status(oracle.client, first["project_id"], 1)
    assert status.answered and status.n_tasks == 8
    assert {json.loads(q.url.params["query"])["filters"]["items"][0]["value"]
            for q, _ in seen if q.url.path.rstrip("/") == "/api/tasks"} == {1}


class BrowserAnnotator:
    """A person at Label Studio in Debian's chromium: logs in, labels by key or by click,
    submits, skips, goes back to fix a label. Each step can be saved as a screenshot."""

    def __init__(self, driver, url: str, shots: Path):
        from selenium.webdriver.common.action_chains import ActionChains

        self.driver, self.url, self.shots = driver, url, shots
        self.keys = ActionChains(driver)

    def wait(self, until, seconds: float = 30, ignoring=()):
        from selenium.webdriver.support.ui import WebDriverWait

        return WebDriverWait(self.driver, seconds, ignored_exceptions=ignoring).until(until)

    def find(self, xpath: str):
        from selenium.webdriver.common.by import By

        return self.driver.find_element(By.XPATH, xpath)

    def shot(self, name: str) -> None:
        self.driver.save_screenshot(str(self.shots / f"{name}.png"))

    def log_in(self, email: str, password: str) -> None:
        from selenium.webdriver.common.by import By
        from selenium.webdriver.common.keys import Keys

        self.driver.delete_all_cookies()                            # whoever was here logs out
        self.driver.get(self.url + "/user/login")
        self.wait(lambda d: d.find_elements(By.NAME, "email"))
        self.driver.find_element(By.NAME, "email").send_keys(email)
        self.driver.find_element(By.NAME, "password").send_keys(password + Keys.ENTER)
        self.wait(lambda d: "/user/login" not in d.current_url)

    def open_round(self, round_url: str) -> None:
        """The round's tab, labelling: its tasks one after another."""
        self.driver.get(round_url + "&labeling=1")
        self.wait(lambda d: self.choices())

    def choices(self) -> dict[str, object]:
        """The class buttons by the class they show ("4[4]" → "4")."""
        from selenium.webdriver.common.by import By

        return {b.text.split("[")[0].strip(): b
                for b in self.driver.find_elements(By.CSS_SELECTOR, ".ant-checkbox-wrapper")}

    def checked(self) -> list[str]:
        from selenium.webdriver.common.by import By

        return [b.text.split("[")[0].strip()
                for b in self.driver.find_elements(By.CSS_SELECTOR, ".ant-checkbox-wrapper-checked")]

    def press(self, key: str) -> None:
        self.keys.send_keys(key).perform()
        self.wait(lambda d: self.checked() == [key], 10)

    def click(self, label: str) -> None:
        self.choices()[label].click()
        self.wait(lambda d: self.checked() == [label], 10)

    def submit_by_keyboard(self) -> None:
        from selenium.webdriver.common.keys import Keys

        self.keys.key_down(Keys.CONTROL).send_keys(Keys.ENTER).key_up(Keys.CONTROL).perform()

    def press_button(self, text: str) -> None:
        """A toast ("Annotation saved") covers the bottom buttons for a few seconds after each
        save: a person waits for it too."""
        from selenium.common.exceptions import ElementClickInterceptedException

        button = self.find(f"//button[normalize-space()='{text}']")
        self.wait(lambda d: button.click() or True, ignoring=(ElementClickInterceptedException,))

    def queue_done(self) -> None:
        self.wait(lambda d: d.find_elements("xpath", "//*[text()='No More Tasks Left in Queue']"))

    def shown(self) -> str:
        """The image on the page now (Label Studio loads each task's image as its own blob)."""
        from selenium.webdriver.common.by import By

        return next((i.get_attribute("src") for i in self.driver.find_elements(By.TAG_NAME, "img")
                     if (i.get_attribute("src") or "").startswith("blob:")), "")

    def next_task(self, before: str) -> None:
        """Wait until the page shows another task's image than ``before`` (``shown``)."""
        self.wait(lambda d: self.shown() not in ("", before))

    def no_instruction_modal(self, seconds: float = 3) -> bool:
        """No "Labeling Instructions" modal comes up over the task within ``seconds``."""
        from selenium.common.exceptions import TimeoutException

        try:
            self.wait(lambda d: d.find_elements(
                "xpath", "//*[text()='Labeling Instructions']"), seconds)
        except TimeoutException:
            return True
        return False

    def record(self, name: str, details: dict[str, dict]) -> None:
        """The seconds per label Label Studio measured in this browser, beside the screenshots
        (benchmarks/label_studio_round.py reports them)."""
        path = self.shots / "browser-lead-times.json"
        seen = json.loads(path.read_text()) if path.exists() else {}
        seen[name] = [d["lead_time_s"] for d in details.values() if d["lead_time_s"] is not None]
        path.write_text(json.dumps(seen, indent=1))


def _browser_annotator(label_studio, tmp_path) -> BrowserAnnotator:
    shots = Path(os.environ.get("SAGE_ADA_SCREENSHOTS", tmp_path / "screenshots"))
    return BrowserAnnotator(chromium(shots), label_studio["url"], shots)


def _admin(label_studio) -> tuple[str, str]:
    creds = dict(l.split("=", 1) for l in Path(label_studio["credentials"]).read_text().splitlines())
    return creds["LABEL_STUDIO_USERNAME"], creds["LABEL_STUDIO_PASSWORD"]


def _account(label_studio, email: str) -> tuple[str, str]:
    """An annotator account made as users make one: infra/label-studio/add-annotator.sh."""
    subprocess.run(["bash", str(REPO / "infra/label-studio/add-annotator.sh"), email],
                   env=label_studio["env"], check=True, capture_output=True, timeout=120)
    path = Path(label_studio["env"]["LABEL_STUDIO_DATA"]) / "annotators" / f"{email}.env"
    return email, dict(l.split("=", 1) for l in path.read_text().splitlines())["LABEL_STUDIO_PASSWORD"]


@pytest.mark.slow
def test_an_annotator_labels_by_keyboard_in_a_real_browser(label_studio, digits_manifest,
                                                           digits_root, tmp_path, caplog):
    """As a person: see the round's notice on the project list, log in, see the model's guess
    pre-selected with no instruction modal over it (the instructions are one click away, on the
    header's "Instructions" button), press the digit's key (it must pick that
    digit, not Label Studio's positional choice), submit with Ctrl+Enter. Label Studio is
    restarted while the flow waits; the person reloads and skips the next one. The waiting
    oracle then reads exactly that. Screenshots of each step go to $SAGE_ADA_SCREENSHOTS
    (default: the test's temporary folder)."""
    from concurrent.futures import ThreadPoolExecutor

    from selenium.webdriver.common.keys import Keys

    oracle = _oracle(label_studio, digits_root, "browser", pixelated=True, poll_interval_s=0.2,
                     on_timeout="partial", instructions="Pick the digit the image shows.")
    pool = digits_manifest[digits_manifest.split == "target_train"]
    pool = pool[pool.label == "4"].head(2)  # Label Studio's own numbering gives key 4 to "3"
    ids = list(pool.sample_id)
    handle = oracle.request(ids, 1, context={s: {"path": p, "score": 0.5, "prediction": "7",
                                                 "confidence": 0.8}
                                             for s, p in zip(ids, pool.path)})
    person = _browser_annotator(label_studio, tmp_path)
    try:
        person.log_in(*_admin(label_studio))
        person.driver.get(label_studio["url"] + "/projects")
        person.wait(lambda d: "Round 1 is ready: 2 images to label" in d.page_source)
        person.shot("0-projects-notice")
        person.open_round(handle["url"])
        person.wait(lambda d: person.checked() == ["7"])            # the guess, pre-selected
        assert person.no_instruction_modal()      # none over the task, taking the digit keys
        person.find("//button[normalize-space()='Instructions']").click()   # one click away
        person.wait(lambda d: "Pick the digit the image shows." in person.find("//body").text)
        person.shot("1-instructions")
        person.keys.send_keys(Keys.ESCAPE).perform()
        person.wait(lambda d: "How to answer" not in person.find("//body").text)
        person.shot("2-guess-prefilled")
        person.press("4")
        person.shot("3-key-pressed")
        person.submit_by_keyboard()
        person.wait(lambda d: person.checked() == ["7"])            # the next task's guess
        person.shot("4-next-task")
        with ThreadPoolExecutor(1) as flow, caplog.at_level(logging.WARNING,
                                                            logger="sage_ada.label_studio"):
            waiting = flow.submit(oracle.collect, handle, 400)       # the flow waits
            label_studio["server"]("stop")
            label_studio["server"]("start")
            person.driver.refresh()                                 # the page, after the outage
            person.wait(lambda d: person.checked() == ["7"])
            assert person.no_instruction_modal(1)                   # nor on a reload
            person.press_button("Skip")
            labels = waiting.result(timeout=120)
        assert "is not answering (ConnectError); trying again" in caplog.text
        person.shot("5-after-restart-and-skip")
    finally:
        person.shot("last-seen")
        person.driver.quit()
    assert list(labels.values()) == ["4"]                 # the key pressed, the class it shows
    (skipped,) = set(ids) - set(labels)
    assert oracle.describe(handle)[skipped]["skipped"]
    person.record("keyboard and skip", oracle.describe(handle))


@pytest.mark.slow
def test_the_guesss_own_key_cannot_submit_an_empty_label_in_a_real_browser(
        label_studio, digits_manifest, digits_root, tmp_path):
    """Issue 30: the model's guess (5) is right and pre-selected; the person picks the digit
    "by its key", as the instructions said, which un-ticks it, and submits. Label Studio must
    refuse that with the required message (nothing saved, the round not answered), not save an
    empty label and leave its queue. The person picks 5 again and submits; on the next task
    they accept the guess as it is (Ctrl+Enter), and the round is answered."""
    oracle = _oracle(label_studio, digits_root, "issue-30-browser", pixelated=True,
                     poll_interval_s=0.2, on_timeout="fail",
                     instructions="Pick the digit the image shows.")
    pool = digits_manifest[digits_manifest.split == "target_train"]
    pool = pool[pool.label == "5"].head(2)
    ids = list(pool.sample_id)
    handle = oracle.request(ids, 1, context={s: {"path": p, "score": 0.5, "prediction": "5",
                                                 "confidence": 0.9}
                                             for s, p in zip(ids, pool.path)})
    person = _browser_annotator(label_studio, tmp_path)
    import time

    refused = "//*[contains(text(), 'No label is selected')]"
    try:
        person.log_in(*_admin(label_studio))
        person.open_round(handle["url"])
        person.wait(lambda d: person.checked() == ["5"])            # the guess, right this time
        first = person.shown()
        person.keys.send_keys("5").perform()                        # "pick the digit by its key"
        person.wait(lambda d: person.checked() == [], 10)           # ... un-ticks the guess
        person.submit_by_keyboard()
        person.wait(lambda d: d.find_elements("xpath", refused))
        time.sleep(1)                                               # the warning's fade-in
        person.shot("issue30-1-empty-submit-refused")
        assert "press its key again" in person.find(refused).text
        assert not any(t.annotations for t in oracle.tasks(handle["project_id"]).values())
        assert not oracle.complete(handle)                          # nothing saved, not answered
        person.press_button("OK")
        person.wait(lambda d: not d.find_elements("xpath", refused))
        person.press("5")                                           # picked again
        person.shot("issue30-2-picked-again")
        person.submit_by_keyboard()
        person.next_task(first)
        person.wait(lambda d: person.checked() == ["5"])            # the next task's guess
        person.submit_by_keyboard()                                 # accepted as it is
        person.queue_done()
        person.shot("issue30-3-round-done")
    finally:
        person.shot("issue30-last-seen")
        person.driver.quit()
    assert oracle.complete(handle)
    assert oracle.collect(handle, timeout=10) == {s: "5" for s in ids}


@pytest.mark.slow
def test_two_annotators_tie_a_third_decides_and_corrects_in_a_real_browser(
        label_studio, digits_manifest, digits_root, tmp_path):
    """annotators_per_task: 2, ties: ask_another. The admin labels a 4 by clicking, a second
    annotator presses 7: a tie, so Label Studio serves the task to a third person, who presses
    4 and breaks it. Collected: 4, credited to the two who gave it, agreement 2/3. Then the
    third person goes back to the task and changes it to 7: the oracle reads the correction
    (what the run trains on from the next adaptation)."""
    oracle = _oracle(label_studio, digits_root, "browser-overlap", pixelated=True,
                     poll_interval_s=0.2, on_timeout="fail", annotators_per_task=2,
                     ties="ask_another", show_guess=False)
    pool = digits_manifest[digits_manifest.split == "target_train"]
    pool = pool[pool.label == "4"].iloc[2:3]
    (sid,) = pool.sample_id
    handle = oracle.request([sid], 1, context={sid: {"path": pool.path.iloc[0]}})
    admin, bea, cai = _admin(label_studio), _account(label_studio, "bea@example.com"), \
        _account(label_studio, "cai@example.com")
    users = {u.email: u.id for u in oracle.client.users.list()}
    person = _browser_annotator(label_studio, tmp_path)
    try:
        person.log_in(*admin)
        person.open_round(handle["url"])
        person.click("4")
        person.shot("overlap-1-admin-clicked")
        person.press_button("Submit")
        person.queue_done()
        person.log_in(*bea)
        person.open_round(handle["url"])
        person.press("7")
        person.submit_by_keyboard()
        person.queue_done()
        person.shot("overlap-2-second-annotator-done")

        with pytest.raises(OracleTimeout, match="0 of 1"):          # a tie is not a label
            oracle.collect(handle, timeout=0.5)
        task = oracle.tasks(handle["project_id"])[oracle.item(sid)]
        assert task.overlap == 3 and not task.is_labeled            # one more person asked

        person.log_in(*cai)
        person.open_round(handle["url"])                            # served to the third
        person.shot("overlap-3-third-annotator-served")
        person.press("4")
        person.submit_by_keyboard()
        person.queue_done()
        assert oracle.collect(handle, timeout=10) == {sid: "4"}
        details = oracle.describe(handle)[sid]
        assert details["agreement"] == pytest.approx(2 / 3) and details["n_annotations"] == 3
        assert sorted(details["annotators"]) == sorted([users[admin[0]], users[cai[0]]])
        assert details["annotator"] == users[cai[0]]                # the one who broke the tie
        person.record("two annotators and a tie", oracle.describe(handle))

        person.find("//button[@aria-label='Previous task']").click()  # "oops"
        person.wait(lambda d: person.checked() == ["4"])
        person.press("7")
        person.press_button("Update")
        person.wait(lambda d: oracle.relabelled({sid: "4"}).get(sid, {}).get("new") == "7")
        person.shot("overlap-4-corrected")
    finally:
        person.driver.quit()


@pytest.mark.slow
def test_the_models_guess_is_prefilled_in_every_round(label_studio, digits_manifest, digits_root):
    """Predictions carry the round's model version; the project must follow it, or Label Studio
    shows the guess in round 1 only."""
    oracle = _oracle(label_studio, digits_root, "guess-every-round")
    pool = digits_manifest[digits_manifest.split == "target_train"].head(4)
    context = {sid: {"path": path, "score": 1.0, "prediction": "7", "confidence": 0.9}
               for sid, path in zip(pool.sample_id, pool.path)}
    ids = list(pool.sample_id)
    for round, chosen in ((1, ids[:2]), (2, ids[2:])):
        handle = oracle.request(chosen, round, context={s: context[s] for s in chosen})
        project = oracle.client.projects.get(id=handle["project_id"])
        assert project.model_version == f"round {round - 1}"
        shown = [t for item, t in oracle.tasks(handle["project_id"]).items()
                 if item in {oracle.item(s) for s in chosen}]
        versions = [p["model_version"] if isinstance(p, dict) else p.model_version
                    for t in shown for p in t.predictions]
        assert versions and set(versions) == {project.model_version}
        tab = int(handle["url"].split("?tab=")[1])               # the round's own tab
        in_tab = oracle.client.tasks.list(project=handle["project_id"], view=tab, fields="all")
        assert sorted(t.data["item"] for t in in_tab) == sorted(oracle.item(s) for s in chosen)
    hidden = _oracle(label_studio, digits_root, "guess-hidden", show_guess=False)
    handle = hidden.request(ids[:1], 1, context={ids[0]: context[ids[0]]})
    (task,) = hidden.tasks(handle["project_id"]).values()
    assert not task.predictions                      # label_studio.show_guess: false


@pytest.mark.slow
def test_a_server_down_past_the_rounds_timeout_is_one_clear_error(label_studio, digits_manifest,
                                                                  digits_root):
    """Waiting through a restart is shown in the browser test; a server that stays down past
    the round's timeout ends the wait with one error that says how to continue."""
    server = label_studio["server"]
    oracle = _oracle(label_studio, digits_root, "outage", poll_interval_s=0.5, on_timeout="fail")
    pool = digits_manifest[digits_manifest.split == "target_train"].head(3)
    ids = list(pool.sample_id)
    handle = oracle.request(ids, 1, context={s: {"path": p} for s, p in zip(ids, pool.path)})
    server("stop")
    try:
        with pytest.raises(OracleError, match="stopped answering while round 1.*server.sh start.*"
                                              "--resume"):
            oracle.collect(handle, timeout=1.0)
    finally:
        server("start")


@pytest.mark.slow
def test_only_an_invite_link_signs_up(label_studio):
    """Anyone who reaches the port could register and overwrite every project; the server
    script closes sign-up but to the organisation's invite link. Sign-up without the link says
    so at once (issue 30: a full form, then a bare 403 that did not mention invitations)."""
    import httpx

    url, token = label_studio["url"], label_studio["token"]
    for path in ("/user/signup", "/user/signup/", "/user/signup/?token=guessed"):
        page = httpx.get(url + path)
        assert page.status_code == 403 and "by invitation only" in page.text, path
        assert "<form" not in page.text and "/user/login" in page.text

    def sign_up(path: str, email: str) -> int:
        with httpx.Client(base_url=url) as browser:                 # a browser: form + CSRF
            browser.get("/user/login/")                              # a page that sets CSRF
            browser.get(path)
            return browser.post(path, data={
                "email": email, "password": "a-long-password-1",
                "csrfmiddlewaretoken": browser.cookies["csrftoken"]},
                headers={"Referer": url + path}).status_code

    assert sign_up("/user/signup/", "stranger@example.com") == 403
    invite = httpx.get(f"{url}/api/invite", headers={"Authorization": f"Token {token}"}).json()
    assert "<form" in httpx.get(url + invite["invite_url"]).text     # the link: the form
    assert sign_up(invite["invite_url"], "annotator2@example.com") == 302
    emails = {u.email for u in connect(url, token).users.list()}
    assert "annotator2@example.com" in emails and "stranger@example.com" not in emails


@pytest.mark.slow
def test_an_annotator_account_is_made_by_the_script_and_can_log_in(label_studio, digits_root):
    """infra/label-studio/add-annotator.sh: an account in the admin's organisation, its password
    in a mode-600 file and never printed; it logs in and sees the organisation's projects."""
    import httpx

    _oracle(label_studio, digits_root, "accounts").project_id()    # a project to see
    script = str(REPO / "infra/label-studio/add-annotator.sh")
    run = lambda *args: subprocess.run(["bash", script, *args], env=label_studio["env"],  # noqa: E731
                                       capture_output=True, text=True, timeout=120)
    out = run("ann@example.com")
    assert out.returncode == 0, out.stderr
    path = Path(label_studio["env"]["LABEL_STUDIO_DATA"]) / "annotators" / "ann@example.com.env"
    password = dict(l.split("=", 1) for l in path.read_text().splitlines())["LABEL_STUDIO_PASSWORD"]
    assert oct(path.stat().st_mode)[-3:] == "600" and password not in out.stdout + out.stderr
    assert "already has an account" in run("ann@example.com").stdout    # rerun: unchanged
    bad = run("not-an-address")
    assert bad.returncode != 0 and "is not an e-mail address" in bad.stderr
    assert "Traceback" not in bad.stderr

    url = label_studio["url"]
    with httpx.Client(base_url=url) as browser:                     # a browser: form + CSRF
        browser.get("/user/login/")
        answer = browser.post("/user/login/", data={
            "email": "ann@example.com", "password": password,
            "csrfmiddlewaretoken": browser.cookies["csrftoken"]},
            headers={"Referer": url + "/user/login/"})
        assert answer.status_code == 302 and "/user/login" not in answer.headers["location"]
        mine = browser.get("/api/projects/").json()
    admin = connect(url, label_studio["token"])
    theirs = {p.id for p in admin.projects.list()}
    assert {p["id"] for p in mine["results"]} == theirs and theirs      # the same organisation
