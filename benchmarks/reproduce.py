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
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

ARMS = {  # name → overrides on params.yaml (the default is TSF + Ω_S+T)
    "sage": {},
    "sage-no-pop": {"active.strategy": "sage-no-pop"},
    "sage-no-diversity": {"active.strategy": "sage-no-diversity"},
    "aada": {"active.strategy": "aada", "train.adversarial": "dann"},
    "badge": {"active.strategy": "badge"},
    "badge-no-adaptation": {"active.strategy": "badge", "train.adversarial": "none",
                            "train.regulariser": "union"},
    "entropy": {"active.strategy": "entropy"},
    "confidence": {"active.strategy": "confidence"},
    "random": {"active.strategy": "random"},
    "clusters": {"active.strategy": "clusters"},
    "clue": {"active.strategy": "clue"},
    "sage-union": {"train.regulariser": "union"},
    "sage-mme": {"train.regulariser": "mme"},
}
LINES = {  # floors and ceiling: one accuracy each
    "source-only": {"active.strategy": "random", "train.adversarial": "none", "active.rounds": 0},
    "uda-dann": {"active.strategy": "random", "train.adversarial": "dann", "active.rounds": 0},
    "uda-tsf": {"active.strategy": "random", "active.rounds": 0},
    # every pool label in one round, trained as long as an arm trains over all its rounds
    "all-target-labels": {"active.strategy": "random", "active.rounds": 1, "active.budget": "pool"},
}
COLOUR = ("mnist-colour", "optdigits-texture")  # the colour benchmark's task (data.channels: 3)
# the arms users choose between: more seeds, so their differences can be told apart
DECISIVE = ("sage", "badge", "entropy", "random", "clue", "sage-no-pop")
PRESETS = {
    # The colour task first: its runs are the ones the digits' earlier reports lack.
    "full": {"tasks": {COLOUR: [10, 50], ("mnist", "optdigits"): [10, 50],
                       ("optdigits", "mnist"): [10]},
             "seeds": 5, "seeds_for": {arm: 10 for arm in DECISIVE}, "rounds": 10,
             "arms": list(ARMS), "note": "This is the whole protocol."},
    "small": {"tasks": {("mnist", "optdigits"): [10]}, "seeds": 3, "rounds": 5,
              "arms": list(ARMS), "note": "This is a reduced preset: claims that need the other "
              "task or b = 50 (claim 4's large-budget part, claim 6) are not settled by it; "
              "`--preset full` runs them."},
    # Claim 6 at b = 50 under other hyper-parameters: run it once per `--set` variant.
    "sensitivity": {"tasks": {("mnist", "optdigits"): [50]}, "seeds": 3, "rounds": 10,
                    "arms": ["sage", "sage-union", "sage-mme", "random"], "lines": False,
                    "note": "This is a sensitivity check of claim 6: compare it with the same "
                            "arms at b = 50 in `--preset full`, which uses `params.yaml` as is."},
    "smoke": {"tasks": {("mnist", "optdigits"): [5]}, "seeds": 2, "rounds": 2,
              "arms": ["sage", "random", "entropy"], "set": {"train.pretrain_steps": 30,
                                                             "train.steps_per_round": 10},
              "note": "This checks the script only: its runs are far too short to mean anything."},
}


def task_overrides(source: str, target: str) -> dict:
    from components.data.shipped import DOMAINS

    channels = max(DOMAINS[d].channels if d in DOMAINS else 1 for d in (source, target))
    return {"data.source": source, "data.target": target, "data.channels": channels,
            "data.manifest": f".sage-ada/reproduce/splits/{source}-{target}.csv",
            "tracking.experiment": f"reproduce {source}→{target}",
            "tracking.registered_model": "sage-ada-reproduce"}


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


def settings_key(flat_params: dict[str, str]) -> str:
    return json.dumps(sorted(flat_params.items()))


LEDGER = REPO / "benchmarks" / "results" / "reproduce_runs.jsonl"


