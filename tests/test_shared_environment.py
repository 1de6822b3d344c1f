"""Clones share one environment (scripts/setup.sh), and its `sage-ada` command is an editable
install of whichever clone set it up last. Typed in another clone, it must run that clone's
code, not the other's (found by tests/test_team_path.py: `sage-ada runs` in a second clone ran
the first clone's older code and could not read the run)."""
from __future__ import annotations

import shutil
import subprocess


def test_sage_ada_typed_in_another_clone_runs_that_clones_code(tmp_path):
    other = tmp_path / "other"
    (other / "flows").mkdir(parents=True)
    (other / "components").mkdir()
    (other / "flows" / "__init__.py").write_text("")
    (other / "flows" / "cli.py").write_text('import sys\nprint("code of", __file__, sys.argv[1:])\n')
    out = subprocess.run([shutil.which("sage-ada"), "runs", "--x"], cwd=other / "flows",
                         capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == f"code of {other / 'flows' / 'cli.py'} ['runs', '--x']", \
        out.stdout + out.stderr
