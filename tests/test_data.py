"""Builders, importers and the split."""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from components.data.digits import build_digits
from components.data.importers import DataLayoutError, scan_folders, scan_lists
from components.data.split import build_manifest, class_list


def _digest(root: Path) -> str:
    h = hashlib.sha256()
    for path in sorted(root.rglob("*.png")):
        h.update(path.relative_to(root).as_posix().encode())
        h.update(path.read_bytes())
    return h.hexdigest()


def test_digits_are_deterministic_counted_and_sized(digits_root, tmp_path):
    again = tmp_path / "again"
    build_digits(again)
    assert _digest(again) == _digest(digits_root)
    mnist = list((digits_root / "mnist").rglob("*.png"))
    optdigits = list((digits_root / "optdigits").rglob("*.png"))
    assert len(mnist) == 5000 and len(optdigits) == 1797
    assert {len(list((digits_root / "mnist" / str(c)).iterdir())) for c in range(10)} == {500}
    for path in mnist[:20] + optdigits[:20]:
        with Image.open(path) as im:
            assert im.size == (28, 28) and im.mode == "L"
    # optdigits spans the full range after rescaling 0..16 → 0..255
    arr = np.stack([np.asarray(Image.open(p)) for p in optdigits[:200]])
    assert arr.max() > 200


def test_split_is_stratified_disjoint_and_seeded(digits_manifest, digits_root):
    m = digits_manifest
    assert set(m["split"]) == {"source", "target_train", "target_test"}
    target = m[m["domain"] == "optdigits"]
    counts = target.groupby(["label", "split"]).size().unstack()
    assert ((counts["target_train"] - counts["target_test"]).abs() <= 1).all()
    assert not set(target[target.split == "target_train"].sample_id) & set(
        target[target.split == "target_test"].sample_id)
    assert m["sample_id"].is_unique
    same = build_manifest(digits_root, source="mnist", target="optdigits", seed=0)
    assert same.equals(m)
    other = build_manifest(digits_root, source="mnist", target="optdigits", seed=1)
    test_ids = lambda df: set(df.loc[df.split == "target_test", "sample_id"])  # noqa: E731
    assert test_ids(other) != test_ids(m) and len(test_ids(other)) == len(test_ids(m))
    assert class_list(m) == [str(c) for c in range(10)]


def _image(path: Path, value: int, size=(12, 10)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (value, value, value)).save(path)


def test_folder_importer_reads_office_style_layout(tmp_path):
    for domain in ("amazon", "webcam"):
        for c, cls in enumerate(["bike", "cup"]):
            for i in range(4):
                _image(tmp_path / domain / cls / f"{i}.jpg", 10 * c + i)
    rows = scan_folders(tmp_path, "webcam")
    assert len(rows) == 8 and rows[0]["sample_id"] == "webcam/bike/0"
    assert {r["label"] for r in rows} == {"bike", "cup"}
    m = build_manifest(tmp_path, source="amazon", target="webcam", seed=0)
    assert (m["split"] == "target_test").sum() == 4
    with pytest.raises(DataLayoutError, match="dslr"):
        scan_folders(tmp_path, "dslr")


def test_list_importer_reads_domainnet_style_lists(tmp_path):
    lines = []
    for i in range(6):
        rel = f"clipart/cls{i % 2}/img{i}.png"
        _image(tmp_path / rel, i)
        lines.append(f"{rel} {i % 2}")
    (tmp_path / "clipart_train.txt").write_text("\n".join(lines[:4]) + "\n")
    (tmp_path / "clipart_test.txt").write_text("\n".join(lines[4:]) + "\n")
    rows = scan_lists(tmp_path, "clipart")
    assert len(rows) == 6 and {r["label"] for r in rows} == {"0", "1"}
    (tmp_path / "real_train.txt").write_text("real/missing.png 0\n")
    with pytest.raises(DataLayoutError, match="not found"):
        scan_lists(tmp_path, "real")


def test_data_digits_refuses_a_folder_that_differs_from_data_dvc(tmp_path, digits_root):
    """On a fresh clone nothing is in DVC's cache, so ``dvc status`` cannot tell a changed folder
    from a missing cache entry; the folder is hashed and compared before anything is recorded."""
    import shutil
    import subprocess

    from tests.conftest import REPO

    repo = tmp_path / "repo"
    shutil.copytree(digits_root, repo / "data")
    for name in ("data.dvc", "params.yaml"):
        shutil.copy(REPO / name, repo / name)
    subprocess.run(["git", "init", "--quiet"], cwd=repo, check=True)
    subprocess.run(["dvc", "init", "--quiet"], cwd=repo, check=True)
    shutil.copy(REPO / ".dvc" / "config", repo / ".dvc" / "config")
    recorded = (repo / "data.dvc").read_bytes()
    image = next((repo / "data" / "mnist" / "3").glob("*.png"))
    original = image.read_bytes()
    pixels = np.array(Image.open(image))
    pixels[0, 0] = 255 - pixels[0, 0]
    Image.fromarray(pixels).save(image)

    def digits():
        return subprocess.run(["sage-ada", "data", "digits"], cwd=repo, capture_output=True,
                              text=True, timeout=300)

    out = digits()
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "error: the data differs from data.dvc (data hashes to " in out.stderr
    assert (repo / "data.dvc").read_bytes() == recorded              # nothing recorded
    assert not list((repo / ".dvc").glob("cache/files/md5/*"))      # nothing cached

    image.write_bytes(original)
    out = digits()
    assert out.returncode == 0, out.stderr
    assert f"matches data.dvc (hash {yaml_md5(recorded)})" in out.stdout
    assert (repo / "data.dvc").read_bytes() == recorded
    assert "up to date" in subprocess.run(["dvc", "status", "data.dvc"], cwd=repo, text=True,
                                          capture_output=True).stdout


def yaml_md5(dvc_file: bytes) -> str:
    import yaml

    return yaml.safe_load(dvc_file)["outs"][0]["md5"]
