"""The third shipped benchmark: shapes instead of digits, and a shift in how they are drawn.

* ``shapes`` (source): ten geometric shapes, filled white on black (MNIST's polarity), each at
  a size, position and rotation drawn per image.
* ``shapes-sketch`` (target): the same ten shapes as pencil sketches: dark, wobbly outlines of
  one or two strokes on light, grainy paper.

Decided before any result was looked at (issue 33), to check advice derived on the digit tasks
on a task it did not see: the classes are not digits and the shift is in rendering (fill →
outline, polarity, hand tremor and paper grain), not in resolution (mnist ↔ optdigits) or in
colour and photographic texture (the colour benchmark). Generated, not read from any package:
every draw comes from a generator seeded by the domain and the image's index, shapes are drawn
4× larger and reduced, so two builds give the same bytes (and the same DVC hash).
"""
from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

SIZE = 28
SUPERSAMPLE = 4            # drawn at 112x112, reduced to 28x28 (smooth edges, thin strokes)
CLASSES = ("circle", "triangle", "square", "pentagon", "hexagon", "star", "cross", "crescent",
           "arrow", "ring")
RADIUS = (0.55, 0.85)      # the shape's radius as a share of half the image
ROTATION_DEG = 30          # drawn within ± this (a square stays a square, not a diamond)
SHIFT = 0.12               # centre offset, as a share of the image side
WOBBLE = 0.05              # target: hand tremor, in shape radii (std of each outline point)
STROKE_PX = (1.0, 2.2)     # target: pencil width at 28x28
SECOND_STROKE = 0.5        # target: chance that the outline is traced twice, a little apart
PAPER = (165, 235)         # target: paper grey level
INK = (15, 95)             # target: pencil grey level
GRAIN = 12.0               # target: paper grain (std of per-pixel noise, grey levels)


def _rng(domain: str, index: int) -> np.random.Generator:
    return np.random.default_rng([sum(domain.encode()), len(domain), index, 33])


def _circle(r: float = 1.0, cx: float = 0.0, n: int = 48, start: float = 0.0,
            stop: float = 2 * np.pi) -> np.ndarray:
    a = np.linspace(start, stop, n, endpoint=False)
    return np.stack([cx + r * np.cos(a), r * np.sin(a)], axis=1)


def _regular(k: int, phase: float = np.pi / 2) -> np.ndarray:
    return _circle(n=k, start=phase, stop=phase + 2 * np.pi)


def _star() -> np.ndarray:
    outer = _regular(5)
    inner = 0.42 * _regular(5, phase=np.pi / 2 + np.pi / 5)
    return np.stack([outer, inner], axis=1).reshape(-1, 2)


def _cross(half_width: float = 0.3) -> np.ndarray:
    w = half_width
    return np.array([(-w, -1), (w, -1), (w, -w), (1, -w), (1, w), (w, w), (w, 1), (-w, 1),
                     (-w, w), (-1, w), (-1, -w), (-w, -w)])


def _crescent() -> np.ndarray:
    """The outer circle's left arc, back along an offset inner circle (r 0.85, centre 0.4)."""
    x = (1 - 0.85 ** 2 + 0.4 ** 2) / (2 * 0.4)          # where the two circles cross
    outer = np.arctan2(np.sqrt(1 - x * x), x)
    inner = np.arctan2(np.sqrt(1 - x * x), x - 0.4)
    return np.concatenate([_circle(1.0, n=36, start=outer, stop=2 * np.pi - outer),
                           _circle(0.85, cx=0.4, n=30, start=-inner, stop=-2 * np.pi + inner)])


def _arrow() -> np.ndarray:
    return np.array([(-1, -0.22), (0.15, -0.22), (0.15, -0.6), (1, 0), (0.15, 0.6),
                     (0.15, 0.22), (-1, 0.22)])


