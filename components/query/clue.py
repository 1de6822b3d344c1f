"""CLUE (Prabhu et al. 2021): entropy-weighted k-means on the representations.

Uncertain regions pull the centroids; the sample nearest to each centroid is queried.
"""
from __future__ import annotations

from components.query.base import PoolOutputs, entropy_of, register
from components.query.clusters import nearest_to_centroids


@register("clue")
def clue_query(pool: PoolOutputs, budget, seed, *, chunk, **_):
    z, p = pool.features, pool.probabilities
    h = entropy_of(p).cpu().double().numpy()
    picks = nearest_to_centroids(z.cpu().double().numpy(), budget, seed, weights=h + 1e-8)
    return picks, h[picks].tolist()
