"""The statistics behind docs/results.md: paired intervals, areas, verdicts."""
from __future__ import annotations

import importlib.util
import json
import math
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from tests.conftest import REPO

spec = importlib.util.spec_from_file_location("reproduce", REPO / "benchmarks" / "reproduce.py")
reproduce = importlib.util.module_from_spec(spec)
spec.loader.exec_module(reproduce)


def test_paired_interval_matches_the_t_formula():
    a, b = np.array([90.0, 92.0, 91.0, 95.0]), np.array([88.0, 89.0, 90.0, 91.0])
    mean, lo, hi = reproduce.paired(a, b)
    d = a - b
    half = 3.182446305284263 * d.std(ddof=1) / 2          # t(0.975, 3) · s / √4
    assert mean == pytest.approx(d.mean())
    assert (lo, hi) == pytest.approx((d.mean() - half, d.mean() + half))


def test_auc_is_a_mean_accuracy_over_the_label_range():
    acc = np.array([[50.0, 70.0, 90.0]])
    assert reproduce.auc(acc, [0, 10, 20])[0] == pytest.approx(70.0)
    assert reproduce.auc(np.full((1, 3), 80.0), [0, 5, 20])[0] == pytest.approx(80.0)


@pytest.mark.parametrize("diff, kind, expected", [
    ((2.0, 0.5, 3.5), "beats", "holds"),
    ((-2.0, -3.5, -0.5), "beats", "does not hold"),
    ((0.5, -1.0, 2.0), "beats", "inconclusive (the 95% CI includes 0)"),
    ((-2.0, -3.5, -0.5), "is worse than", "holds"),
    ((2.0, 0.5, 3.5), "is worse than", "does not hold"),
    ((1.0, math.nan, math.nan), "beats", "one seed only"),
    ((2.0, 0.5, 3.5), "matches or beats", "holds (beats)"),
    ((-0.2, -0.8, 0.4), "matches or beats", "holds (matches within 1)"),
    ((0.5, -0.9, 3.0), "matches or beats", "holds (matches within 1)"),   # not worse by 1
    ((-0.5, -1.5, 0.5), "matches or beats", "inconclusive (the 95% CI crosses −1)"),
    ((-3.0, -4.0, -2.0), "matches or beats", "does not hold"),
])
def test_one_rule_judges_every_kind_of_claim(diff, kind, expected):
    assert reproduce.verdict(diff, kind, margin=1.0) == expected


@pytest.mark.parametrize("diff, expected", [
    ((2.0, 0.5, 3.5), "clue ahead"),
    ((-2.0, -3.5, -0.5), "sage ahead"),
    ((0.1, -0.8, 0.9), "level (within ±1)"),       # inside the margin both ways: equivalent
    ((0.5, -0.9, 1.9), "inconclusive"),             # not worse by 1, but maybe better by 1
    ((-0.5, -1.5, 0.5), "inconclusive"),
    ((1.0, math.nan, math.nan), "one seed only"),
])
def test_who_leads_is_decided_by_the_interval_and_level_by_equivalence(diff, expected):
    assert reproduce.lead(diff, "clue", "sage", margin=1.0) == expected


def test_contenders_are_compared_with_sage_as_contender_minus_sage_on_common_seeds():
    arms = {"sage": {s: history([0.5, 0.60, 0.70, 0.80, 0.90]) for s in range(4)},
            "clue": {s: history([0.5, 0.70 + 0.01 * s, 0.75, 0.85, 0.90]) for s in range(3)},
            "random": {s: history([0.5, 0.55, 0.60, 0.70, 0.85 - 0.01 * s]) for s in range(4)}}
    rows = reproduce.versus_sage_rows("t", "b=10", arms, [0, 10, 20, 30, 40])
    assert [r.split(" | ")[2] for r in rows] == ["random", "clue"]  # DECISIVE's order
    rand, clue = rows
    assert clue.startswith("| t | 10 | clue | 3 | +11.00 [")        # round 1, seeds 0-2 only
    assert "| +0.00 [+0.00, +0.00] |" in clue                       # level at the last round
    assert clue.endswith("| clue ahead | level (within ±1) |"), clue
    assert rand.endswith("| sage ahead | sage ahead |"), rand


