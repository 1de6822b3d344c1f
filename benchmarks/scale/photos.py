"""A photo-like task for the scale benchmark, generated at run time (never committed).

Every image is a 224-px RGB square cut from scikit-learn's sample photographs
(``load_sample_images``: ``china.jpg`` and ``flower.jpg``) at a random offset and scale, with
its class, a digit 0-9, drawn large on it (PIL text, an outline for contrast), saved as JPEG in
the project's layout ``<root>/<domain>/<class>/<domain>_<index>.jpg`` (what
``components/data/importers.py`` scans for ``data.layout: folders``).

Two domains, since a split needs a source under the same ``data.root``:

* ``photos-source`` (small): the crops blurred smooth;
* ``photos-target`` (the N images): the crops sharp and recoloured (channels shuffled).

In both the digit is tilted, of a size, a place and a colour drawn per image (its outline black
or white, whichever stands out): the shift is the texture and the colours of the photographs.

Each image is a pure function of (domain, index): a rebuild writes the same pixels, and files
already there are kept (so attempts reuse them; a finished domain is marked by a stamp file).

    python -m benchmarks.scale.photos --root /tmp/photos --n 50000
"""
from __future__ import annotations

import argparse
import json
import shutil
import time
from multiprocessing import get_context
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

SIZE = 224
SOURCE, TARGET = "photos-source", "photos-target"
CLASSES = [str(d) for d in range(10)]
QUALITY = 90
VERSION = 3  # raise when ``render`` changes: images of another version are written again
LUMA = np.array([0.299, 0.587, 0.114])
_PHOTOS: list[np.ndarray] = []
_FONTS: dict[int, ImageFont.FreeTypeFont] = {}


def source_count(n: int) -> int:
    """The source domain's size for a target of ``n``: a tenth, 200 to 2,000 images."""
    return int(min(2_000, max(200, n // 10)))


def _photos() -> list[np.ndarray]:
    if not _PHOTOS:
        from sklearn.datasets import load_sample_images

        _PHOTOS.extend(np.asarray(im, dtype=np.uint8) for im in load_sample_images().images)
    return _PHOTOS  # [china (427, 640, 3), flower (427, 640, 3)]


def _font(size: int) -> ImageFont.FreeTypeFont:
    if size not in _FONTS:
        _FONTS[size] = ImageFont.load_default(size=size)  # Pillow's bundled FreeType font
    return _FONTS[size]


def label_of(domain: str, index: int) -> int:
    """Classes in turn, so every class has ~n/10 images in each domain."""
    return index % len(CLASSES)


def render(domain: str, index: int) -> Image.Image:
    """The image ``index`` of ``domain`` (224 × 224 RGB), a pure function of both."""
    rng = np.random.default_rng([index, 0 if domain == SOURCE else 1, 31])
    label = label_of(domain, index)
    photos = _photos()
    photo = photos[int(rng.integers(2))]
    h, w, _ = photo.shape
    side = int(rng.integers(SIZE // 2, min(h, w) + 1))  # scale: 0.5× to ~1.9× zoom out
    top, left = int(rng.integers(h - side + 1)), int(rng.integers(w - side + 1))
    crop = photo[top:top + side, left:left + side]
    if domain == TARGET:
        crop = crop[..., rng.permutation(3)]
    im = Image.fromarray(np.ascontiguousarray(crop)).resize((SIZE, SIZE), Image.BILINEAR)
    if domain == SOURCE:
        im = im.filter(ImageFilter.GaussianBlur(4))
    ink = tuple(int(v) for v in rng.integers(0, 256, 3))
    outline = (0, 0, 0) if LUMA @ np.array(ink) > 128 else (255, 255, 255)
    # the digit on its own layer, so it can be turned and placed anywhere it fits
    size = int(rng.integers(150, 190))
    glyph = Image.new("RGBA", (SIZE, SIZE), (0, 0, 0, 0))
    ImageDraw.Draw(glyph).text((SIZE // 2, SIZE // 2), CLASSES[label], font=_font(size),
                               fill=ink + (255,), anchor="mm", stroke_width=size // 16,
                               stroke_fill=outline + (255,))
    glyph = glyph.rotate(float(rng.uniform(-15, 15)), resample=Image.BILINEAR)
    box = glyph.getbbox() or (0, 0, SIZE, SIZE)
    dx = int(rng.integers(-box[0], SIZE - box[2] + 1))
    dy = int(rng.integers(-box[1], SIZE - box[3] + 1))
    im.paste(glyph, (dx, dy), glyph)
    return im


def path_of(root: Path, domain: str, index: int) -> Path:
    return root / domain / CLASSES[label_of(domain, index)] / f"{domain}_{index:06d}.jpg"


def _write_range(job: tuple[str, str, int, int]) -> int:
    root, domain, start, stop = job
    written = 0
    for index in range(start, stop):
        path = path_of(Path(root), domain, index)
        if path.exists():
            continue
        tmp = path.with_name(path.name + ".tmp")
        render(domain, index).save(tmp, format="JPEG", quality=QUALITY)
        tmp.replace(path)  # a killed build never leaves half a JPEG under an image's name
        written += 1
    return written


def _stamp(root: Path, domain: str) -> Path:
    return root / f".{domain}.complete"


def build(root: str | Path, n: int, *, source: int | None = None, workers: int = 2,
          chunk: int = 500) -> dict:
    """Write ``source`` (default :func:`source_count`) source and ``n`` target images under
    ``root``; return what was done: counts, images written now, seconds."""
    root = Path(root)
    counts = {SOURCE: source if source is not None else source_count(n), TARGET: n}
    start, written = time.perf_counter(), 0
    jobs = []
    for domain, count in counts.items():
        stamp = _stamp(root, domain)
        done = json.loads(stamp.read_text()) if stamp.is_file() else {}
        if done == {"count": count, "version": VERSION}:
            continue
        if done.get("version") != VERSION:  # drawn by another version (or unknown): redraw
            shutil.rmtree(root / domain, ignore_errors=True)
        stamp.unlink(missing_ok=True)
        for label in CLASSES:
            (root / domain / label).mkdir(parents=True, exist_ok=True)
        for folder in (root / domain).iterdir():  # images beyond count (a larger earlier build)
            for extra in folder.glob("*.jpg"):
                if int(extra.stem.rsplit("_", 1)[1]) >= count:
                    extra.unlink()
        jobs += [(str(root), domain, s, min(s + chunk, count)) for s in range(0, count, chunk)]
    if jobs:
        _photos()  # decoded once here; the forked workers share them
        with get_context("fork").Pool(workers) as pool:
            written = sum(pool.imap_unordered(_write_range, jobs))
    for domain, count in counts.items():
        _stamp(root, domain).write_text(json.dumps({"count": count, "version": VERSION}))
    return {"counts": counts, "written": written, "seconds": time.perf_counter() - start,
            "workers": workers}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--root", type=Path, required=True)
    ap.add_argument("--n", type=int, default=50_000)
    ap.add_argument("--source", type=int)
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args(argv)
    print(build(args.root, args.n, source=args.source, workers=args.workers))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
