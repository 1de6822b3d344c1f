"""The losses of the paper, one small function each, registered by name.

Discriminator convention (METHOD.md): ``d`` outputs 1 on **target**, 0 on source; ``a`` are
its logits, so ``log d = -softplus(-a)`` and ``log(1-d) = -softplus(a)`` (no ``log(sigmoid)``).
The representation maximises the adversarial loss through a gradient reversal layer.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

from components.models.grl import reverse_gradient

ADVERSARIAL: dict[str, Callable] = {}
REGULARISERS: dict[str, Callable] = {}


def _register(table: dict, name: str):
    def deco(fn):
        table[name] = fn
        return fn
    return deco


# ---------------------------------------------------------------- adversarial losses
@_register(ADVERSARIAL, "dann")
def dann_loss(a_source: torch.Tensor, a_target: torch.Tensor, y_source: torch.Tensor,
              p_target: torch.Tensor) -> torch.Tensor:
    r"""Eq. 1: :math:`-(E_S[\log(1-d(z))] + E_T[\log d(z)])` with a scalar ``d`` (logits (N, 1))."""
    return F.softplus(a_source).mean() + F.softplus(-a_target).mean()


@_register(ADVERSARIAL, "tsf")
def tsf_loss(a_source: torch.Tensor, a_target: torch.Tensor, y_source: torch.Tensor,
             p_target: torch.Tensor) -> torch.Tensor:
    r"""Eq. 2, soft-class conditioning:
    :math:`-(E_S[y\cdot\log(1-d(z))] + E_T[\hat y\cdot\log d(z)])`, ``d: Z → [0,1]^C``.

    ``y_source`` is one-hot (N_S, C); ``p_target`` = h(x) on target, detached (choice in METHOD.md).
    """
    return ((y_source * F.softplus(a_source)).sum(1).mean()
            + (p_target.detach() * F.softplus(-a_target)).sum(1).mean())


# ---------------------------------------------------------------- Ω regularisers
@dataclass
class Outputs:
    """What one forward pass of eq. 10 produces (labelled target may be empty)."""

    logits_source: torch.Tensor
    y_source: torch.Tensor
    logits_labelled: torch.Tensor
    y_labelled: torch.Tensor
    z_unlabelled: torch.Tensor
    target_share: float | None = None  # |L_T| / (|L_S| + |L_T|): the sets' sizes, not the batch's


def _ce(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits.float(), y) if len(y) else logits.sum() * 0.0


@_register(REGULARISERS, "source")
def source_ce(out: Outputs, classifier, lambda_entropy: float) -> torch.Tensor:
    """Source cross-entropy only (UDA pretraining): :math:`E_S[-y\\cdot\\log h(x)]`."""
    return _ce(out.logits_source, out.y_source)


@_register(REGULARISERS, "union")
def omega_union(out: Outputs, classifier, lambda_entropy: float) -> torch.Tensor:
    """Ω_{S∪T} (eq. 7): one cross-entropy mean over the pooled ``L_S ∪ L_T`` samples.

    ``B_S`` and ``B_T^l`` are drawn separately, so their concatenation is not a sample of the
    union: with 64 + 64 samples it would give target labels half the weight at any budget.
    Weighting each batch mean by its set's share of the union, ``|L_T| / (|L_S| + |L_T|)``
    (``out.target_share``), estimates the pooled mean without bias. Without a share, the
    batch itself is taken as the pool (its own proportion: the mean over the concatenation).
    """
    n_s, n_l = len(out.y_source), len(out.y_labelled)
    share = n_l / (n_s + n_l) if out.target_share is None else out.target_share
    return ((1.0 - share) * _ce(out.logits_source, out.y_source)
            + share * _ce(out.logits_labelled, out.y_labelled))


@_register(REGULARISERS, "sum")
def omega_sum(out: Outputs, classifier, lambda_entropy: float) -> torch.Tensor:
    """Ω_{S+T} (eq. 8): ``CE(L_S) + CE(L_T)``, two means, so few target labels weigh a lot."""
    return _ce(out.logits_source, out.y_source) + _ce(out.logits_labelled, out.y_labelled)


def entropy(logits: torch.Tensor) -> torch.Tensor:
    """Mean Shannon entropy of softmax(logits)."""
    logp = F.log_softmax(logits.float(), dim=1)
    return -(logp.exp() * logp).sum(1).mean()


@_register(REGULARISERS, "mme")
def omega_mme(out: Outputs, classifier, lambda_entropy: float) -> torch.Tensor:
    """Ω_MME (eq. 9): Ω_{S+T} with minimax entropy on U_T (cosine classifier).

    ``f`` minimises ``Ω_{S+T} - λ_H H`` and ``phi`` minimises ``Ω_{S+T} + λ_H H``: one gradient
    reversal between ``phi`` and ``f`` on the entropy term gives both.
    """
    h = entropy(classifier(reverse_gradient(out.z_unlabelled)))
    return omega_sum(out, classifier, lambda_entropy) - lambda_entropy * h
