"""benchmarks/picks_from_runs.py: the figures on what each arm picked, from logged picks."""
from __future__ import annotations

import pytest

from benchmarks.picks_from_runs import balance, describe, markdown


def pick(round, sample, label, guess, confidence=0.5):
    return [round, sample, label, guess, confidence]


def test_picks_are_described_per_arm_against_clue_and_sage_with_labels_against_sage():
    sage = [pick(1, "a", "0", "0", 0.9), pick(1, "b", "1", "0", 0.5),
            pick(2, "c", "2", "1", 0.4), pick(2, "d", "3", "3", 0.8)]
    labelled = sage[:2] + [pick(2, "e", "4", "0", 0.3), pick(2, "d", "3", "3", 0.8)]
    clue = [pick(1, "a", "0", "0", 0.9), pick(1, "x", "1", "1", 0.7),
            pick(2, "c", "2", "2", 0.6), pick(2, "y", "1", "1", 0.9)]
    picks = {f"s→t|b=2|{arm}|0": {"weights": "w0", "rows": rows}
             for arm, rows in (("sage", sage), ("sage-label", labelled), ("clue", clue))}
    table = describe(picks)["s→t, b=2"]
    assert table["sage"]["wrong"] == pytest.approx(50.0)          # b and c guessed wrong
    assert table["sage"]["confidence"] == pytest.approx(65.0)
    assert table["sage"]["shared_with_clue"] == pytest.approx(50.0)   # a and c
    assert "shared_with_clue" not in table["clue"]
    assert table["clue"]["balance"] == pytest.approx(balance(["0", "1", "2", "1"], 5))
    pair = table["sage vs sage-label"]
    assert pair["first_round_apart"] == [2] and pair["shared"] == pytest.approx(75.0)
    page = "\n".join(markdown({"s→t, b=2": table}, "past-clue", "abc"))
    assert "picks first differ in round 2 on each seed; 75 % of their picks are the same" in page
    assert "| sage | 1 | 50 | 65 |" in page


def test_class_balance_is_one_when_every_class_is_picked_equally_often():
    assert balance(["a", "b", "c"], 3) == pytest.approx(1.0)
    assert balance(["a", "a", "b"], 3) < balance(["a", "b", "c"], 3)


def test_runs_that_adapted_other_round0_weights_are_not_compared():
    rows = [pick(1, "a", "0", "1"), pick(1, "b", "1", "1")]
    picks = {"s→t|b=2|sage|0": {"weights": "w0", "rows": rows},
             "s→t|b=2|clue|0": {"weights": "w1", "rows": rows},
             "s→t|b=2|sage-label|0": {"weights": "w2", "rows": rows}}
    table = describe(picks)["s→t, b=2"]
    assert "shared_with_clue" not in table["sage"] and "sage vs sage-label" not in table
