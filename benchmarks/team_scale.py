"""A team's real workload, measured (issue 31): 50,000 photo-like images, Label Studio projects
of 10 rounds × 1,000 tasks, five annotators at once, the tracking store round after round.

Each part is a module of ``benchmarks/scale/`` and can run alone; its figures (each beside its
target, where the issue sets one) are printed and merged into
``benchmarks/results/team_scale.json`` under the part's name, with the command, the machine and
its load when the part started. Generated data goes to ``--work`` (a temporary folder by
default) and is never committed.

    python benchmarks/team_scale.py                       # every part
    python benchmarks/team_scale.py --part data --part selection --n 50000
    python benchmarks/team_scale.py --quick               # small sizes, figures kept apart: checks the script runs

Parts: data (split and validation, cold and warm), selection (pool inference and selection for
sage, clue, badge), label_studio (a project growing to 10 × 1,000 tasks, inline vs by
reference), annotators (five at once on one round), tracking (store growth per round, and
retention).
"""
from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import shlex
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

PARTS = ("data", "selection", "label_studio", "annotators", "tracking")
RESULTS = REPO / "benchmarks/results/team_scale.json"


def machine() -> dict:
    return {"platform": platform.platform(), "cpus": os.cpu_count(),
            "python": platform.python_version()}


def save(part: str, figures: dict, command: str, load: tuple, seconds: float,
         path: Path = RESULTS) -> None:
    """Merge one part's figures into the results file (other parts are kept as they were; a
    lock beside it, so parts run at once in two processes both land)."""
    import fcntl

    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        _merge(part, figures, command, load, seconds, path)


def _merge(part, figures, command, load, seconds, path: Path) -> None:
    old = json.loads(path.read_text()) if path.is_file() else {}
    parts = old.get("parts", {})
    parts[part] = {"figures": figures, "command": command, "machine": machine(),
                   "load_at_start": [round(x, 2) for x in load],
                   "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                   "seconds": round(seconds, 1)}
    path.write_text(json.dumps({"issue": 31, "parts": parts}, indent=1) + "\n")


def show(part: str, figures: dict) -> None:
    print(f"\n== {part}")
    for name, f in figures.items():
        target = f" (target {f['target']}: {'met' if f['met'] else 'MISSED'})" if "target" in f else ""
        note = f"  [{f['note']}]" if f.get("note") else ""
        print(f"  {name:<52} {f['value']:>12g} {f['unit']}{target}{note}")


def table(path: Path = RESULTS) -> str:
    """The README table: every figure of every part, beside its target."""
    parts = json.loads(path.read_text())["parts"]
    rows = ["| part | figure | measured | target |", "|---|---|---|---|"]
    for part in PARTS:
        for name, f in parts.get(part, {}).get("figures", {}).items():
            if "rows" in f:   # per-round detail, kept in the JSON
                continue
            target = (f"{f['target']} ({'met' if f['met'] else 'missed'})" if "target" in f
                      else "")
            rows.append(f"| {part} | {name} | {f['value']:g} {f['unit']} | {target} |")
    return "\n".join(rows)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--part", action="append", choices=PARTS, help="run only these parts")
    ap.add_argument("--n", type=int, default=50_000, help="images in the generated target")
    ap.add_argument("--rounds", type=int, default=10, help="Label Studio rounds")
    ap.add_argument("--tasks", type=int, default=1_000, help="tasks per round")
    ap.add_argument("--annotators", type=int, default=5)
    ap.add_argument("--quick", action="store_true", help="small sizes, to check the script")
    ap.add_argument("--work", type=Path, help="where generated data goes (default: a temp dir)")
    ap.add_argument("--results", type=Path,
                    help=f"where figures merge (default {RESULTS.relative_to(REPO)}; with "
                         "--quick, team_scale_quick.json in --work)")
    ap.add_argument("--table", action="store_true", help="print the README table and stop")
    args = ap.parse_args(argv)
    if args.table:
        print(table(args.results or RESULTS))
        return 0
    if args.quick:
        args.n, args.rounds, args.tasks = min(args.n, 2_000), min(args.rounds, 2), min(args.tasks, 50)
    command = "python benchmarks/team_scale.py " + shlex.join(argv if argv is not None else sys.argv[1:])
    with tempfile.TemporaryDirectory(prefix="team-scale-") as tmp:
        work = args.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        # a check of the script never replaces the figures measured at size
        args.results = args.results or (work / "team_scale_quick.json" if args.quick else RESULTS)
        for part in args.part or PARTS:
            load, start = os.getloadavg(), time.perf_counter()
            figures = importlib.import_module(f"benchmarks.scale.{part}").run(args, work)
            show(part, figures)
            save(part, figures, command.strip(), load, time.perf_counter() - start, args.results)
    print(f"\nsaved {args.results}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
