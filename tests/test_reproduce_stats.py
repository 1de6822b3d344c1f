"""The statistics behind docs/results.md: paired intervals, areas, verdicts."""
from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from benchmarks import reproduce  # the command line
from benchmarks.protocol import stats
from benchmarks.protocol.arms import (ARMS, COLOUR, DECISIVE, LINES, PRESETS, job_overrides,
                                      jobs_of, seed_counts, seeds_of, settings_key)
from benchmarks.protocol.ledger import add_to_ledger, code_digest, ledger_runs
from benchmarks.protocol.report import claim_rows, report, sensitivity_section, versus_sage_rows
from benchmarks.protocol.runner import run_all, union_ms
from tests.conftest import REPO


def diff(*d: float) -> stats.Paired:
    """``paired`` of arms whose differences over seeds are ``d``."""
    return stats.paired(np.array(d), np.zeros(len(d)))


def test_paired_interval_matches_the_t_formula():
    a, b = np.array([90.0, 92.0, 91.0, 95.0]), np.array([88.0, 89.0, 90.0, 91.0])
    mean, lo, hi = stats.paired(a, b)[:3]
    d = a - b
    half = 3.182446305284263 * d.std(ddof=1) / 2          # t(0.975, 3) · s / √4
    assert mean == pytest.approx(d.mean())
    assert (lo, hi) == pytest.approx((d.mean() - half, d.mean() + half))


@pytest.mark.parametrize("d, quantile", [
    # t quantiles in closed form, independent of scipy: df = 1 is Cauchy, tan(π (p − ½));
    # df = 2 is (2p − 1) / √(2p (1 − p)); p = 0.975 for a two-sided 95 % interval
    ((3.0, 1.0), math.tan(math.pi * 0.475)),                              # 12.706...
    ((1.5, 2.0, 4.0), 0.95 / math.sqrt(2 * 0.975 * 0.025)),               # 4.3027...
])
def test_scipys_interval_is_the_t_interval_by_hand(d, quantile):
    mean = sum(d) / len(d)
    s = math.sqrt(sum((x - mean) ** 2 for x in d) / (len(d) - 1))
    half = quantile * s / math.sqrt(len(d))
    got = diff(*d)
    assert got.mean == pytest.approx(mean)
    assert (got.low, got.high) == pytest.approx((mean - half, mean + half), rel=1e-12)
    assert list(got.d) == pytest.approx(list(d))


def test_one_seed_gives_no_interval_and_identical_arms_a_point():
    assert math.isnan(diff(1.0).low) and math.isnan(diff(1.0).high)
    assert diff(0.0, 0.0, 0.0)[:3] == (0.0, 0.0, 0.0)
    assert stats.fmt(diff(0.0, 0.0, 0.0)) == "+0.00 [+0.00, +0.00]"


def test_equivalence_needs_the_difference_well_inside_the_margin():
    rng = np.random.default_rng(0)
    noise = rng.normal(0, 0.5, 30)
    inside = diff(*(0.1 + noise - noise.mean()))           # mean 0.1, 30 seeds: level
    assert stats.tost(inside.d, 1.0) < stats.ALPHA and stats.equivalent(inside, 1.0)
    assert stats.lead(inside, "clue", "sage", margin=1.0) == "level (within ±1)"
    at_margin = diff(*(1.0 + noise - noise.mean()))        # mean 1.0: as likely out as in
    assert stats.tost(at_margin.d, 1.0) >= 0.5 and not stats.equivalent(at_margin, 1.0)
    assert stats.lead(at_margin, "clue", "sage", margin=1.0) != "level (within ±1)"
    few = diff(0.2, -0.3, 0.7)                              # inside ±1, but 3 seeds cannot say
    assert not stats.equivalent(few, 1.0)


def test_the_tests_at_two_and_a_half_percent_decide_as_the_95_percent_interval():
    """TOST at 2.5 % a side holds exactly when the 95 % interval lies inside ±margin, and the
    non-inferiority test when its lower end is above −margin: the page's rule, unchanged."""
    rng = np.random.default_rng(1)
    for _ in range(300):
        n = int(rng.integers(2, 12))
        d = diff(*rng.normal(rng.uniform(-2, 2), rng.uniform(0.1, 2), n))
        if min(abs(d.low + 1), abs(d.high - 1)) < 1e-9:
            continue                                       # on the boundary: either is right
        assert stats.equivalent(d, 1.0) == (d.low > -1 and d.high < 1)
        assert stats.not_worse(d, 1.0) == (d.low > -1)


