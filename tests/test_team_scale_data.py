"""The scale benchmark's photo generator and its parts "data" and "selection"
(``benchmarks/team_scale.py``, issue 31), at a few hundred images: they run, they use the
project's own split, validation and selection, and they keep what they generate and cache
in their work folder."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from benchmarks.scale import data, photos, selection
from components.data.split import read_manifest

N, SOURCE = 300, 200


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("team-scale")


def args(**kw) -> argparse.Namespace:
    return argparse.Namespace(**{"n": N, "tasks": 20, "pretrain_steps": 5, **kw})


def test_generator_writes_the_layout_once(tmp_path):
    done = photos.build(tmp_path, 30, source=20, workers=2)
    assert done["counts"] == {photos.SOURCE: 20, photos.TARGET: 30} and done["written"] == 50
    files = sorted((tmp_path / photos.TARGET).glob("*/*.jpg"))
    assert len(files) == 30
    assert {f.parent.name for f in files} == set(photos.CLASSES)  # <root>/<domain>/<class>/
    with Image.open(files[0]) as im:
        assert (im.format, im.mode, im.size) == ("JPEG", "RGB", (224, 224))
    # a pure function of (domain, index), and a second build keeps what is there
    assert np.array_equal(np.asarray(photos.render(photos.TARGET, 7)),
                          np.asarray(photos.render(photos.TARGET, 7)))
    assert photos.build(tmp_path, 30, source=20, workers=2)["written"] == 0
    # a smaller build drops the images beyond it
    photos.build(tmp_path, 20, source=20, workers=2)
    assert len(list((tmp_path / photos.TARGET).glob("*/*.jpg"))) == 20


def test_data_part_measures_the_projects_split(work):
    figures = data.run(args(), work)
    for name in ("split+validation cold", "split+validation warm",
                 "split+validation warm, suite run again"):
        assert figures[name]["unit"] == "s" and figures[name]["value"] > 0
        assert "target" in figures[name]
        assert figures[f"{name}, peak RSS"]["value"] > 10  # MiB: a real process was measured
    assert figures["generation"]["unit"] == "s" and "target" not in figures["generation"]
    manifest = read_manifest(work / "manifest.csv")
    assert len(manifest) == N + SOURCE
    assert set(manifest["split"]) == {"source", "target_train", "target_test"}
    # the hash cache is the work folder's, filled by the cold run: one entry per file
    cache = json.loads((work / "data-run/.sage-ada/cache/sha256.json").read_text())
    assert len(cache) == N + SOURCE
    assert all(str(work) in path for path in cache)


def test_selection_part_selects_a_round_per_strategy(work):
    figures = selection.run(args(), work)
    assert f"pool of {N} photos" in figures["pool inference"]["note"]
    for strategy in selection.STRATEGIES:
        assert figures[f"selection {strategy}"]["note"].startswith(f"20 of a pool of {N}")
        assert "target" in figures[f"selection {strategy}"]
        assert figures[f"selection {strategy}, peak RSS"]["value"] > 10
