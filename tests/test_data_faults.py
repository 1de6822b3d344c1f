"""Data faults that the file checks let through (issue 34, fixes 3 and 4).

* A replaced image of the same byte size whose modification time was put back (``cp -p``,
  ``rsync -a``) must not be trusted by the hash cache or by a manifest proved before.
* A pixel-identical copy saved with other PNG settings is the same image: listed twice (in two
  splits or in one), it is reported like a byte copy.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image, PngImagePlugin

from components.data.split import class_list
from components.data.validate import ManifestInvalid, validate_manifest

DOMAINS = ("mnist", "optdigits")  # what the default manifest (digits_manifest) lists


@pytest.fixture
def small(digits_manifest, digits_root, tmp_path):
    """A copy of a few files per class and split, so tests may break them."""
    m = digits_manifest.groupby(["split", "label"]).head(3).reset_index(drop=True)
    root = tmp_path / "data"
    for rel in m["path"]:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(digits_root / rel, root / rel)
    return m, root


def _validate(m, root, cache=None):
    return validate_manifest(m, root, class_list(m), expected_size=28, checksum_cache=cache)


def _fails(m, root, *needles, cache=None) -> str:
    with pytest.raises(ManifestInvalid) as err:
        _validate(m, root, cache)
    text = str(err.value)
    assert text.startswith("manifest validation failed:"), text
    for needle in needles:
        assert needle in text, text
    return text


def _same_size_pair(root: Path, paths) -> tuple[str, str]:
    """Two listed files of equal byte size and different bytes."""
    by_size: dict[int, str] = {}
    for rel in paths:
        data = (root / rel).read_bytes()
        other = by_size.setdefault(len(data), rel)
        if other != rel and (root / other).read_bytes() != data:
            return other, rel
    pytest.skip("no two listed images of the same byte size")


def _replace_keeping_size_and_mtime(victim: Path, data: bytes, how: str) -> None:
    """Put ``data`` in ``victim`` as ``cp -p`` (in place) or ``rsync -a`` (a new file renamed
    over it) would, then restore the victim's access and modification times."""
    before = victim.stat()
    assert len(data) == before.st_size
    if how == "cp -p":
        victim.write_bytes(data)
    else:
        tmp = victim.with_name("." + victim.name + ".rsync")
        tmp.write_bytes(data)
        os.replace(tmp, victim)
    os.utime(victim, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = victim.stat()
    assert (after.st_size, after.st_mtime_ns) == (before.st_size, before.st_mtime_ns)


# -- fix 3: same size, restored modification time ------------------------------------------


@pytest.mark.parametrize("how", ["cp -p", "rsync -a"])
def test_the_hash_cache_does_not_trust_a_same_size_replacement_with_its_mtime_put_back(
        small, tmp_path, how):
    m, root = small
    cache = tmp_path / "cache" / "sha256.json"
    _validate(m, root, cache)                                  # every file hashed and cached
    victim, donor = _same_size_pair(root, m["path"])
    _replace_keeping_size_and_mtime(root / victim, (root / donor).read_bytes(), how)
    _fails(m, root, "image content differs from the manifest's sha256", victim, cache=cache)


@pytest.mark.parametrize("how", ["cp -p", "rsync -a"])
def test_a_proved_manifest_is_not_trusted_after_a_same_size_replacement(project, digits_root,
                                                                        how):
    """What ``sage-ada data validate`` runs (flows/cli.py: ``prepare.validate``): proved once,
    then one image is replaced by another of the same size and its time put back."""
    from components.config import load_config
    from components.data import prepare

    root = project / "copy"
    for domain in DOMAINS:
        shutil.copytree(digits_root / domain, root / domain)
    cfg = load_config("params.yaml").with_overrides({"data.root": str(root)})
    manifest = prepare.validate(cfg)                           # proved and cached
    victim, donor = _same_size_pair(root, manifest["path"])
    _replace_keeping_size_and_mtime(root / victim, (root / donor).read_bytes(), how)
    with pytest.raises(ManifestInvalid) as err:
        prepare.validate(cfg)
    text = str(err.value)
    assert "image content differs from the manifest's sha256" in text and victim in text, text


def test_a_hash_cache_of_the_older_format_is_not_trusted_and_does_not_crash(small, tmp_path):
    """Entries written before the stamp held the change time and inode (``[size, mtime_ns,
    sha256]``) are stale: here they match the files' size and time but record another hash,
    as they would for a file replaced since; the files are hashed again and pass."""
    m, root = small
    cache = tmp_path / "sha256.json"
    old = {}
    for rel in m["path"]:
        stat = (root / rel).stat()
        old[str((root / rel).resolve())] = [stat.st_size, stat.st_mtime_ns, "0" * 64]
    cache.write_text(json.dumps(old))
    _validate(m, root, cache)
    saved = json.loads(cache.read_text())
    assert set(saved) == set(old)                              # rewritten, in the new format
    assert all(entry[1] != "0" * 64 for entry in saved.values())


@pytest.mark.parametrize("content", ["[1, 2, 3]", '{"x": 5, "y": [1], "z": {"a": null}}',
                                     '{"/nowhere": [[1, 2, 3, 4], 7, null]}', "null"])
def test_a_hash_cache_of_unexpected_shape_is_ignored(small, tmp_path, content):
    m, root = small
    cache = tmp_path / "sha256.json"
    cache.write_text(content)
    _validate(m, root, cache)
    assert {str((root / rel).resolve()) for rel in m["path"]} <= set(json.loads(cache.read_text()))


# -- fix 4: a re-encoded copy -------------------------------------------------------------


def _add_reencoded_copy(m: pd.DataFrame, root: Path, split: str,
                        **save) -> tuple[pd.DataFrame, str, str]:
    """Save a target_train image again with other PNG settings under a new name beside it,
    listed in ``split``; return the manifest with it, the original's path and the copy's."""
    original = m[m.split == "target_train"].iloc[0]
    copy = f"{Path(original.path).parent.as_posix()}/copy_of_{Path(original.path).name}"
    with Image.open(root / original.path) as im:
        im.save(root / copy, format="PNG", **save)
    assert (root / copy).read_bytes() != (root / original.path).read_bytes()
    row = original.copy()
    row["sample_id"], row["path"], row["split"] = copy[:-4], copy, split
    row["sha256"] = hashlib.sha256((root / copy).read_bytes()).hexdigest()
    m = pd.concat([m, row.to_frame().T], ignore_index=True)
    return m, original.path, copy


def _text_chunk() -> PngImagePlugin.PngInfo:
    info = PngImagePlugin.PngInfo()
    info.add_text("Comment", "exported again")
    return info


@pytest.mark.parametrize("save", [{"compress_level": 1}, {"compress_level": 9},
                                  {"pnginfo": _text_chunk()}, {"optimize": True}],
                         ids=["level1", "level9", "text-chunk", "optimize"])
def test_a_reencoded_copy_in_target_test_is_a_leak(small, save):
    m, root = small
    m, original, copy = _add_reencoded_copy(m, root, "target_test", **save)
    text = _fails(m, root, "the same picture is listed more than once", original, copy,
                  "target_train", "target_test", "Fix:")
    assert "the same image content is listed more than once" not in text  # bytes differ


def test_a_reencoded_copy_in_the_same_split_is_a_duplicate(small):
    m, root = small
    m, original, copy = _add_reencoded_copy(m, root, "target_train", compress_level=0)
    _fails(m, root, "the same picture is listed more than once", original, copy)


def test_a_byte_copy_is_reported_once_and_a_reencoded_one_beside_it_too(small):
    """A byte copy is the content check's; the pixel check names the group that also holds a
    re-encoded file (all three files), so every copy is named and a plain copy only once."""
    m, root = small
    m, original, copy = _add_reencoded_copy(m, root, "target_test", compress_level=1)
    twin = m[(m.split == "target_test") & (m.label == m.loc[m.path == original, "label"].iloc[0])
             & (m.path != copy)].index[0]
    shutil.copy(root / original, root / m.loc[twin, "path"])
    m.loc[twin, "sha256"] = hashlib.sha256((root / original).read_bytes()).hexdigest()
    text = _fails(m, root, "the same image content is listed more than once",
                  "the same picture is listed more than once", copy, m.loc[twin, "path"])
    assert text.count("the same picture") == 1


def test_decoding_is_cached_with_the_hash_and_redone_when_a_file_changes(small, tmp_path,
                                                                          monkeypatch):
    """Each image is decoded once; an unchanged one is not decoded again on the next run."""
    from components.data import checksums

    m, root = small
    cache = tmp_path / "sha256.json"
    decoded = []
    real = checksums.picture_of
    monkeypatch.setattr(checksums, "picture_of", lambda data: decoded.append(1) or real(data))
    _validate(m, root, cache)
    assert len(decoded) == len(m)
    decoded.clear()
    _validate(m, root, cache)
    assert decoded == []
    changed = root / m.path.iloc[0]
    with Image.open(changed) as im:
        im.save(changed, format="PNG", compress_level=1)   # same pixels, new bytes
    m.loc[0, "sha256"] = hashlib.sha256(changed.read_bytes()).hexdigest()
    _validate(m, root, cache)
    assert len(decoded) == 1
