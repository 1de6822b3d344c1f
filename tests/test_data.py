"""Builders, importers and the split."""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from components.data.shipped import DOMAINS, build_shipped
from components.data import shapes, textured
from components.data.importers import DataLayoutError, scan_folders, scan_lists
from components.data.split import build_manifest, class_list


def _digest(root: Path) -> str:
    h = hashlib.sha256()
    for path in sorted(root.rglob("*.png")):
        h.update(path.relative_to(root).as_posix().encode())
        h.update(path.read_bytes())
    return h.hexdigest()


def test_shipped_domains_are_deterministic_counted_and_sized(digits_root, tmp_path):
    again = tmp_path / "again"
    build_shipped(again)
    assert _digest(again) == _digest(digits_root)
    for domain, (_, channels, count) in DOMAINS.items():
        files = sorted((digits_root / domain).rglob("*.png"))
        assert len(files) == count, domain
        for path in files[:: count // 20]:
            with Image.open(path) as im:
                assert im.size == (28, 28) and im.mode == ("L" if channels == 1 else "RGB")
    optdigits = list((digits_root / "optdigits").rglob("*.png"))
    assert {len(list((digits_root / "mnist" / str(c)).iterdir())) for c in range(10)} == {500}
    # optdigits spans the full range after rescaling 0..16 → 0..255
    arr = np.stack([np.asarray(Image.open(p)) for p in optdigits[:200]])
    assert arr.max() > 200


def _pixels(root: Path, domain: str, label, n: int = 50) -> np.ndarray:
    files = sorted((root / domain / str(label)).glob("*.png"))[:n]
    return np.stack([np.asarray(Image.open(p), dtype=np.float64) for p in files])


def test_colour_source_is_flat_ink_on_flat_paper_always_apart_in_brightness(digits_root):
    for label in (0, 7):
        colour = _pixels(digits_root, "mnist-colour", label)
        grey = _pixels(digits_root, "mnist", label)
        luma = colour @ textured.LUMA
        ink = luma[grey == 255]               # full strokes show the ink, corners the paper
        paper = np.broadcast_to(luma[:, :1, :1], luma.shape)[grey == 255]
        assert np.abs(ink - paper).min() >= 255 * textured.MIN_BRIGHTNESS_GAP - 1
        assert (colour[:, 0, 0] != colour[:, 0, 0][:1]).any()   # the colours vary per image


def test_colour_target_is_texture_not_flat_colour_and_keeps_the_shape(digits_root):
    texture = _pixels(digits_root, "optdigits-texture", 3)
    grey = _pixels(digits_root, "optdigits", 3)
    background = texture[grey == 0]            # where no stroke is: a photograph's patch
    assert background.std() > 20
    # the digit is there: the texture inside the shape differs from the background's
    inside = np.stack([np.abs(t[g > 200].mean(0) - t[g == 0].mean(0))
                       for t, g in zip(texture, grey)])
    assert np.median(inside.max(1)) > 10


def test_shapes_are_filled_silhouettes_and_their_sketches_outlines_on_paper(digits_root):
    """The third benchmark's shift as designed: the source fills the shape with white on black,
    the target draws only its outline, dark on light grainy paper; ten classes, balanced."""
    for domain, count in (("shapes", 500), ("shapes-sketch", 200)):
        assert sorted(p.name for p in (digits_root / domain).iterdir()) == sorted(shapes.CLASSES)
        assert {len(list((digits_root / domain / c).iterdir())) for c in shapes.CLASSES} == {count}
    filled = _pixels(digits_root, "shapes", "circle")
    drawn = _pixels(digits_root, "shapes-sketch", "circle")
    # the centre lies inside every circle (radius ≥ 7.7 px, centre within 3.4 px of the middle)
    assert filled[:, 14, 14].min() == 255 and filled[:, 0, 0].max() == 0
    paper = np.median(drawn.reshape(len(drawn), -1), axis=1)
    assert paper.min() >= shapes.PAPER[0] - 3 * shapes.GRAIN
    assert (np.abs(drawn[:, 13:16, 13:16].mean((1, 2)) - paper) < 2 * shapes.GRAIN).all()
    assert (drawn.reshape(len(drawn), -1).min(1) < paper - 60).all()       # a dark stroke
    # a sketched ring is two outlines: more ink than a sketched circle of the same draws
    ink = lambda x: (x < np.median(x) - 40).mean()  # noqa: E731
    assert ink(_pixels(digits_root, "shapes-sketch", "ring")) > ink(drawn)


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
