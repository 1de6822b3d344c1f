"""``sage-ada``: one command line for data, runs, comparisons and the MLflow UI."""
from __future__ import annotations

import argparse
import errno
import json
import logging
import os
import sys
from pathlib import Path

RUN_FLAGS = {  # CLI flag → params.yaml key
    "strategy": "active.strategy", "rounds": "active.rounds", "budget": "active.budget",
    "seed": "active.seed", "oracle": "active.oracle", "source": "data.source",
    "target": "data.target", "channels": "data.channels", "manifest": "data.manifest",
    "regulariser": "train.regulariser",
    "adversarial": "train.adversarial", "pretrain_steps": "train.pretrain_steps",
    "steps_per_round": "train.steps_per_round", "device": "train.device",
    "cpu_kernels": "train.cpu_kernels", "cpu_threads": "train.cpu_threads",
    "experiment": "tracking.experiment",
}


def _overrides(args) -> dict:
    out = {key: getattr(args, flag) for flag, key in RUN_FLAGS.items()
           if getattr(args, flag, None) is not None}
    if getattr(args, "pretrain_only", False):
        out["active.rounds"] = 0
    if "active.seed" in out:  # one seed for the whole run: training and selection
        out["train.seed"] = out["active.seed"]
    return out


def cmd_data(args) -> int:
    from components.config import load_config
    from components.data import prepare
    from components.data.shipped import build_shipped

    cfg = load_config(args.params, _overrides(args))
    if args.action == "digits":
        counts = build_shipped(args.root or cfg.data.root)
        print("built the shipped benchmarks: " + ", ".join(f"{d} {n} images" for d, n in counts.items()))
        if not args.root and Path("data.dvc").exists():
            from components.data.versioning import verify_and_cache

            print(f"matches data.dvc (hash {verify_and_cache('data.dvc')}); cached by DVC")
        return 0
    if args.action == "split":
        from components.data.versioning import data_hash

        manifest = prepare.split_and_validate(cfg)
        print(f"manifest {cfg.data.manifest}: {len(manifest)} samples, validated\n"
              f"{prepare.summary(manifest)}\n  data hash: "
              f"{data_hash(root=cfg.data.root, manifest=cfg.data.manifest)}")
        return 0
    manifest = prepare.validate(cfg)
    print(f"manifest {cfg.data.manifest} is valid ({len(manifest)} samples)")
    return 0


def _write_results(result: dict, folder: str) -> None:
    """DVC metrics and plots: per-round accuracy (no timings, so reruns give the same bytes)."""
    from components.files import write_atomic

    out = Path(folder)
    history = result["history"]
    metrics = {"final_accuracy": round(history[-1]["accuracy"], 6),
               "labels": history[-1]["n_labels"],
               "accuracy_per_round": {f"round_{h['round']}": round(h["accuracy"], 6) for h in history}}
    write_atomic(out / "metrics.json", json.dumps(metrics, indent=2) + "\n")
    lines = ["round,n_labels,accuracy"] + [f"{h['round']},{h['n_labels']},{h['accuracy']:.6f}"
                                           for h in history]
    write_atomic(out / "rounds.csv", "\n".join(lines) + "\n")


def cmd_run(args) -> int:
    from flows.active_da import active_domain_adaptation

    if not args.debug:
        quiet_user_errors()

    result = active_domain_adaptation(params=args.params, overrides=_overrides(args),
                                      resume=args.resume, progress=not args.no_progress,
                                      auto_annotate=args.auto_annotate,
                                      allow_duplicate=args.allow_duplicate)
    if args.results:
        _write_results(result, args.results)
    h = result["history"]
    print(f"\ndone: accuracy {100 * h[0]['accuracy']:.2f}% (round 0, UDA) → "
          f"{100 * h[-1]['accuracy']:.2f}% (round {h[-1]['round']}, {h[-1]['n_labels']} labels)")
    registered = (f"model registered as version {result['registered_version']}"
                  if result["registered_version"] else "nothing registered (pretraining only)")
    print(f"MLflow run {result['run_id']} (experiment '{result['experiment']}'); {registered}.")
    print(f"Look at it: {_where_to_look(result)}")
    return 0