def code_digest() -> str:
    """Every module of components/: a run counts only for the code that computed it."""
    import hashlib

    digest = hashlib.sha256()
    for path in sorted((REPO / "components").rglob("*.py")):
        digest.update(f"{path.relative_to(REPO)}\n".encode() + path.read_bytes())
    return digest.hexdigest()[:16]


def ledger_runs(path: Path = LEDGER, code: str | None = None) -> dict[str, dict]:
    """Finished runs kept in the repository (one JSON line each), for this code only: a
    preset too long for one sitting continues on a fresh machine, and nothing computed by
    other code is mixed in."""
    code = code or code_digest()
    found = {}
    if path.is_file():
        for line in path.read_text().splitlines():
            row = json.loads(line)
            if row["code"] == code:
                found[row["key"]] = row
    return found


def add_to_ledger(key: str, history: list[dict], start_ms: int, end_ms: int,
                  path: Path = LEDGER, code: str | None = None) -> None:
    with open(path, "a") as out:
        out.write(json.dumps({"key": key, "code": code or code_digest(), "history": history,
                              "start_ms": start_ms, "end_ms": end_ms}) + "\n")


def jobs_of(preset: dict) -> list[tuple]:
    """Every (source, target, budget, arm, seed, overrides), in the order that matters most:
    b = 10 on every task before any large budget; per task, the floors and ceiling first, line
    by line (they fill the pretraining cache, and two workers never pretrain the same model
    at once), then seed by seed across the arms, so that a preset stopped early still has
    every arm on the same first seeds."""
    order = sorted({(b, i, task) for i, (task, budgets) in enumerate(preset["tasks"].items())
                    for b in budgets})
    jobs, seen = [], set()
    for budget, _, (source, target) in order:
        if (source, target) not in seen and preset.get("lines", True):
            seen.add((source, target))
            jobs += [(source, target, None, line, seed, overrides)
                     for line, overrides in LINES.items() for seed in range(preset["seeds"])]
        most = max(seeds_of(preset, arm) for arm in preset["arms"])
        jobs += [(source, target, budget, arm, seed, ARMS[arm])
                 for seed in range(most) for arm in preset["arms"]
                 if seed < seeds_of(preset, arm)]
    return jobs


def seeds_of(preset: dict, arm: str) -> int:
    return preset.get("seeds_for", {}).get(arm, preset["seeds"])


def seed_counts(preset: dict) -> str:
    more = {a: n for a, n in preset.get("seeds_for", {}).items() if n != preset["seeds"]}
    by_count: dict[int, list[str]] = {}
    for arm, n in more.items():
        by_count.setdefault(n, []).append(arm)
    return f"{preset['seeds']} seeds" + "".join(f"; {n} for {', '.join(arms)}"
                                                for n, arms in sorted(by_count.items()))


def job_overrides(preset: dict, job: tuple) -> dict:
    from components.config import load_config

    source, target, budget, _, seed, extra = job
    overrides = {**task_overrides(source, target), "active.rounds": preset["rounds"],
                 "active.seed": seed, "train.seed": seed, **preset.get("set", {}),
                 **{k: v for k, v in extra.items() if v != "pool"}}
    if budget is not None:
        overrides["active.budget"] = budget
    if extra.get("active.budget") == "pool":
        cfg = load_config("params.yaml", overrides)
        overrides["active.budget"] = pool_size(cfg)
        overrides["train.steps_per_round"] = preset["rounds"] * cfg.train.steps_per_round
    return overrides


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


def _init_worker(slots, threads: int, parent: int) -> None:
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


def _run_flow(overrides: dict) -> list[dict]:
    os.chdir(REPO)
    from flows.active_da import active_domain_adaptation

    return active_domain_adaptation(params="params.yaml", overrides=overrides,
                                    progress=False)["history"]


