"""The finished runs kept in the repository (``reproduce_runs.jsonl``), one JSON line each.

A preset too long for one sitting continues on another machine from it; each line carries the
digest of the ``components/`` code that computed it, and only lines of the same code are read
back, so runs of other code are never mixed into a page.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

from benchmarks.protocol import REPO

LEDGER = REPO / "benchmarks" / "results" / "reproduce_runs.jsonl"


def code_digest() -> str:
    """Every module of components/: a run counts only for the code that computed it."""
    digest = hashlib.sha256()
    for path in sorted((REPO / "components").rglob("*.py")):
        digest.update(f"{path.relative_to(REPO)}\n".encode() + path.read_bytes())
    return digest.hexdigest()[:16]


def ledger_runs(path: Path = LEDGER, code: str | None = None) -> dict[str, dict]:
    """Finished runs kept in the repository (one JSON line each), for this code only: a
    preset too long for one sitting continues on a fresh machine, and nothing computed by
    other code is mixed in."""
    code = code or code_digest()
    found = {}
    if path.is_file():
        for line in path.read_text().splitlines():
            row = json.loads(line)
            if row["code"] == code:
                found[row["key"]] = row
    return found


def add_to_ledger(key: str, history: list[dict], start_ms: int, end_ms: int,
                  path: Path = LEDGER, code: str | None = None) -> None:
    """Append one finished run (appending only: a killed preset loses no earlier line)."""
    with open(path, "a") as out:
        out.write(json.dumps({"key": key, "code": code or code_digest(), "history": history,
                              "start_ms": start_ms, "end_ms": end_ms}) + "\n")


# What a run's numbers depend on: the data, split, model, training and query settings, less
# those that only bound how long a phase may wait.
RESULT_SECTIONS = ("data.", "split.", "model.", "train.", "active.")
NOT_RESULT = ("train.job_timeout_s", "train.collective_timeout_s", "active.annotate_timeout_s")


def result_settings(flat: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in flat.items() if k.startswith(RESULT_SECTIONS) and k not in NOT_RESULT}


def older_twin(kept: list[tuple[dict, dict]], flat: dict[str, str],
               baseline: dict[str, str]) -> dict | None:
    """The ledger row of earlier code that ran these settings: for a page rebuilt from runs made
    before settings were added (their keys lack them), the row whose every result setting
    equals the job's, where each setting added since is at ``baseline``'s value (params.yaml:
    the value that keeps the earlier behaviour). Settings that do not change a result (servers,
    tracking, time limits) are not compared. ``kept``: ``parsed(ledger_runs(...))``."""
    mine = result_settings(flat)
    for theirs, row in kept:
        if set(theirs) <= set(mine) and all(mine[k] == v for k, v in theirs.items()) and all(
                mine[k] == baseline.get(k) for k in set(mine) - set(theirs)):
            return row
    return None


def parsed(kept: dict[str, dict]) -> list[tuple[dict, dict]]:
    """Ledger rows with their result settings read once (what ``older_twin`` compares)."""
    return [(result_settings(dict(json.loads(key))), row) for key, row in kept.items()]
