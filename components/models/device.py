"""Where a network runs and what it is fed: the device, the input on it, mixed precision.
Shared by training and prediction, so both see the same input."""
from __future__ import annotations

import contextlib

import torch

from components.config import ConfigError


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` (the first GPU when there is one), ``cpu``, ``cuda`` or ``cuda:N``."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError(f"train.device = {name!r}, but no GPU is visible; set "
                              "train.device: auto or cpu (--device cpu)")
        index = torch.device(name).index
        if index is not None and index >= torch.cuda.device_count():
            raise ConfigError(f"train.device = {name!r}, but only {torch.cuda.device_count()} "
                              f"GPU(s) are visible (cuda:0 to cuda:{torch.cuda.device_count() - 1})")
    return torch.device(name)


def to_device(net, device: torch.device):
    """On a GPU, channels-last weights to match channels-last inputs (cuDNN's fast layout)."""
    net.to(device)
    return net.to(memory_format=torch.channels_last) if device.type == "cuda" else net


def prepare_input(net, images: torch.Tensor, device: torch.device) -> torch.Tensor:
    """uint8 batch → the network's normalised float input on ``device`` (channels-last on GPU)."""
    x = net.normalise(images.to(device, non_blocking=True))
    return x.contiguous(memory_format=torch.channels_last) if device.type == "cuda" else x


def autocast(device: torch.device):
    """bfloat16 autocast on a GPU; full precision on the CPU."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()
