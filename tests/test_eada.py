"""EADA's free-energy selection (components/query/eada.py) on a case computed by hand."""
from __future__ import annotations

import math

import pytest
import torch

from components.query import select
from components.query.base import PoolOutputs
from components.query.eada import free_energy, min_versus_second_min

LOGITS = torch.tensor([[2.0, 0.0, 0.0],    # F = -log(e² + 2),        MvSM = -2
                       [0.0, 0.0, 0.0],    # F = -log 3,              MvSM = 0
                       [1.0, 0.8, -5.0],   # F = -log(e + e^.8 + e^-5), MvSM = -0.2
                       [3.0, 3.0, 0.0]])   # F = -log(2e³ + 1),        MvSM = 0


def pool() -> PoolOutputs:
    return PoolOutputs.from_logits(["a", "b", "c", "d"], torch.zeros(4, 2), LOGITS)


def test_free_energy_and_the_margin_match_the_hand_computation():
    e = math.e
    want = [-math.log(e ** 2 + 2), -math.log(3), -math.log(e + e ** 0.8 + e ** -5),
            -math.log(2 * e ** 3 + 1)]
    assert free_energy(LOGITS, 1.0).tolist() == pytest.approx(want, abs=1e-6)
    assert free_energy(LOGITS[:1], 2.0).item() == pytest.approx(-2 * math.log(e + 2))  # β = 2
    assert min_versus_second_min(LOGITS).tolist() == pytest.approx([-2, 0, -0.2, 0])


def test_eada_keeps_the_unfamiliar_half_then_takes_the_smallest_margins():
    # the half with the highest free energy: b and c (d's margin is 0 too, but it is familiar)
    ids, scores = select("eada", pool(), 2, seed=0, options={"first_fraction": 0.5})
    assert ids == ["b", "c"] and scores == pytest.approx([0.0, -0.2])
    # without the first stage, the margins alone: b and d (tied at 0, in pool order)
    ids, _ = select("eada", pool(), 2, seed=0, options={"first_fraction": 1.0})
    assert ids == ["b", "d"]


def test_eada_needs_the_logits():
    bare = PoolOutputs(["a"], torch.zeros(1, 2), torch.ones(1, 3) / 3)
    with pytest.raises(ValueError, match="logits"):
        select("eada", bare, 1, seed=0)
