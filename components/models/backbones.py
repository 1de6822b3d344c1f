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


class WeightsError(ValueError):
    """Backbone weights that cannot be used; the message names the file and what to do."""


def resnet50(weights: str | None = None) -> nn.Module:
    """ResNet-50 without its final layer; weights only from a local file, never a download.

    ``weights``: a torchvision ResNet-50 state dict (``torch.save(model.state_dict())``);
    its ``fc`` layer is ignored, every other key must match."""
    from torchvision.models import resnet50 as tv_resnet50

    net = tv_resnet50(weights=None)
    if weights:
        path = Path(weights)
        if not path.is_file():
            raise WeightsError(f"backbone weights {path} not found; model.weights must be a local "
                               "file (nothing is downloaded): a torchvision ResNet-50 state dict")
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:
            raise WeightsError(f"backbone weights {path} cannot be read ({err}); save them with "
                               "torch.save(model.state_dict(), path)") from None
        if not isinstance(state, dict):
            raise WeightsError(f"{path} holds a {type(state).__name__}, not a state dict; save "
                               "model.state_dict() instead of the model")
        state = {k.removeprefix("module."): v for k, v in state.items() if not k.startswith("fc.")}
        try:
            missing, unexpected = net.load_state_dict(state, strict=False)
        except RuntimeError as err:  # a key of another shape
            shapes = [l.strip() for l in str(err).splitlines() if "size mismatch" in l]
            raise WeightsError(f"{path} is not a torchvision ResNet-50 state dict: "
                               f"{len(shapes)} tensors of another shape (e.g. {shapes[0]})") from None
        missing = [k for k in missing if not k.startswith("fc.")]
        if unexpected or missing:
            raise WeightsError(f"{path} is not a torchvision ResNet-50 state dict: "
                               f"{len(missing)} keys missing (e.g. {missing[:3]}), "
                               f"{len(unexpected)} unexpected (e.g. {unexpected[:3]})")
    net.fc = nn.Identity()
    net.out_dim = 2048
    return net


def input_statistics(name: str) -> tuple[tuple[float, ...], tuple[float, ...]] | None:
    """The per-channel mean and std the backbone's weights were trained with (None: [-1, 1])."""
    if name == "resnet50":
        from torchvision.models import ResNet50_Weights

        preset = ResNet50_Weights.IMAGENET1K_V2.transforms()  # metadata only, nothing downloaded
        return tuple(preset.mean), tuple(preset.std)
    return None


def build_backbone(name: str, *, channels: int, weights: str | None) -> nn.Module:
    if name == "digits_cnn":
        return DigitsCNN(channels)
    if name == "resnet50":
        if channels != 3:
            raise ValueError("resnet50 needs data.channels: 3")
        return resnet50(weights)
    raise ValueError(f"unknown backbone {name!r}")
