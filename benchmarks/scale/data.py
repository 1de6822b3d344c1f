"""Part "data": split and validation of the generated photos, cold and warm (issue 31, 1).

The measured command is the project's own, ``sage-ada data split`` (``python -m flows.cli``,
what ``dvc repro split`` runs): scan + sha256 of every file (``build_manifest``), then the
validation suite (every file decoded and its pixels hashed, then Great Expectations), then the
manifest written. Each phase is a fresh process, started in its own folder of ``--work`` so the
hash cache (``.sage-ada/cache/sha256.json``) and the proofs of validation
(``.sage-ada/cache/validated``) are this benchmark's, never the repository's:

* cold: no hash cache, no proof;
* warm: the same command again (hash cache and proof kept: what a re-run on unchanged files
  costs);
* warm, suite again: the proof removed, the hash cache kept (the suite runs on cached facts, as
  after a new split seed or any changed manifest row);
* validate: ``sage-ada data validate`` (each run's validate step) on the warm cache.

Files were just written by the generator, so they are in the page cache: "cold" means a cold
hash cache, not a cold disk.
"""
from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import yaml

from benchmarks.scale import figure, measured
from benchmarks.scale import photos

REPO = Path(__file__).resolve().parents[2]
TARGET_COLD_S, TARGET_WARM_S = 120, 10


def env() -> dict:
    """The child processes' environment: this checkout's code, no telemetry."""
    out = dict(os.environ)
    out["PYTHONPATH"] = str(REPO) + (os.pathsep + out["PYTHONPATH"] if out.get("PYTHONPATH") else "")
    out.update(GX_ANALYTICS_ENABLED="False", DO_NOT_TRACK="1", PYTHONUNBUFFERED="1",
               MLFLOW_DISABLE_TELEMETRY="true", DVC_NO_ANALYTICS="1")
    return out


def paths(work: Path) -> dict[str, Path]:
    return {"root": work / "photos", "params": work / "params-scale.yaml",
            "manifest": work / "manifest.csv", "cwd": work / "data-run"}


def write_params(work: Path) -> Path:
    """``params.yaml`` with the generated task declared the way a user declares theirs:
    ``data.root``, ``data.source``, ``data.target`` (folders layout), ``data.channels: 3``; the
    rest (``data.image_size`` 28 for the shipped digits CNN, split, model) as shipped."""
    p = paths(work)
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["data"].update(root=str(p["root"]), layout="folders", source=photos.SOURCE,
                          target=photos.TARGET, manifest=str(p["manifest"]), channels=3)
    p["params"].write_text(yaml.safe_dump(params, sort_keys=False))
    return p["params"]


def generate(args, work: Path) -> dict:
    """The images (kept between attempts in ``work/photos``) and the generation figure."""
    root = paths(work)["root"]
    load = os.getloadavg()[0]
    built = photos.build(root, args.n, workers=2)
    record = root / ".generation.json"
    if built["written"]:
        record.write_text(json.dumps({**built, "load_at_start": load}))
        note = (f"{built['written']} images written now ({built['counts']}), "
                f"{built['workers']} processes, 224 px JPEG")
        if built["written"] < sum(built["counts"].values()):
            note += "; the rest kept from an earlier attempt"
        return figure(built["seconds"], "s", note=note)
    earlier = json.loads(record.read_text()) if record.is_file() else None
    if earlier:
        return figure(earlier["seconds"], "s", note=(
            f"images reused from an earlier attempt in {root}; measured when they were written "
            f"({earlier['written']} images, {earlier['workers']} processes"
            + (f", load {earlier['load_at_start']:.1f} at start" if "load_at_start" in earlier
               else "") + ")"))
    return figure(built["seconds"], "s", note="images reused; no generation recorded")


def split_command(params: Path, action: str = "split") -> list[str]:
    return [sys.executable, "-m", "flows.cli", "--params", str(params), "data", action]


def ensure_split(args, work: Path) -> Path:
    """The images, the settings and a manifest of them (for parts that need a split but do not
    measure it); returns the settings file."""
    generate(args, work)
    params, p = write_params(work), paths(work)
    expected = args.n + photos.source_count(args.n) + 1  # rows and the header
    if not (p["manifest"].is_file()
            and sum(1 for _ in p["manifest"].open()) == expected):
        p["cwd"].mkdir(parents=True, exist_ok=True)
        measured(split_command(params), cwd=p["cwd"], env=env(), log=work / "split.log")
    return params


def run(args, work: Path) -> dict:
    work = Path(work)
    figures = {"generation": generate(args, work)}
    params, p = write_params(work), paths(work)
    files = args.n + photos.source_count(args.n)
    cache = p["cwd"] / ".sage-ada"
    shutil.rmtree(cache, ignore_errors=True)
    p["manifest"].unlink(missing_ok=True)
    p["cwd"].mkdir(parents=True, exist_ok=True)
    logs = work / "logs"
    logs.mkdir(exist_ok=True)

    def phase(name: str, action: str = "split") -> dict:
        out = measured(split_command(params, action), cwd=p["cwd"], env=env(),
                       log=logs / f"data-{name}.log")
        print(f"  data {name}: {out['seconds']:.1f} s, {out['peak_rss_mib']:.0f} MiB", flush=True)
        return out

    where = f"{files} files ({args.n} target, {files - args.n} source)"
    cold = phase("cold")
    figures["split+validation cold"] = figure(
        cold["seconds"], "s", at_most=TARGET_COLD_S,
        note=f"`sage-ada data split`, fresh hash cache, {where}; files in the page cache")
    figures["split+validation cold, peak RSS"] = figure(cold["peak_rss_mib"], "MiB")
    warm = phase("warm")
    figures["split+validation warm"] = figure(
        warm["seconds"], "s", at_most=TARGET_WARM_S,
        note="the same command again: hash cache and proof of validation kept")
    figures["split+validation warm, peak RSS"] = figure(warm["peak_rss_mib"], "MiB")
    (cache / "cache" / "validated").unlink()
    suite = phase("warm-suite")
    figures["split+validation warm, suite run again"] = figure(
        suite["seconds"], "s", at_most=TARGET_WARM_S,
        note="hash cache kept, proof of validation removed: every check runs on cached facts")
    figures["split+validation warm, suite run again, peak RSS"] = figure(
        suite["peak_rss_mib"], "MiB")
    validate = phase("validate", "validate")
    figures["validate warm"] = figure(
        validate["seconds"], "s", note="`sage-ada data validate` (a run's validate step), warm")
    figures["validate warm, peak RSS"] = figure(validate["peak_rss_mib"], "MiB")
    return figures