def test_seeds_whose_query_only_arms_start_apart_are_named():
    arms = {"sage": {0: history([0.55, 0.9]), 1: history([0.60, 0.9])},
            "random": {0: history([0.55, 0.8]), 1: history([0.61, 0.8])},
            "clue": {1: history([0.61, 0.8])},
            "aada": {0: history([0.40, 0.8]), 1: history([0.40, 0.8])}}  # DANN: its own start
    assert reproduce.round0_mismatches(arms) == ["seed 1: sage from 60.00 %, random, clue from 61.00 %"]
    arms["random"][1] = history([0.60, 0.8])
    arms["clue"][1] = history([0.60, 0.8])
    assert reproduce.round0_mismatches(arms) == []


def test_claims_judge_auc_everywhere_and_large_b_only_at_large_b():
    arms = {a: {s: history([0.5, 0.6 + 0.01 * s + off, 0.7 + off]) for s in range(3)}
            for a, off in (("sage", 0.05), ("sage-no-diversity", 0.0), ("random", 0.0))}
    arms["badge"] = {s: history([0.5, 0.65 + 0.01 * s + d, 0.75 + d])   # sage ± a few tenths
                     for s, d in enumerate((0.003, -0.003, 0.001))}
    small = reproduce.claim_rows("t", "b=10", arms, [0, 10, 20])
    large = reproduce.claim_rows("t", "b=50", arms, [0, 10, 20])
    assert not any("without diversity" in r for r in small)
    assert any("without diversity" in r for r in large)
    badge = next(r for r in small if "BADGE" in r)
    assert badge.endswith("| holds (matches within 1) |"), badge
    first = next(r for r in small if r.startswith("| 1."))
    area = reproduce.paired(reproduce.auc(reproduce.matrix(arms["sage"]), [0, 10, 20]),
                            reproduce.matrix(arms["sage"])[:, 0])
    assert reproduce.fmt(area) in first      # claim 1 by AUC too, against round 0


def test_every_arm_names_a_registered_strategy():
    from components.config import load_config

    for name, overrides in {**reproduce.ARMS, **reproduce.LINES}.items():
        extra = {k: v for k, v in overrides.items() if v != "pool"}
        load_config(REPO / "params.yaml", extra)   # raises on an impossible combination


def test_small_budgets_of_every_task_come_before_large_ones():
    preset = reproduce.PRESETS["full"]
    jobs = reproduce.jobs_of(preset)
    budgets = [b for _, _, b, *_ in jobs if b is not None]
    assert budgets == sorted(budgets)                       # every b=10 run before any b=50
    per_task = len(reproduce.LINES) * preset["seeds"]
    arms = sum(reproduce.seeds_of(preset, a) for a in preset["arms"])
    tasks, budgets = len(preset["tasks"]), sum(len(b) for b in preset["tasks"].values())
    assert len(jobs) == tasks * per_task + budgets * arms
    assert len(set((s, t, b, a, seed) for s, t, b, a, seed, _ in jobs)) == len(jobs)
    for task in preset["tasks"]:                            # floors before the task's arms
        kinds = [b is None for s, t, b, *_ in jobs if (s, t) == task]
        assert kinds[:per_task] == [True] * per_task and not any(kinds[per_task:])


def history(accuracies):
    return [{"round": r, "n_labels": 10 * r, "accuracy": a} for r, a in enumerate(accuracies)]


def test_paired_comparisons_use_the_seeds_both_arms_have():
    arms = {"sage": {0: history([0.5, 0.9]), 1: history([0.5, 0.8]), 2: history([0.5, 0.7])},
            "random": {1: history([0.5, 0.6]), 2: history([0.5, 0.5])}}
    a, b = reproduce.common(arms, "sage", "random")
    assert a[:, -1].tolist() == pytest.approx([80.0, 70.0])
    assert b[:, -1].tolist() == pytest.approx([60.0, 50.0])


