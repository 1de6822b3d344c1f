"""What the Label Studio round trip costs: push a round of b tasks, one poll, a whole round;
how long after an annotator's last submit the adaptation can start; and the real-browser tests.

Starts Label Studio from infra/ on a free port with a fresh data directory (so the first-start
time is measured too), then stops it. The last submit of a round lands at a random moment of
the wait, with params.yaml's ``label_studio.poll_interval_s``; the time to adaptation covers what
the run does before adapting (collect, close the round, read corrections), not Prefect's task
hand-over (``benchmarks/flow_overhead.py`` measures that). ``--browser`` also runs the
real-browser tests and reports their run time and the seconds per label Label Studio measured
in the browser (a scripted browser, not a person's pace). Saves
``benchmarks/results/label_studio_round.json``.

    python benchmarks/label_studio_round.py [--budget 10] [--trials 5] [--browser]
"""
from __future__ import annotations

import argparse
import json
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import xml.etree.ElementTree as ET
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--budget", type=int, default=10)
    ap.add_argument("--trials", type=int, default=5, help="rounds timed from last submit to adapt")
    ap.add_argument("--browser", action="store_true", help="also run the real-browser tests")
    args = ap.parse_args()
    from components.config import load_config
    from components.data.split import class_list, read_manifest
    from components.oracle.auto_annotator import AutoAnnotator
    from components.oracle.label_studio import LabelStudioOracle

    manifest = read_manifest(REPO / "splits/manifest.csv")
    classes = class_list(manifest)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with tempfile.TemporaryDirectory() as data:
        params = Path(data) / "params.yaml"  # the port is set once, as users do
        params.write_text(f"label_studio:\n  url: http://127.0.0.1:{port}\n"
                          f"  media_root: {Path(data) / 'media'}\n")
        env = {**os.environ, "LABEL_STUDIO_DATA": data, "SAGE_ADA_PARAMS": str(params)}
        script = str(REPO / "infra/label-studio/server.sh")
        start = time.perf_counter()
        subprocess.run(["bash", script, "start"], check=True, env=env, capture_output=True)
        first_start = time.perf_counter() - start
        try:
            token = [l.split("=", 1)[1] for l in (Path(data) / "credentials.env").read_text()
                     .splitlines() if "TOKEN" in l][0]
            oracle = LabelStudioOracle(url=f"http://127.0.0.1:{port}", api_key=token,
                                       classes=classes, data_root=REPO / "data",
                                       experiment="benchmark", poll_interval_s=0.01,
                                       on_timeout="fail", progress=False,
                                       media_root=Path(data) / "media")
            oracle.bind("label-studio-round")
            pool = manifest[manifest.split == "target_train"]
            push, polls, rounds = [], [], []
            for r in range(1, 4):
                rows = pool.iloc[(r - 1) * args.budget:r * args.budget]
                context = {sid: {"path": p, "score": 1.0, "prediction": "0", "confidence": 0.5}
                           for sid, p in zip(rows.sample_id, rows.path)}
                t = time.perf_counter()
                handle = oracle.request(list(rows.sample_id), r, context=context)
                push.append(time.perf_counter() - t)
                for _ in range(10):
                    t = time.perf_counter()
                    oracle.poll(handle)
                    polls.append(time.perf_counter() - t)
                AutoAnnotator(oracle.client, dict(zip(rows.sample_id, rows.label)),
                              item_of=oracle.item).annotate(handle["project_id"])
                t = time.perf_counter()
                oracle.collect(handle, timeout=60)
                rounds.append(time.perf_counter() - t)
            interval = load_config(REPO / "params.yaml").label_studio.poll_interval_s
            oracle.poll_interval_s = interval
            head = pool.iloc[:3 * args.budget]
            done = dict(zip(head.sample_id, head.label))
            to_adapt = [submit_to_adaptation(oracle, pool.iloc[(r - 1) * args.budget:
                                                               r * args.budget], r, done)
                        for r in range(4, 4 + args.trials)]
        finally:
            subprocess.run(["bash", script, "stop"], env=env, capture_output=True)
    poll = statistics.median(polls)
    out = {"budget": args.budget, "first_start_s": first_start,
           "push_round_s": statistics.median(push), "push_each_s": push,
           "poll_median_s": poll, "poll_max_s": max(polls),
           "collect_when_done_s": statistics.median(rounds),
           "poll_overhead_at_default_interval": poll / 10.0,
           "poll_interval_s": interval,
           "last_submit_to_adaptation_s": to_adapt,
           "last_submit_to_adaptation_median_s": statistics.median(to_adapt),
           "note": "poll overhead = one poll's time / label_studio.poll_interval_s (10 s default); "
                   "last submit to adaptation: collect, close and corrections, at a random "
                   "moment of the poll interval"}
    if args.browser:
        out["browser"] = browser_tests()
    print(json.dumps(out, indent=1))
    (REPO / "benchmarks/results/label_studio_round.json").write_text(json.dumps(out, indent=1))


def submit_to_adaptation(oracle, rows, round: int, earlier: dict[str, str]) -> float:
    """All of a round's labels but one are in; the last is submitted at a random moment of the
    wait. Seconds from that submit until the run has its labels, has closed the round and has
    read the corrections of earlier rounds: when the adaptation starts."""
    from components.oracle.label_studio import choice_result

    ids = list(rows.sample_id)
    handle = oracle.request(ids, round, context={s: {"path": p} for s, p in zip(ids, rows.path)})
    truth = dict(zip(rows.sample_id, rows.label))
    tasks = oracle.tasks(handle["project_id"])
    for sid in ids[:-1]:
        oracle.client.annotations.create(id=tasks[oracle.item(sid)].id,
                                         result=choice_result(truth[sid]))
    submitted = {}

    def submit():
        time.sleep(random.uniform(0.5, 0.5 + oracle.poll_interval_s))
        oracle.client.annotations.create(id=tasks[oracle.item(ids[-1])].id,
                                         result=choice_result(truth[ids[-1]]))
        submitted["at"] = time.perf_counter()

    person = threading.Thread(target=submit)
    person.start()
    oracle.collect(handle, timeout=oracle.poll_interval_s * 10)
    oracle.close(handle)
    oracle.relabelled(earlier)
    ready = time.perf_counter()
    person.join()
    earlier.update(truth)
    return ready - submitted["at"]


def browser_tests() -> dict:
    """Run the real-browser tests (they start their own Label Studio) and read their times
    and the lead times they recorded."""
    with tempfile.TemporaryDirectory() as out:
        report = Path(out) / "junit.xml"
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                        "tests/test_label_studio.py", "-k", "real_browser",
                        f"--junitxml={report}", "-o", "junit_duration_report=call"],
                       cwd=REPO, check=True, env={**os.environ, "SAGE_ADA_SCREENSHOTS": out})
        total = time.perf_counter() - start
        tests = {case.get("name"): float(case.get("time"))
                 for case in ET.parse(report).getroot().iter("testcase")}
        lead = json.loads((Path(out) / "browser-lead-times.json").read_text())
    labels = [t for times in lead.values() for t in times]
    return {"pytest_total_s": total, "test_call_s": tests, "lead_time_per_label_s": lead,
            "lead_time_median_s": statistics.median(labels),
            "note": "pytest_total_s includes installing-check and starting Label Studio; "
                    "lead times are a scripted browser's, not a person's pace"}


if __name__ == "__main__":
    main()