def _where_to_look(result: dict) -> str:
    """The run's page in the MLflow UI of its tracking server, else how to open the local one."""
    from mlflow.tracking import MlflowClient

    from components.tracking.lineage import ui_url

    server = os.environ.get("MLFLOW_TRACKING_URI", "")
    if not server.startswith(("http://", "https://")):
        return "`sage-ada ui`, then the link it prints"
    experiment = MlflowClient().get_experiment_by_name(result["experiment"])
    return ui_url(server, experiment.experiment_id if experiment else None, result["run_id"])


def cmd_compare(args) -> int:
    from flows.compare import compare

    if not args.debug:
        quiet_user_errors()

    summary = compare(params=args.params, strategies=args.strategies.split(","),
                      seeds=args.seeds, overrides=_overrides(args),
                      progress=not args.no_progress, allow_duplicate=args.allow_duplicate)
    print(json.dumps(summary["final"], indent=2))
    print(f"comparison logged to MLflow run {summary['run_id']}")
    return 0


def cmd_runs(args) -> int:
    """The runs started from this folder, with what became of them and how to continue."""
    from mlflow.tracking import MlflowClient

    from components.run.listing import summarise
    from components.run.preflight import check_tracking_server
    from components.run.saved import SavedRuns
    from components.tracking.lineage import configure_mlflow

    check_tracking_server()  # a server that is down is one line, not a minute of retries
    rows = summarise(SavedRuns(), MlflowClient(configure_mlflow()))
    if not rows:
        print("no runs started from this folder yet (sage-ada run starts one)")
        return 0
    print(f"{'run id':<34}{'status':<36}{'rounds':<10}{'accuracy':>9}  next")
    for r in rows:
        accuracy = f"{100 * r.accuracy:.2f}%" if r.accuracy is not None else "-"
        print(f"{r.run_id:<34}{r.status:<36}{r.rounds:<10}{accuracy:>9}  {r.next_step}")
    return 0


def cmd_corrections(args) -> int:
    """Labels people changed in Label Studio after the run that trained on them ended."""
    from mlflow.tracking import MlflowClient

    from components.run import corrections
    from components.run.preflight import check_tracking_server
    from components.run.saved import SavedRuns
    from components.tracking.lineage import configure_mlflow

    check_tracking_server()
    store = SavedRuns()
    if args.run and not (store.dir(args.run) / "state.json").is_file():
        raise FileNotFoundError(f"no run {args.run} was started from this folder "
                                "(`sage-ada runs` lists them)")
    found = corrections.find(store, [args.run] if args.run else None)
    if not found:
        print("no run of this folder was labelled in Label Studio (nothing to check)")
        return 0
    client = MlflowClient(configure_mlflow())
    for run_id, changed in found.items():
        corrections.keep(store, run_id, changed, client)
        print(f"run {run_id}: " + (f"{len(changed)} label(s) changed after it ended" if changed
                                   else "no label changed after it ended"))
        for c in changed:
            print(f"  {c.sample_id}: trained on {c.old}, now {c.new} (annotator {c.by}, {c.at})")
    if any(found.values()):
        print("The registered models of these runs trained on the old labels; a new run asks "
              "again, or see README 'Annotators in Label Studio'.")
    return 0


