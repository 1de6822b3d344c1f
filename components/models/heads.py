"""Bottleneck, classifiers and discriminators on the representation z = phi(x) in R^m."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class Bottleneck(nn.Sequential):
    """Backbone features → z in R^m."""

    def __init__(self, in_dim: int, dim: int):
        super().__init__(nn.Linear(in_dim, dim), nn.BatchNorm1d(dim), nn.ReLU())


class LinearClassifier(nn.Linear):
    """Logits ``W z + b``."""

    def classifier_input(self, z: torch.Tensor) -> torch.Tensor:
        """What the (linear) last layer sees: ``z`` itself."""
        return z


class CosineClassifier(nn.Module):
    """Logits ``W z / ||z|| / T`` with unit-norm rows of W (MME, Saito et al. 2019)."""

    def __init__(self, dim: int, num_classes: int, temperature: float = 0.05):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(num_classes, dim) * 0.1)
        self.temperature = temperature

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return F.linear(F.normalize(z, dim=1), F.normalize(self.weight, dim=1)) / self.temperature

    def classifier_input(self, z: torch.Tensor) -> torch.Tensor:
        """What the last layer sees: ``z / ||z|| / T``, mapped by the unit-norm prototypes
        ``W / ||W||`` to the logits (a last-layer gradient embedding, BADGE's, is built on it)."""
        return F.normalize(z, dim=1) / self.temperature


def discriminator_outputs(kind: str | None, num_classes: int) -> int:
    """How many sigmoids ``d`` has: one telling the domains apart (``domain``: DANN, AADA),
    one per class (``class``: TSF, Sage), none without an adversary (``None``)."""
    return {None: 0, "domain": 1, "class": num_classes}[kind]


class MLPDiscriminator(nn.Sequential):
    """``z → logits`` of ``outputs`` sigmoids: 1 for DANN/AADA, C for the TSF class-level d.

    Kept a plain Linear/ReLU stack so Sage can differentiate it in closed form.
    """

    def __init__(self, dim: int, hidden: int, outputs: int):
        super().__init__(nn.Linear(dim, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                         nn.Linear(hidden, outputs))
        self.outputs = outputs
