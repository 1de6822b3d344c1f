"""Content hashes of image files, cached by path, size and modification time.

``data validate`` checks every file against the manifest's sha256, on every run: the cache keeps
that to a stat per unchanged file, and a file whose size or time changed is hashed again.
Several processes share the cache (two runs, several ``data validate`` at once): each saves by
merging its new hashes into what is on disk under a lock, so none drops another's.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

from components.files import exclusive, write_atomic


class ChecksumCache:
    def __init__(self, path: str | Path | None = None):
        self.path = Path(path) if path else None
        self.known: dict[str, list] = self._read()
        self.added: dict[str, list] = {}  # hashed by this process, not yet saved

    def sha256(self, file: Path) -> str:
        stat = file.stat()
        key, stamp = str(file.resolve()), [stat.st_size, stat.st_mtime_ns]
        cached = self.known.get(key)
        if cached and cached[:2] == stamp:
            return cached[2]
        digest = hashlib.sha256(file.read_bytes()).hexdigest()
        self.known[key] = self.added[key] = stamp + [digest]
        return digest

    def _read(self) -> dict[str, list]:
        if self.path is None or not self.path.is_file():
            return {}
        try:
            return json.loads(self.path.read_text())
        except ValueError:  # written by a version without atomic writes and torn: hash again
            return {}

    def save(self) -> None:
        """Merge this process's new hashes into the file (others may have saved since we read
        it); for a path both hashed, ours wins (both are its hash at their stamps)."""
        if self.path is None or not self.added:
            return
        with exclusive(self.path.with_name(self.path.name + ".lock"), quiet=True):
            merged = self._read()
            merged.update(self.added)
            write_atomic(self.path, json.dumps(merged))
        self.known.update(merged)
        self.added = {}
