"""AADA (Su et al. 2020): ``s(x) = H(ŷ) · (1 - d_src(z)) / d_src(z)``, top-b.

Here ``d`` outputs 1 on target (METHOD.md), so ``d_src = 1 - σ(a)`` and the importance
weight ``(1 - d_src)/d_src = σ(a)/(1 - σ(a)) = exp(a)``: computed from the logit, stably.
"""
from __future__ import annotations

import torch

from components.query.base import PoolOutputs, entropy_of, register, top


def aada_scores(probs: torch.Tensor, domain_logits: torch.Tensor) -> torch.Tensor:
    return entropy_of(probs) * torch.exp(domain_logits.reshape(-1))


@register("aada", requires="domain")
def aada_query(pool: PoolOutputs, budget, seed, *, chunk, **_):
    disc = pool.discriminator
    if disc is None or getattr(disc, "outputs", 0) != 1:
        raise ValueError("AADA needs the DANN domain discriminator: set train.adversarial: dann")
    with torch.no_grad():
        a = disc(pool.features)
    return top(aada_scores(pool.probabilities, a), budget)
