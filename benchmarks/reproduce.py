"""Reproduce the paper's claims on the shipped benchmarks, through the product's own flow.

    python benchmarks/reproduce.py --preset full --workers 2   # the whole protocol (many hours)
    python benchmarks/reproduce.py --preset small              # one task, b=10, 3 seeds, 5 rounds
    python benchmarks/reproduce.py --preset sensitivity --set train.lambda_adv=1 \
        --output docs/sensitivity-lambda1.md                   # claim 6 under another setting

Every (task, budget, arm, seed) is one run of the ``active-domain-adaptation`` flow with the
simulated oracle, tracked in MLflow like any other run. The preset is resumable: a run whose
finished twin (same settings) is already in MLflow is read back instead of recomputed; so is
one in ``benchmarks/results/reproduce_runs.jsonl``, a line per finished run, committed with
the repository and counted only for the code of ``components/`` that computed it, so a
preset longer than one sitting continues on another machine. At the
end it writes ``docs/results.md`` (tables, paired differences to ``random`` with 95% confidence
intervals, areas under the curves, the paper's claims one by one) and ``docs/figures/*.png``,
and logs the figures to a parent MLflow run.

    python benchmarks/reproduce.py --preset full --code DIGEST   # rebuild the page, run nothing

``--code DIGEST`` rebuilds the page from the runs that code computed: the ledger's lines of that
``components/`` digest (the ``code`` in ``benchmarks/results/reproduce_full.json``). It starts no
run, opens no MLflow run and reads nothing from MLflow, so the committed page can be regenerated
after ``components/`` has moved on.

This script is the command line; the protocol itself (arms, statistics, ledger, runner, report)
is the package ``benchmarks.protocol``.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run as a script: the repository's packages, not benchmarks/

from benchmarks.protocol.arms import PRESETS  # noqa: E402
from benchmarks.protocol.ledger import code_digest  # noqa: E402
from benchmarks.protocol.report import report  # noqa: E402
from benchmarks.protocol.runner import run_all  # noqa: E402
from benchmarks.protocol.stats import MARGIN  # noqa: E402


def command(args) -> str:
    """The command line that regenerates this report."""
    return " ".join(["python benchmarks/reproduce.py", f"--preset {args.preset}",
                     *(f"--set {pair}" for pair in args.set),
                     *([f"--output {args.output}"] if args.set else [])])


def parse_set(pairs: list[str]) -> dict:
    """``["train.lr=0.003", ...]`` → ``{"train.lr": 0.003}`` (values read as YAML scalars)."""
    import yaml

    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise SystemExit(f"--set takes KEY=VALUE, such as train.lambda_adv=0.1; got {pair!r}")
        out[key.strip()] = yaml.safe_load(value)
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--preset", choices=sorted(PRESETS), default="small")
    ap.add_argument("--output", default="docs/results.md")
    ap.add_argument("--workers", type=int, default=1,
                    help="runs in parallel, each with cores/workers torch threads (2 on 2 cores "
                         "gives about 1.4x the throughput of 1)")
    ap.add_argument("--stop-after", type=float, metavar="MINUTES",
                    help="start no new run after this long; report what is finished")
    ap.add_argument("--margin", type=float, default=MARGIN,
                    help="AUC points within which one arm 'matches' another (default 1)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="change a params.yaml setting for every run (repeatable), e.g. "
                         "--set train.lambda_adv=0.1; such runs are new runs, not read back")
    ap.add_argument("--code", metavar="DIGEST",
                    help="rebuild the page from the runs that code computed (the ledger's lines "
                         "with this components/ digest): no run is started, nothing is read "
                         "from or logged to MLflow")
    args = ap.parse_args()
    os.chdir(REPO)  # params.yaml, the data and the MLflow store are the repository's
    preset = dict(PRESETS[args.preset])
    preset["set"] = {**preset.get("set", {}), **parse_set(args.set)}
    preset["margin"] = args.margin
    # once: a file edited while the preset runs must not relabel its runs or its report
    preset["code"] = args.code or code_digest()
    if args.set and Path(args.output).resolve() == (REPO / "docs/results.md").resolve():
        raise SystemExit("--set changes the protocol: write the report elsewhere, e.g. "
                         "--output docs/sensitivity-lambda0.1.md")
    from components.config import ConfigError, load_config

    try:
        load_config("params.yaml", preset["set"])
    except ConfigError as exc:
        raise SystemExit(f"--set: {exc}")
    stem = Path(args.output).stem
    prefix = "" if stem == "results" else f"{stem}-"
    tracker = parent = None
    if not args.code:  # a rebuild is no reproduction: it opens no MLflow run
        from components.tracking.lineage import Tracker

        tracker = Tracker("reproduce")
        # The invocation's own run is opened first and its counts logged after every job.
        parent = tracker.start_parent(params={"preset": args.preset, "workers": args.workers,
                                              **{k: str(v) for k, v in preset.items()}},
                                      tags={"sage_ada.kind": "reproduction"},
                                      run_name=f"preset {args.preset}")

    def log_counts(counts: dict, seconds: float) -> None:
        if parent is None:
            return
        step = counts["computed"] + counts["failed"]
        for name, value in {"wall_s": seconds, **counts}.items():
            tracker.client.log_metric(parent, name.replace(" ", "_"), value, step=step)

    start = time.perf_counter()
    results, counts, busy = run_all(preset, args.workers, args.stop_after, log_counts,
                                    read_only=bool(args.code))
    wall = time.perf_counter() - start
    log_counts(counts, wall)
    text, figures = report(results, counts, busy, args.preset, preset, wall, prefix)
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(text)
    (REPO / "benchmarks/results" / f"reproduce_{stem if prefix else args.preset}.json").write_text(
        json.dumps({"preset": args.preset, "set": preset["set"], "code": preset["code"],
                    "wall_s": wall, "busy_s": busy, "counts": counts, "output": args.output,
                    "command": command(args), "results": results}, indent=1))
    if parent is not None:
        for fig in figures:
            tracker.client.log_artifact(parent, str(fig), "figures")
        tracker.client.log_artifact(parent, args.output)
        tracker.client.set_terminated(parent)
    print(f"wrote {args.output} and {len(figures)} figure(s): {counts}, {wall / 60:.1f} min "
          f"(the preset's runs: {busy / 60:.1f} min of wall time); "
          + (f"MLflow run {parent}" if parent else f"rebuilt from the runs of code {args.code}"))


if __name__ == "__main__":
    main()
