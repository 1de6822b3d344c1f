"""LAS (components/query/las.py) on a case computed by hand."""
from __future__ import annotations

import math

import pytest
import torch

from components.query import select
from components.query.base import PoolOutputs
from components.query.las import local_inconsistency

# three samples: cos(z0, z1) = cos(z1, z2) = 1/√2, cos(z0, z2) = 0, so with k = 2 the weights
# are (1, 0) for z0 and z2 (their second neighbour is orthogonal) and (1/2, 1/2) for z1
Z = torch.tensor([[1.0, 0.0], [1.0, 1.0], [0.0, 1.0]])
P = torch.tensor([[1.0, 0.0], [0.8, 0.2], [0.0, 1.0]])


def test_the_local_inconsistency_and_its_propagation_match_the_hand_computation():
    # q0 = -(p0·p1) = -0.8; q1 = -(½ p1·p0 + ½ p1·p2) = -0.5; q2 = -(p2·p1) = -0.2
    q = local_inconsistency(Z, P, neighbours=2, propagation_steps=0, propagation_weight=1.0)
    torch.testing.assert_close(q, torch.tensor([-0.8, -0.5, -0.2]))
    # one pass, γ = 0.5, all at once: q0 - 0.25, q1 + ½(½(-0.8) + ½(-0.2)), q2 - 0.25
    q = local_inconsistency(Z, P, neighbours=2, propagation_steps=1, propagation_weight=0.5)
    torch.testing.assert_close(q, torch.tensor([-1.05, -0.75, -0.45]))
    # in chunks of one row: the same
    q1 = local_inconsistency(Z, P, neighbours=2, propagation_steps=1, propagation_weight=0.5,
                             chunk=1)
    torch.testing.assert_close(q1, q)


def test_las_queries_the_most_inconsistent_then_spreads_the_picks():
    pool = PoolOutputs(["a", "b", "c"], Z, P)
    options = {"neighbours": 2, "oversample": 0, "propagation_steps": 1,
               "propagation_weight": 0.5}
    ids, scores = select("las", pool, 1, seed=0, options=options)
    assert ids == ["c"] and scores == pytest.approx([-0.45])
    # two clusters far apart, each with one inconsistent sample: one pick in each
    g = torch.Generator().manual_seed(0)
    z = torch.cat([torch.tensor([1.0, 0.0]) + 0.01 * torch.randn(10, 2, generator=g),
                   torch.tensor([0.0, 1.0]) + 0.01 * torch.randn(10, 2, generator=g)])
    p = torch.full((20, 2), 0.0)
    p[:, 0] = 1.0
    p[3], p[15] = torch.tensor([0.0, 1.0]), torch.tensor([0.0, 1.0])  # disagree with neighbours
    ids, _ = select("las", PoolOutputs([str(i) for i in range(20)], z, p), 2, seed=0,
                    options={**options, "oversample": 1, "propagation_steps": 0})
    assert sorted(ids, key=int) == ["3", "15"]
    assert math.isfinite(sum(_))
