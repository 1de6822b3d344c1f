"""Uncertainty baselines: the top-b of one score per sample."""
from __future__ import annotations

from components.query.base import PoolOutputs, entropy_of, register, top


@register("entropy")
def entropy_query(pool: PoolOutputs, budget, seed, *, chunk, **_):
    """Max prediction entropy ``H(ŷ)``."""
    p = pool.probabilities
    return top(entropy_of(p), budget)


@register("confidence")
def confidence_query(pool: PoolOutputs, budget, seed, *, chunk, **_):
    """Least confidence: min ``max_c ŷ_c`` (score ``1 - max_c ŷ_c``)."""
    p = pool.probabilities
    return top(1.0 - p.max(1).values, budget)