def cmd_ui(args) -> int:
    """The MLflow UI: started on the local store, or, when MLFLOW_TRACKING_URI names a
    tracking server, that server's own. Prints the link to each experiment's training runs:
    MLflow 3.17 opens its GenAI pages elsewhere, whatever the experiment's kind tag says."""
    from components.tracking.lineage import default_tracking_uri, ui_links, ui_url

    uri = os.environ.get("MLFLOW_TRACKING_URI") or default_tracking_uri()
    served = uri.startswith(("http://", "https://"))
    if served:
        from components.run.preflight import check_tracking_server

        check_tracking_server()  # a server that is down is one line, not a minute of retries
    base = uri.rstrip("/") if served else f"http://127.0.0.1:{args.port}"
    local = Path(uri[len("sqlite:///"):]) if uri.startswith("sqlite:///") else None
    links = ui_links(uri, base) if served or local is None or local.is_file() else []
    print("MLflow UI, the training runs of each experiment:" if links else
          "MLflow UI (no experiment yet: `sage-ada run` makes one):")
    for name, url in links:
        print(f"  {name}: {url}")
    print(f"  all experiments: {ui_url(base)}\n"
          "  (other addresses open MLflow's GenAI pages until 'Model training' is chosen at the "
          "top of its sidebar, once per browser)")
    if served:
        return 0  # the tracking server serves its UI itself
    artifacts = Path("mlflow/artifacts").resolve()
    cmd = ["mlflow", "ui", "--backend-store-uri", uri, "--default-artifact-root", artifacts.as_uri(),
           "--host", "127.0.0.1", "--port", str(args.port)]
    print("starting:", " ".join(cmd), flush=True)
    os.execvp(cmd[0], cmd)
    return 0


def cmd_serve(args) -> int:
    from components.config import load_config
    from flows.deployment import deployed_run

    cfg = load_config(args.params)  # the form's defaults: this settings file's values
    deployed_run.serve(name=args.name, cron=args.cron, parameters={
        "params": str(Path(args.params).resolve()), "strategy": cfg.active.strategy,
        "rounds": cfg.active.rounds, "budget": cfg.active.budget, "seed": cfg.active.seed,
        "oracle": cfg.active.oracle})
    return 0


def check_settings(args):
    """Every setting, and whether it can run here, in about a second: a mistake is one line
    and exit 2 before Prefect, MLflow, torch or the data start. Then the CPU kernels are
    pinned (they are chosen when torch runs its first one)."""
    from components import numerics
    from components.config import load_config
    from components.run.preflight import check_run
    from components.run.saved import SavedRuns

    resume = getattr(args, "resume", None)
    cfg = ((resume and SavedRuns().resume_config(resume, _overrides(args), args.params))
           or load_config(args.params, _overrides(args)))
    if args.command == "compare":  # every arm's settings, before the first arm trains
        for strategy in args.strategies.split(","):
            for seed in args.seeds:
                cfg.with_overrides({"active.strategy": strategy, "active.seed": seed,
                                    "train.seed": seed})
    # `serve` and `compare` run nothing themselves: each run they start claims its settings
    check_run(cfg, resume=resume, pretrain_only=getattr(args, "pretrain_only", False),
              allow_duplicate=(getattr(args, "allow_duplicate", False)
                               or args.command in ("serve", "compare")))
    numerics.pin_environment(cfg.train.cpu_kernels, cfg.train.cpu_threads)
    return cfg


def _seed_list(text: str) -> list[int]:
    """``0,1,2`` → [0, 1, 2]; anything else is argparse's one-line error."""
    try:
        return [int(s) for s in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of whole "
                                         "numbers (for example 0,1,2)") from None