def test_auc_is_a_mean_accuracy_over_the_label_range():
    acc = np.array([[50.0, 70.0, 90.0]])
    assert stats.auc(acc, [0, 10, 20])[0] == pytest.approx(70.0)
    assert stats.auc(np.full((1, 3), 80.0), [0, 5, 20])[0] == pytest.approx(80.0)


BEATS = (1.5, 2.0, 2.5)            # differences over seeds; 95% CI [+0.76, +3.24]
BEHIND = (-1.5, -2.0, -2.5)        # [-3.24, -0.76]
WIDE = (-0.5, 0.5, 1.5)            # [-1.98, +2.98]
CLOSE = (-0.3, -0.2, -0.1)         # [-0.45, +0.05]: inside ±1
NOT_WORSE = (-1.0, 2.0) * 5        # [-0.63, +1.63]: not worse by 1, but maybe better by 1
CROSSES = (-1.5, -0.5, 0.5)        # [-2.98, +1.98]
FAR_BEHIND = (-3.5, -4.0, -4.5)    # [-5.24, -2.76]
LEVEL = (-0.2, 0.0, 0.2)           # [-0.50, +0.50]


@pytest.mark.parametrize("d, kind, expected", [
    (BEATS, "beats", "holds"),
    (BEHIND, "beats", "does not hold"),
    (WIDE, "beats", "inconclusive (the 95% CI includes 0)"),
    (BEHIND, "is worse than", "holds"),
    (BEATS, "is worse than", "does not hold"),
    ((1.0,), "beats", "one seed only"),
    (BEATS, "matches or beats", "holds (beats)"),
    (CLOSE, "matches or beats", "holds (matches within 1)"),
    (NOT_WORSE, "matches or beats", "holds (matches within 1)"),   # not worse by 1
    (CROSSES, "matches or beats", "inconclusive (the 95% CI crosses −1)"),
    (FAR_BEHIND, "matches or beats", "does not hold"),
])
def test_one_rule_judges_every_kind_of_claim(d, kind, expected):
    assert stats.verdict(diff(*d), kind, margin=1.0) == expected


@pytest.mark.parametrize("d, expected", [
    (BEATS, "clue ahead"),
    (BEHIND, "sage ahead"),
    (LEVEL, "level (within ±1)"),          # inside the margin both ways: equivalent
    (NOT_WORSE, "inconclusive"),           # not worse by 1, but maybe better by 1
    (CROSSES, "inconclusive"),
    ((1.0,), "one seed only"),
])
def test_who_leads_is_decided_by_the_interval_and_level_by_equivalence(d, expected):
    assert stats.lead(diff(*d), "clue", "sage", margin=1.0) == expected


def test_contenders_are_compared_with_sage_as_contender_minus_sage_on_common_seeds():
    arms = {"sage": {s: history([0.5, 0.60, 0.70, 0.80, 0.90]) for s in range(4)},
            "clue": {s: history([0.5, 0.70 + 0.01 * s, 0.75, 0.85, 0.90]) for s in range(3)},
            "random": {s: history([0.5, 0.55, 0.60, 0.70, 0.85 - 0.01 * s]) for s in range(4)}}
    rows = versus_sage_rows("t", "b=10", arms, [0, 10, 20, 30, 40])
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
    assert stats.round0_mismatches(arms) == ["seed 1: sage from 60.00 %, random, clue from 61.00 %"]
    arms["random"][1] = history([0.60, 0.8])
    arms["clue"][1] = history([0.60, 0.8])
    assert stats.round0_mismatches(arms) == []


def test_arms_that_should_share_a_start_are_paired_only_on_the_same_round0_weights():
    """Issue 33: runs record their round-0 weights; two arms that differ only in settings
    pretraining does not read (the query, how labels enter the adversary) are paired only on
    seeds where those weights are the same, and the seeds that are not are named."""
    def run(first, last, weights):
        h = history([first, last])
        h[0]["weights"] = weights
        return h

    arms = {"clue": {0: run(0.5, 0.9, "aa"), 1: run(0.5, 0.8, "bb"), 2: run(0.5, 0.7, "cc")},
            "sage-label": {0: run(0.5, 0.6, "aa"), 1: run(0.5, 0.6, "xx"), 2: run(0.5, 0.5, "cc")},
            "aada": {0: run(0.4, 0.6, "dd"), 1: run(0.4, 0.6, "ee"), 2: run(0.4, 0.6, "ff")}}
    a, b = stats.common(arms, "sage-label", "clue")
    assert a[:, -1].tolist() == pytest.approx([60.0, 50.0])     # seed 1 left out
    assert b[:, -1].tolist() == pytest.approx([90.0, 70.0])
    assert len(stats.common(arms, "aada", "clue")[0]) == 3      # DANN pretrains its own model
    assert stats.round0_mismatches(arms) == [
        "seed 1: clue from 50.00 % (weights bb), sage-label from 50.00 % (weights xx)"]
    assert stats.shares_round0("las") and stats.shares_round0("sage-label")
    assert stats.shares_round0("sage-union")       # Ω only from round 1: pretrains alike
    assert not stats.shares_round0("sage-mme") and not stats.shares_round0("aada")


