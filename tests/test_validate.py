"""Every Great Expectations failure on the manifest is caught and explained."""
from __future__ import annotations

import shutil

import pandas as pd
import pytest

from components.data.split import class_list
from components.data.validate import ManifestInvalid, validate_manifest


@pytest.fixture
def small(digits_manifest, digits_root, tmp_path):
    """A copy of a few files per class and split, so tests may break them."""
    m = digits_manifest.groupby(["split", "label"]).head(3).reset_index(drop=True)
    for rel in m["path"]:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(digits_root / rel, tmp_path / rel)
    return m, tmp_path


def _fails(m, root, *needles):
    with pytest.raises(ManifestInvalid) as err:
        validate_manifest(m, root, [str(c) for c in range(10)], expected_size=28)
    text = str(err.value)
    for needle in needles:
        assert needle in text, text
    assert "Fix:" in text
    return text


def test_valid_manifest_passes(small):
    m, root = small
    facts = validate_manifest(m, root, class_list(m), expected_size=28)
    assert facts["decodable"].all()


def test_duplicate_sample_id(small):
    m, root = small
    m.loc[1, "sample_id"] = m.loc[0, "sample_id"]
    _fails(m, root, "sample_id is not unique", m.loc[0, "sample_id"])


def test_sample_leaked_into_both_target_splits(small):
    m, root = small
    leak = m[m.split == "target_train"].iloc[0].copy()
    leak["split"] = "target_test"
    m = pd.concat([m, leak.to_frame().T], ignore_index=True)
    _fails(m, root, "sample in two splits", leak["path"])


def test_image_content_replaced_after_the_split(small):
    """The file still decodes at the right size, but it is another image than the manifest
    recorded (by sha256)."""
    m, root = small
    a, b = m.path.iloc[0], m.path.iloc[1]
    shutil.copy(root / b, root / a)
    _fails(m, root, "image content differs from the manifest's sha256", a)


def test_the_same_image_under_another_name_in_the_test_split(small):
    """A train/test leak that ids and paths cannot show: a copy of a training image filed as
    a test image."""
    m, root = small
    train = m[m.split == "target_train"].iloc[0]
    test = m[(m.split == "target_test") & (m.label == train.label)].index[0]
    shutil.copy(root / train.path, root / m.loc[test, "path"])
    m.loc[test, "sha256"] = train.sha256           # a manifest rebuilt after the copy
    _fails(m, root, "the same image content is listed more than once", train.path,
           m.loc[test, "path"])


def test_file_hashes_are_cached_by_size_and_time(small, tmp_path):
    from components.data.checksums import ChecksumCache

    m, root = small
    cache = tmp_path / "sha256.json"
    validate_manifest(m, root, class_list(m), expected_size=28, checksum_cache=cache)
    assert len(ChecksumCache(cache).known) == len(m)
    a, b = m.path.iloc[0], m.path.iloc[1]
    shutil.copy(root / b, root / a)                # another size or time: hashed again
    _fails_cached = pytest.raises(ManifestInvalid, match="differs from the manifest's sha256")
    with _fails_cached:
        validate_manifest(m, root, class_list(m), expected_size=28, checksum_cache=cache)


def test_unknown_label(small):
    m, root = small
    m.loc[4, "label"] = "eleven"
    text = _fails(m, root, "label outside the class list", "eleven",
                  "classes outside the class list ['eleven']")
    assert "missing classes []" not in text                     # no empty, misleading list


def test_unknown_split_value(small):
    m, root = small
    m.loc[2, "split"] = "validation"
    _fails(m, root, "unknown split value", "validation")


def test_truncated_png(small):
    m, root = small
    path = root / m.loc[5, "path"]
    path.write_bytes(path.read_bytes()[:60])
    _fails(m, root, "cannot be decoded", m.loc[5, "path"])


def test_missing_file(small):
    m, root = small
    (root / m.loc[6, "path"]).unlink()
    _fails(m, root, "image file missing", m.loc[6, "path"])


def test_wrong_size(small):
    from PIL import Image

    m, root = small
    Image.new("L", (20, 20)).save(root / m.loc[7, "path"])
    _fails(m, root, "differs from 28", m.loc[7, "path"])


def test_class_missing_from_a_split(small):
    m, root = small
    m = m[~((m.split == "target_test") & (m.label == "3"))]
    _fails(m, root, "not every class is present in split 'target_test'", "missing classes ['3']")


def test_failed_split_keeps_the_previous_manifest(project, digits_root):
    """The DVC split stage writes the new manifest only after it validates."""
    from components.config import load_config
    from components.data import prepare

    cfg = load_config("params.yaml")
    before = open(cfg.data.manifest).read()
    bad_root = project / "bad"
    shutil.copytree(digits_root, bad_root)
    victim = next((bad_root / "optdigits" / "3").iterdir())
    victim.write_bytes(b"not a png")
    cfg = cfg.with_overrides({"data.root": str(bad_root)})
    with pytest.raises(ManifestInvalid, match="cannot be decoded"):
        prepare.split_and_validate(cfg)
    assert open(cfg.data.manifest).read() == before


def test_a_proved_manifest_is_not_decoded_again_until_a_file_changes(project, digits_root,
                                                                      monkeypatch):
    from components.config import load_config
    from components.data import prepare

    root = project / "copy"
    shutil.copytree(digits_root, root)
    cfg = load_config("params.yaml").with_overrides({"data.root": str(root)})
    prepare.validate(cfg)
    calls = []
    real = prepare.validate_manifest
    monkeypatch.setattr(prepare, "validate_manifest",
                        lambda *a, **k: calls.append(1) or real(*a, **k))
    prepare.validate(cfg)
    assert calls == []                                  # proved before: not decoded again
    manifest = prepare.read_manifest(cfg.data.manifest)
    a, b = manifest.path.iloc[0], manifest.path.iloc[1]
    shutil.copy(root / b, root / a)                     # replaced after the proof
    with pytest.raises(ManifestInvalid, match="differs from the manifest's sha256"):
        prepare.validate(cfg)
    assert calls == [1]