def run_all(preset: dict, workers: int = 1, stop_after_min: float | None = None,
            on_progress=None) -> tuple[dict, dict, float]:
    """Run (or read back) every job: ``(results, counts, busy seconds)``, where
    ``results[task][budget][arm][seed]`` is a history and busy seconds is the wall time the
    preset's runs were in progress, over every invocation.

    With ``stop_after_min`` no new job starts after that many minutes; the running ones finish
    and the report covers what is done (a later invocation picks up the rest).
    ``on_progress(counts, seconds)`` is called after each computed job."""
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
    todo, keys, spans = [], set(), []
    for job in jobs_of(preset):
        overrides = job_overrides(preset, job)
        cfg = load_config("params.yaml", overrides)
        key = settings_key(flatten("", cfg.model_dump()))
        keys.add(key)
        if key in kept:
            counts["read back"] += 1
            store(results, job, kept[key]["history"])
            spans.append((kept[key]["start_ms"], kept[key]["end_ms"]))
            continue
        if cfg.experiment_name not in known:
            known[cfg.experiment_name] = finished_runs(cfg.experiment_name)
        history = known[cfg.experiment_name].get(key)
        if history is None:
            todo.append((job, overrides, key))
        else:
            counts["read back"] += 1
            store(results, job, history)

    start = time.monotonic()
    deadline = None if stop_after_min is None else start + 60 * stop_after_min
    bar = tqdm(total=len(todo), desc=f"reproduce ({counts['read back']} read back)",
               unit="run", dynamic_ncols=True)
    ctx = mp.get_context("spawn")
    slots = ctx.Queue()
    for i in range(workers):
        slots.put(i)
    threads = max(1, (os.cpu_count() or 1) // workers)
    pool = ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init_worker,
                               initargs=(slots, threads, os.getpid()))
    queue, running = list(todo), {}
    try:
        while queue or running:
            while queue and len(running) < workers and (deadline is None
                                                        or time.monotonic() < deadline):
                job, overrides, key = queue.pop(0)
                running[pool.submit(_run_flow, overrides)] = (job, key, int(time.time() * 1000))
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
    source, target, budget, arm, seed, _ = job
    results.setdefault(f"{source}→{target}", {}).setdefault(
        "lines" if budget is None else f"b={budget}", {}).setdefault(arm, {})[seed] = history


def pool_size(cfg) -> int:
    from components.data import prepare
    from components.data.split import read_manifest

    if not Path(cfg.data.manifest).exists():
        prepare.ensure_data(cfg)
        prepare.split_and_validate(cfg)
    manifest = read_manifest(cfg.data.manifest)
    return int((manifest["split"] == "target_train").sum())


# ---------------------------------------------------------------- statistics
def matrix(by_seed: dict[int, list[dict]], seeds=None) -> np.ndarray:
    """Accuracy (%) per seed (row) and round (column), for ``seeds`` (default: all, sorted)."""
    histories = [by_seed[s] for s in (sorted(by_seed) if seeds is None else seeds)]
    n = min(len(h) for h in histories)
    return np.array([[100 * h[i]["accuracy"] for i in range(n)] for h in histories])


def common(arms: dict, a: str, b: str) -> tuple[np.ndarray, np.ndarray]:
    """``a`` and ``b`` on the seeds both have finished: the pairs of a paired comparison."""
    seeds = sorted(set(arms[a]) & set(arms[b]))
    return matrix(arms[a], seeds), matrix(arms[b], seeds)


def t95(n: int) -> float:
    from scipy.stats import t

    return float(t.ppf(0.975, n - 1)) if n > 1 else math.nan


def paired(a: np.ndarray, b: np.ndarray) -> tuple[float, float, float]:
    """Mean paired difference a - b over seeds, with its 95% confidence interval."""
    d = a - b
    half = t95(len(d)) * d.std(ddof=1) / math.sqrt(len(d)) if len(d) > 1 else math.nan
    return float(d.mean()), float(d.mean() - half), float(d.mean() + half)


def auc(acc: np.ndarray, labels: list[int]) -> np.ndarray:
    """Area under accuracy-vs-labels, normalised by the label range: a mean accuracy (%)."""
    return np.trapezoid(acc, labels, axis=-1) / (labels[-1] - labels[0])