def test_a_partial_preset_is_reported_with_its_seed_counts(tmp_path, monkeypatch):
    monkeypatch.setattr(reproduce, "REPO", tmp_path)
    (tmp_path / "docs" / "figures").mkdir(parents=True)
    results = {"mnist→optdigits": {
        "lines": {"uda-tsf": {0: history([0.5]), 1: history([0.6])}},
        "b=10": {"sage": {0: history([0.5, 0.9]), 1: history([0.6, 0.8])},
                 "random": {0: history([0.5, 0.7]), 1: history([0.6, 0.7]),
                            2: history([0.4, 0.7])}}}}
    counts = {"computed": 1, "read back": 6, "failed": 0, "not started": 4}
    preset = {"tasks": {("mnist", "optdigits"): [10]}, "seeds": 3, "rounds": 1,
              "arms": ["sage", "random"]}
    text, figures = reproduce.report(results, counts, 600.0, "small",
                                     {**preset, "note": "n"}, 60.0)
    assert "**Incomplete:** 4 of the preset's runs" in text
    assert "| sage | 2 | 55.00 ± 5.00 | 85.00 ± 5.00 |" in text
    assert "| random | 3 |" in text
    assert "in progress for 10.0 min of wall time on this machine" in text
    assert "sage beats random (2 seeds) | +15.00" in text
    assert "| mnist→optdigits | 10 | random | 2 | -15.00 [" in text   # random − sage, 1 round
    assert figures[0].exists()


def test_set_reads_values_as_yaml_and_refuses_malformed_pairs():
    assert reproduce.parse_set(["train.lr=0.003", "train.adversarial=dann"]) == {
        "train.lr": 0.003, "train.adversarial": "dann"}
    with pytest.raises(SystemExit, match="KEY=VALUE"):
        reproduce.parse_set(["train.lr"])


def test_the_sensitivity_preset_has_no_floor_runs():
    jobs = reproduce.jobs_of(reproduce.PRESETS["sensitivity"])
    assert jobs and all(budget == 50 for _, _, budget, *_ in jobs)


def test_the_full_preset_gives_the_arms_users_choose_between_ten_seeds():
    preset = reproduce.PRESETS["full"]
    jobs = reproduce.jobs_of(preset)
    for arm in preset["arms"]:
        seeds = {seed for s, t, b, a, seed, _ in jobs if (s, t, b, a) == ("mnist", "optdigits",
                                                                           50, arm)}
        assert len(seeds) == (10 if arm in reproduce.DECISIVE else 5), arm
    assert reproduce.seed_counts(preset).startswith("5 seeds; 10 for sage, badge")


def test_the_ledger_keeps_runs_for_the_code_that_computed_them(tmp_path):
    ledger = tmp_path / "runs.jsonl"
    reproduce.add_to_ledger("k1", [{"round": 0}], 1, 2, path=ledger, code="old")
    reproduce.add_to_ledger("k2", [{"round": 1}], 3, 4, path=ledger, code="new")
    assert list(reproduce.ledger_runs(ledger, code="new")) == ["k2"]
    assert reproduce.ledger_runs(ledger, code="new")["k2"]["history"] == [{"round": 1}]
    assert len(reproduce.code_digest()) == 16


def test_arms_advance_seed_by_seed():
    preset = reproduce.PRESETS["small"]
    arms = [(seed, arm) for _, _, b, arm, seed, _ in reproduce.jobs_of(preset) if b is not None]
    assert arms == [(s, a) for s in range(preset["seeds"]) for a in preset["arms"]]


def test_wall_time_counts_overlapping_runs_once_and_gaps_not_at_all():
    assert reproduce.union_ms([]) == 0
    assert reproduce.union_ms([(0, 10)]) == 10
    assert reproduce.union_ms([(0, 10), (5, 12), (20, 30), (21, 22)]) == 22


