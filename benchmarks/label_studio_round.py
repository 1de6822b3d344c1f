"""What the Label Studio round trip costs: push a round of b tasks, one poll, a whole round.

Starts Label Studio from infra/ on a free port with a fresh data directory (so the first-start
time is measured too), then stops it. Saves ``benchmarks/results/label_studio_round.json``.

    python benchmarks/label_studio_round.py [--budget 10]
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--budget", type=int, default=10)
    args = ap.parse_args()
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
        params.write_text(f"label_studio:\n  url: http://127.0.0.1:{port}\n")
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
                                       on_timeout="fail", progress=False)
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
        finally:
            subprocess.run(["bash", script, "stop"], env=env, capture_output=True)
    poll = statistics.median(polls)
    out = {"budget": args.budget, "first_start_s": first_start,
           "push_round_s": statistics.median(push), "push_each_s": push,
           "poll_median_s": poll, "poll_max_s": max(polls),
           "collect_when_done_s": statistics.median(rounds),
           "poll_overhead_at_default_interval": poll / 10.0,
           "note": "poll overhead = one poll's time / label_studio.poll_interval_s (10 s default)"}
    print(json.dumps(out, indent=1))
    (REPO / "benchmarks/results/label_studio_round.json").write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
