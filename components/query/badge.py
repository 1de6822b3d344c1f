"""BADGE (Ash et al. 2020): last-layer gradient embedding at the predicted label + k-means++.

The embedding is ``e(x) = (p - onehot(ŷ)) ⊗ z`` (C·m numbers), the gradient of the loss at ŷ
with respect to the last layer's weights, so ``z`` is what that layer sees
(``PoolOutputs.last_layer_inputs``): the feature itself for the linear classifier, but
``φ(x) / ||φ(x)|| / T`` for the cosine classifier of Ω_MME. Its distances factorise,
``||e_i - e_j||² = |g_i|²|z_i|² + |g_j|²|z_j|² - 2 (g_i·g_j)(z_i·z_j)`` with ``g = p - onehot``,
so they are computed from the two factors without building the C·m embedding.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from components.query.base import PoolOutputs, register
from components.query.diversity import kmeanspp


def gradient_factors(p: torch.Tensor, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    g = p - F.one_hot(p.argmax(1), p.shape[1]).to(p.dtype)
    return g, z


def factorised_distance(g: torch.Tensor, z: torch.Tensor):
    sq = (g * g).sum(1) * (z * z).sum(1)

    def distance_to(j: int) -> torch.Tensor:
        return (sq + sq[j] - 2 * (g @ g[j]) * (z @ z[j])).clamp_min(0)

    return distance_to, sq


@register("badge")
def badge_query(pool: PoolOutputs, budget, seed, *, chunk, **_):
    z, p = pool.last_layer_inputs, pool.probabilities
    g, z = gradient_factors(p.double(), z.double())
    distance_to, sq = factorised_distance(g, z)
    picks = kmeanspp(distance_to, len(z), budget, first=int(torch.argmax(sq)), seed=seed)
    return picks, sq[picks].sqrt().tolist()
