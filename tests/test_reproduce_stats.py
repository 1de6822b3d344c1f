"""The statistics behind docs/results.md: paired intervals, areas, verdicts."""
from __future__ import annotations

import importlib.util
import math

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


@pytest.mark.parametrize("diff, better, expected", [
    ((2.0, 0.5, 3.5), True, "holds"),
    ((-2.0, -3.5, -0.5), True, "does not hold"),
    ((0.5, -1.0, 2.0), True, "inconclusive (the 95% CI includes 0)"),
    ((-2.0, -3.5, -0.5), False, "holds"),
    ((1.0, math.nan, math.nan), True, "one seed only"),
])
def test_verdicts(diff, better, expected):
    assert reproduce.verdict(diff, better) == expected


def test_every_arm_names_a_registered_strategy():
    from components.config import load_config

    for name, overrides in {**reproduce.ARMS, **reproduce.LINES}.items():
        extra = {k: v for k, v in overrides.items() if v != "pool"}
        load_config(REPO / "params.yaml", extra)   # raises on an impossible combination
