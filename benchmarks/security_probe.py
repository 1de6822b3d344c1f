"""Issue 32: every probe of the team stack's doors, run against the real servers by the tests
that pin them, gathered into ``benchmarks/results/security_probe.json``: what was tried, what it
should get, what it got, and how many calls were let in that should not have been.

    python benchmarks/security_probe.py

Runs tests/test_label_studio.py's receiver and Label Studio probes, tests/test_prefect_server.py's
Prefect ones and tests/test_team_auth.py's MLflow ones (each starts its servers from infra/),
with ``SAGE_ADA_PROBE_REPORT`` set so that each writes its probes down.
"""
from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks/results/security_probe.json"
TESTS = ["tests/test_label_studio.py::test_the_receiver_lets_in_only_the_webhooks_a_run_registered",
         "tests/test_prefect_server.py::test_cron_deployment_runs_unattended",
         "tests/test_team_auth.py::test_the_tracking_server_lets_in_only_those_with_an_account"]


def let_in_wrongly(probe: dict) -> bool:
    """A refusal expected (a 4xx) and something else got: a door that opened."""
    expected, answer = probe["expected"], probe["answer"]
    return isinstance(expected, int) and 400 <= expected < 500 and answer != expected


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="security-probe-") as folder:
        started = time.time()
        run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                              *TESTS], cwd=REPO, env={**__import__("os").environ,
                                                      "SAGE_ADA_PROBE_REPORT": folder})
        groups = {p.stem: json.loads(p.read_text()) for p in sorted(Path(folder).glob("*.json"))}
    probes = [{"server": group, **p} for group, ps in groups.items() for p in ps]
    wrong = [p for p in probes if let_in_wrongly(p)]
    report = {"issue": 32, "command": "python benchmarks/security_probe.py",
              "tests_passed": run.returncode == 0, "probes": len(probes),
              "refused_as_they_should": sum(1 for p in probes if isinstance(p["expected"], int)
                                            and 400 <= p["expected"] < 500
                                            and p["answer"] == p["expected"]),
              "let_in_that_should_not_be": len(wrong),
              "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
              "seconds": round(time.time() - started, 1), "all": probes}
    RESULTS.write_text(json.dumps(report, indent=1) + "\n")
    for p in probes:
        print(f"  [{p['server']}] {p['probe']:<70} expected {p['expected']!s:>6}  got {p['answer']}")
    print(f"{len(probes)} probes; let in that should not be: {len(wrong)}; saved {RESULTS}")
    return 0 if run.returncode == 0 and not wrong and probes else 1


if __name__ == "__main__":
    sys.exit(main())
