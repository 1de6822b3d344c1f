"""The streaming path for real images: files decoded in DataLoader workers, never all in RAM.

A ``FileImages`` holds one split's file names (a compact byte array, so forked workers share
it without copying) and the transforms of domain adaptation: for training, resize the shorter
side to ``resize`` then a random ``crop`` and a horizontal flip; for evaluation and selection,
the centre crop. Randomness comes from a seed sent with each index, so a batch's augmentation
is the same whichever worker decodes it, with persistent workers, and after a resume.

A ``StreamingImageSet`` is a view of ids over a ``FileImages``: subsets (the unlabelled pool,
the labelled set) are position arrays, never copies of pixels. Workers hand back uint8
tensors in pinned memory; the network normalises them on the device (4× fewer bytes to copy).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import pandas as pd
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from components.data.tensors import _Samples, label_tensor, read_image, to_array


@dataclass(frozen=True)
class Transform:
    """Resize the shorter side to ``resize``, crop ``crop`` (random + flip when seeded)."""

    resize: int
    crop: int
    channels: int

    def __call__(self, im: Image.Image, seed: int) -> np.ndarray:
        w, h = im.size
        scale = self.resize / min(w, h)
        size = (max(self.crop, round(w * scale)), max(self.crop, round(h * scale)))
        if im.size != size:
            im = im.resize(size, Image.BILINEAR)
        w, h = im.size
        if seed < 0:  # evaluation and selection: the centre
            left, top = (w - self.crop) // 2, (h - self.crop) // 2
            flip = False
        else:
            rng = np.random.default_rng(seed)
            left, top = int(rng.integers(w - self.crop + 1)), int(rng.integers(h - self.crop + 1))
            flip = bool(rng.integers(2))
        im = im.crop((left, top, left + self.crop, top + self.crop))
        if flip:
            im = im.transpose(Image.FLIP_LEFT_RIGHT)
        return to_array(im)


class FileImages(Dataset):
    """Decode ``(position, seed)`` → uint8 (C, crop, crop); seed < 0 means no augmentation."""

    def __init__(self, paths: list[str], transform: Transform):
        self.paths = np.array([p.encode() for p in paths], dtype=np.bytes_)
        self.transform = transform
        self._loaders: dict[str, DataLoader] = {}
        self._plans: dict[str, _Plan] = {}

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, key) -> torch.Tensor:
        pos, seed = key
        path = Path(self.paths[pos].decode())
        im = read_image(path, self.transform.channels, draft=self.transform.resize)
        return torch.from_numpy(self.transform(im, seed).copy())

    def __getstate__(self):  # workers need the files and the transform, not the loaders
        return {"paths": self.paths, "transform": self.transform}

    def __setstate__(self, state):
        self.__dict__.update(state, _loaders={}, _plans={})

    def stream(self, role: str, plan: list[list[tuple[int, int]]], *, workers: int,
               pin: bool) -> Iterator[torch.Tensor]:
        """Batches of ``plan`` through this role's persistent loader (one per role, so the
        labelled and unlabelled streams over one pool run side by side)."""
        if role not in self._loaders:
            self._plans[role] = _Plan()
            self._loaders[role] = DataLoader(
                self, batch_sampler=self._plans[role], num_workers=workers, pin_memory=pin,
                persistent_workers=workers > 0, prefetch_factor=4 if workers else None)
        self._plans[role].batches = plan
        return iter(self._loaders[role])


class _Plan:
    """A batch sampler whose batches are set before each pass (keeps workers alive)."""

    def __init__(self):
        self.batches: list = []

    def __iter__(self):
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


@dataclass
class StreamingImageSet(_Samples):
    """Ids and labels over ``files``; ``positions`` index into it (a view, not a copy)."""

    ids: list[str]
    labels: torch.Tensor
    files: FileImages
    positions: np.ndarray
    workers: int = 4

    def subset(self, ids: list[str]) -> "StreamingImageSet":
        pos = self._positions(ids)
        return StreamingImageSet(list(ids), self.labels[pos], self.files,
                                 self.positions[pos.numpy()], self.workers)

    def _stream(self, role: str, plan: list[list[tuple[int, int]]]):
        return self.files.stream(role, plan, workers=self.workers,
                                 pin=torch.cuda.is_available())

    def batches(self, plan: list[torch.Tensor], seeds: list[torch.Tensor] | None = None, *,
                role: str = "train") -> Iterator[torch.Tensor]:
        """Training batches: each position tensor of ``plan`` with its augmentation seeds;
        ``role`` names the stream (source, labelled, unlabelled), each with its own workers."""
        seeds = seeds or [torch.full_like(p, -1) for p in plan]
        keyed = [list(zip(self.positions[p.numpy()].tolist(), s.tolist()))
                 for p, s in zip(plan, seeds)]
        return self._stream(role, keyed)

    def eval_batches(self, batch_size: int) -> Iterator[torch.Tensor]:
        pos = self.positions.tolist()
        plan = [[(p, -1) for p in pos[s:s + batch_size]] for s in range(0, len(pos), batch_size)]
        return self._stream("eval", plan)


def stream_images(rows: pd.DataFrame, root: str | Path, classes: list[str], *, crop: int,
                  resize: int, channels: int, workers: int,
                  with_labels: bool = True) -> StreamingImageSet:
    """A streamed set over ``rows`` of the manifest; nothing is decoded until a batch is asked."""
    root = Path(root)
    files = FileImages([str(root / rel) for rel in rows["path"]],
                       Transform(resize=resize, crop=crop, channels=channels))
    return StreamingImageSet(list(rows["sample_id"]), label_tensor(rows, classes, with_labels),
                             files, np.arange(len(rows)), workers)
