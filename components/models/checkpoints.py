"""A network's weights on disk: one format, read and written in one place."""
from __future__ import annotations

from pathlib import Path

import torch

from components.files import replacing


def save_checkpoint(net, path: str | Path) -> None:
    """A plain state dict, written atomically (two runs filling the same cache entry at once
    cannot tear each other's file)."""
    with replacing(path) as tmp:
        torch.save({k: v.detach().cpu() for k, v in net.state_dict().items()}, tmp)


def load_checkpoint(net, path: str | Path) -> None:
    net.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))


def weights_digest(net) -> str:
    """A short hash of the weights (names and bytes): two runs that report the same digest at
    round 0 adapted the very same pretrained model, which is what pairing them assumes."""
    import hashlib

    digest = hashlib.sha256()
    for name, tensor in sorted(net.state_dict().items()):
        digest.update(name.encode() + tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]
