"""Diversity helpers: Algorithm 1's greedy farthest-first and D² (k-means++) seeding.

Both only need ``distance_to(j)``: the squared distance of every pool sample to sample ``j``.
Each pick costs one pass over the pool; a per-sample "distance to the chosen set" is kept,
so no N×N matrix is ever built.
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch


def embedding_distance(emb: torch.Tensor, *, chunk: int = 4096) -> Callable[[int], torch.Tensor]:
    """``distance_to`` for explicit embeddings (N, D), chunked: ``|x|² - 2x·a + |a|²``.

    Sums are at least float32 whatever the storage (float16 is read a chunk at a time)."""
    acc = torch.promote_types(emb.dtype, torch.float32)
    sq = torch.empty(len(emb), device=emb.device, dtype=acc)
    for start in range(0, len(emb), chunk):  # chunked: emb * emb would double peak memory
        block = emb[start:start + chunk].to(acc)
        sq[start:start + chunk] = (block * block).sum(1)

    def distance_to(j: int) -> torch.Tensor:
        anchor = emb[j].to(acc)
        out = torch.empty(len(emb), device=emb.device, dtype=acc)
        for start in range(0, len(emb), chunk):
            block = emb[start:start + chunk].to(acc)
            out[start:start + chunk] = sq[start:start + chunk] - 2 * (block @ anchor) + sq[j]
        return out.clamp_min_(0)

    return distance_to


def farthest_first(distance_to: Callable[[int], torch.Tensor], n: int, budget: int, *,
                   first: int) -> list[int]:
    """Algorithm 1: start at ``first``; then repeatedly add argmax_x min_{a∈A} ||x - a||."""
    chosen = [first]
    nearest = distance_to(first).clone()
    nearest[first] = -1.0
    while len(chosen) < budget:
        pick = int(torch.argmax(nearest))
        chosen.append(pick)
        torch.minimum(nearest, distance_to(pick), out=nearest)
        nearest[torch.tensor(chosen, device=nearest.device)] = -1.0
    return chosen


def kmeanspp(distance_to: Callable[[int], torch.Tensor], n: int, budget: int, *, first: int,
             seed: int) -> list[int]:
    """D² sampling (k-means++ seeding, as BADGE): P(x) ∝ min_{a∈A} ||x - a||², seeded."""
    rng = np.random.default_rng(seed)
    chosen = [first]
    nearest = distance_to(first).double().clone()
    while len(chosen) < budget:
        weights = nearest.clamp_min(0).cpu().numpy()
        weights[chosen] = 0.0
        total = weights.sum()
        if total <= 0:  # every remaining sample coincides with a chosen one: take any unpicked
            pick = int(next(i for i in range(n) if i not in set(chosen)))
        else:
            pick = int(rng.choice(n, p=weights / total))
        chosen.append(pick)
        torch.minimum(nearest, distance_to(pick).double(), out=nearest)
    return chosen
