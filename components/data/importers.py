"""Read users' own data into manifest rows, so nothing downstream is tied to digits.

Two layouts are understood:

* ``folders``: ``<root>/<domain>/<class>/<image>`` (Office-31, Office-Home, VisDA);
* ``lists``: DomainNet-style list files ``<root>/<domain>*.txt`` with lines
  ``relative/path label`` (paths relative to ``root``).
"""
from __future__ import annotations

import os
from pathlib import Path

from components.data.checksums import ChecksumCache

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}


class DataLayoutError(ValueError):
    """The data folder does not look like the configured layout."""


def _row(root: Path, domain: str, label: str, path: Path, checksums: ChecksumCache,
         rel: str | None = None) -> dict:
    rel = rel or path.relative_to(root).as_posix()
    return {"sample_id": rel.rsplit(".", 1)[0], "domain": domain, "label": str(label),
            "path": rel, "sha256": checksums.sha256(path)}


def _suffix(name: str) -> str:
    """``Path(name).suffix``, for a bare file name."""
    dot = name.rfind(".")
    return name[dot:] if 0 < dot < len(name) - 1 else ""


def scan_folders(root: str | Path, domain: str,
                 checksums: ChecksumCache | None = None) -> list[dict]:
    """Rows for ``<root>/<domain>/<class>/<image>``; sorted, so ids and order are stable.
    ``checksums``: where file hashes are kept (validation reads the same cache next)."""
    root, checksums = Path(root), checksums or ChecksumCache()
    base = root / domain
    if not base.is_dir():
        raise DataLayoutError(
            f"domain folder {base} not found; expected <root>/<domain>/<class>/<image>. "
            "Check data.root and data.source/data.target (the settings file or flags) "
            "(for the shipped benchmark run `sage-ada data digits`).")
    rows = []
    for class_dir in sorted(p for p in base.iterdir() if p.is_dir()):
        # names, not Paths: sorting, filtering and relative paths of 50,000 Path objects cost
        # a second of a warm split (a folder's names sort as its children's paths do)
        prefix = class_dir.relative_to(root).as_posix()
        for name in sorted(os.listdir(class_dir)):
            if _suffix(name).lower() in IMAGE_SUFFIXES:
                rows.append(_row(root, domain, class_dir.name, class_dir / name, checksums,
                                 rel=f"{prefix}/{name}"))
    if not rows:
        raise DataLayoutError(f"no images under {base}/<class>/; supported: {sorted(IMAGE_SUFFIXES)}")
    return rows


def scan_lists(root: str | Path, domain: str,
               checksums: ChecksumCache | None = None) -> list[dict]:
    """Rows from DomainNet-style list files ``<root>/<domain>*.txt`` (``path label`` lines)."""
    root, checksums = Path(root), checksums or ChecksumCache()
    lists = sorted(root.glob(f"{domain}*.txt"))
    if not lists:
        raise DataLayoutError(f"no list file {root}/{domain}*.txt for domain {domain!r}")
    rows, seen = [], set()
    for list_file in lists:
        for number, line in enumerate(list_file.read_text().splitlines(), start=1):
            if not line.strip():
                continue
            parts = line.rsplit(maxsplit=1)
            if len(parts) != 2:
                raise DataLayoutError(f"{list_file}:{number}: expected 'relative/path label', "
                                      f"got {line!r}")
            rel, label = parts
            path = root / rel
            if not path.is_file():
                raise DataLayoutError(f"{list_file}:{number}: image {path} not found")
            if rel in seen:
                continue
            seen.add(rel)
            rows.append(_row(root, domain, label, path, checksums))
    return rows


SCANNERS = {"folders": scan_folders, "lists": scan_lists}
