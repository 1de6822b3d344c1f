"""Content hashes of image files, cached by path, size and modification time.

``data validate`` checks every file against the manifest's sha256, on every run: the cache keeps
that to a stat per unchanged file, and a file whose size or time changed is hashed again.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path


class ChecksumCache:
    def __init__(self, path: str | Path | None = None):
        self.path = Path(path) if path else None
        self.known: dict[str, list] = {}
        if self.path and self.path.is_file():
            try:
                self.known = json.loads(self.path.read_text())
            except ValueError:  # a torn write: hash everything again
                self.known = {}

    def sha256(self, file: Path) -> str:
        stat = file.stat()
        key, stamp = str(file.resolve()), [stat.st_size, stat.st_mtime_ns]
        cached = self.known.get(key)
        if cached and cached[:2] == stamp:
            return cached[2]
        digest = hashlib.sha256(file.read_bytes()).hexdigest()
        self.known[key] = stamp + [digest]
        return digest

    def save(self) -> None:
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.known))
        os.replace(tmp, self.path)
