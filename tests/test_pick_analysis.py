"""The figures of benchmarks/pick_analysis.py, pinned on small hand-made cases."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

from benchmarks import pick_analysis


def test_percentile_of_ranks_picks_among_the_pool():
    values = np.array([0.1, 0.5, 0.9, 0.3, 0.7])
    assert pick_analysis.percentile_of(values, np.array([2])) == pytest.approx(100.0)
    assert pick_analysis.percentile_of(values, np.array([0])) == pytest.approx(0.0)
    assert pick_analysis.percentile_of(values, np.array([0, 2])) == pytest.approx(50.0)
    assert pick_analysis.percentile_of(values, np.arange(5)) == pytest.approx(50.0)
    ties = np.array([1.0, 1.0, 1.0])           # ties sit in the middle, not at an end
    assert pick_analysis.percentile_of(ties, np.array([0])) == pytest.approx(50.0)


def test_a_random_pick_sits_near_the_50th_percentile():
    rng = np.random.default_rng(0)
    values = rng.normal(size=2000)
    picks = rng.choice(2000, 500, replace=False)
    assert abs(pick_analysis.percentile_of(values, picks) - 50) < 3


def test_class_balance_is_one_when_even_and_zero_for_one_class():
    assert pick_analysis.class_balance([0, 1, 2, 3] * 5, 4) == pytest.approx(1.0)
    assert pick_analysis.class_balance([2] * 7, 4) == pytest.approx(0.0)
    assert pick_analysis.class_balance([0, 0, 0, 1], 4) == pytest.approx(
        -(0.75 * math.log(0.75) + 0.25 * math.log(0.25)) / math.log(4))


def test_the_page_keeps_its_prose_and_replaces_only_the_generated_part(tmp_path):
    page = tmp_path / "analysis.md"
    page.write_text(f"# Title\n\nprose before\n\n{pick_analysis.BEGIN}\nold table\n"
                    f"{pick_analysis.END}\n\nprose after\n")
    pick_analysis.write_page(f"{pick_analysis.BEGIN}\nnew table\n{pick_analysis.END}", page)
    text = page.read_text()
    assert "prose before" in text and "prose after" in text
    assert "new table" in text and "old table" not in text
    assert text.count(pick_analysis.BEGIN) == 1


def test_saved_replays_are_read_back_only_for_the_same_code(tmp_path):
    saved = tmp_path / "pick_analysis.json"
    runs = [{"job": ["mnist", "optdigits", 10, "sage", 0], "code": "aaaa"},
            {"job": ["mnist", "optdigits", 10, "sage", 1], "code": "bbbb"},
            {"job": ["mnist", "optdigits", 10, "badge", 0]}]  # no code: never trusted
    saved.write_text(json.dumps({"runs": runs}))
    kept = pick_analysis.saved_replays("aaaa", saved)
    assert list(kept) == [("mnist", "optdigits", 10, "sage", 0)]
    assert pick_analysis.saved_replays("cccc", saved) == {}
    assert pick_analysis.saved_replays("aaaa", tmp_path / "missing.json") == {}


def test_the_page_says_how_many_replays_match_the_flow_and_why_the_others_do_not():
    summary = {"t": {"b=10": {"sage": {
        "seeds": 2, "auc": 90.0, "per_round": {"balance": [0.5, 0.9]},
        "mean": {"uncertainty_pct": 80.0, "wrong": 0.3, "distance_pct": 60.0,
                 "classes_covered": 6.0}}}}}
    check = {"twins": 4, "identical": 3, "worst": 2.5, "start_differs": 1, "worst_start": 0.4}
    text = pick_analysis.page(summary, check, "cmd", 60.0, computed=2, read_back=2,
                              replay_s=300.0)
    assert "4 replays have a twin" in text and "3 give the same accuracies" in text
    assert "1 start from another round-0 accuracy than their twin (by up to 0.40 points)" in text
    assert "5.0 min of replay time in all" in text
    same = pick_analysis.page(summary, {**check, "identical": 4, "worst": 0.0,
                                        "start_differs": 0}, "cmd", 60.0)
    assert "another round-0" not in same
    assert "| sage | 90.00 | 80.0 | 30.0 | 60.0 |" in same
