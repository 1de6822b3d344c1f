"""Backbones: a small CNN for 28x28 digits and torchvision's ResNet-50 for real images."""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn


class DigitsCNN(nn.Module):
    """LeNet-style CNN; a few ms per batch on 2 CPU cores. Output: 1024 features."""

    out_dim = 64 * 4 * 4

    def __init__(self, in_channels: int = 1):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(in_channels, 32, 5), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 5), nn.BatchNorm2d(64), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


def resnet50(weights: str | None = None) -> nn.Module:
    """ResNet-50 without its final layer; weights only from a local file, never a download."""
    from torchvision.models import resnet50 as tv_resnet50

    net = tv_resnet50(weights=None)
    if weights:
        path = Path(weights)
        if not path.is_file():
            raise FileNotFoundError(f"backbone weights {path} not found; give a local path in "
                                    "model.weights (nothing is downloaded)")
        state = torch.load(path, map_location="cpu", weights_only=True)
        state = {k: v for k, v in state.items() if not k.startswith("fc.")}
        missing, unexpected = net.load_state_dict(state, strict=False)
        if unexpected or [k for k in missing if not k.startswith("fc.")]:
            raise ValueError(f"{path} is not a ResNet-50 state dict "
                             f"(missing {missing[:3]}, unexpected {unexpected[:3]})")
    net.fc = nn.Identity()
    net.out_dim = 2048
    return net


def build_backbone(name: str, *, channels: int, weights: str | None) -> nn.Module:
    if name == "digits_cnn":
        return DigitsCNN(channels)
    if name == "resnet50":
        if channels != 3:
            raise ValueError("resnet50 needs data.channels: 3")
        return resnet50(weights)
    raise ValueError(f"unknown backbone {name!r}")
