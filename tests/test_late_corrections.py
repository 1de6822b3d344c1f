"""A label an annotator corrects in Label Studio after the run that trained on it has ended is
not lost: ``sage-ada corrections`` finds it (who changed what), keeps it beside the run and in
MLflow, and ``sage-ada runs`` shows the run as changed since. The correction is made in a real
browser, as a person makes it."""
from __future__ import annotations

import subprocess
import time

import pytest
from mlflow.tracking import MlflowClient

from components.oracle.label_studio import item_id
from tests.test_label_studio import (_admin, _browser_annotator, _ls_project, _tasks,  # noqa: F401
                                     label_studio, prefect_api)

pytestmark = pytest.mark.slow


def test_a_correction_after_the_run_ended_is_found_and_listed(project, label_studio, prefect_api,
                                                             tmp_path):
    from flows.active_da import active_domain_adaptation

    _ls_project(project, label_studio)
    result = active_domain_adaptation(params="params.yaml", progress=False, auto_annotate=True)
    run_id = result["run_id"]
    url = MlflowClient().get_run(run_id).data.tags["sage_ada.annotation_url"]
    project_id = int(url.split("/projects/")[1].split("/")[0])
    tasks, _ = _tasks(label_studio, project_id)
    sample_of = {item_id(run_id, s): s for s in result["labelled"]}
    task = tasks[0]
    sid = sample_of[task.data["item"]]
    old = result["labelled"][sid]
    new = "7" if old != "7" else "1"

    def corrections() -> str:
        out = subprocess.run(["sage-ada", "corrections"], cwd=project, capture_output=True,
                             text=True, timeout=300)
        assert out.returncode == 0, out.stderr[-3000:]
        return out.stdout

    assert f"run {run_id}: no label changed after it ended" in corrections()

    person = _browser_annotator(label_studio, tmp_path)
    try:
        person.log_in(*_admin(label_studio))
        person.driver.get(f"{label_studio['url']}/projects/{project_id}/data?task={task.id}")
        person.wait(lambda d: person.checked() == [old], 60)
        person.shot("late-correction-1-opened")
        person.press(new)                                   # the person fixes the label
        person.press_button("Update")
        time.sleep(2)
        person.shot("late-correction-2-updated")
    finally:
        person.driver.quit()

    listed = corrections()
    assert f"run {run_id}: 1 label(s) changed after it ended" in listed, listed
    assert f"{sid}: trained on {old}, now {new} (annotator " in listed, listed
    client = MlflowClient()
    assert client.get_run(run_id).data.tags["sage_ada.labels_changed_after_end"] == "1"
    rows = client.download_artifacts(run_id, "corrections_after_end.json")
    assert f'"sample_id": "{sid}"' in open(rows).read()
    runs = subprocess.run(["sage-ada", "runs"], cwd=project, capture_output=True, text=True,
                          timeout=300)
    assert "finished; 1 label(s) changed since" in runs.stdout, runs.stdout + runs.stderr
