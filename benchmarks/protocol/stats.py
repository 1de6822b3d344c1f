"""The statistics behind the page: paired differences over seeds, their 95 % t-intervals,
equivalence tests, areas under the curves, and the one rule every verdict is read by.

Paired over seeds because two arms on one seed share the split, the pretrained checkpoint and the
batch order: what differs between them is the arm. Intervals and tests come from scipy, not from
a hand-written t table.
"""
from __future__ import annotations

import math
import warnings
from typing import NamedTuple

import numpy as np
from scipy import stats

from benchmarks.protocol.arms import shares_round0

MARGIN = 1.0  # points of AUC: what "matches" allows (--margin)
LARGE_B = 50  # the protocol's large budget: where claims about large b are judged
KINDS = ("beats", "is worse than", "matches or beats")
# Each one-sided test's level: two of them at 2.5 % (TOST) reject exactly when the 95 %
# t-interval lies inside ±margin, the rule the page states.
ALPHA = 0.025


class Paired(NamedTuple):
    """Mean paired difference a − b over seeds with its 95 % t-interval [low, high], and the
    differences themselves (what the equivalence tests need)."""
    mean: float
    low: float
    high: float
    d: tuple[float, ...] = ()


def matrix(by_seed: dict[int, list[dict]], seeds=None) -> np.ndarray:
    """Accuracy (%) per seed (row) and round (column), for ``seeds`` (default: all, sorted)."""
    histories = [by_seed[s] for s in (sorted(by_seed) if seeds is None else seeds)]
    if not histories:  # no seed in common (or none from one start): an empty comparison
        return np.empty((0, 0))
    n = min(len(h) for h in histories)
    return np.array([[100 * h[i]["accuracy"] for i in range(n)] for h in histories])


def one_start(arms: dict, a: str, b: str, seed) -> bool:
    """False where ``a`` and ``b`` should share the seed's round-0 model but their runs record
    different weights (computed apart); runs from before the weights were recorded pass."""
    if not (shares_round0(a) and shares_round0(b)):
        return True
    wa, wb = (arms[x][seed][0].get("weights") for x in (a, b))
    return wa is None or wb is None or wa == wb


def common(arms: dict, a: str, b: str) -> tuple[np.ndarray, np.ndarray]:
    """``a`` and ``b`` on the seeds both have finished and started from the same round-0
    weights: the pairs of a paired comparison."""
    seeds = sorted(s for s in set(arms[a]) & set(arms[b]) if one_start(arms, a, b, s))
    return matrix(arms[a], seeds), matrix(arms[b], seeds)


def _quietly(test, *args, **kwargs):
    """``test`` without scipy's precision-loss warning: arms that give the same accuracy on every
    seed (constant differences) are a legitimate case, their interval is one point."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "Precision loss occurred", RuntimeWarning)
        return test(*args, **kwargs)


def paired(a: np.ndarray, b: np.ndarray) -> Paired:
    """Mean paired difference a - b over seeds, with its 95% confidence interval (scipy's paired
    t-test; no interval from a single seed)."""
    d = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
    if len(d) < 2:
        return Paired(float(d.mean()), math.nan, math.nan, tuple(d.tolist()))
    ci = _quietly(stats.ttest_rel, a, b).confidence_interval(0.95)
    return Paired(float(d.mean()), float(ci.low), float(ci.high), tuple(d.tolist()))


def one_sided(d, bound: float, alternative: str) -> float:
    """p-value of the paired t test that the mean difference is ``alternative`` ("greater" or
    "less") than ``bound``: small when the seeds show it is."""
    if len(d) < 2:
        return math.nan
    return float(_quietly(stats.ttest_1samp, np.asarray(d, dtype=float), bound,
                          alternative=alternative).pvalue)


def tost(d, margin: float) -> float:
    """Two one-sided tests: the p-value that the mean difference lies inside ±``margin``
    (equivalence), the larger of the tests against −margin and +margin (nan propagates)."""
    return float(np.max([one_sided(d, -margin, "greater"), one_sided(d, margin, "less")]))


def not_worse(diff: Paired, margin: float) -> bool:
    """A is not worse than B by ``margin`` or more (non-inferiority: the lower half of TOST)."""
    return one_sided(diff.d, -margin, "greater") < ALPHA


def equivalent(diff: Paired, margin: float) -> bool:
    """A and B are level within ±``margin`` (TOST at ``ALPHA`` per side)."""
    return tost(diff.d, margin) < ALPHA


def auc(acc: np.ndarray, labels: list[int]) -> np.ndarray:
    """Area under accuracy-vs-labels, normalised by the label range: a mean accuracy (%)."""
    return np.trapezoid(acc, labels, axis=-1) / (labels[-1] - labels[0])


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


def verdict(diff: Paired, kind: str = "beats", margin: float = MARGIN) -> str:
    """The rule of ``rule`` for one claim; ``diff``: ``paired`` of A and B. "Matches" is the
    non-inferiority test (``not_worse``), which holds exactly when the interval's lower end is
    above −margin."""
    mean, lo, hi = diff[:3]
    if math.isnan(lo):
        return "one seed only"
    if kind == "matches or beats":
        if lo > 0:
            return "holds (beats)"
        if not_worse(diff, margin):
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


def lead(diff: Paired, a: str, b: str, margin: float = MARGIN) -> str:
    """Who is ahead by the interval of ``a − b``, for a comparison that claims no direction:
    one side when the interval excludes 0, *level* when the equivalence test (TOST) puts it
    inside ±``margin``, else inconclusive."""
    mean, lo, hi = diff[:3]
    if math.isnan(lo):
        return "one seed only"
    if lo > 0 or hi < 0:
        return f"{a if lo > 0 else b} ahead"
    if equivalent(diff, margin):
        return f"level (within ±{margin:g})"
    return "inconclusive"


def fmt(d) -> str:
    """``mean [low, high]`` in signed points, as every table shows a difference."""
    return f"{d[0]:+.2f} [{d[1]:+.2f}, {d[2]:+.2f}]"


def round0_mismatches(arms: dict) -> list[str]:
    """Seeds on which arms that change only the query (so share one pretrained checkpoint per
    seed) start from different round-0 accuracies: their checkpoints were computed apart (another
    machine's native kernels or thread count), so those pairs are not from one start."""
    shared = [a for a in arms if shares_round0(a)]
    notes = []
    for seed in sorted({s for a in shared for s in arms[a]}):
        start = {a: (100 * arms[a][seed][0]["accuracy"], arms[a][seed][0].get("weights", ""))
                 for a in shared if seed in arms[a]}
        if len(set(start.values())) > 1:
            groups: dict[tuple, list[str]] = {}
            for arm, first in start.items():
                groups.setdefault(first, []).append(arm)
            notes.append(f"seed {seed}: " + ", ".join(
                f"{', '.join(g)} from {acc:.2f} %" + (f" (weights {w})" if w else "")
                for (acc, w), g in sorted(groups.items())))
    return notes
