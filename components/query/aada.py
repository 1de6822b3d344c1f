"""AADA (Su et al. 2020): ``s(x) = H(ŷ) · (1 - d_src(z)) / d_src(z)``, top-b.

Here ``d`` outputs 1 on target (METHOD.md), so ``d_src = 1 - σ(a)`` and the importance
weight ``(1 - d_src)/d_src = σ(a)/(1 - σ(a)) = exp(a)``, with ``a`` the domain logit.

The score is computed, ranked and returned (logged as each pick's score) in log space:
``log s(x) = log H(ŷ) + a``. It orders the pool as ``s`` does wherever ``s`` is finite, and
stays finite where ``exp(a)`` overflows (a ≳ 88 in float32, ≳ 709 in float64), which would
otherwise tie every such sample at ``inf``. Sums are taken in float64, so large logits
(``a = 1000``) keep entropies apart.

A sample with ``H(ŷ) = 0`` (a one-hot prediction) has ``s = 0``: its log-score is ``-inf``
whatever ``a`` is (``±inf`` included: never nan), so it ranks after every sample with
``H > 0``. Ties are broken by the larger domain logit (the more target-like sample), then by
position in the pool, so the order is the same on every device.
"""
from __future__ import annotations

import torch

from components.query.base import PoolOutputs, entropy_of, register


def aada_scores(probs: torch.Tensor, domain_logits: torch.Tensor) -> torch.Tensor:
    """``log s(x) = log H(ŷ) + a`` (float64 at least); ``-inf`` where ``H = 0``."""
    dtype = torch.promote_types(probs.dtype, torch.float64)
    h = entropy_of(probs).to(dtype)
    a = domain_logits.reshape(-1).to(dtype)
    positive = h > 0
    log_h = torch.log(torch.where(positive, h, torch.ones_like(h)))
    return torch.where(positive, log_h + a, torch.full_like(h, float("-inf")))


def rank(scores: torch.Tensor, tie_break: torch.Tensor,
         budget: int) -> tuple[list[int], list[float]]:
    """The ``budget`` largest ``scores``; equal scores by the larger ``tie_break``, then by
    position (two stable sorts: the last key sorted first)."""
    order = torch.sort(tie_break, descending=True, stable=True).indices
    order = order[torch.sort(scores[order], descending=True, stable=True).indices][:budget]
    # a pick's score travels as JSON (Label Studio's task data, the run's state): -inf → the
    # lowest finite number, still below every sample with H > 0
    return order.tolist(), scores[order].nan_to_num(neginf=torch.finfo(scores.dtype).min).tolist()


@register("aada", requires="domain")
def aada_query(pool: PoolOutputs, budget, seed, *, chunk, **_):
    disc = pool.discriminator
    if disc is None or getattr(disc, "outputs", 0) != 1:
        raise ValueError("AADA needs the DANN domain discriminator: set train.adversarial: dann")
    with torch.no_grad():
        a = disc(pool.features).reshape(-1)
    return rank(aada_scores(pool.probabilities, a), a.to(torch.float64), budget)
