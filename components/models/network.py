"""``h = f ∘ phi`` plus the adversary ``d``, assembled from the configuration."""
from __future__ import annotations

import torch
from torch import nn

from components.config import declared_adversaries
from components.data.tensors import to_float
from components.models.backbones import build_backbone, input_statistics
from components.models.heads import (Bottleneck, CosineClassifier, LinearClassifier,
                                     MLPDiscriminator, discriminator_outputs)


class Network(nn.Module):
    def __init__(self, backbone: nn.Module, bottleneck: nn.Module, classifier: nn.Module,
                 discriminator: nn.Module | None, *,
                 input_stats: tuple[tuple[float, ...], tuple[float, ...]] | None = None,
                 frozen_batchnorm: bool = False):
        super().__init__()
        self.backbone, self.bottleneck = backbone, bottleneck
        self.classifier, self.discriminator = classifier, discriminator
        self.frozen_batchnorm = frozen_batchnorm
        self.normalised = input_stats is not None  # else digits' [-1, 1] scaling
        if self.normalised:  # buffers: they follow .to(device); not saved in checkpoints
            for name, values in zip(("input_mean", "input_std"), input_stats):
                self.register_buffer(name, torch.tensor(values).view(1, -1, 1, 1),
                                     persistent=False)
        if frozen_batchnorm:
            for module in self._backbone_norms():
                for p in module.parameters():
                    p.requires_grad_(False)

    def _backbone_norms(self):
        return [m for m in self.backbone.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]

    def train(self, mode: bool = True) -> "Network":
        """``frozen_batchnorm``: the backbone keeps its pretrained statistics in training too
        (small batches of a new domain would otherwise overwrite them)."""
        super().train(mode)
        if mode and self.frozen_batchnorm:
            for module in self._backbone_norms():
                module.eval()
        return self

    def normalise(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 images (already on the device) → the float input the backbone was trained on."""
        if not self.normalised:
            return to_float(images)
        return images.float().div_(255.0).sub_(self.input_mean).div_(self.input_std)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """z = phi(x)."""
        return self.bottleneck(self.backbone(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


def build_network(cfg, num_classes: int) -> Network:
    """From a ``components.config.Config``; the discriminator is the kind the adversarial loss
    ``train.adversarial`` declares it trains (none for ``none``), read from its registration."""
    backbone = build_backbone(cfg.model.backbone, channels=cfg.data.channels,
                              weights=cfg.model.weights)
    m = cfg.model.bottleneck_dim
    classifier = (CosineClassifier(m, num_classes, cfg.model.temperature)
                  if cfg.classifier_kind == "cosine" else LinearClassifier(m, num_classes))
    outputs = discriminator_outputs(declared_adversaries().get(cfg.train.adversarial), num_classes)
    disc = MLPDiscriminator(m, cfg.model.discriminator_hidden, outputs) if outputs else None
    return Network(backbone, Bottleneck(backbone.out_dim, m), classifier, disc,
                   input_stats=input_statistics(cfg.model.backbone),
                   frozen_batchnorm=cfg.model.batchnorm == "frozen")
