"""What the protocol runs: the arms, the floors and ceiling, the presets, and each job's settings.

Kept apart from running and reporting so that ``pick_analysis.py`` replays exactly the jobs
(same overrides, same settings key) that ``reproduce.py`` ran.
"""
from __future__ import annotations

import functools
import json
from pathlib import Path

from benchmarks.protocol import REPO

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
    # issue 33: the newest selection rules, and Sage with the labels it knows in the adversary
    "las": {"active.strategy": "las"},
    "eada": {"active.strategy": "eada"},
    "sage-label": {"train.labelled_in_adversary": "label"},
}
LINES = {  # floors and ceiling: one accuracy each
    "source-only": {"active.strategy": "random", "train.adversarial": "none", "active.rounds": 0},
    "uda-dann": {"active.strategy": "random", "train.adversarial": "dann", "active.rounds": 0},
    "uda-tsf": {"active.strategy": "random", "active.rounds": 0},
    # every pool label in one round, trained as long as an arm trains over all its rounds
    "all-target-labels": {"active.strategy": "random", "active.rounds": 1, "active.budget": "pool"},
}
COLOUR = ("mnist-colour", "optdigits-texture")  # the colour benchmark's task (data.channels: 3)
SHAPES = ("shapes", "shapes-sketch")  # the third benchmark: kept out of the advice, to check it
# the arms users choose between: more seeds, so their differences can be told apart
DECISIVE = ("sage", "badge", "entropy", "random", "clue", "sage-no-pop")
NEWER = ("las", "eada", "sage-label")  # issue 33's arms, weighed against CLUE and Sage
CONTENDERS = tuple(a for a in DECISIVE if a != "sage") + NEWER  # what users weigh Sage against
CLAIM_ARMS = [a for a in ARMS if a not in NEWER]  # the paper's claims: the full preset's arms
PAST_CLUE_ARMS = ["sage", "sage-label", "clue", "las", "eada", "random"]
PRESETS = {
    # The colour task first: its runs are the ones the digits' earlier reports lack.
    "full": {"tasks": {COLOUR: [10, 50], ("mnist", "optdigits"): [10, 50],
                       ("optdigits", "mnist"): [10]},
             "seeds": 5, "seeds_for": {arm: 10 for arm in DECISIVE}, "rounds": 10,
             "arms": CLAIM_ARMS, "note": "This is the whole protocol."},
    "small": {"tasks": {("mnist", "optdigits"): [10]}, "seeds": 3, "rounds": 5,
              "arms": CLAIM_ARMS, "note": "This is a reduced preset: claims that need the other "
              "task or b = 50 (claim 4's large-budget part, claim 6) are not settled by it; "
              "`--preset full` runs them."},
    # Claim 6 at b = 50 under other hyper-parameters: run it once per `--set` variant.
    "sensitivity": {"tasks": {("mnist", "optdigits"): [50]}, "seeds": 3, "rounds": 10,
                    "arms": ["sage", "sage-union", "sage-mme", "random"], "lines": False,
                    "note": "This is a sensitivity check of claim 6: compare it with the same "
                            "arms at b = 50 in `--preset full`, which uses `params.yaml` as is."},
    # Issue 33 on the final training code: the newer arms against CLUE and Sage on every task,
    # and the third benchmark (shapes) with the arms the README's advice names, to check it.
    # b = 10 on every task first; per task the arms seed by seed, the floors and ceiling last.
    "past-clue": {"tasks": {SHAPES: [10, 50], COLOUR: [10, 50], ("mnist", "optdigits"): [10, 50],
                            ("optdigits", "mnist"): [10]},
                  "seeds": 5, "seeds_for": {arm: 10 for arm in [*PAST_CLUE_ARMS, "entropy",
                                                                  "badge"]},
                  "rounds": 10, "arms": [*PAST_CLUE_ARMS, "entropy", "badge"],
                  "arms_for": {task: PAST_CLUE_ARMS for task in (COLOUR, ("mnist", "optdigits"),
                                                                 ("optdigits", "mnist"))},
                  "lines": [SHAPES], "lines_first": False,
                  "other_pages": False,  # the sensitivity and numerics sections: the claims page's
                  "title": "Past CLUE: newer selection rules, labels in Sage's adversary, and a "
                           "benchmark kept out of the advice",
                  "note": "Arms that pretrain alike (the same pretraining cache key) adapt one "
                          "round-0 checkpoint per seed, computed once under a lock; every run "
                          "records a digest of the round-0 weights it adapted, and a pair whose "
                          "digests differ is left out of the paired statistics and named. "
                          "The shipped tasks' floors and ceiling are in `docs/results.md`; the "
                          "shapes task was kept out of the README's advice and checks it."},
    "smoke": {"tasks": {("mnist", "optdigits"): [5]}, "seeds": 2, "rounds": 2,
              "arms": ["sage", "random", "entropy"], "set": {"train.pretrain_steps": 30,
                                                             "train.steps_per_round": 10},
              "note": "This checks the script only: its runs are far too short to mean anything."},
}


