"""Several processes in one clone at once: nothing they write collides, no cache loses entries.

Two runs validate the same data and fill the same caches; several ``sage-ada data validate``
may start together. Before the atomic-write helper, a fixed temporary name made one of them die
with ``FileNotFoundError: sha256.tmp -> sha256.json`` and the hash cache kept only the last
writer's hashes. ``SAGE_ADA_CONCURRENCY_REPEAT=N`` repeats the process test N times (default
1; 20 for a soak). Two whole runs started together in one clone: ``test_prefect_server.py``'s
``test_two_runs_take_turns_on_the_machines_training_slot`` (the test that found the race).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO

REPEAT = int(os.environ.get("SAGE_ADA_CONCURRENCY_REPEAT", "1"))


WRITER = """
import json, sys
from components.files import write_atomic
path, tag = sys.argv[1], int(sys.argv[2])
for i in range(50):
    write_atomic(path, json.dumps({"writer": tag, "i": i, "pad": "x" * 20000}))
"""


def _python(code: str, *args: str) -> subprocess.Popen:
    """A light process (no torch): only what the code imports."""
    return subprocess.Popen([sys.executable, "-c", code, *args], cwd=REPO,
                            env={**os.environ, "PYTHONPATH": str(REPO)})


def test_writers_of_one_file_never_collide_nor_tear(tmp_path):
    """Four processes replace one file 50 times each: none fails, every read sees a whole
    file, and no temporary file is left beside it."""
    target = tmp_path / "state.json"
    procs = [_python(WRITER, str(target), str(tag)) for tag in range(4)]
    reads = 0
    while any(p.poll() is None for p in procs):
        if target.exists():
            assert json.loads(target.read_text())["pad"] == "x" * 20000  # never half a file
            reads += 1
    assert [p.returncode for p in procs] == [0] * 4
    assert json.loads(target.read_text())["i"] == 49
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"]
    assert reads > 0


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    from components.files import replacing, write_atomic

    target = tmp_path / "manifest.csv"
    write_atomic(target, "old\n")
    with pytest.raises(RuntimeError):
        with replacing(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("crash mid-write")
    assert target.read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["manifest.csv"]


HASHER = """
import sys
from pathlib import Path
from components.data.checksums import ChecksumCache
cache = ChecksumCache(sys.argv[1])  # read before the others save: a read-modify-write race
for f in sys.argv[2:]:
    cache.sha256(Path(f))
cache.save()
"""


def test_hash_caches_saved_together_keep_every_files_hash(tmp_path):
    """Four processes, each hashing its own quarter of the files into one cold cache: the
    merged cache holds all of them (overwriting kept one quarter)."""
    files = []
    for i in range(400):
        f = tmp_path / "images" / f"{i:03d}.png"
        f.parent.mkdir(exist_ok=True)
        f.write_bytes(os.urandom(64))
        files.append(str(f))
    cache_path = tmp_path / "cache" / "sha256.json"
    procs = [_python(HASHER, str(cache_path), *files[q::4]) for q in range(4)]
    assert [p.wait(timeout=120) for p in procs] == [0] * 4
    saved = json.loads(cache_path.read_text())
    assert set(saved) == {str(Path(f).resolve()) for f in files}


def _cli(project: Path, *args: str, env: dict) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "flows.cli", *args], cwd=project, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _env() -> dict:
    """One thread each (2 cores), the repository's code first."""
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}


@pytest.mark.slow
@pytest.mark.parametrize("attempt", range(REPEAT))
def test_validations_started_together_all_succeed_and_share_one_cache(project, attempt):
    """Four ``sage-ada data validate`` at once on a cold hash cache: every one exits 0, and the
    cache ends with the hash of every file in the manifest."""
    manifest = yaml.safe_load((project / "params.yaml").read_text())["data"]["manifest"]
    procs = [_cli(project, "data", "validate", env=_env()) for _ in range(4)]
    for p in procs:
        out, _ = p.communicate(timeout=600)
        assert p.returncode == 0, out[-3000:]
        assert "is valid" in out
    saved = json.loads((project / ".sage-ada" / "cache" / "sha256.json").read_text())
    root = Path(yaml.safe_load((project / "params.yaml").read_text())["data"]["root"])
    import pandas as pd

    paths = pd.read_csv(manifest, dtype=str)["path"]
    assert {str((root / p).resolve()) for p in paths} <= set(saved)
    leftovers = [p for p in (project / ".sage-ada" / "cache").iterdir() if p.suffix == ".tmp"]
    assert leftovers == []
