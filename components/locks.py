"""An advisory lock between processes on this machine, for what two runs started together
would otherwise do twice or tear: filling a cache entry, creating a fresh MLflow store."""
from __future__ import annotations

import contextlib
from pathlib import Path


@contextlib.contextmanager
def exclusive(lock: Path):
    """An advisory lock on ``lock`` between processes on this machine (a second run waits,
    and says so, while the first fills a cache entry both need)."""
    import fcntl

    lock.parent.mkdir(parents=True, exist_ok=True)
    with open(lock, "w") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(f"waiting for another run that is preparing {lock.stem} …", flush=True)
            fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)
