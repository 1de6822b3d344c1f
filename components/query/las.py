"""LAS, local context-aware sampling (LADA: Sun et al., ICCV 2023).

A sample whose prediction disagrees with its neighbours' in feature space sits where the
model's decision is locally inconsistent, which a label fixes for the whole neighbourhood:

    q(x) = -Σ_k w_k · (p(x) · p(x_k)),   w_k = s_k / Σ_j s_j,   s_k = cos(z, z_k)

over the k nearest neighbours x_k (cosine similarity of the features), then spread along the
graph: ``q ← q + γ · Σ_k w_k q(x_k)``, ``propagation_steps`` times. The ``budget · (1 +
oversample)`` highest-scoring samples are clustered (k-means, ``budget`` centroids, on the
normalised features) and the sample nearest each centroid is queried, so the picks spread out.

Read against the authors' ``active/LASsampler.py`` (tsun/LADA). Deviations: a sample is
never its own neighbour (they drop the first of k + 1 neighbours, which is another sample when
two features coincide); the neighbours are found ``chunk`` rows at a time (they build the N × N
similarity); k-means is seeded with 3 restarts and a centroid whose nearest sample is taken
gets its nearest free one (tightest clusters first, as CLUE here).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from components.query.base import PoolOutputs, register
from components.query.clusters import nearest_to_centroids


def neighbourhood(features: torch.Tensor, k: int, chunk: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Each row's k nearest other rows by cosine similarity, and their weights ``s / Σ s``."""
    z = F.normalize(features.float(), dim=1)
    k = min(k, len(z) - 1)
    index, weight = [], []
    for start in range(0, len(z), chunk):
        sim = z[start:start + chunk] @ z.T
        rows = torch.arange(len(sim), device=z.device)
        sim[rows, start + rows] = float("-inf")   # never its own neighbour
        s, i = sim.topk(k, dim=1)
        index.append(i)
        weight.append(s / s.sum(1, keepdim=True))
    return torch.cat(index), torch.cat(weight)


def local_inconsistency(features: torch.Tensor, probabilities: torch.Tensor, *, neighbours: int,
                        propagation_steps: int, propagation_weight: float,
                        chunk: int = 4096) -> torch.Tensor:
    """q(x) of the module's docstring, propagated: higher, more inconsistent."""
    index, weight = neighbourhood(features, neighbours, chunk)
    p = probabilities.float()
    q = -(weight * (p[index] * p[:, None]).sum(-1)).sum(-1)
    for _ in range(propagation_steps):
        q = q + propagation_weight * (weight * q[index]).sum(-1)
    return q


@register("las")
def las_query(pool: PoolOutputs, budget, seed, *, chunk, neighbours=10, oversample=10,
              propagation_steps=1, propagation_weight=1.0, **_):
    if len(pool) < 2:
        return list(range(budget)), [0.0] * budget
    q = local_inconsistency(pool.features, pool.probabilities, neighbours=neighbours,
                            propagation_steps=propagation_steps,
                            propagation_weight=propagation_weight, chunk=chunk)
    candidates = torch.argsort(q, descending=True)[:budget * (1 + oversample)]
    z = F.normalize(pool.features[candidates].float(), dim=1).cpu().double().numpy()
    picks = [int(candidates[i]) for i in nearest_to_centroids(z, budget, seed)]
    return picks, q[picks].tolist()
