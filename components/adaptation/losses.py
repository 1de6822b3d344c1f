"""The losses of the paper, registered by name: each adversarial loss is one small class (a
unit), each Ω regulariser one small function.

Discriminator convention (METHOD.md): ``d`` outputs 1 on **target**, 0 on source; ``a`` are
its logits, so ``log d = -softplus(-a)`` and ``log(1-d) = -softplus(a)`` (no ``log(sigmoid)``).
The representation maximises the adversarial loss through a gradient reversal layer.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

from components.adaptation.distributed import scale_grad
from components.models.grl import reverse_gradient
from components.models.heads import discriminator_outputs

REGULARISERS: dict[str, Callable] = {}


def _register(table: dict, name: str):
    def deco(fn):
        table[name] = fn
        return fn
    return deco


# ---------------------------------------------------------------- adversarial losses
class AdversarialLoss:
    r"""One adversarial loss of eq. 10, whole: what its discriminator ``d`` outputs, what it
    sees, how each sample weighs, and the loss

    .. math:: L_{adv} = \mathbb{E}_S[w_S \cdot \mathrm{softplus}(a)]
                        + \mathbb{E}_T[w_T \cdot \mathrm{softplus}(-a)],
              \quad a = d(\mathrm{GRL}_r(z))

    ``d`` descends it at full rate; the features ascend it through the gradient reversal,
    scaled by ``reversal`` (DANN's ramp from 0 to 1 acts on the features' side only).

    A new loss is a subclass registered with :func:`adversarial_loss` that defines
    :meth:`weights` and :meth:`loss` (and may redefine
    :meth:`discriminator_input`). The trainer and ``build_network`` ask the registry; the
    settings read the registration without importing torch (``config.declared_adversaries``).

    Inputs (``__call__``):
        - discriminator: ``z → a``, logits of ``outputs(C)`` sigmoids
        - z_source (N_S, m), z_target (N_T, m): features of ``B_S`` and ``B_T^u``
        - y_source (N_S,): class indices; logits_target (N_T, C): the classifier's, on ``B_T^u``
        - reversal: the gradient reversal's coefficient (a float, or a 0-d tensor when compiled)
        - scales: (source, target) gradient scales of a process's share (``distributed.Shard``)

    Returns a 0-d float32 tensor.

    Example::

        unit = ADVERSARIAL["tsf"]
        d = MLPDiscriminator(m, 128, unit.outputs(num_classes))
        loss = omega + lambda_adv * unit(d, z[:ns], z[ns + nl:], ys, logits[ns + nl:])
    """

    name: str = ""
    discriminator: str = ""  # what d tells apart: "domain" or "class" (strategies require one)

    def outputs(self, num_classes: int) -> int:
        """How many sigmoids ``d`` has for ``num_classes`` classes (set by its kind)."""
        return discriminator_outputs(self.discriminator, num_classes)

    def discriminator_input(self, z_source: torch.Tensor, z_target: torch.Tensor,
                            reversal: float | torch.Tensor) -> torch.Tensor:
        """Source rows, then target rows, through the gradient reversal layer."""
        return reverse_gradient(torch.cat([z_source, z_target]), reversal)

    def weights(self, y_source: torch.Tensor, logits_target: torch.Tensor,
                y_target: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``(w_S, w_T)``: each sample's weight on each of ``d``'s outputs (constants).
        ``y_target``: target rows' known labels (-1: unknown), or None."""
        raise NotImplementedError

    def loss(self, a_source: torch.Tensor, a_target: torch.Tensor, w_source: torch.Tensor,
             w_target: torch.Tensor) -> torch.Tensor:
        """The loss from ``d``'s logits on source and target and the weights."""
        raise NotImplementedError

    def __call__(self, discriminator, z_source: torch.Tensor, z_target: torch.Tensor,
                 y_source: torch.Tensor, logits_target: torch.Tensor, *,
                 reversal: float | torch.Tensor = 1.0,
                 scales: tuple[float, float] = (1.0, 1.0),
                 y_target: torch.Tensor | None = None) -> torch.Tensor:
        ns, (cs, ct) = len(y_source), scales
        a = discriminator(self.discriminator_input(z_source, z_target, reversal)).float()
        a = torch.cat([scale_grad(a[:ns], cs), scale_grad(a[ns:], ct)])
        w_source, w_target = self.weights(y_source, logits_target, y_target)
        return self.loss(a[:ns], a[ns:], w_source, w_target)


ADVERSARIAL: dict[str, AdversarialLoss] = {}


def adversarial_loss(name: str, *, discriminator: str):
    """Register an :class:`AdversarialLoss` subclass as ``train.adversarial: name``;
    ``discriminator`` ("domain" or "class") is what a query strategy's ``requires`` names."""
    if name == "none":
        raise ValueError("train.adversarial: none means no adversary; name the loss otherwise")

    def deco(cls):
        cls.name, cls.discriminator = name, discriminator
        ADVERSARIAL[name] = cls()
        return cls
    return deco


@adversarial_loss("dann", discriminator="domain")
class DANN(AdversarialLoss):
    r"""Eq. 1: :math:`-(E_S[\log(1-d(z))] + E_T[\log d(z)])` with a scalar ``d`` (logits (N, 1))
    telling the domains apart."""

    def weights(self, y_source, logits_target, y_target=None):
        """Every sample weighs 1 (eq. 2 with one output and these weights is eq. 1); a known
        label changes nothing."""
        return (torch.ones(len(y_source), 1, device=y_source.device),
                torch.ones(len(logits_target), 1, device=logits_target.device))

    def loss(self, a_source, a_target, w_source, w_target):
        """The weights are all 1: plain means."""
        return F.softplus(a_source).mean() + F.softplus(-a_target).mean()


@adversarial_loss("tsf", discriminator="class")
class TSF(AdversarialLoss):
    r"""Eq. 2, soft-class conditioning:
    :math:`-(E_S[y\cdot\log(1-d(z))] + E_T[\hat y\cdot\log d(z)])`, ``d: Z → [0,1]^C``."""

    def weights(self, y_source, logits_target, y_target=None):
        """Source: the one-hot labels (N_S, C); target: ``ŷ = h(x)``, detached (choice in
        METHOD.md: the classifier gets no gradient from the adversary), or the one-hot label
        where ``y_target`` knows it (train.labelled_in_adversary: label)."""
        classes = logits_target.shape[1]
        predicted = F.softmax(logits_target.float(), 1).detach()
        if y_target is not None:
            known = F.one_hot(y_target.clamp_min(0), classes).float()
            predicted = torch.where((y_target >= 0)[:, None], known, predicted)
        return F.one_hot(y_source, classes).float(), predicted

    def loss(self, a_source, a_target, w_source, w_target):
        return ((w_source * F.softplus(a_source)).sum(1).mean()
                + (w_target * F.softplus(-a_target)).sum(1).mean())


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
