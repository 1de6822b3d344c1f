"""Image sets named by ``sample_id``: decoded once into memory (small images) or streamed.

Both kinds answer the same questions (ids, labels, subsets by id) and hand out uint8 batches:
``batches(plan)`` for training (a list of position tensors, drawn by the trainer) and
``eval_batches(size)`` in order. Positions are private to one set; callers use ids.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import pandas as pd
import torch
from PIL import Image

from components.data.split import RESPLIT


class ImageLoadError(ValueError):
    """An image cannot be read; the message names the file and what to do."""


class _Samples:
    """Ids and labels (-1 where unknown or withheld); subclasses say where pixels come from."""

    ids: list[str]
    labels: torch.Tensor

    def __len__(self) -> int:
        return len(self.ids)

    def _positions(self, ids: list[str]) -> torch.Tensor:
        index = {sid: i for i, sid in enumerate(self.ids)}
        missing = [sid for sid in ids if sid not in index]
        if missing:
            raise KeyError(f"unknown sample ids: {missing[:5]}")
        return torch.tensor([index[sid] for sid in ids], dtype=torch.long)

    def without(self, ids):
        drop = set(ids)
        return self.subset([sid for sid in self.ids if sid not in drop])


@dataclass
class ImageSet(_Samples):
    """Images (N, C, H, W) uint8 in memory: the fast path for 28-px digits."""

    ids: list[str]
    images: torch.Tensor
    labels: torch.Tensor

    def subset(self, ids: list[str]) -> "ImageSet":
        pos = self._positions(ids)
        return ImageSet(list(ids), self.images[pos], self.labels[pos])

    def to(self, device) -> "ImageSet":
        return ImageSet(self.ids, self.images.to(device), self.labels.to(device))

    def batches(self, plan: list[torch.Tensor], seeds=None, *, role: str = "train"
                ) -> Iterator[torch.Tensor]:
        """The images at each planned position tensor (no augmentation in memory)."""
        return (self.images[pos] for pos in plan)

    def eval_batches(self, batch_size: int) -> Iterator[torch.Tensor]:
        return (self.images[s:s + batch_size] for s in range(0, len(self), batch_size))


def read_image(path: Path, channels: int, *, draft: int | None = None) -> Image.Image:
    """Decode one file, or raise an ``ImageLoadError`` that names it and what to do.

    ``draft``: a JPEG may be decoded at a reduced scale, both sides still ≥ ``draft`` pixels
    (several times faster for large photos that are resized anyway)."""
    mode = "L" if channels == 1 else "RGB"
    try:
        with Image.open(path) as im:
            if draft:
                im.draft(mode, (draft, draft))
            return im.convert(mode)
    except FileNotFoundError:
        raise ImageLoadError(f"image {path} is missing; restore it (`dvc checkout` for the "
                             f"DVC-tracked ./data) or rebuild the manifest: {RESPLIT}") from None
    except Exception as err:
        raise ImageLoadError(f"image {path} cannot be decoded ({err}); replace or delete it and "
                             f"rebuild the manifest: {RESPLIT}") from None


def to_array(im: Image.Image) -> np.ndarray:
    arr = np.asarray(im, dtype=np.uint8)
    return arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)


def _read(path: Path, size: int, channels: int) -> np.ndarray:
    im = read_image(path, channels)
    if im.size != (size, size):
        im = im.resize((size, size), Image.BILINEAR)
    return to_array(im)


def label_tensor(rows: pd.DataFrame, classes: list[str], with_labels: bool) -> torch.Tensor:
    if not with_labels:
        return torch.full((len(rows),), -1, dtype=torch.long)
    lookup = {c: i for i, c in enumerate(classes)}
    unknown = sorted({str(v) for v in rows["label"]} - set(lookup))
    if unknown:
        raise ValueError(f"labels {unknown[:5]} are not classes of the source domain "
                         f"({len(classes)} classes); give the source images of these classes, "
                         "or leave them out of the target, and rebuild the manifest")
    return torch.tensor([lookup[str(v)] for v in rows["label"]], dtype=torch.long)


def load_images(rows: pd.DataFrame, root: str | Path, classes: list[str], *, size: int,
                channels: int, with_labels: bool = True) -> ImageSet:
    """Read ``rows`` of the manifest. ``with_labels=False`` withholds labels (target pool)."""
    root = Path(root)
    arrays = [_read(root / rel, size, channels) for rel in rows["path"]]
    images = (torch.from_numpy(np.stack(arrays)) if arrays
              else torch.zeros((0, channels, size, size), dtype=torch.uint8))
    return ImageSet(list(rows["sample_id"]), images, label_tensor(rows, classes, with_labels))


def to_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 → float in [-1, 1]: the digits backbone's input scaling."""
    return images.float().div_(127.5).sub_(1.0)