def test_the_past_clue_preset_runs_the_newer_arms_everywhere_and_checks_on_shapes():
    """Issue 33's preset: every arm 10 seeds; the shapes task (kept out of the advice) also runs
    the arms the advice names and its floors, after its arms; b = 10 on every task first."""
    from benchmarks.protocol.arms import NEWER, SHAPES

    preset = PRESETS["past-clue"]
    jobs = jobs_of(preset)
    budgets = [b for _, _, b, *_ in jobs if b is not None]
    assert budgets == sorted(budgets)
    for task in preset["tasks"]:
        ran = {a for s, t, b, a, *_ in jobs if (s, t) == task and b is not None}
        assert set(NEWER) | {"clue", "sage", "random"} <= ran
        assert ({"entropy", "badge"} <= ran) == (task == SHAPES)
        lines = [b is None for s, t, b, *_ in jobs if (s, t) == task]
        assert any(lines) == (task == SHAPES)
        if task == SHAPES:   # floors after the 8 arms × 10 seeds at b = 10
            assert lines.index(True) == 8 * 10 and all(lines[80:100])
    for arm in preset["arms"]:
        assert seeds_of(preset, arm) == 10


def test_claims_judge_auc_everywhere_and_large_b_only_at_large_b():
    arms = {a: {s: history([0.5, 0.6 + 0.01 * s + off, 0.7 + off]) for s in range(3)}
            for a, off in (("sage", 0.05), ("sage-no-diversity", 0.0), ("random", 0.0))}
    arms["badge"] = {s: history([0.5, 0.65 + 0.01 * s + d, 0.75 + d])   # sage ± a few tenths
                     for s, d in enumerate((0.003, -0.003, 0.001))}
    small = claim_rows("t", "b=10", arms, [0, 10, 20])
    large = claim_rows("t", "b=50", arms, [0, 10, 20])
    assert not any("without diversity" in r for r in small)
    assert any("without diversity" in r for r in large)
    badge = next(r for r in small if "BADGE" in r)
    assert badge.endswith("| holds (matches within 1) |"), badge
    first = next(r for r in small if r.startswith("| 1."))
    area = stats.paired(stats.auc(stats.matrix(arms["sage"]), [0, 10, 20]),
                            stats.matrix(arms["sage"])[:, 0])
    assert stats.fmt(area) in first      # claim 1 by AUC too, against round 0


def test_every_arm_names_a_registered_strategy():
    from components.config import load_config

    for name, overrides in {**ARMS, **LINES}.items():
        extra = {k: v for k, v in overrides.items() if v != "pool"}
        load_config(REPO / "params.yaml", extra)   # raises on an impossible combination


def test_small_budgets_of_every_task_come_before_large_ones():
    preset = PRESETS["full"]
    jobs = jobs_of(preset)
    budgets = [b for _, _, b, *_ in jobs if b is not None]
    assert budgets == sorted(budgets)                       # every b=10 run before any b=50
    per_task = len(LINES) * preset["seeds"]
    arms = sum(seeds_of(preset, a) for a in preset["arms"])
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
    a, b = stats.common(arms, "sage", "random")
    assert a[:, -1].tolist() == pytest.approx([80.0, 70.0])
    assert b[:, -1].tolist() == pytest.approx([60.0, 50.0])