def build_parser() -> argparse.ArgumentParser:
    from components.config import declared_adversaries

    p = argparse.ArgumentParser(prog="sage-ada", description=(
        "Active domain adaptation with SAGE: choose which target samples are worth a label, "
        "get them annotated, adapt, round after round, tracked in MLflow."))
    p.add_argument("--params", default="params.yaml", help="configuration file (default: params.yaml)")
    p.add_argument("--debug", action="store_true", help="show the traceback of an error")
    sub = p.add_subparsers(dest="command", required=True)

    def data_flags(sp):
        sp.add_argument("--source", help="source domain (a folder of data.root)")
        sp.add_argument("--target", help="target domain")
        sp.add_argument("--channels", type=int, choices=[1, 3], help="3 for colour images")
        sp.add_argument("--manifest", help="the split's manifest file (default: data.manifest)")

    d = sub.add_parser("data", help="build the shipped benchmarks, split and validate the manifest")
    d.add_argument("action", choices=["digits", "split", "validate"],
                   help="digits: write the shipped domains' PNGs (mnist, optdigits, mnist-colour, "
                        "optdigits-texture); split: build + validate the manifest (the DVC split "
                        "stage); validate: check the current manifest")
    d.add_argument("--root", help="where to write the shipped domains (default: data.root)")
    data_flags(d)
    d.set_defaults(fn=cmd_data)

    def run_flags(sp):
        sp.add_argument("--rounds", type=int)
        sp.add_argument("--budget", type=int, help="labels per round (b)")
        sp.add_argument("--oracle", choices=["simulated", "label_studio"],
                        type=lambda name: name.replace("-", "_"),  # label-studio still works
                        help="who labels: held-back labels, or people in Label Studio")
        data_flags(sp)
        sp.add_argument("--regulariser", choices=["union", "sum", "mme"])
        sp.add_argument("--adversarial", choices=["none", *sorted(declared_adversaries())],
                        help="the adversarial loss (a unit in components/adaptation/losses.py)")
        sp.add_argument("--pretrain-steps", type=int)
        sp.add_argument("--steps-per-round", type=int)
        sp.add_argument("--device", metavar="{auto,cpu,cuda,cuda:N}")
        sp.add_argument("--cpu-kernels", choices=["native", "portable"],
                        help="portable: the same numbers on every x86-64 CPU (slower; dvc repro)")
        sp.add_argument("--cpu-threads", type=int, help="torch threads on the CPU")
        sp.add_argument("--experiment", help="MLflow experiment (default: <source>→<target>)")
        sp.add_argument("--no-progress", action="store_true", help="hide progress bars")

    r = sub.add_parser("run", help="run (or resume) the active-domain-adaptation flow")
    r.add_argument("--strategy", help="query strategy (sage, badge, aada, entropy, ...)")
    r.add_argument("--seed", type=int, help="every seed of the run: training (pretraining, batch "
                   "order) and selection; the split keeps split.seed")
    run_flags(r)
    r.add_argument("--resume", metavar="MLFLOW_RUN_ID", help="continue a crashed run")
    r.add_argument("--allow-duplicate", action="store_true",
                   help="start even while a run with the same settings is in progress")
    r.add_argument("--pretrain-only", action="store_true",
                   help="round 0 only (UDA pretraining), evaluated and logged; registers nothing")
    r.add_argument("--auto-annotate", action="store_true",
                   help="with --oracle label_studio: a simulated annotator answers in Label Studio")
    r.add_argument("--results", metavar="DIR", help="also write DIR/metrics.json and DIR/rounds.csv")
    r.set_defaults(fn=cmd_run)

    c = sub.add_parser("compare", help="several strategies × seeds, with a comparison plot")
    c.add_argument("--strategies", default="sage,random,entropy")
    c.add_argument("--seeds", default="0,1,2", type=_seed_list,
                   help="comma-separated seeds (default: 0,1,2)")
    c.add_argument("--allow-duplicate", action="store_true",
                   help="start each arm even while a run with its settings is in progress")
    run_flags(c)
    c.set_defaults(fn=cmd_compare)

    rl = sub.add_parser("runs", help="runs started here: live, waiting for annotators, stopped "
                                     "(marked KILLED in MLflow) or finished, and how to resume")
    rl.set_defaults(fn=cmd_runs)

    co = sub.add_parser("corrections", help="labels changed in Label Studio after the run that "
                                            "trained on them ended: who changed what")
    co.add_argument("--run", metavar="MLFLOW_RUN_ID", help="one run (default: every run here)")
    co.set_defaults(fn=cmd_corrections)

    u = sub.add_parser("ui", help="the MLflow UI: started on the local store (or the tracking "
                                  "server's), with the link to each experiment's training runs")
    u.add_argument("--port", type=int, default=5000)
    u.set_defaults(fn=cmd_ui)

    s = sub.add_parser("serve", help="serve the flow as a Prefect deployment with a cron schedule")
    s.add_argument("--name", default="scheduled")
    s.add_argument("--cron", default="0 2 * * *", help="cron schedule (default: daily at 02:00)")
    s.set_defaults(fn=cmd_serve)
    return p


USER_ERRORS = {  # mistakes a user can make and fix, each told in one line: module → class
    "components.config": "ConfigError", "components.data.importers": "DataLayoutError",
    "components.data.validate": "ManifestInvalid",
    "components.data.versioning": "DataVersionMismatch", "components.oracle.base": "OracleError",
    "components.run.saved": ("ResumeMismatch", "UnreadableState"),
    "components.run.preflight": "ServerDown",
    "components.run.torchrun": "DistributedError",
}


