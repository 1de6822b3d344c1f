"""The manifest and the paper's split: all source labelled; target halved, stratified, seeded."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from components.data.importers import SCANNERS
from components.files import replacing

COLUMNS = ["sample_id", "domain", "split", "label", "path", "sha256"]
SPLITS = ("source", "target_train", "target_test")


def stratified_target_split(target: pd.DataFrame, *, test_fraction: float, seed: int) -> pd.Series:
    """Return the split name per target row; each class is halved on its own (stratified)."""
    rng = np.random.default_rng(seed)
    split = pd.Series("target_train", index=target.index)
    for _, group in target.sort_values("sample_id").groupby("label", sort=True):
        n_test = int(round(len(group) * test_fraction))
        chosen = rng.permutation(len(group))[:n_test]
        split.loc[group.index[chosen]] = "target_test"
    return split


def build_manifest(root: str | Path, *, source: str, target: str, layout: str = "folders",
                   test_fraction: float = 0.5, seed: int = 0, checksums=None) -> pd.DataFrame:
    """``checksums``: a ``ChecksumCache`` for the files' sha256 (none: hash them all)."""
    scan = SCANNERS[layout]
    src = pd.DataFrame(scan(root, source, checksums)).assign(split="source")
    tgt = pd.DataFrame(scan(root, target, checksums))
    tgt["split"] = stratified_target_split(tgt, test_fraction=test_fraction, seed=seed)
    manifest = pd.concat([src, tgt], ignore_index=True)[COLUMNS]
    return manifest.sort_values(["split", "sample_id"], kind="stable").reset_index(drop=True)


def class_list(manifest: pd.DataFrame) -> list[str]:
    """The label space is the source domain's classes, in a stable (natural) order."""
    labels = manifest.loc[manifest["split"] == "source", "label"].astype(str).unique()
    return sorted(labels, key=lambda s: (0, int(s)) if s.isdigit() else (1, s))


# How a user rebuilds the manifest. Not `dvc repro split` alone: that splits params.yaml's
# data (./data), not a --params file's or a data.root elsewhere.
RESPLIT = ("`sage-ada data split` (with your --params file, if you use one; `dvc repro split` "
           "for the DVC-tracked ./data)")


def read_manifest(path: str | Path) -> pd.DataFrame:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"manifest {path} not found; build it first: {RESPLIT}")
    return pd.read_csv(path, dtype=str, keep_default_na=False)


def write_manifest(manifest: pd.DataFrame, path: str | Path) -> None:
    """Write atomically: a crash mid-write never leaves a half manifest behind."""
    with replacing(path) as tmp:
        manifest.to_csv(tmp, index=False)
