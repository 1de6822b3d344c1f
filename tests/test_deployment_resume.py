"""Issue 32: a suspended run whose wait timed out is resumed through its deployment (a worker
runs it, and it waits suspended again), with the run's own settings, not the form's."""
from __future__ import annotations


def test_the_deployment_resumes_a_run_with_its_own_settings(monkeypatch):
    import flows.deployment as deployment

    calls = []
    monkeypatch.setattr(deployment.active_domain_adaptation, "fn",
                        lambda **kwargs: calls.append(kwargs) or {})
    deployment.deployed_run.fn(strategy="entropy", rounds=3, resume="0123abcd",
                               overrides={"label_studio.poll_interval_s": 1})
    assert calls[-1]["resume"] == "0123abcd"
    assert calls[-1]["overrides"] == {"label_studio.poll_interval_s": 1}   # no form fields
    deployment.deployed_run.fn(strategy="entropy", rounds=3)
    assert "resume" not in calls[-1]
    assert calls[-1]["overrides"]["active.strategy"] == "entropy"
    assert calls[-1]["overrides"]["active.rounds"] == 3
    assert calls[-1]["overrides"]["label_studio.wait"] == "block"   # params.yaml's


def test_the_people_deployment_suspends_runs_annotated_in_label_studio(monkeypatch):
    """prefect.yaml's "people" (README "For a team"): its fields are the flow's own, so the UI
    form and `prefect deployment run` start a run that people label and that waits suspended,
    with the receiver params.yaml names."""
    import yaml

    import flows.deployment as deployment
    from components.config import load_config
    from tests.conftest import REPO

    spec = yaml.safe_load((REPO / "prefect.yaml").read_text())
    (people,) = [d for d in spec["deployments"] if d["name"] == "people"]
    calls = []
    monkeypatch.setattr(deployment.active_domain_adaptation, "fn",
                        lambda **kwargs: calls.append(kwargs) or {})
    deployment.deployed_run.fn(**people["parameters"], rounds=2,
                               overrides={"train.regulariser": "mme"})
    cfg = load_config(REPO / "params.yaml", calls[-1]["overrides"])
    assert (cfg.active.oracle, cfg.label_studio.wait) == ("label_studio", "suspend")
    assert cfg.label_studio.webhook_url and cfg.train.regulariser == "mme"
    assert cfg.active.rounds == 2


def test_a_timed_out_suspended_run_names_the_deployment_to_resume_it(monkeypatch):
    import prefect.runtime.deployment
    import prefect.runtime.flow_run

    from flows.active_da import deployment_resume

    monkeypatch.setattr(prefect.runtime.flow_run, "flow_name", "active-domain-adaptation",
                        raising=False)
    monkeypatch.setattr(prefect.runtime.deployment, "name", "manual", raising=False)
    assert deployment_resume("0123abcd") == ("`prefect deployment run "
                                             "'active-domain-adaptation/manual' --param "
                                             "resume=0123abcd`")