def outlines(name: str) -> list[tuple[np.ndarray, int]]:
    """A shape as closed polygons in unit coordinates, each with its fill (1 ink, 0 a hole
    cut out of what came before)."""
    if name == "ring":
        return [(_circle(1.0), 1), (_circle(0.55), 0)]
    polygon = {"circle": _circle(), "triangle": _regular(3), "square": _regular(4, np.pi / 4),
               "pentagon": _regular(5), "hexagon": _regular(6), "star": _star(),
               "cross": _cross(), "crescent": _crescent(), "arrow": _arrow()}[name]
    return [(polygon, 1)]


def _placement(rng: np.random.Generator):
    """The image's affine map from unit coordinates to supersampled pixels."""
    side = SIZE * SUPERSAMPLE
    radius = rng.uniform(*RADIUS) * side / 2
    angle = np.deg2rad(rng.uniform(-ROTATION_DEG, ROTATION_DEG))
    centre = side / 2 + rng.uniform(-SHIFT, SHIFT, size=2) * side
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    return lambda points: centre + radius * points @ rotation.T


def _reduce(canvas: Image.Image) -> np.ndarray:
    return np.asarray(canvas.resize((SIZE, SIZE), Image.BOX), dtype=np.float64)


def silhouette(name: str, rng: np.random.Generator) -> np.ndarray:
    """Source: the shape filled white on black, 28x28 uint8."""
    place = _placement(rng)
    canvas = Image.new("L", (SIZE * SUPERSAMPLE,) * 2, 0)
    draw = ImageDraw.Draw(canvas)
    for polygon, fill in outlines(name):
        draw.polygon([tuple(p) for p in place(polygon)], fill=255 * fill)
    return np.rint(_reduce(canvas)).astype(np.uint8)


def _trace(polygon: np.ndarray, rng: np.random.Generator, spacing: float = 0.12) -> np.ndarray:
    """The closed outline resampled about every ``spacing`` radii, each point moved by a
    smooth hand tremor (noise averaged along the stroke), ending a little past its start."""
    closed = np.vstack([polygon, polygon[:1]])
    points = []
    for a, b in zip(closed[:-1], closed[1:]):
        steps = max(1, int(np.ceil(np.linalg.norm(b - a) / spacing)))
        points += [a + (b - a) * t for t in np.arange(steps) / steps]
    points = np.array(points)
    noise = rng.normal(0, WOBBLE, size=points.shape)
    smooth = (np.roll(noise, 1, 0) + noise + np.roll(noise, -1, 0)) / np.sqrt(3)
    traced = points + smooth
    overshoot = max(1, len(traced) // 12)
    return np.vstack([traced, traced[:overshoot]])


def sketch(name: str, rng: np.random.Generator) -> np.ndarray:
    """Target: the shape's outline in pencil on paper, 28x28 uint8."""
    place = _placement(rng)
    ink, paper = rng.uniform(*INK), rng.uniform(*PAPER)
    width = max(1, int(round(rng.uniform(*STROKE_PX) * SUPERSAMPLE)))
    canvas = Image.new("L", (SIZE * SUPERSAMPLE,) * 2, 0)
    draw = ImageDraw.Draw(canvas)
    passes = 2 if rng.uniform() < SECOND_STROKE else 1
    for _ in range(passes):
        for polygon, _fill in outlines(name):
            draw.line([tuple(p) for p in place(_trace(polygon, rng))], fill=255, width=width,
                      joint="curve")
    canvas = canvas.filter(ImageFilter.GaussianBlur(SUPERSAMPLE / 2))
    stroke = _reduce(canvas) / 255.0
    image = paper + (ink - paper) * stroke + rng.normal(0, GRAIN, size=stroke.shape)
    return np.clip(np.rint(image), 0, 255).astype(np.uint8)


def _domain(domain: str, draw, count: int) -> tuple[np.ndarray, np.ndarray]:
    labels = np.array([CLASSES[i % len(CLASSES)] for i in range(count)])
    images = np.stack([draw(name, _rng(domain, i)) for i, name in enumerate(labels)])
    return images, labels


def shapes(count: int = 5000) -> tuple[np.ndarray, np.ndarray]:
    return _domain("shapes", silhouette, count)


def shapes_sketch(count: int = 2000) -> tuple[np.ndarray, np.ndarray]:
    return _domain("shapes-sketch", sketch, count)
