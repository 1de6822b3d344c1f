"""CLUE (Prabhu et al. 2021): entropy-weighted k-means on the representations.

Uncertain regions pull the centroids; the sample nearest to each centroid is queried.
"""
from __future__ import annotations

from components.query.base import entropy_of, pool_outputs, register
from components.query.clusters import nearest_to_centroids


@register("clue")
def clue_query(model, pool, budget, seed, *, device, chunk, **_):
    z, p = pool_outputs(model, pool, device)
    h = entropy_of(p).cpu().double().numpy()
    picks = nearest_to_centroids(z.cpu().double().numpy(), budget, seed, weights=h + 1e-8)
    return picks, h[picks].tolist()
