"""Running a preset: every job through the product's own flow, in worker processes.

In the package rather than in ``reproduce.py`` because two scripts start workers with it
(``pick_analysis.py`` uses ``end_with_parent``), and because spawned workers unpickle their
initializer and task by module name: a package module imports the same way in a worker whichever
script started it. Finished runs are read back instead of recomputed, from the ledger (for this
code) and from MLflow (same settings).
"""
from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

from benchmarks.protocol import REPO
from benchmarks.protocol.arms import job_overrides, job_settings, jobs_of, settings_key
from benchmarks.protocol.ledger import (add_to_ledger, code_digest, ledger_runs, older_twin,
                                        parsed)


def pipeline_runs(experiment: str):
    """(client, finished pipeline runs that got to their end) in ``experiment``."""
    from mlflow.tracking import MlflowClient

    from components.tracking.lineage import configure_mlflow

    client = MlflowClient(configure_mlflow())
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return client, []
    runs = client.search_runs([exp.experiment_id], "tags.sage_ada.kind = 'pipeline' and "
                              "attributes.status = 'FINISHED'", max_results=5000)
    return client, [r for r in runs if "sage_ada.registered_version" in r.data.tags
                    or r.data.params.get("active.rounds") == "0"]


def finished_runs(experiment: str) -> dict[str, list[dict]]:
    """Histories of finished pipeline runs in ``experiment``, keyed by their settings."""
    client, runs = pipeline_runs(experiment)
    found = {}
    for run in runs:
        try:
            path = client.download_artifacts(run.info.run_id, "history.json")
        except Exception:
            continue
        found[settings_key(run.data.params)] = json.loads(Path(path).read_text())
    return found


def mlflow_spans(experiments, keys: set[str]) -> list[tuple[int, int]]:
    """Start-to-end intervals (ms) in MLflow of the preset's finished runs; with the ledger's,
    their union is the wall time during which at least one of them was in progress, over
    every invocation (interrupted ones included, idle time between invocations left out)."""
    return [(r.info.start_time, r.info.end_time) for e in experiments
            for r in pipeline_runs(e)[1] if settings_key(r.data.params) in keys
            and r.info.end_time and r.info.end_time >= r.info.start_time]


def union_ms(spans: list[tuple[int, int]]) -> int:
    """Length of the union of [start, end] intervals (overlaps counted once)."""
    total, lo, hi = 0, None, None
    for start, end in sorted(spans):
        if hi is None or start > hi:
            total += 0 if hi is None else hi - lo
            lo, hi = start, end
        hi = max(hi, end)
    return total + (0 if hi is None else hi - lo)


def end_with_parent(parent: int) -> None:
    """Make this worker lead its own process group and end it (whatever it started included)
    once ``parent`` is gone, so an interrupted or killed benchmark leaves nothing running."""
    import signal
    import threading

    os.setpgrp()

    def watch():
        while os.getppid() == parent:
            time.sleep(2)
        os.killpg(os.getpid(), signal.SIGKILL)

    threading.Thread(target=watch, daemon=True).start()


def init_worker(slots, threads: int, parent: int) -> None:
    """One Prefect home (its own ephemeral API and database) and ``threads`` torch threads per
    worker, so parallel workers neither lock each other's database nor oversubscribe cores;
    the worker ends with the preset (``end_with_parent``), its Prefect API server included."""
    import torch

    end_with_parent(parent)
    slot = slots.get()
    home = REPO / ".sage-ada" / "reproduce" / "prefect" / f"worker-{slot}"
    home.mkdir(parents=True, exist_ok=True)
    os.environ["PREFECT_HOME"] = str(home)
    torch.set_num_threads(threads)


def run_flow(overrides: dict) -> list[dict]:
    """One job: the ``active-domain-adaptation`` flow with the simulated oracle; its history."""
    os.chdir(REPO)
    from flows.active_da import active_domain_adaptation

    return active_domain_adaptation(params="params.yaml", overrides=overrides,
                                    progress=False)["history"]