# ---------------------------------------------------------------- report
MARGIN = 1.0  # points of AUC: what "matches" allows (--margin)
LARGE_B = 50  # the protocol's large budget: where claims about large b are judged
KINDS = ("beats", "is worse than", "matches or beats")


def rule(margin: float) -> str:
    """The one rule every claim is judged by, as the page states it."""
    return (f"Every claim is judged by one rule: the paired 95% t-interval (over seeds) of the "
            f"difference in AUC (the mean accuracy over the labelling rounds; for claim 1, Sage's "
            f"AUC against its own round 0, what no annotation gives). *A beats B* holds when the "
            f"interval lies above 0 and does not hold when it lies below 0 (*A is worse than B*: "
            f"the other way round). *A matches or beats B* holds when the interval's lower end "
            f"is above −{margin:g} points (A is at most {margin:g} points worse: equivalent "
            f"within the margin, or better) and does not hold when its upper end is below "
            f"−{margin:g}. Anything else is inconclusive. Claims about large budgets are judged "
            f"on the rows of b = {LARGE_B} and above only.")


def verdict(diff: tuple[float, float, float], kind: str = "beats", margin: float = MARGIN) -> str:
    """The rule of ``rule`` for one claim; ``diff``: (mean, low, high) of A − B."""
    mean, lo, hi = diff
    if math.isnan(lo):
        return "one seed only"
    if kind == "matches or beats":
        if lo > 0:
            return "holds (beats)"
        if lo > -margin:
            return f"holds (matches within {margin:g})"
        return "does not hold" if hi < -margin else f"inconclusive (the 95% CI crosses −{margin:g})"
    above, below = lo > 0, hi < 0
    if kind == "is worse than":
        above, below = below, above
    if above:
        return "holds"
    if below:
        return "does not hold"
    return "inconclusive (the 95% CI includes 0)"


def lead(diff: tuple[float, float, float], a: str, b: str, margin: float = MARGIN) -> str:
    """Who is ahead by the interval of ``a − b``, for a comparison that claims no direction:
    one side when the interval excludes 0, *level* when it lies inside ±``margin``
    (equivalence), else inconclusive."""
    mean, lo, hi = diff
    if math.isnan(lo):
        return "one seed only"
    if lo > 0 or hi < 0:
        return f"{a if lo > 0 else b} ahead"
    if lo > -margin and hi < margin:
        return f"level (within ±{margin:g})"
    return "inconclusive"


def fmt(d):
    return f"{d[0]:+.2f} [{d[1]:+.2f}, {d[2]:+.2f}]"


def round0_mismatches(arms: dict) -> list[str]:
    """Seeds on which arms that change only the query (so share one pretrained checkpoint per
    seed) start from different round-0 accuracies: their checkpoints were computed apart (another
    machine's native kernels or thread count), so those pairs are not from one start."""
    shared = [a for a in arms if a in ARMS and all(k.startswith("active.") for k in ARMS[a])]
    notes = []
    for seed in sorted({s for a in shared for s in arms[a]}):
        start = {a: 100 * arms[a][seed][0]["accuracy"] for a in shared if seed in arms[a]}
        if max(start.values()) != min(start.values()):
            groups: dict[float, list[str]] = {}
            for arm, acc in start.items():
                groups.setdefault(acc, []).append(arm)
            notes.append(f"seed {seed}: " + ", ".join(f"{', '.join(g)} from {acc:.2f} %"
                                                      for acc, g in sorted(groups.items())))
    return notes


def budgets_with_random(per_budget: dict):
    """(budget, arms, labels per round) for each budget that has the ``random`` baseline."""
    for budget, arms in per_budget.items():
        if budget != "lines" and "random" in arms:
            yield budget, arms, [h["n_labels"] for h in next(iter(arms["random"].values()))]