def _is_user_error(err: BaseException) -> bool:
    """Looked up among the modules already loaded (one that never loaded raised nothing), so a
    settings error does not wait for torch and MLflow to import."""
    if isinstance(err, FileNotFoundError) or _file_system_error(err):
        return True
    lineage = sys.modules.get("components.tracking.lineage")
    if lineage and lineage.tracking_server_lost(err):  # told once, by the flow, with the resume
        return True
    return any(module in sys.modules and isinstance(err, getattr(sys.modules[module], name))
               for module, names in USER_ERRORS.items() for name in _names(names))


def _names(names: str | tuple[str, ...]) -> tuple[str, ...]:
    return (names,) if isinstance(names, str) else names


class _QuietUserErrors(logging.Filter):
    """Keeps a user's mistake from being printed as tracebacks by Prefect's console log on the
    way out: the CLI says it once, in one line, at the end (``--debug`` keeps them)."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if error is not None:
            return not _is_user_error(error)
        message = record.getMessage()
        return not any(f"{name}(" in message or f"{name}:" in message
                       for names in USER_ERRORS.values() for name in _names(names))


def quiet_user_errors() -> None:
    """On every console handler Prefect set up (its logging is configured on import)."""
    quiet = _QuietUserErrors()
    loggers = [logging.getLogger()] + [logging.getLogger(name) for name in
                                       list(logging.root.manager.loggerDict)
                                       if name.startswith("prefect")]
    for logger in loggers:
        for handler in logger.handlers:
            if isinstance(handler, logging.StreamHandler) and quiet not in handler.filters:
                handler.addFilter(quiet)


def _this_clone() -> Path | None:
    """The clone of this project the working directory is in (or under), if any."""
    for folder in (Path.cwd(), *Path.cwd().parents):
        if (folder / "flows" / "cli.py").is_file() and (folder / "components").is_dir():
            return folder
    return None


def _run_this_clones_code() -> None:
    """Clones share one environment (scripts/setup.sh), whose `sage-ada` imports the code of the
    clone that set it up last; typed in another clone, it runs that clone's code instead."""
    clone, mine = _this_clone(), Path(__file__).resolve().parents[1]
    if clone is None or clone.resolve() == mine or not Path(sys.argv[0]).name == "sage-ada":
        return
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(clone), *filter(None, [os.environ.get("PYTHONPATH")])])}
    os.execve(sys.executable, [sys.executable, "-m", "flows.cli", *sys.argv[1:]], env)


def main(argv: list[str] | None = None) -> int:
    if argv is None:
        _run_this_clones_code()
    args = build_parser().parse_args(argv)
    try:
        if args.command in ("run", "compare", "serve"):
            check_settings(args)
            # what the flow starts (Prefect's temporary server, torchrun) ends with this
            # process, even killed with SIGKILL
            from components.run.watchdog import start as end_with_this_process

            end_with_this_process()
        return args.fn(args)
    except Exception as err:
        if args.debug or not _is_user_error(err):
            raise
        print(f"error: {err}{_what_to_do(err)}", file=sys.stderr)
        return 2


FILE_SYSTEM_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM,
                      errno.EEXIST, errno.ENOTDIR, errno.EISDIR, errno.ENOENT, errno.ENOLCK}


def _file_system_error(err: BaseException) -> bool:
    """What the disk or its permissions refused (a full disk, a read-only folder, a file where a
    folder should be): the user's to fix. Network errors are OSErrors too, but not these."""
    return isinstance(err, OSError) and err.errno in FILE_SYSTEM_ERRNOS


def _what_to_do(err: BaseException) -> str:
    """The operating system's own words (``[Errno 28] No space left on device``) say what
    happened but not what to do; the project's own errors already say both."""
    if _file_system_error(err):
        return ("; check the path, its permissions and the free disk space, then rerun "
                "(a run resumes with `sage-ada runs`; --debug shows the traceback)")
    return ""


if __name__ == "__main__":
    sys.exit(main())