def test_a_partial_preset_is_reported_with_its_seed_counts(tmp_path, monkeypatch):
    monkeypatch.setattr("benchmarks.protocol.report.REPO", tmp_path)
    (tmp_path / "docs" / "figures").mkdir(parents=True)
    results = {"mnist→optdigits": {
        "lines": {"uda-tsf": {0: history([0.5]), 1: history([0.6])}},
        "b=10": {"sage": {0: history([0.5, 0.9]), 1: history([0.6, 0.8])},
                 "random": {0: history([0.5, 0.7]), 1: history([0.6, 0.7]),
                            2: history([0.4, 0.7])}}}}
    counts = {"computed": 1, "read back": 6, "failed": 0, "not started": 4}
    preset = {"tasks": {("mnist", "optdigits"): [10]}, "seeds": 3, "rounds": 1,
              "arms": ["sage", "random"]}
    text, figures = report(results, counts, 600.0, "small",
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
    jobs = jobs_of(PRESETS["sensitivity"])
    assert jobs and all(budget == 50 for _, _, budget, *_ in jobs)


def test_the_full_preset_gives_the_arms_users_choose_between_ten_seeds():
    preset = PRESETS["full"]
    jobs = jobs_of(preset)
    for arm in preset["arms"]:
        seeds = {seed for s, t, b, a, seed, _ in jobs if (s, t, b, a) == ("mnist", "optdigits",
                                                                           50, arm)}
        assert len(seeds) == (10 if arm in DECISIVE else 5), arm
    assert seed_counts(preset).startswith("5 seeds; 10 for sage, badge")


def test_the_ledger_keeps_runs_for_the_code_that_computed_them(tmp_path):
    ledger = tmp_path / "runs.jsonl"
    add_to_ledger("k1", [{"round": 0}], 1, 2, path=ledger, code="old")
    add_to_ledger("k2", [{"round": 1}], 3, 4, path=ledger, code="new")
    assert list(ledger_runs(ledger, code="new")) == ["k2"]
    assert ledger_runs(ledger, code="new")["k2"]["history"] == [{"round": 1}]
    assert len(code_digest()) == 16


def test_a_rebuild_reads_the_ledger_of_its_code_and_starts_nothing(monkeypatch):
    """``--code``: the page from the runs that code computed; nothing from MLflow, no new run."""
    from components.config import load_config
    from components.tracking.lineage import flatten

    monkeypatch.chdir(REPO)
    preset = {**PRESETS["sensitivity"], "code": "0123456789abcdef"}
    first = jobs_of(preset)[0]
    key = settings_key(flatten("", load_config("params.yaml",
                                               job_overrides(preset, first)).model_dump()))
    kept = {key: {"history": history([0.5, 0.6]), "start_ms": 0, "end_ms": 60_000}}
    monkeypatch.setattr("benchmarks.protocol.runner.ledger_runs",
                        lambda code: kept if code == preset["code"] else {})

    def no_mlflow(*args):
        raise AssertionError("a rebuild must not read MLflow")

    monkeypatch.setattr("benchmarks.protocol.runner.finished_runs", no_mlflow)
    monkeypatch.setattr("benchmarks.protocol.runner.mlflow_spans", no_mlflow)
    results, counts, busy = run_all(preset, read_only=True)
    source, target, budget, arm, seed, _ = first
    assert results == {f"{source}→{target}": {f"b={budget}": {arm: {seed: history([0.5, 0.6])}}}}
    assert counts == {"computed": 0, "read back": 1, "failed": 0,
                      "not started": len(jobs_of(preset)) - 1}
    assert busy == 60.0


def test_a_rebuild_finds_runs_recorded_before_settings_were_added():
    """``--code`` for earlier code: its ledger keys lack settings added since. A job matches the
    row whose result settings it shares, only where each added setting keeps the earlier
    behaviour (params.yaml's value); servers' and time limits' settings are not compared."""
    from benchmarks.protocol.ledger import older_twin, parsed

    old = {"active.strategy": "sage", "active.seed": "3", "train.lr": "0.01",
           "label_studio.webhook_url": "", "train.job_timeout_s": "60"}
    kept = parsed({settings_key(old): {"history": "the run"}})
    baseline = {"train.labelled_in_adversary": "predicted", "active.strategy": "sage"}
    job = {**old, "train.labelled_in_adversary": "predicted",
           "label_studio.webhook_url": "http://127.0.0.1:8092", "train.job_timeout_s": "99"}
    assert older_twin(kept, job, baseline) == {"history": "the run"}
    assert older_twin(kept, {**job, "train.labelled_in_adversary": "label"}, baseline) is None
    assert older_twin(kept, {**job, "active.seed": "4"}, baseline) is None
    assert older_twin(kept, {k: v for k, v in job.items() if k != "train.lr"}, baseline) is None


def test_a_comparison_with_no_seed_from_one_start_is_reported_not_raised():
    def run(first, last, weights):
        h = history([first, last])
        h[0]["weights"] = weights
        return h

    arms = {"sage": {0: run(0.5, 0.9, "aa")}, "clue": {0: run(0.5, 0.8, "bb")},
            "random": {0: run(0.5, 0.6, "aa")}}
    assert stats.common(arms, "clue", "sage")[0].shape == (0, 0)
    rows = versus_sage_rows("t", "b=10", arms, [0, 10])
    assert [r.split(" | ")[2] for r in rows] == ["random"]       # clue: no pair to show
    assert not any("clue" in r.split("|")[2] for r in claim_rows("t", "b=10", arms, [0, 10]))


def test_arms_advance_seed_by_seed():
    preset = PRESETS["small"]
    arms = [(seed, arm) for _, _, b, arm, seed, _ in jobs_of(preset) if b is not None]
    assert arms == [(s, a) for s in range(preset["seeds"]) for a in preset["arms"]]


def test_wall_time_counts_overlapping_runs_once_and_gaps_not_at_all():
    assert union_ms([]) == 0
    assert union_ms([(0, 10)]) == 10
    assert union_ms([(0, 10), (5, 12), (20, 30), (21, 22)]) == 22


def test_the_main_report_says_what_was_tried_under_other_settings(tmp_path):
    arms = {"sage": {str(s): history([0.5, 0.9 + s / 100]) for s in range(3)},
            "sage-union": {str(s): history([0.5, 0.6 + s / 50]) for s in range(3)},
            "random": {str(s): history([0.5, 0.8]) for s in range(3)}}
    saved = {"preset": "sensitivity", "set": {"train.lambda_adv": 1.0},
             "output": "docs/sensitivity-lambda1.md",
             "command": "python benchmarks/reproduce.py --preset sensitivity "
                        "--set train.lambda_adv=1.0 --output docs/sensitivity-lambda1.md",
             "results": {"mnist→optdigits": {"b=50": arms}}}
    code = code_digest()
    (tmp_path / "reproduce_sensitivity-lambda1.json").write_text(json.dumps({**saved, "code": code}))
    (tmp_path / "reproduce_smoke.json").write_text(json.dumps({**saved, "preset": "smoke"}))
    old = {**saved, "set": {"train.lambda_adv": 0.1}, "code": "0123456789abcdef"}
    (tmp_path / "reproduce_sensitivity-lambda01.json").write_text(json.dumps(old))
    text = "\n".join(sensitivity_section(tmp_path, code))
    row = next(line for line in text.splitlines() if "Ω_S+T beats Ω_S∪T" in line
               and "=1.0" in line)
    assert row.startswith("| `train.lambda_adv=1.0` | 6. Ω_S+T beats Ω_S∪T |")
    assert row.endswith("| holds |")
    assert "--set train.lambda_adv=1.0" in text
    # a variant that other training code computed says so on each of its rows
    assert all(line.startswith("| `train.lambda_adv=0.1` *earlier code* |")
               for line in text.splitlines() if "=0.1`" in line)
    assert text.count("Ω_S+T beats Ω_S∪T") == 2  # the smoke preset is not a sensitivity check
    assert sensitivity_section(tmp_path / "empty", code) == []


def test_the_colour_task_reads_colour_and_the_ceiling_trains_as_long_as_an_arm(monkeypatch):
    monkeypatch.setattr("benchmarks.protocol.arms.pool_size", lambda cfg: 898)   # no data build for this
    preset = PRESETS["full"]
    jobs = jobs_of(preset)
    colour = [j for j in jobs if (j[0], j[1]) == COLOUR]
    assert colour and {b for _, _, b, *_ in colour} == {None, 10, 50}
    assert job_overrides(preset, colour[0])["data.channels"] == 3
    digits = next(j for j in jobs if (j[0], j[1]) == ("mnist", "optdigits"))
    assert job_overrides(preset, digits)["data.channels"] == 1
    ceiling = next(j for j in jobs if j[3] == "all-target-labels")
    arm = next(j for j in jobs if j[3] == "sage")
    from components.config import load_config

    steps = {name: load_config(REPO / "params.yaml", job_overrides(preset, job))
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
        "from benchmarks.protocol.runner import end_with_parent\n"
        "if __name__ == '__main__':\n"
        "    pool = ProcessPoolExecutor(1, mp_context=mp.get_context('spawn'),\n"
        "                               initializer=end_with_parent,\n"
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
