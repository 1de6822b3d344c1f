"""DVC versioning of the raw data: a rebuilt folder must match the hash in ``data.dvc``.

On a fresh clone the images are rebuilt (they are deterministic), compared with the recorded
hash, and put into the local DVC cache, so ``dvc status`` is clean without any remote.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import yaml


class DataVersionMismatch(RuntimeError):
    """The data folder differs from what ``data.dvc`` records."""


def verify_and_cache(dvc_file: str | Path = "data.dvc") -> str:
    """Check the workspace against ``dvc_file``, cache it, and return the recorded hash.

    The workspace is hashed and compared with the record first: ``dvc status`` cannot say
    whether an uncached folder differs (it reports "not in cache" either way), and a forced
    commit would record whatever is there."""
    from dvc.repo import Repo

    dvc_file = Path(dvc_file)
    if not dvc_file.exists():
        raise FileNotFoundError(f"{dvc_file} not found; track the data with `dvc add`")
    repo = Repo(str(dvc_file.resolve().parent))
    try:
        stage = repo.stage.load_one(str(dvc_file))
        problems = []
        for out in stage.outs:
            found = out.get_hash() if out.exists else None
            if found is None or found.value != out.hash_info.value:
                state = f"hashes to {found.value}" if found else "is missing"
                problems.append(f"{out.def_path} {state}, {dvc_file} records {out.hash_info.value}")
        if problems:
            raise DataVersionMismatch(
                f"the data differs from {dvc_file} ({'; '.join(problems)}). If you changed it on "
                f"purpose, record it with `dvc add data && git add {dvc_file}`; otherwise restore it "
                f"(`dvc checkout {dvc_file}` when DVC has cached it, or delete the folder and build "
                "it again)")
        repo.commit(str(dvc_file), force=True)
    finally:
        repo.close()
    return data_hash(dvc_file)


def data_hash(dvc_file: str | Path = "data.dvc", *, root: str | Path | None = None,
              manifest: str | Path | None = None) -> str:
    """The version of the data a run used: DVC's hash (``outs[0].md5`` of ``dvc_file``) when
    ``root`` is the folder it tracks (or no root is given), else ``sha256:<…>``, a hash of the
    manifest's per-file sha256s (which validation checks against the files), so data elsewhere
    is never tagged with the shipped benchmark's version."""
    path = Path(dvc_file)
    if path.exists():
        outs = ((yaml.safe_load(path.read_text()) or {}).get("outs") or [{}])[0]
        tracked = (path.parent / str(outs.get("path", ""))).resolve()
        if root is None or Path(root).resolve() == tracked:
            return str(outs.get("md5", "unknown"))
    if manifest is not None and Path(manifest).is_file():
        import pandas as pd

        files = pd.read_csv(manifest, usecols=["path", "sha256"]).sort_values("path")
        listing = "\n".join(f"{p} {h}" for p, h in zip(files["path"], files["sha256"]))
        return "sha256:" + hashlib.sha256(listing.encode()).hexdigest()[:29]  # MLflow keeps 36
    return "untracked"
