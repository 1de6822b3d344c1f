"""``h = f ∘ phi`` plus the adversary ``d``, assembled from the configuration."""
from __future__ import annotations

import torch
from torch import nn

from components.models.backbones import build_backbone
from components.models.heads import (Bottleneck, CosineClassifier, LinearClassifier,
                                     MLPDiscriminator)


class Network(nn.Module):
    def __init__(self, backbone: nn.Module, bottleneck: nn.Module, classifier: nn.Module,
                 discriminator: nn.Module | None):
        super().__init__()
        self.backbone, self.bottleneck = backbone, bottleneck
        self.classifier, self.discriminator = classifier, discriminator

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """z = phi(x)."""
        return self.bottleneck(self.backbone(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


def build_network(cfg, num_classes: int) -> Network:
    """From a ``components.config.Config``; the discriminator matches ``train.adversarial``."""
    backbone = build_backbone(cfg.model.backbone, channels=cfg.data.channels,
                              weights=cfg.model.weights)
    m = cfg.model.bottleneck_dim
    classifier = (CosineClassifier(m, num_classes, cfg.model.temperature)
                  if cfg.classifier_kind == "cosine" else LinearClassifier(m, num_classes))
    outputs = {"none": 0, "dann": 1, "tsf": num_classes}[cfg.train.adversarial]
    disc = MLPDiscriminator(m, cfg.model.discriminator_hidden, outputs) if outputs else None
    return Network(backbone, Bottleneck(backbone.out_dim, m), classifier, disc)
