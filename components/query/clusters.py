"""Clusters: the sample nearest to each of b k-means centroids of the representations."""
from __future__ import annotations

import numpy as np

from components.query.base import PoolOutputs, register


def nearest_to_centroids(features: np.ndarray, budget: int, seed: int,
                         weights: np.ndarray | None = None) -> list[int]:
    """k-means (scikit-learn) with ``budget`` centroids; one distinct sample per centroid."""
    from sklearn.cluster import KMeans

    km = KMeans(n_clusters=budget, random_state=seed, n_init=3).fit(features, sample_weight=weights)
    dist = km.transform(features)  # (N, b) distances to the centroids
    picks: list[int] = []
    for c in np.argsort(dist.min(0)):  # tightest clusters first
        for i in np.argsort(dist[:, c]):
            if int(i) not in picks:
                picks.append(int(i))
                break
    return picks


@register("clusters")
def clusters_query(pool: PoolOutputs, budget, seed, *, chunk, **_):
    picks = nearest_to_centroids(pool.features.cpu().double().numpy(), budget, seed)
    return picks, [0.0] * budget