def report(results: dict, counts: dict, busy_s: float, preset_name: str, preset: dict,
           wall_s: float, figure_prefix: str = "") -> tuple[str, list[Path]]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pending = counts["not started"] + counts["failed"]
    lines = ["# Reproducing the paper's claims on the shipped benchmarks",
             "", f"Generated by `python benchmarks/reproduce.py --preset {preset_name}` "
             f"({seed_counts(preset)}, {preset['rounds']} rounds). Its runs were in progress for "
             f"{busy_s / 60:.1f} min of wall time on this machine (the union of their MLflow "
             "start-to-end intervals, summed over every invocation); the last invocation "
             f"computed {counts['computed']} runs and read {counts['read back']} finished ones "
             f"back from MLflow in {wall_s / 60:.1f} min. "
             "Accuracy is target-test accuracy in %, mean ± std over seeds; differences are "
             "paired over seeds (same split, pretrained checkpoint and batch order) with a 95% "
             "t-interval. AUC is the area under accuracy vs labels divided by the label range.", "",
             "Scope: " + "; ".join(f"{s}→{t} with b = {', '.join(map(str, b))}"
                                   for (s, t), b in preset["tasks"].items())
             + f"; arms: {', '.join(preset['arms'])}. "
             + (f"Settings changed from `params.yaml` for every run: `{preset['set']}`. "
                if preset.get("set") else "")
             + preset["note"], ""]
    if pending:
        lines += [f"**Incomplete:** {pending} of the preset's runs are not finished yet "
                  f"({counts['failed']} failed). Tables show how many seeds each arm has; "
                  "paired differences use the seeds both sides have. Rerun the same command to "
                  "finish the rest.", ""]
    figures, claims, versus = [], [], []
    margin = preset.get("margin", MARGIN)
    for task, per_budget in results.items():
        floor = {name: matrix(h)[:, -1] for name, h in per_budget.get("lines", {}).items()}
        for budget, arms, labels in budgets_with_random(per_budget):
            mats = {a: matrix(arms[a]) for a in preset["arms"] if a in arms}  # preset order
            last = mats["random"].shape[1] - 1
            rounds = sorted({r for r in (0, 1, 5) if r < last} | {last})
            lines += [f"## {task}, {budget}", "",
                      "| arm | seeds | " + " | ".join(f"round {r} ({labels[r]} labels)"
                                                   for r in rounds)
                      + " | AUC | Δ random at last round |",
                      "|---|---|" + "---|" * (len(rounds) + 2)]
            for arm, m in mats.items():
                cells = [f"{m[:, r].mean():.2f} ± {m[:, r].std():.2f}" for r in rounds]
                d = paired(*(x[:, -1] for x in common(arms, arm, "random"))) \
                    if arm != "random" else None
                lines.append(f"| {arm} | {len(m)} | " + " | ".join(cells)
                             + f" | {auc(m, labels).mean():.2f} | " + (fmt(d) if d else "") + " |")
            lines += ["", "Floors and ceiling: " + ", ".join(
                f"{k} {v.mean():.2f} ± {v.std():.2f} ({len(v)} seeds)" for k, v in floor.items()),
                ""]
            mismatched = round0_mismatches(arms)
            if mismatched:
                lines += ["Not one start: the arms that change only the query should share each "
                          "seed's pretrained checkpoint, but on " + "; ".join(mismatched)
                          + " at round 0 (checkpoints computed apart: native kernels and thread "
                          "counts differ between sittings). Pairs across these groups start that "
                          "far apart.", ""]
            lines += ["Paired difference to `random` per round (95% CI):", "",
                      "| arm | " + " | ".join(f"round {r}" for r in range(1, last + 1))
                      + " |", "|---|" + "---|" * last]
            for arm in mats:
                if arm != "random":
                    a, r = common(arms, arm, "random")
                    lines.append(f"| {arm} | " + " | ".join(
                        fmt(paired(a[:, i], r[:, i])) for i in range(1, last + 1)) + " |")
            figures.append(plot(plt, task, budget, mats, labels, floor, figure_prefix))
            lines += ["", f"![{task}, {budget}](figures/{figures[-1].name})", ""]
            claims += claim_rows(task, budget, arms, labels, margin=margin)
            versus += versus_sage_rows(task, budget, arms, labels, margin=margin)
    lines += ["## The paper's claims, one by one", "", rule(margin),
              "", "| claim | comparison | last round, Δ [95% CI] | AUC Δ [95% CI] | verdict |",
              "|---|---|---|---|---|"] + claims
    lines += versus_sage_section(versus, margin)
    if not preset.get("set"):
        code = preset.get("code") or code_digest()
        lines += sensitivity_section(REPO / "benchmarks" / "results", code)
        lines += numerics_section(REPO / "benchmarks" / "results", code)
    return "\n".join(lines) + "\n", figures