def test_the_main_report_says_what_was_tried_under_other_settings(tmp_path):
    arms = {"sage": {str(s): history([0.5, 0.9 + s / 100]) for s in range(3)},
            "sage-union": {str(s): history([0.5, 0.6 + s / 50]) for s in range(3)},
            "random": {str(s): history([0.5, 0.8]) for s in range(3)}}
    saved = {"preset": "sensitivity", "set": {"train.lambda_adv": 1.0},
             "output": "docs/sensitivity-lambda1.md",
             "command": "python benchmarks/reproduce.py --preset sensitivity "
                        "--set train.lambda_adv=1.0 --output docs/sensitivity-lambda1.md",
             "results": {"mnist→optdigits": {"b=50": arms}}}
    code = reproduce.code_digest()
    (tmp_path / "reproduce_sensitivity-lambda1.json").write_text(json.dumps({**saved, "code": code}))
    (tmp_path / "reproduce_smoke.json").write_text(json.dumps({**saved, "preset": "smoke"}))
    old = {**saved, "set": {"train.lambda_adv": 0.1}, "code": "0123456789abcdef"}
    (tmp_path / "reproduce_sensitivity-lambda01.json").write_text(json.dumps(old))
    text = "\n".join(reproduce.sensitivity_section(tmp_path, code))
    row = next(line for line in text.splitlines() if "Ω_S+T beats Ω_S∪T" in line
               and "=1.0" in line)
    assert row.startswith("| `train.lambda_adv=1.0` | 6. Ω_S+T beats Ω_S∪T |")
    assert row.endswith("| holds |")
    assert "--set train.lambda_adv=1.0" in text
    # a variant that other training code computed says so on each of its rows
    assert all(line.startswith("| `train.lambda_adv=0.1` *earlier code* |")
               for line in text.splitlines() if "=0.1`" in line)
    assert text.count("Ω_S+T beats Ω_S∪T") == 2  # the smoke preset is not a sensitivity check
    assert reproduce.sensitivity_section(tmp_path / "empty", code) == []


def test_the_colour_task_reads_colour_and_the_ceiling_trains_as_long_as_an_arm(monkeypatch):
    monkeypatch.setattr(reproduce, "pool_size", lambda cfg: 898)   # no data build for this
    preset = reproduce.PRESETS["full"]
    jobs = reproduce.jobs_of(preset)
    colour = [j for j in jobs if (j[0], j[1]) == reproduce.COLOUR]
    assert colour and {b for _, _, b, *_ in colour} == {None, 10, 50}
    assert reproduce.job_overrides(preset, colour[0])["data.channels"] == 3
    digits = next(j for j in jobs if (j[0], j[1]) == ("mnist", "optdigits"))
    assert reproduce.job_overrides(preset, digits)["data.channels"] == 1
    ceiling = next(j for j in jobs if j[3] == "all-target-labels")
    arm = next(j for j in jobs if j[3] == "sage")
    from components.config import load_config

    steps = {name: load_config(REPO / "params.yaml", reproduce.job_overrides(preset, job))
             for name, job in (("ceiling", ceiling), ("arm", arm))}
    assert steps["ceiling"].active.rounds == 1 and steps["ceiling"].active.budget == 898
    assert (steps["ceiling"].train.steps_per_round
            == steps["arm"].active.rounds * steps["arm"].train.steps_per_round)


def test_benchmark_workers_end_when_their_parent_is_killed(tmp_path):
    """A SIGKILLed reproduce or pick_analysis must not leave its workers computing on."""
    script = tmp_path / "parent.py"
    script.write_text(
        "import os, sys, time\n"
        "from concurrent.futures import ProcessPoolExecutor\n"
        "import multiprocessing as mp\n"
        f"sys.path.insert(0, {str(REPO / 'benchmarks')!r})\n"
        "import reproduce\n"
        "if __name__ == '__main__':\n"
        "    pool = ProcessPoolExecutor(1, mp_context=mp.get_context('spawn'),\n"
        "                               initializer=reproduce.end_with_parent,\n"
        "                               initargs=(os.getpid(),))\n"
        "    print(pool.submit(os.getpid).result(), flush=True)\n"
        "    time.sleep(120)\n")
    parent = subprocess.Popen([sys.executable, str(script)], cwd=REPO, stdout=subprocess.PIPE,
                              text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    worker = int(parent.stdout.readline())
    os.kill(worker, 0)                                   # alive while the parent is
    parent.send_signal(signal.SIGKILL)
    parent.wait()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            os.kill(worker, 0)
        except ProcessLookupError:
            return
        time.sleep(0.2)
    os.kill(worker, signal.SIGKILL)
    pytest.fail(f"worker {worker} outlived its killed parent by 20 s")
