"""Load manifest rows into memory as uint8 tensors: small datasets train without a loader.

Samples are always named by ``sample_id``; positions are private to one ``ImageSet``.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image


class ImageLoadError(ValueError):
    """An image cannot be read; the message names the file and what to do."""


@dataclass
class ImageSet:
    """Images (N, C, H, W) uint8, their ids, and labels (-1 where unknown or withheld)."""

    ids: list[str]
    images: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return len(self.ids)

    def subset(self, ids: list[str]) -> "ImageSet":
        index = {sid: i for i, sid in enumerate(self.ids)}
        missing = [sid for sid in ids if sid not in index]
        if missing:
            raise KeyError(f"unknown sample ids: {missing[:5]}")
        pos = torch.tensor([index[sid] for sid in ids], dtype=torch.long)
        return ImageSet(list(ids), self.images[pos], self.labels[pos])

    def without(self, ids) -> "ImageSet":
        drop = set(ids)
        return self.subset([sid for sid in self.ids if sid not in drop])

    def to(self, device) -> "ImageSet":
        return ImageSet(self.ids, self.images.to(device), self.labels.to(device))


def _read(path: Path, size: int, channels: int) -> np.ndarray:
    try:
        with Image.open(path) as im:
            im = im.convert("L" if channels == 1 else "RGB")
            if im.size != (size, size):
                im = im.resize((size, size), Image.BILINEAR)
            arr = np.asarray(im, dtype=np.uint8)
    except FileNotFoundError:
        raise ImageLoadError(f"image {path} is missing; run `dvc checkout` or rebuild the data "
                             "and the manifest (`dvc repro split`)") from None
    except Exception as err:
        raise ImageLoadError(f"image {path} cannot be decoded ({err}); replace or delete it and "
                             "rebuild the manifest (`dvc repro split`)") from None
    return arr[None] if channels == 1 else arr.transpose(2, 0, 1)


def load_images(rows: pd.DataFrame, root: str | Path, classes: list[str], *, size: int,
                channels: int, with_labels: bool = True) -> ImageSet:
    """Read ``rows`` of the manifest. ``with_labels=False`` withholds labels (target pool)."""
    root = Path(root)
    arrays = [_read(root / rel, size, channels) for rel in rows["path"]]
    images = (torch.from_numpy(np.stack(arrays)) if arrays
              else torch.zeros((0, channels, size, size), dtype=torch.uint8))
    if with_labels:
        lookup = {c: i for i, c in enumerate(classes)}
        labels = torch.tensor([lookup[str(v)] for v in rows["label"]], dtype=torch.long)
    else:
        labels = torch.full((len(rows),), -1, dtype=torch.long)
    return ImageSet(list(rows["sample_id"]), images, labels)


def to_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 → float in [-1, 1] (the same normalisation everywhere)."""
    return images.float().div_(127.5).sub_(1.0)
