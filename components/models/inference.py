"""Batched prediction and evaluation: what the run computes over the pool (and hands to a
strategy) and over target-test. Not training code: editing it keeps cached pretrained models.
"""
from __future__ import annotations

import torch

from components.data.tensors import ImageSet
from components.models.device import autocast, prepare_input, to_device


@torch.no_grad()
def predict(net, data, *, device: torch.device, batch_size: int = 512):
    """Return (z, logits) for an image set (or a uint8 tensor), in eval mode, batched."""
    to_device(net, device).eval()
    batches = (data.eval_batches(batch_size) if hasattr(data, "eval_batches")
               else (data[s:s + batch_size] for s in range(0, len(data), batch_size)))
    zs, logits = [], []
    for images in batches:
        with autocast(device):
            z = net.features(prepare_input(net, images, device))
            zs.append(z.float())
            logits.append(net.classifier(z).float())
    if not zs:
        return torch.zeros(0), torch.zeros(0)
    return torch.cat(zs), torch.cat(logits)


def evaluate(net, data: ImageSet, classes: list[str], *, device: torch.device) -> dict:
    """Accuracy overall and per class (target-test: never used for training)."""
    _, logits = predict(net, data, device=device)
    pred = logits.argmax(1).cpu()
    correct = pred == data.labels
    per_class = {}
    for index, name in enumerate(classes):
        mask = data.labels == index
        per_class[name] = float(correct[mask].float().mean()) if mask.any() else float("nan")
    return {"accuracy": float(correct.float().mean()), "per_class": per_class}
