"""How far the default run's numbers move when the CPU kernels change, and what pinning them costs.

Float rounding differs between CPU kernels (AVX2 vs AVX-512 code paths in ATen, MKL and oneDNN,
and how many threads split a reduction), and 500 adversarial pretraining steps amplify it. On
one machine, other machines' kernels can be provoked with environment variables
(``ATEN_CPU_CAPABILITY``, ``MKL_ENABLE_INSTRUCTIONS``, ``ONEDNN_MAX_CPU_ISA``, the thread count).
Each variant runs the default pipeline (``params.yaml``, simulated oracle) in a fresh process,
as a plain loop of the same components the flow calls, and reports accuracy per round and time.

    python benchmarks/cpu_numerics.py kernels     # provoked kernels, unpinned and pinned
    python benchmarks/cpu_numerics.py seeds       # round 0 across training seeds (the yardstick)
    python benchmarks/cpu_numerics.py timing      # native vs portable kernels, alternated, 3 each
    python benchmarks/cpu_numerics.py seeds --set train.pretrain_steps=1000   # another setting

Saves ``benchmarks/results/cpu_numerics_<suite>[_<settings>].json``: per group of variants the
largest move from the group's first run per round (the CI test sizes its tolerance for
``dvc repro`` on another CPU from the ``unpinned`` group of ``kernels``), mean and spread.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

# Unpinned (train.cpu_kernels: native, torch's own thread count): the kernels another x86
# machine would pick, provoked here: AVX2 everywhere (AMD EPYC before Zen 4), AVX-512 without
# AMX (Intel before Sapphire Rapids), one library at a time, or another thread count.
NATIVE = ["train.cpu_kernels=native", "train.cpu_threads=null"]
PORTABLE = ["train.cpu_kernels=portable", "train.cpu_threads=2"]   # what `dvc repro` runs
AVX2 = {"ATEN_CPU_CAPABILITY": "avx2", "MKL_ENABLE_INSTRUCTIONS": "AVX2", "ONEDNN_MAX_CPU_ISA": "AVX2"}
VARIANTS = {  # name → (environment, params overrides)
    "native": ({}, NATIVE),
    "native/avx2-machine": (AVX2, NATIVE),
    "native/avx512-machine": ({"ATEN_CPU_CAPABILITY": "avx512", "MKL_ENABLE_INSTRUCTIONS": "AVX512",
                               "ONEDNN_MAX_CPU_ISA": "AVX512_CORE"}, NATIVE),
    "native/aten-avx2": ({"ATEN_CPU_CAPABILITY": "avx2"}, NATIVE),
    "native/mkl-avx2": ({"MKL_ENABLE_INSTRUCTIONS": "AVX2"}, NATIVE),
    "native/onednn-avx2": ({"ONEDNN_MAX_CPU_ISA": "AVX2"}, NATIVE),
    "native/no-onednn": ({"BENCH_NO_MKLDNN": "1"}, NATIVE),  # convolutions by ATen + MKL
    "native/1-thread": ({}, NATIVE[:1] + ["train.cpu_threads=1"]),
    "native/4-threads": ({}, NATIVE[:1] + ["train.cpu_threads=4"]),
    # Pinned (portable kernels, 2 threads), with what the pins must override.
    "portable": ({}, PORTABLE),
    "portable/mkl-avx512": ({"MKL_ENABLE_INSTRUCTIONS": "AVX512"}, PORTABLE),
    "portable/omp-1-thread": ({"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}, PORTABLE),
    # Portable kernels with another thread count: the count is part of the pin.
    "portable-1-thread": ({}, PORTABLE[:1] + ["train.cpu_threads=1"]),
    "portable-4-threads": ({}, PORTABLE[:1] + ["train.cpu_threads=4"]),
}
GROUPS = {  # report group → which variants
    "unpinned": lambda name: name.startswith("native") or name.startswith("train.seed"),
    "pinned": lambda name: name == "portable" or name.startswith("portable/"),
    "portable_other_threads": lambda name: name == "portable" or name.startswith("portable-"),
}


def child(args) -> None:
    """One run in this process (its environment is the variant); prints one JSON line."""
    import yaml

    from components import numerics
    from components.config import load_config

    overrides = {k: yaml.safe_load(v) for k, v in (kv.split("=", 1) for kv in args.set)}
    cfg = load_config(str(REPO / "params.yaml"), overrides=overrides)
    numerics.pin_environment(cfg.train.cpu_kernels, cfg.train.cpu_threads)  # as `sage-ada` does
    import torch

    from benchmarks.flow_overhead import plain_loop

    if os.environ.get("BENCH_NO_MKLDNN"):
        torch.backends.mkldnn.enabled = False
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        accuracy = plain_loop(cfg, Path(tmp), rounds=args.rounds)
        seconds = time.perf_counter() - start
    print("RESULT " + json.dumps({
        "accuracy": accuracy, "seconds": seconds, "threads": torch.get_num_threads(),
        "aten_capability": torch.backends.cpu.get_cpu_capability()}))


def run_variant(env_extra: dict, sets: list[str], rounds: int | None) -> dict:
    env = {**os.environ, **env_extra}
    cmd = [sys.executable, __file__, "--child"] + [f"--set={s}" for s in sets]
    if rounds is not None:
        cmd.append(f"--rounds={rounds}")
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=REPO)
    line = [ln for ln in out.stdout.splitlines() if ln.startswith("RESULT ")]
    if out.returncode or not line:
        raise SystemExit(f"variant {env_extra} {sets} failed:\n{out.stderr[-3000:]}")
    return json.loads(line[-1][len("RESULT "):])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("suite", nargs="?", choices=["kernels", "seeds", "timing"], default="kernels")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="a params.yaml override for every variant")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--rounds", type=int, help="rounds after pretraining (default: active.rounds; "
                    "0: round 0 only; the seeds suite defaults to 0)")
    ap.add_argument("--variants", help="comma-separated subset of the kernel variants")
    ap.add_argument("--seeds", default="0,1,2,3,4", help="training seeds for the seeds suite")
    args = ap.parse_args()
    if args.child:
        return child(args)
    if args.suite == "seeds":
        variants = {f"train.seed={s}": ({}, [f"train.seed={s}"]) for s in args.seeds.split(",")}
    elif args.suite == "timing":  # alternate, so a slow spell of the machine hits both
        variants = {f"{name}#{i}": VARIANTS[name] for i in (1, 2, 3) for name in ("native", "portable")}
    else:
        names = args.variants.split(",") if args.variants else list(VARIANTS)
        variants = {name: VARIANTS[name] for name in names}
    results = {}
    for name, (env, sets) in variants.items():
        results[name] = run_variant(env, args.set + sets,
                                    rounds=0 if args.suite == "seeds" and args.rounds is None
                                    else args.rounds)
        acc = " ".join(f"{100 * a:6.2f}" for a in results[name]["accuracy"])
        print(f"{name:>22}  {acc}   {results[name]['seconds']:6.1f} s", flush=True)
    if args.suite == "timing":
        return report_timing(results, args)
    groups = {group: [n for n in results if member(n)] for group, member in GROUPS.items()}
    report = {group: summarise({n: results[n] for n in names})
              for group, names in groups.items() if len(names) > 1 or group == "unpinned"}
    for group, summary in report.items():
        print(f"{group}: {json.dumps(summary)}")
    save(args, report, results)


def report_timing(results: dict, args) -> None:
    import statistics

    median = {kind: statistics.median(r["seconds"] for n, r in results.items()
                                      if n.startswith(kind + "#"))
              for kind in ("native", "portable")}
    report = {"median_seconds": median,
              "portable_over_native": round(median["portable"] / median["native"], 3)}
    print(json.dumps(report))
    save(args, report, results)


def save(args, report: dict, results: dict) -> None:
    tag = "_".join([s.split(".")[-1].replace("=", "-") for s in args.set]
                   + ([f"rounds-{args.rounds}"] if args.rounds is not None else []))
    path = REPO / "benchmarks" / "results" / f"cpu_numerics_{args.suite}{'_' + tag if tag else ''}.json"
    command = " ".join(["python", "benchmarks/cpu_numerics.py"] + sys.argv[1:])
    from benchmarks.protocol.ledger import code_digest

    path.write_text(json.dumps({"command": command, "cpu": cpu_name(), "code": code_digest(),
                                **report, "runs": results}, indent=1) + "\n")
    print(f"saved {path.relative_to(REPO)}")


def summarise(results: dict) -> dict:
    """How far each round moves from the group's first run, in accuracy points, and the spread."""
    import statistics

    reference = next(iter(results))
    ref = results[reference]["accuracy"]
    per_round = list(zip(*(r["accuracy"] for r in results.values())))
    return {
        "reference": reference,
        "max_abs_diff_points_per_round": [round(100 * max(abs(a - b) for a in col), 2)
                                          for col, b in zip(per_round, ref)],
        "mean_points_per_round": [round(100 * statistics.mean(col), 2) for col in per_round],
        "std_points_per_round": [round(100 * statistics.stdev(col), 2) if len(col) > 1 else 0.0
                                 for col in per_round],
        "identical_to_reference": [n for n, r in results.items() if r["accuracy"] == ref],
        "seconds": {n: round(r["seconds"], 1) for n, r in results.items()}}


def cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "unknown"


if __name__ == "__main__":
    main()
