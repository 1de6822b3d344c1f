"""Uncertainty baselines: the top-b of one score per sample."""
from __future__ import annotations

from components.query.base import entropy_of, pool_outputs, register, top


@register("entropy")
def entropy_query(model, pool, budget, seed, *, device, chunk, **_):
    """Max prediction entropy ``H(ŷ)``."""
    _, p = pool_outputs(model, pool, device)
    return top(entropy_of(p), budget)


@register("confidence")
def confidence_query(model, pool, budget, seed, *, device, chunk, **_):
    """Least confidence: min ``max_c ŷ_c`` (score ``1 - max_c ŷ_c``)."""
    _, p = pool_outputs(model, pool, device)
    return top(1.0 - p.max(1).values, budget)
