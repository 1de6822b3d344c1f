"""The house's floors and its lack of circles, declared once in pyproject.toml
(``[tool.importlinter]``) and checked here, so a circle fails the build instead of waiting for a
reviewer."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO


def _lint(root: Path) -> subprocess.CompletedProcess:
    lint = Path(sys.executable).with_name("lint-imports")
    return subprocess.run([str(lint), "--no-cache"], cwd=root, capture_output=True, text=True,
                          timeout=120, env={"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin"})


def test_every_floor_imports_only_those_below_it_and_nothing_imports_in_a_circle():
    out = _lint(REPO)
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-2000:]
    assert "Contracts: 3 kept, 0 broken." in out.stdout


def test_a_strategy_that_runs_the_model_breaks_the_build(tmp_path):
    """The check can fail: a query strategy importing the run's steps (a floor above it, and
    a circle through them) is reported."""
    for name in ("components", "flows"):
        shutil.copytree(REPO / name, tmp_path / name,
                        ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "pyproject.toml", tmp_path / "pyproject.toml")
    base = tmp_path / "components" / "query" / "base.py"
    base.write_text(base.read_text() + "\nfrom components.run.steps import RunSteps  # noqa\n")
    out = _lint(tmp_path)
    assert out.returncode != 0
    assert "components.query is not allowed to import components.run" in out.stdout
    assert "No package imports in a circle, at any depth BROKEN" in out.stdout
