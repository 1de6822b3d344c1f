"""The data steps users run: build the shipped benchmark, split into the manifest, validate.

``split_and_validate`` is what the DVC ``split`` stage runs; a failing validation keeps the
previous manifest in place (the new one is written only after it passes).
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import pandas as pd

from components.config import Config
from components.data.checksums import ChecksumCache
from components.data.shipped import (build_shipped, check_channels, check_data_root,
                                      uses_shipped_data)
from components.data.split import build_manifest, class_list, read_manifest, write_manifest
from components.data.validate import validate_manifest
from components.files import exclusive, write_atomic

CHECKSUM_CACHE = Path(".sage-ada/cache/sha256.json")  # file hashes by path and stamp
VALIDATED = Path(".sage-ada/cache/validated")          # keys of manifests proved valid
SUITE_VERSION = 3  # raise when the checks change, so older proofs no longer count


def ensure_data(cfg: Config) -> dict[str, int]:
    """Build the digits domains when they are configured and missing (cheap if present), but
    only at the shipped ``data.root``: elsewhere a missing folder is a mistyped path, not a
    request to build the benchmark there."""
    check_data_root(cfg)
    check_channels(cfg)
    if uses_shipped_data(cfg):
        return build_shipped(Path(cfg.data.root))
    return {}


def split_and_validate(cfg: Config) -> pd.DataFrame:
    checksums = ChecksumCache(CHECKSUM_CACHE)  # hashed once, for the manifest and its validation
    manifest = build_manifest(cfg.data.root, source=cfg.data.source, target=cfg.data.target,
                              layout=cfg.data.layout, test_fraction=cfg.split.target_test_fraction,
                              seed=cfg.split.seed, checksums=checksums)
    validate(cfg, manifest, checksums)
    write_manifest(manifest, cfg.data.manifest)
    return manifest


def validate(cfg: Config, manifest: pd.DataFrame | None = None,
             checksums: ChecksumCache | None = None) -> pd.DataFrame:
    """The whole suite, once per content: a manifest already proved, over files whose stamp
    (size, times and inode; see ``validation_key``) has not changed since, is not decoded
    again (``dvc repro split``, ``data validate`` and each run's validate step used to prove
    the same files three times)."""
    manifest = read_manifest(cfg.data.manifest) if manifest is None else manifest
    size = cfg.data.image_size if uses_shipped_data(cfg) else None
    key = validation_key(manifest, Path(cfg.data.root), size)
    if key in _proved():
        return manifest
    validate_manifest(manifest, cfg.data.root, class_list(manifest), expected_size=size,
                      checksum_cache=checksums or CHECKSUM_CACHE)
    with exclusive(VALIDATED.with_name("validated.lock"), quiet=True):  # others may add theirs
        proved = [k for k in _proved() if k != key]
        write_atomic(VALIDATED, "\n".join(proved[-19:] + [key]) + "\n")
    return manifest


def _proved() -> list[str]:
    return VALIDATED.read_text().split() if VALIDATED.is_file() else []


def validation_key(manifest: pd.DataFrame, root: Path, expected_size: int | None) -> str:
    """What a validation proved: the manifest's rows, the suite's settings, and each file's
    size, modification time, inode change time and inode number (a changed or replaced file
    changes the key, even one of the same size whose modification time was put back, as
    ``cp -p`` and ``rsync -a`` do: the change time cannot be put back)."""
    digest = hashlib.sha256(pd.util.hash_pandas_object(manifest, index=False).values.tobytes())
    digest.update(f"{root.resolve()}|{expected_size}|{SUITE_VERSION}".encode())
    for rel in manifest["path"]:
        try:
            stat = (root / rel).stat()
            digest.update(f"{rel}|{stat.st_size}|{stat.st_mtime_ns}|{stat.st_ctime_ns}|"
                          f"{stat.st_ino}\n".encode())
        except OSError:
            digest.update(f"{rel}|missing\n".encode())
    return digest.hexdigest()


def summary(manifest: pd.DataFrame) -> str:
    counts = manifest.groupby(["domain", "split"]).size()
    lines = [f"  {domain:>12} {split:<13} {n:6d}" for (domain, split), n in counts.items()]
    return "\n".join(lines)
