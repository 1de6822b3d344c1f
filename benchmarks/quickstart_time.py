"""How long README command 1 takes with the environment already built: on a fresh clone, and
run again in that clone (data, split and round-0 model then cached), phase by phase.

    python benchmarks/quickstart_time.py          # about 4 minutes on 2 cores

Writes ``benchmarks/results/quickstart_time.json``. Phases are read from the script's own
``== `` lines and the flow's output, time-stamped as they are printed.
"""
from __future__ import annotations

import json
import os
import platform
import re
import subprocess
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MARKS = [("setup", None), ("data", "== data"), ("split", "== split"), ("start-up", "== run"),
         ("round 0", "MLflow run "), ("rounds 1-5", "  round  0 |"), ("finish", "  round  5 |")]


def timed_run(clone: Path) -> dict:
    start = time.perf_counter()
    seen: dict[str, float] = {}
    train = 0.0
    proc = subprocess.Popen(["bash", "scripts/quickstart.sh", "--no-progress"], cwd=clone,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    for line in proc.stdout:
        now = time.perf_counter() - start
        for name, mark in MARKS:
            if mark and name not in seen and line.startswith(mark):
                seen[name] = now
        found = re.search(r"train\s+([\d.]+)s", line)
        if line.startswith("  round") and found:
            train += float(found.group(1))
    if proc.wait() != 0:
        raise SystemExit(f"quickstart failed in {clone}")
    total = time.perf_counter() - start
    bounds = [0.0] + [seen[name] for name, mark in MARKS if mark] + [total]
    phases = {name: round(b - a, 1) for (name, _), a, b in zip(MARKS, bounds, bounds[1:])}
    return {"total_s": round(total, 1), "training_s": round(train, 1), "phases_s": phases}


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        clone = Path(tmp) / "sage-ada"
        subprocess.run(["git", "clone", "--quiet", str(REPO), str(clone)], check=True)
        fresh = timed_run(clone)
        print(f"fresh clone: {fresh['total_s']} s (training {fresh['training_s']} s) "
              f"{fresh['phases_s']}", flush=True)
        again = timed_run(clone)
        print(f"run again:   {again['total_s']} s (training {again['training_s']} s) "
              f"{again['phases_s']}", flush=True)
    result = {"command": "bash scripts/quickstart.sh --no-progress", "fresh_clone": fresh,
              "run_again": again, "target_s": 90, "machine": platform.machine(),
              "cores": os.cpu_count()}
    out = REPO / "benchmarks" / "results" / "quickstart_time.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out.relative_to(REPO)}")


if __name__ == "__main__":
    main()