def run_all(preset: dict, workers: int = 1, stop_after_min: float | None = None,
            on_progress=None, read_only: bool = False) -> tuple[dict, dict, float]:
    """Run (or read back) every job: ``(results, counts, busy seconds)``, where
    ``results[task][budget][arm][seed]`` is a history and busy seconds is the wall time the
    preset's runs were in progress, over every invocation.

    With ``stop_after_min`` no new job starts after that many minutes; the running ones finish
    and the report covers what is done (a later invocation picks up the rest).
    ``on_progress(counts, seconds)`` is called after each computed job. ``read_only`` reads the
    ledger's runs of ``preset["code"]`` back and nothing else: no MLflow, no new run (a job
    missing there counts as not started), so a page can be rebuilt for code other than this."""
    import multiprocessing as mp
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

    from tqdm.auto import tqdm

    from components.config import load_config
    from components.tracking.lineage import flatten

    results: dict = {}
    counts = {"computed": 0, "read back": 0, "failed": 0, "not started": 0}
    known: dict[str, dict] = {}
    code = preset.get("code") or code_digest()
    kept = ledger_runs(code=code)
    baseline = flatten("", load_config("params.yaml").model_dump())
    earlier = parsed(kept) if read_only else []
    todo, keys, spans = [], set(), []
    for job in jobs_of(preset):
        overrides = job_overrides(preset, job)
        cfg, flat, key = job_settings(preset, job)
        keys.add(key)
        # a rebuild for earlier code also finds runs recorded before settings were added
        row = kept.get(key) or (older_twin(earlier, flat, baseline) if read_only else None)
        if row is not None:
            counts["read back"] += 1
            store(results, job, row["history"])
            spans.append((row["start_ms"], row["end_ms"]))
            continue
        if read_only:
            counts["not started"] += 1
            continue
        if cfg.experiment_name not in known:
            known[cfg.experiment_name] = finished_runs(cfg.experiment_name)
        history = known[cfg.experiment_name].get(key)
        if history is None:
            todo.append((job, overrides, key))
        else:
            counts["read back"] += 1
            store(results, job, history)
    if read_only:
        return results, counts, union_ms(spans) / 1000

    start = time.monotonic()
    deadline = None if stop_after_min is None else start + 60 * stop_after_min
    bar = tqdm(total=len(todo), desc=f"reproduce ({counts['read back']} read back)",
               unit="run", dynamic_ncols=True)
    ctx = mp.get_context("spawn")
    slots = ctx.Queue()
    for i in range(workers):
        slots.put(i)
    threads = max(1, (os.cpu_count() or 1) // workers)
    pool = ProcessPoolExecutor(workers, mp_context=ctx, initializer=init_worker,
                               initargs=(slots, threads, os.getpid()))
    queue, running = list(todo), {}
    try:
        while queue or running:
            while queue and len(running) < workers and (deadline is None
                                                        or time.monotonic() < deadline):
                job, overrides, key = queue.pop(0)
                running[pool.submit(run_flow, overrides)] = (job, key, int(time.time() * 1000))
            if not running:
                break
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in done:
                job, key, started = running.pop(future)
                source, target, budget, arm, seed, _ = job
                try:
                    history = future.result()
                    store(results, job, history)
                    add_to_ledger(key, history, started, int(time.time() * 1000), code=code)
                    counts["computed"] += 1
                except Exception as exc:  # one failed run must not lose the others
                    counts["failed"] += 1
                    tqdm.write(f"FAILED {source}→{target} b={budget} {arm} seed {seed}: {exc} "
                               "(rerun the same command to retry it)")
                bar.set_postfix_str(f"{source}→{target} b={budget} {arm} seed {seed}")
                bar.update()
                if on_progress:
                    on_progress(counts, time.monotonic() - start)
    except KeyboardInterrupt:
        # Finished runs are safe in MLflow; the workers end themselves once this process is gone.
        print(f"\ninterrupted after {counts['computed']} new runs: rerun the same command to "
              "continue from the finished ones", file=sys.stderr)
        os._exit(130)
    pool.shutdown()
    counts["not started"] = len(queue)
    bar.close()
    busy = union_ms(spans + mlflow_spans(known, keys)) / 1000
    return results, counts, busy


def store(results: dict, job: tuple, history: list[dict]) -> None:
    """File one history as ``results[task][budget or "lines"][arm][seed]``."""
    source, target, budget, arm, seed, _ = job
    results.setdefault(f"{source}→{target}", {}).setdefault(
        "lines" if budget is None else f"b={budget}", {}).setdefault(arm, {})[seed] = history