def sensitivity_section(folder: Path, code: str) -> list[str]:
    """The claims again under every ``--set`` variant run so far (read from their results
    files), so that the main report says what was tried where a claim does not hold."""
    variants = []
    for path in sorted(folder.glob("reproduce_*.json")):
        saved = json.loads(path.read_text())
        if saved.get("preset") == "sensitivity" and saved.get("set"):
            variants.append(saved)
    if not variants:
        return []
    lines = ["", "## What was tried where a claim does not hold", "",
             "The same claims under other hyper-parameters (each line: one `--set` variant of the "
             "sensitivity preset, everything else as `params.yaml`; compare with the rows "
             "above for the same task and budget). A variant marked *earlier code* was computed "
             "by other training code than this page's runs: it says what was tried, not what "
             "this code does; its command reruns it.", "",
             "| settings | claim | comparison | last round, Δ [95% CI] | AUC Δ [95% CI] | verdict |",
             "|---|---|---|---|---|---|"]
    for saved in variants:
        settings = ", ".join(f"{k}={v}" for k, v in saved["set"].items())
        label = f"`{settings}`" + (" *earlier code*" if saved.get("code") != code else "")
        for task, per_budget in saved["results"].items():
            for budget, arms, labels in budgets_with_random(per_budget):
                arms = {a: {int(s): h for s, h in by_seed.items()} for a, by_seed in arms.items()}
                lines += [f"| {label} |{row[1:]}"
                          for row in claim_rows(task, budget, arms, labels)]
        report_link = f"[{saved['output']}]({Path(saved['output']).name})"
        lines.append(f"| {label} | | report {report_link}, command "
                     f"`{saved['command']}` | | | |")
    return lines + [""]


def numerics_section(folder: Path, code: str) -> list[str]:
    """How much the default run's round 0 moves with the training seed and with the CPU's
    kernels (read from ``benchmarks/cpu_numerics.py``'s results files)."""
    rows = []
    for path in sorted(folder.glob("cpu_numerics_*.json")):
        saved = json.loads(path.read_text())
        computed = saved.get("cpu", "?") + (", *earlier code*" if saved.get("code") != code
                                             else "")
        for group, what in (("unpinned", "other CPUs' kernels, unpinned"),
                            ("pinned", "other CPUs' kernels, pinned (`--cpu-kernels portable`)"),
                            ("portable_other_threads", "portable kernels, 1, 2 or 4 threads")):
            if group in saved:
                s = saved[group]
                settings = saved["command"].split(" --set ")[1:]
                if "seeds" in path.name:
                    what = "training seeds"
                if settings:
                    what += ", with " + ", ".join(f"`{kv.split()[0]}`" for kv in settings)
                rounds = " · ".join(f"r{r}: {m:.2f} ± {sd:.2f} (Δ {d:.2f})" for r, (m, sd, d) in
                                    enumerate(zip(s["mean_points_per_round"],
                                                  s["std_points_per_round"],
                                                  s["max_abs_diff_points_per_round"])))
                rows.append(f"| {what} | {len(s['seconds'])} | {rounds} | {computed} | "
                            f"`{saved['command']}` |")
    if not rows:
        return []
    return ["", "## How much the numbers depend on the seed and on the CPU", "",
            "The default run (`params.yaml`, simulated annotators), repeated with other training "
            "seeds or with the kernels that other CPUs would use, provoked on this machine "
            "(AVX2 or AVX-512 code paths in ATen, MKL and oneDNN, other thread counts). "
            "Round 0 (TSF pretraining alone) is fragile: a last-bit difference in one kernel "
            "moves it by as much as another seed does; labelled rounds pull runs back together. "
            "A result on one CPU is one draw from this spread, which is why single-seed round-0 "
            "numbers in this report should not be compared across machines. Rows *with* a setting "
            "repeat the seeds under another pretraining setting, tried to make round 0 less "
            "fragile: compare their spread with the default's. Rows marked *earlier code* were "
            "computed by other training code than this page's runs (their command reruns them).",
            "", "| runs differing in | runs | accuracy % per round r: mean ± std (Δ: largest move "
            "from the first run) | computed on | command |", "|---|---|---|---|---|"] + rows + [""]


