"""EADA's free-energy selection (Xie et al., AAAI 2022).

With the classifier's logits f(x) as negative energies, E(x, c) = -f_c(x):

- free energy ``F(x) = -β log Σ_c exp(-E(x, c) / β)``: high on samples unlike what the model
  was trained on (the target's "unfamiliar" part);
- MvSM, the minimal minus the second-minimal energy, ``f_2(x) - f_1(x) ≤ 0`` (the two largest
  logits): near 0 where the model hesitates between two classes.

First the ``first_fraction`` of the pool with the highest free energy, then among those the
``budget`` with the highest MvSM (smallest margin).

Read against the authors' ``core/active/active.py`` (BIT-DA/EADA). Deviations: EADA trains its
model with an energy-based alignment loss and selects on its outputs; here it selects on the
project's trainer (selection only, issue 33). The first stage keeps a fraction of the current
unlabelled pool, not of the whole target set, and at least ``budget`` samples; ties in either
score are broken by position (a stable sort), where theirs follow Python's sort of floats.
"""
from __future__ import annotations

import math

import torch

from components.query.base import PoolOutputs, register


def free_energy(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    return -temperature * torch.logsumexp(logits.float() / temperature, dim=1)


def min_versus_second_min(logits: torch.Tensor) -> torch.Tensor:
    two = logits.float().topk(2, dim=1).values
    return two[:, 1] - two[:, 0]


@register("eada")
def eada_query(pool: PoolOutputs, budget, seed, *, chunk, first_fraction=0.5, temperature=1.0,
               **_):
    if pool.logits is None:
        raise ValueError("eada selects on the classifier's logits: build the pool's outputs "
                         "with PoolOutputs.from_logits")
    logits = pool.logits
    first = max(budget, math.ceil(first_fraction * len(logits)))
    kept = torch.sort(free_energy(logits, temperature), descending=True, stable=True).indices[:first]
    margin = min_versus_second_min(logits[kept])
    order = torch.sort(margin, descending=True, stable=True).indices[:budget]
    return kept[order].tolist(), margin[order].tolist()
