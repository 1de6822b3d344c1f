"""``compare``: several strategies × seeds through the same flow, one comparison plot.

Each (strategy, seed) is a run of ``active-domain-adaptation`` (a subflow, so the Prefect UI
shows them under one parent); the curves (mean ± std over seeds) go to a parent MLflow run.
"""
from __future__ import annotations

from typing import Any, Optional

from prefect import flow

from components.config import load_config
from components.tracking.lineage import KIND_TAG, Tracker
from components.tracking.plots import comparison_curve
from flows.active_da import active_domain_adaptation


@flow(name="compare-strategies")
def compare(params: str = "params.yaml", strategies: list[str] = ("sage", "random"),
            seeds: list[int] = (0, 1, 2), overrides: Optional[dict[str, Any]] = None,
            progress: bool = True, allow_duplicate: bool = False) -> dict:
    import matplotlib.pyplot as plt

    overrides = dict(overrides or {})
    cfg = load_config(params, overrides)
    curves: dict[str, list[list[dict]]] = {}
    children = []
    for strategy in strategies:
        for seed in seeds:
            run = active_domain_adaptation.with_options(
                flow_run_name=f"{strategy} b={cfg.active.budget} ×{cfg.active.rounds} seed {seed}")(
                params=params, overrides={**overrides, "active.strategy": strategy,
                                          "active.seed": seed, "train.seed": seed},
                progress=progress, allow_duplicate=allow_duplicate)
            curves.setdefault(strategy, []).append(run["history"])
            children.append(run["run_id"])
    tracker = Tracker(cfg.experiment_name)
    parent = tracker.start_parent(
        params={"strategies": ",".join(strategies), "seeds": ",".join(map(str, seeds)),
                "runs": ",".join(children), **cfg.model_dump(exclude={"active"})},
        tags={KIND_TAG: "comparison"}, run_name=f"compare {'/'.join(strategies)}")
    fig = comparison_curve(curves, f"{cfg.experiment_name}: accuracy vs labels")
    tracker.client.log_figure(parent, fig, "comparison.png")
    plt.close(fig)
    final = {name: [h[-1]["accuracy"] for h in runs] for name, runs in curves.items()}
    tracker.client.log_dict(parent, {"curves": curves, "final": final}, "comparison.json")
    tracker.client.set_terminated(parent)
    return {"run_id": parent, "final": final, "curves": curves}
