"""Content hashes of image files, and what decoding them showed, cached per file.

``data validate`` checks every file against the manifest's sha256, on every run: the cache keeps
that to a stat per unchanged file. A file counts as unchanged while its stamp is: size,
modification time, inode change time and inode number. The modification time alone is not
enough: ``cp -p``, ``rsync -a`` or ``touch -r`` put it back on a replaced file, and a file of
the same size then looked unchanged. The change time (``st_ctime``) is set by the kernel on
every write, rename or ``utime`` and no user tool can set it back, and a file renamed over
another (what ``rsync`` does) has a new inode number.

Besides the sha256 of the bytes, the cache keeps what decoding the image showed (its size and
a hash of its pixels, see :func:`picture_of`), so an unchanged file is not decoded again to
compare pixels across the manifest.

Several processes share the cache (two runs, several ``data validate`` at once): each saves by
merging its new entries into what is on disk under a lock, so none drops another's.

The file is one JSON object: resolved path -> ``[stamp, sha256, picture]``, where ``stamp`` is
``[size, mtime_ns, ctime_ns, inode]`` and ``picture`` is ``[width, height, pixels_sha256]`` or
null (not decoded yet). Entries written before the stamp had four fields
(``[size, mtime_ns, sha256]``) are stale, never trusted; and an older version reading this
format sees a stamp that never matches its own and hashes the file again.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import stat
from pathlib import Path
from typing import NamedTuple

from PIL import Image

from components.files import exclusive, write_atomic


class Picture(NamedTuple):
    """What decoding an image showed."""
    width: int
    height: int
    pixels: str  # sha256 of the decoded image: equal for pixel-identical files, however encoded


def picture_of(data: bytes) -> Picture:
    """Decode ``data`` fully (a truncated or corrupt file raises here) and hash its pixels:
    mode, size and the decoded bytes, so re-encoding (another compression level, added text
    chunks or other metadata) keeps the hash and any change of a pixel changes it. A palette
    image is hashed by the colours it shows (palette and transparency), not by its indices."""
    with Image.open(io.BytesIO(data)) as im:
        im.load()
        digest = hashlib.sha256(f"{im.mode}|{im.width}x{im.height}|".encode())
        digest.update((im.convert("RGBA") if im.mode in ("P", "PA") else im).tobytes())
        return Picture(im.width, im.height, digest.hexdigest())


def _stamp(stat: os.stat_result) -> list[int]:
    return [stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns, stat.st_ino]


def _well_formed(entry) -> bool:
    if not (isinstance(entry, list) and len(entry) == 3):
        return False
    stamp, sha256, picture = entry
    return (isinstance(stamp, list) and len(stamp) == 4
            and all(isinstance(v, int) for v in stamp) and isinstance(sha256, str)
            and (picture is None or (isinstance(picture, list) and len(picture) == 3
                                     and isinstance(picture[0], int)
                                     and isinstance(picture[1], int)
                                     and isinstance(picture[2], str))))


class ChecksumCache:
    def __init__(self, path: str | Path | None = None):
        self.path = Path(path) if path else None
        self.known: dict[str, list] = self._read()
        self.added: dict[str, list] = {}  # learnt by this process, not yet saved
        self._folders: dict[str, str] = {}  # folder as given -> resolved (see _key_and_stat)

    def sha256(self, file: Path) -> str:
        return self._facts(Path(file), decode=False)[0]

    def sha256_and_picture(self, file: Path) -> tuple[str, Picture | None]:
        """The file's content hash and its decoded :class:`Picture` (None: it cannot be
        decoded; that is not cached, so a broken file is tried again each time)."""
        return self._facts(Path(file), decode=True)

    def _key_and_stat(self, file: Path) -> tuple[str, os.stat_result]:
        """The file's resolved path (the cache's key) and its stat. ``Path.resolve`` costs an
        ``lstat`` per path component (about 40 µs a file, twice a file in ``data split``: 4 s
        of a warm split of 52,000 files), so each folder is resolved once and a file that is
        not itself a link is its resolved folder plus its name: the same key, and its
        ``lstat`` is its stat. (A relative folder is resolved against the working folder of
        its first file: a cache object lives within one command, which never changes it.)"""
        info = os.lstat(file)
        if stat.S_ISLNK(info.st_mode):
            return str(file.resolve()), file.stat()
        head, name = os.path.split(os.fspath(file))
        folder = self._folders.get(head)
        if folder is None:
            folder = self._folders[head] = str(Path(head).resolve())
        return os.path.join(folder, name), info

    def _facts(self, file: Path, *, decode: bool) -> tuple[str, Picture | None]:
        key, info = self._key_and_stat(file)
        stamp = _stamp(info)
        cached = self.known.get(key)
        if cached and cached[0] == stamp and (cached[2] is not None or not decode):
            return cached[1], (Picture(*cached[2]) if cached[2] else None)
        data = file.read_bytes()  # hash and decode the same bytes, read once
        digest = hashlib.sha256(data).hexdigest()
        picture = None
        if decode:
            try:
                picture = picture_of(data)
            except Exception:  # any decoder error means the file is unusable
                picture = None
        self.known[key] = self.added[key] = [stamp, digest, list(picture) if picture else None]
        return digest, picture

    def _read(self) -> dict[str, list]:
        if self.path is None or not self.path.is_file():
            return {}
        try:
            saved = json.loads(self.path.read_text())
        except ValueError:  # written by a version without atomic writes and torn: hash again
            return {}
        if not isinstance(saved, dict):
            return {}
        # entries of the older format (no change time or inode in the stamp) are dropped:
        # their files are hashed again
        return {path: entry for path, entry in saved.items() if _well_formed(entry)}

    def save(self) -> None:
        """Merge this process's new entries into the file (others may have saved since we read
        it); for a path both learnt, ours wins (both describe the file at their stamps)."""
        if self.path is None or not self.added:
            return
        with exclusive(self.path.with_name(self.path.name + ".lock"), quiet=True):
            merged = self._read()
            for path, entry in self.added.items():
                theirs = merged.get(path)
                if (theirs and theirs[:2] == entry[:2] and entry[2] is None
                        and theirs[2] is not None):
                    continue  # the same file, and they also decoded it: keep their picture
                merged[path] = entry
            write_atomic(self.path, json.dumps(merged))
        self.known.update(merged)
        self.added = {}