def plot(plt, task: str, budget: str, mats: dict, labels: list[int], floor: dict,
         prefix: str = "") -> Path:
    """Accuracy against target labels, one line per arm with a shaded std (Figures 3 and 4)."""
    fig, ax = plt.subplots(figsize=(9, 4.8))
    colours = plt.get_cmap("tab20").colors
    for i, (arm, m) in enumerate(mats.items()):
        style = dict(color=colours[i % 20], marker="os^vD<>"[i % 7],
                     lw=2.2 if arm.startswith("sage") else 1.2,
                     ls="-" if arm == "sage" or not arm.startswith("sage") else "--")
        ax.plot(labels[:m.shape[1]], m.mean(0), ms=4, label=arm, **style)
        ax.fill_between(labels[:m.shape[1]], m.mean(0) - m.std(0), m.mean(0) + m.std(0),
                        color=style["color"], alpha=0.08)
    for name, v in floor.items():
        ax.axhline(v.mean(), ls="--", lw=0.8, color="gray")
        ax.annotate(name, (labels[-1], v.mean()), fontsize=7, ha="right", va="bottom")
    ax.set(xlabel="target labels", ylabel="target-test accuracy (%)", title=f"{task}, {budget}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.tight_layout()
    name = f"{prefix}{task.replace('→', '-to-')}-{budget.replace('=', '')}.png"
    path = REPO / "docs" / "figures" / name
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


CONTENDERS = tuple(a for a in DECISIVE if a != "sage")  # what users weigh Sage against


def versus_sage_rows(task: str, budget: str, arms: dict, labels: list[int],
                     margin: float = MARGIN) -> list[str]:
    """Each contender against Sage on the seeds both have (contender − sage): early rounds,
    the last round and AUC, each with who leads: where the README's advice is read from."""
    rows = []
    for other in CONTENDERS:
        if "sage" not in arms or other not in arms:
            continue
        mo, ms = common(arms, other, "sage")
        early = [fmt(paired(mo[:, r], ms[:, r])) if r < mo.shape[1] else "" for r in (1, 3)]
        last = paired(mo[:, -1], ms[:, -1])
        area = paired(auc(mo, labels), auc(ms, labels))
        rows.append(f"| {task} | {budget.split('=')[1]} | {other} | {len(mo)} | "
                    + " | ".join(early) + f" | {fmt(last)} | {fmt(area)} | "
                    f"{lead(area, other, 'sage', margin)} | {lead(last, other, 'sage', margin)} |")
    return rows


def versus_sage_section(rows: list[str], margin: float) -> list[str]:
    if not rows:
        return []
    return ["", "## Sage against the strategies users choose between", "",
            "Each row: the other strategy minus `sage`, in points, paired over the seeds both "
            "have (95% t-interval), after the first and the third labelling round, at the last "
            "round, and in AUC. *X ahead*: the interval lies on one side of 0; *level*: it lies "
            f"inside ±{margin:g} points (equivalence); anything else is inconclusive. The "
            "README's advice on which strategy to pick is read from this table.", "",
            "| task | b | other | seeds | Δ round 1 | Δ round 3 | Δ last round | AUC Δ "
            "| by AUC | at the last round |", "|---|---|---|---|---|---|---|---|---|---|"] + rows


def claim_rows(task: str, budget: str, arms: dict, labels: list[int],
               margin: float = MARGIN) -> list[str]:
    """One row per claim this budget can judge (the large-b claims from ``LARGE_B`` up), each
    by ``rule``."""
    rows = []

    def add(claim, a, b, kind="beats"):
        if a not in arms or b not in arms:
            return
        ma, mb = common(arms, a, b)
        last = paired(ma[:, -1], mb[:, -1])
        area = paired(auc(ma, labels), auc(mb, labels))
        rows.append(f"| {claim} | {task} {budget}: {a} {kind} {b} ({len(ma)} seeds) | "
                    f"{fmt(last)} | {fmt(area)} | {verdict(area, kind, margin)} |")

    if "sage" in arms:
        m = matrix(arms["sage"])
        last, area = paired(m[:, -1], m[:, 0]), paired(auc(m, labels), m[:, 0])
        rows.append(f"| 1. annotation beats UDA | {task} {budget}: sage beats its round 0 "
                    f"({len(m)} seeds) | {fmt(last)} | {fmt(area)} | {verdict(area)} |")
    add("2. Sage beats AADA", "sage", "aada")
    add("2. Sage matches or beats BADGE (TSF)", "sage", "badge", "matches or beats")
    add("3. BADGE without adaptation does poorly", "badge-no-adaptation", "badge", "is worse than")
    add("4. without POP, Sage fails to improve", "sage-no-pop", "sage", "is worse than")
    if int(budget.split("=")[1]) >= LARGE_B:
        add("4. without diversity, Sage is poor at large b", "sage-no-diversity", "sage",
            "is worse than")
    for other in ("random", "clusters", "entropy", "confidence"):
        add("5. Sage beats " + other, "sage", other)
    add("6. Ω_S+T beats Ω_S∪T", "sage", "sage-union")
    add("6. Ω_MME beats Ω_S∪T", "sage-mme", "sage-union")
    return rows


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
    args = ap.parse_args()
    os.chdir(REPO)  # params.yaml, the data and the MLflow store are the repository's
    preset = dict(PRESETS[args.preset])
    preset["set"] = {**preset.get("set", {}), **parse_set(args.set)}
    preset["margin"] = args.margin
    # once: a file edited while the preset runs must not relabel its runs or its report
    preset["code"] = code_digest()
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
    from components.tracking.lineage import Tracker

    tracker = Tracker("reproduce")
    # The invocation's own run is opened first and its counts logged after every job.
    parent = tracker.start_parent(params={"preset": args.preset, "workers": args.workers,
                                          **{k: str(v) for k, v in preset.items()}},
                                  tags={"sage_ada.kind": "reproduction"},
                                  run_name=f"preset {args.preset}")

    def log_counts(counts: dict, seconds: float) -> None:
        step = counts["computed"] + counts["failed"]
        for name, value in {"wall_s": seconds, **counts}.items():
            tracker.client.log_metric(parent, name.replace(" ", "_"), value, step=step)

    start = time.perf_counter()
    results, counts, busy = run_all(preset, args.workers, args.stop_after, log_counts)
    wall = time.perf_counter() - start
    log_counts(counts, wall)
    text, figures = report(results, counts, busy, args.preset, preset, wall, prefix)
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(text)
    (REPO / "benchmarks/results" / f"reproduce_{stem if prefix else args.preset}.json").write_text(
        json.dumps({"preset": args.preset, "set": preset["set"], "code": preset["code"],
                    "wall_s": wall, "busy_s": busy, "counts": counts, "output": args.output,
                    "command": command(args), "results": results}, indent=1))
    for fig in figures:
        tracker.client.log_artifact(parent, str(fig), "figures")
    tracker.client.log_artifact(parent, args.output)
    tracker.client.set_terminated(parent)
    print(f"wrote {args.output} and {len(figures)} figure(s): {counts}, {wall / 60:.1f} min "
          f"(the preset's runs: {busy / 60:.1f} min of wall time); MLflow run {parent}")


if __name__ == "__main__":
    main()