@functools.cache
def shares_round0(arm: str) -> bool:
    """Whether ``arm`` pretrains exactly as the default arm does (the same pretraining cache key:
    it changes only settings pretraining does not read, such as the query, the regulariser of
    labelled rounds or how labels enter the adversary), so on each seed it adapts the very same
    round-0 weights as every other such arm."""
    if arm not in ARMS:
        return False
    return round0_key(ARMS[arm]) == round0_key({})


def round0_key(overrides: dict) -> str:
    """The product's own pretraining cache key for ``params.yaml`` with ``overrides`` (on an
    empty manifest: the data is the same for every arm of a task)."""
    import pandas as pd

    from components.config import load_config
    from components.run.steps import RunSteps

    holder = type("Holder", (), {"cfg": load_config(REPO / "params.yaml", overrides),
                                 "manifest": pd.DataFrame(columns=["sample_id", "split"])})
    return RunSteps.pretrain_key(holder())


def task_overrides(source: str, target: str) -> dict:
    """A task's data and tracking settings: its own manifest and experiment, so tasks never
    share a split or mix their runs."""
    from components.data.shipped import DOMAINS

    channels = max(DOMAINS[d].channels if d in DOMAINS else 1 for d in (source, target))
    return {"data.source": source, "data.target": target, "data.channels": channels,
            "data.manifest": f".sage-ada/reproduce/splits/{source}-{target}.csv",
            "tracking.experiment": f"reproduce {source}→{target}",
            "tracking.registered_model": "sage-ada-reproduce"}


def job_settings(preset: dict, job: tuple):
    """``(config, flattened settings, settings key)`` of one job: what the runner runs, and
    what every script that looks a job's run up (ledger, MLflow) matches it by."""
    from components.config import load_config
    from components.tracking.lineage import flatten

    cfg = load_config(REPO / "params.yaml", job_overrides(preset, job))
    flat = flatten("", cfg.model_dump())
    return cfg, flat, settings_key(flat)


def settings_key(flat_params: dict[str, str]) -> str:
    """A run's identity: its flattened settings, so a finished twin is found whatever ran it."""
    return json.dumps(sorted(flat_params.items()))


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
        lines = []
        if (source, target) not in seen and has_lines(preset, (source, target)):
            seen.add((source, target))
            lines = [(source, target, None, line, seed, overrides)
                     for line, overrides in LINES.items() for seed in range(preset["seeds"])]
        chosen = arms_of(preset, (source, target))
        most = max(seeds_of(preset, arm) for arm in chosen)
        arms = [(source, target, budget, arm, seed, ARMS[arm])
                for seed in range(most) for arm in chosen if seed < seeds_of(preset, arm)]
        jobs += lines + arms if preset.get("lines_first", True) else arms + lines
    return jobs


def arms_of(preset: dict, task: tuple[str, str]) -> list[str]:
    """The arms a task runs: the preset's, unless it names others for that task."""
    return preset.get("arms_for", {}).get(task, preset["arms"])


def has_lines(preset: dict, task: tuple[str, str]) -> bool:
    """Whether the task runs the floors and ceiling (``lines``: true, false or a list of tasks)."""
    lines = preset.get("lines", True)
    return task in lines if isinstance(lines, list) else bool(lines)


def seeds_of(preset: dict, arm: str) -> int:
    """How many seeds ``arm`` runs: the arms users choose between may get more."""
    return preset.get("seeds_for", {}).get(arm, preset["seeds"])


def seed_counts(preset: dict) -> str:
    """The seed counts as the page states them, e.g. ``5 seeds; 10 for sage, badge``."""
    more = {a: n for a, n in preset.get("seeds_for", {}).items() if n != preset["seeds"]}
    by_count: dict[int, list[str]] = {}
    for arm, n in more.items():
        by_count.setdefault(n, []).append(arm)
    return f"{preset['seeds']} seeds" + "".join(f"; {n} for {', '.join(arms)}"
                                                for n, arms in sorted(by_count.items()))


def job_overrides(preset: dict, job: tuple) -> dict:
    """The overrides on params.yaml that one job runs with (the ceiling's budget is the whole
    pool, trained for as many steps as an arm's rounds add up to)."""
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


def pool_size(cfg) -> int:
    """Target-train images in the task's split (built first if missing): the ceiling's budget."""
    from components.data import prepare
    from components.data.split import read_manifest

    if not Path(cfg.data.manifest).exists():
        prepare.ensure_data(cfg)
        prepare.split_and_validate(cfg)
    manifest = read_manifest(cfg.data.manifest)
    return int((manifest["split"] == "target_train").sum())
