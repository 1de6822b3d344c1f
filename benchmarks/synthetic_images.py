"""Real-size RGB images for scale tests only (loader, memory, GPU throughput): no accuracy claims.

Each image is a random crop of the two photos scikit-learn ships (``load_sample_images``),
resized to 256-384 px a side, with its class drawn on it as stripes of a class-specific angle,
frequency and colour, saved as JPEG like most real datasets. The target domain differs in
colour (channels rotated, contrast lowered) and texture (noise). Nothing is downloaded.

    python benchmarks/synthetic_images.py --root /tmp/synth --per-domain 10000 --classes 345
"""
from __future__ import annotations

import argparse
import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

DOMAINS = ("photo", "shifted")
_PHOTOS: list[np.ndarray] = []


def _photos() -> list[np.ndarray]:
    if not _PHOTOS:
        from sklearn.datasets import load_sample_images

        _PHOTOS.extend(np.asarray(im, dtype=np.float32) for im in load_sample_images().images)
    return _PHOTOS


def render(index: int, label: int, domain: str, num_classes: int) -> Image.Image:
    """One image, a pure function of its arguments."""
    rng = np.random.default_rng([index, label, DOMAINS.index(domain)])
    photo = _photos()[index % 2]
    h, w = int(rng.integers(256, 385)), int(rng.integers(256, 385))
    top, left = int(rng.integers(photo.shape[0] - 256)), int(rng.integers(photo.shape[1] - 256))
    crop = photo[top:top + 256, left:left + 256]
    img = np.asarray(Image.fromarray(crop.astype(np.uint8)).resize((w, h), Image.BILINEAR),
                     dtype=np.float32)
    angle = np.pi * label / num_classes
    freq = 0.05 + 0.25 * ((label * 7919) % num_classes) / num_classes
    yy, xx = np.mgrid[0:h, 0:w]
    stripes = 0.5 + 0.5 * np.sin(freq * (np.cos(angle) * xx + np.sin(angle) * yy))
    colour = np.array([(label * 37) % 256, (label * 91) % 256, (label * 151) % 256], np.float32)
    img = 0.55 * img + 0.45 * stripes[..., None] * colour
    if domain == "shifted":
        img = img[..., [2, 0, 1]] * 0.6 + 50 + rng.normal(0, 18, img.shape)
    return Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))


def _write(job: tuple) -> None:
    root, index, label, domain, num_classes = job
    path = Path(root) / domain / f"c{label:03d}" / f"{domain}_{index:06d}.jpg"
    if not path.exists():
        render(index, label, domain, num_classes).save(path, quality=90)


def build(root: str | Path, *, per_domain: int, classes: int, workers: int | None = None) -> Path:
    """Write ``per_domain`` images in each domain (<root>/<domain>/<class>/<file>.jpg); files
    already there are kept, so a larger set extends a smaller one."""
    root = Path(root)
    for domain in DOMAINS:
        for label in range(classes):
            (root / domain / f"c{label:03d}").mkdir(parents=True, exist_ok=True)
    jobs = [(str(root), i, i % classes, domain, classes)
            for domain in DOMAINS for i in range(per_domain)]
    with ProcessPoolExecutor(workers or os.cpu_count()) as pool:
        list(pool.map(_write, jobs, chunksize=256))
    return root


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", required=True)
    ap.add_argument("--per-domain", type=int, default=10_000)
    ap.add_argument("--classes", type=int, default=345)
    args = ap.parse_args()
    build(args.root, per_domain=args.per_domain, classes=args.classes)
    print(f"wrote {2 * args.per_domain} images under {args.root}")


if __name__ == "__main__":
    main()
