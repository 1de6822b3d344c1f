"""P4: what orchestration and lineage cost. The default pipeline (params.yaml) runs twice with
the same seed: as the Prefect flow with MLflow logging, and as the same components in a plain
loop. The one-time start of Prefect's API is measured apart and left out of the ratio.
Saves ``benchmarks/results/flow_overhead.json``.

    python benchmarks/flow_overhead.py [--rounds N]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def plain_loop(cfg, cache_dir: Path, rounds: int | None = None) -> list[float]:
    """The flow's steps without Prefect or MLflow; ``rounds`` defaults to ``active.rounds``."""
    from components.data import prepare
    from components.oracle import SimulatedOracle
    from components.oracle import check_labels
    from components.run.steps import RunSteps

    prepare.ensure_data(cfg)       # the flow's prepare and validate steps, without Prefect
    prepare.validate(cfg)
    steps = RunSteps(cfg, progress=False, cache_dir=cache_dir)
    oracle = SimulatedOracle(steps.manifest)
    net, _, _ = steps.pretrain()
    accuracy = [steps.evaluate(net)["accuracy"]]
    labelled: dict[str, str] = {}
    for r in range(1, (cfg.active.rounds if rounds is None else rounds) + 1):
        ids, _, _ = steps.select(net, labelled, r)
        labels = oracle.collect(oracle.request(ids, r), cfg.active.annotate_timeout_s)
        new = {**labelled, **check_labels(ids, labels, steps.classes)}
        steps.adapt(net, new, r)
        labelled = new
        accuracy.append(steps.evaluate(net)["accuracy"])
    return accuracy


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int)
    args = ap.parse_args()
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    raw["data"]["root"] = str(REPO / raw["data"]["root"])
    raw["data"]["manifest"] = str(REPO / raw["data"]["manifest"])
    if args.rounds:
        raw["active"]["rounds"] = args.rounds
    raw["tracking"]["experiment"] = "flow-overhead"
    with tempfile.TemporaryDirectory() as tmp:
        os.chdir(tmp)
        Path("params.yaml").write_text(yaml.safe_dump(raw))
        os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{tmp}/mlflow.db"
        from components.config import load_config
        from prefect import flow

        from flows.active_da import active_domain_adaptation

        cfg = load_config("params.yaml")
        start = time.perf_counter()
        plain = plain_loop(cfg, Path(tmp) / "plain-cache")
        t_plain = time.perf_counter() - start

        @flow(name="warm-up")
        def warm_up():
            return 1

        start = time.perf_counter()
        warm_up()
        t_startup = time.perf_counter() - start

        start = time.perf_counter()
        result = active_domain_adaptation(params="params.yaml", progress=False)
        t_flow = time.perf_counter() - start
    flow_acc = [h["accuracy"] for h in result["history"]]
    out = {"rounds": cfg.active.rounds, "plain_loop_s": t_plain, "flow_s": t_flow,
           "prefect_api_startup_s": t_startup, "ratio": t_flow / t_plain, "target": "<= 1.10",
           "plain_accuracy": plain, "flow_accuracy": flow_acc, "same_accuracy": plain == flow_acc}
    print(json.dumps(out, indent=1))
    path = REPO / "benchmarks" / "results" / "flow_overhead.json"
    path.write_text(json.dumps(out, indent=1))
    print(f"saved {path}")


if __name__ == "__main__":
    main()
