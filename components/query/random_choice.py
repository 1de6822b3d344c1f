"""Random sampling, seeded."""
from __future__ import annotations

import numpy as np

from components.query.base import PoolOutputs, register


@register("random")
def random_query(pool: PoolOutputs, budget, seed, *, chunk, **_):
    picks = np.random.default_rng(seed).choice(len(pool), size=budget, replace=False)
    return picks.tolist(), [0.0] * budget
