"""DVC versioning of the raw data: a rebuilt folder must match the hash in ``data.dvc``.

On a fresh clone the images are rebuilt (they are deterministic), compared with the recorded
hash, and put into the local DVC cache, so ``dvc status`` is clean without any remote.
"""
from __future__ import annotations

from pathlib import Path


class DataVersionMismatch(RuntimeError):
    """The data folder differs from what ``data.dvc`` records."""


def verify_and_cache(dvc_file: str | Path = "data.dvc") -> str:
    """Check the workspace against ``dvc_file``, cache it, and return the recorded hash."""
    from dvc.repo import Repo

    from components.tracking.lineage import data_hash

    dvc_file = Path(dvc_file)
    if not dvc_file.exists():
        raise FileNotFoundError(f"{dvc_file} not found; track the data with `dvc add`")
    repo = Repo(str(dvc_file.resolve().parent))
    try:
        status = repo.status(targets=[str(dvc_file)])
        problems = []
        for entry in status.get(str(dvc_file), []):
            for outs in (entry.get("changed outs") or {}).items() if isinstance(entry, dict) else []:
                if outs[1] != "not in cache":
                    problems.append(f"{outs[0]}: {outs[1]}")
        if problems:
            raise DataVersionMismatch(
                f"the data differs from {dvc_file} ({'; '.join(problems)}). If you changed it on "
                f"purpose, record it with `dvc add data && git add {dvc_file}`; otherwise restore it "
                "(`dvc checkout` or rebuild it).")
        repo.commit(str(dvc_file), force=True)
    finally:
        repo.close()
    return data_hash(dvc_file)
