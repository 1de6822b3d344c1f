"""The flow as people start it: the Prefect UI's "Custom run" form, ``prefect deployment run``,
a schedule. Its typed parameters are the settings people change most, each ready to fill: the
strategy a menu, the numbers numbers, all with ``params.yaml``'s values as defaults and
Prefect's own checks (a budget of 0 or an unknown strategy is refused with a message, before a
run starts). Any other setting goes in ``overrides`` by dotted key. The run itself is
``active_domain_adaptation``, whose rules (a second start of the same settings is refused)
hold here too.
"""
# No ``from __future__ import annotations``: Prefect validates a deployment's parameters against
# these annotations, and strings like ``Strategy`` could not be resolved there.
from typing import Annotated, Any, Literal, Optional

from prefect import flow
from pydantic import Field

from components.config import Config, ConfigError, declared_strategies, load_config
from flows.active_da import active_domain_adaptation



def form_defaults() -> Config:
    """The form's defaults: the working directory's params.yaml, which is the clone's both when
    it is deployed and when a worker runs it (prefect.yaml's pull step moves there first), so a
    run left at the defaults runs the clone's settings. The built-in ones where it is missing."""
    try:
        return load_config("params.yaml")
    except (ConfigError, OSError):
        return Config()


FORM = form_defaults()
Strategy = Literal[tuple(sorted(declared_strategies()))]  # type: ignore[valid-type]
Oracle = Literal["simulated", "label_studio"]
Wait = Literal["block", "suspend"]


def run_name() -> str:
    """``sage b=10 ×5 seed 0``: what a run of the list is, without opening it."""
    from prefect.runtime import flow_run

    p = flow_run.parameters
    return f"{p['strategy']} b={p['budget']} ×{p['rounds']} seed {p['seed']}"


@flow(name="active-domain-adaptation", flow_run_name=run_name, log_prints=False)
def deployed_run(strategy: Strategy = FORM.active.strategy,
                 rounds: Annotated[int, Field(ge=1)] = max(FORM.active.rounds, 1),
                 budget: Annotated[int, Field(ge=1)] = FORM.active.budget,
                 seed: Annotated[int, Field(ge=0, lt=2**32)] = FORM.active.seed,
                 oracle: Oracle = FORM.active.oracle,
                 wait: Wait = FORM.label_studio.wait,
                 overrides: dict[str, Any] = {},  # noqa: B006 (read, never changed; {} and
                 # not None: the form then shows the JSON box at once, no None/dict toggle)
                 params: str = "params.yaml", progress: bool = False,
                 resume: Optional[str] = None) -> dict:
    """One active domain adaptation run with these settings over ``params``' others.

    Args:
        strategy: which target samples are worth a label (README: "Which strategy to pick").
        rounds: labelling rounds.
        budget: labels asked for per round.
        seed: every seed of the run: training and selection (the split keeps split.seed).
        oracle: simulated (held-back labels) or label_studio (people).
        wait: with label_studio, how the run waits for people: block (its process polls) or
            suspend (it stops, holding nothing, until the webhook receiver resumes it).
        overrides: any other setting by dotted key: {"train.regulariser": "mme"}.
        params: the settings file, relative to the clone the worker runs in.
        progress: progress bars in the run's log.
        resume: an MLflow run id to continue (a wait that timed out, a failure): the run keeps
            its own settings, and the fields above are not used.
    """
    if resume:
        return active_domain_adaptation.fn(params=params, overrides=overrides, resume=resume,
                                           progress=progress)
    typed = {"active.strategy": strategy, "active.rounds": rounds, "active.budget": budget,
             "active.seed": seed, "train.seed": seed, "active.oracle": oracle, "label_studio.wait": wait}
    return active_domain_adaptation.fn(params=params, overrides={**overrides, **typed},
                                       progress=progress)
