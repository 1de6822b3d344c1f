"""Files that several processes on one machine write: two runs in one clone, several
``sage-ada data validate`` at once, the receiver beside a run.

Every such write goes through :func:`replacing`: a temporary file with a name of its own in the
target's folder, flushed to disk, then renamed over the target in one step, so a reader sees the
old file or the new one, never half of one, and two writers never share a temporary name.
Caches that several processes add to (content hashes, proved manifests) are read, merged and
written while holding :func:`exclusive`, so one process's entries never erase another's.
"""
from __future__ import annotations

import contextlib
import os
import uuid
from pathlib import Path
from typing import Iterator


@contextlib.contextmanager
def exclusive(lock: Path, *, quiet: bool = False) -> Iterator[None]:
    """An advisory lock on ``lock`` between processes on this machine (a second process
    waits, and says so unless ``quiet``, while the first fills what both need)."""
    import fcntl

    lock = Path(lock)
    lock.parent.mkdir(parents=True, exist_ok=True)
    with open(lock, "a") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if not quiet:
                print(f"waiting for another run that is preparing {lock.stem} …", flush=True)
            fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def temporary_name(path: Path) -> Path:
    """A name beside ``path`` that no other process or thread will pick (hidden, so a folder
    listing or a DVC hash of the folder never counts it if a crash leaves it behind)."""
    return path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")


@contextlib.contextmanager
def replacing(path: str | Path) -> Iterator[Path]:
    """Yields a temporary path to write ``path``'s new content to; on success the content is
    flushed to disk and renamed over ``path`` (atomic on POSIX), on failure it is removed and
    ``path`` is untouched."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_name(path)
    try:
        yield tmp
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_atomic(path: str | Path, content: str | bytes) -> None:
    """``path`` gets ``content`` whole, or keeps what it had."""
    with replacing(path) as tmp:
        if isinstance(content, bytes):
            tmp.write_bytes(content)
        else:
            tmp.write_text(content)
