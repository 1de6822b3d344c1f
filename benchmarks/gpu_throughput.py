"""Real images at scale: training throughput on a GPU, Sage's selection at N = 100k, and the
streaming path's memory on the CPU. Prints figures and writes them to
``benchmarks/results/gpu_throughput_{cuda,cpu}.json`` (measured, never asserted in tests).

    python benchmarks/gpu_throughput.py gpu [--quick] [--out DIR]   # one GPU, one prepared run
    python benchmarks/gpu_throughput.py rss [--sizes 5000,50000]     # CPU: streaming path's peak RSS

gpu, on synthetic 224-px photos (``synthetic_images.py``), ResNet-50, bf16, in one run:
  T1  images/s streamed from JPEG files through the production ``train()``: plain supervised,
      TSF pretraining (source + unlabelled) and SSDA adaptation (+ labelled), with the GPU's
      utilisation sampled during each; the same updates on GPU-resident batches give the ceiling
      the loader is judged against.
  T2  per-update ratio, TSF/SSDA update ÷ plain update over the same images: ResNet-50, and the
      digits CNN at batch 64 (launch-bound), eager and with ``train.compile``.
  T3  Sage's selection from N = 100,000, C = 345, m = 256 (float32 and float16 storage):
      seconds, peak device memory, and whether the two storages pick the same samples.
rss, on the CPU: peak memory of a run streamed from N files (N = 5k vs 50k; flat is the goal).
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks import synthetic_images  # noqa: E402
from components.adaptation.trainer import (Streams, compiled_losses, make_optimizer,  # noqa: E402
                                           step_losses, train, update_step)
from components.config import Config  # noqa: E402
from components.data.split import build_manifest, write_manifest  # noqa: E402
from components.models import build_network  # noqa: E402
from components.models.device import autocast, prepare_input  # noqa: E402

RESULTS = REPO / "benchmarks" / "results"
DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")  # CPU: smoke runs only


def sync() -> None:
    if DEVICE.type == "cuda":
        torch.cuda.synchronize()


def log(*parts) -> None:
    print(time.strftime("%H:%M:%S"), *parts, flush=True)


class Utilisation:
    """Mean GPU utilisation (NVML, 10 samples a second) while the ``with`` block runs."""

    def __enter__(self):
        self.samples, self._stop = [], threading.Event()
        try:
            import pynvml  # nvidia-ml-py

            if DEVICE.type != "cuda":
                raise RuntimeError("no GPU")

            pynvml.nvmlInit()
            handle = pynvml.nvmlDeviceGetHandleByIndex(torch.cuda.current_device())
            self._read = lambda: pynvml.nvmlDeviceGetUtilizationRates(handle).gpu
        except Exception:  # no NVML: report None rather than guess
            self._read = None
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self):
        while self._read and not self._stop.wait(0.1):
            self.samples.append((time.perf_counter(), self._read()))

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()

    def mean(self, start: float, end: float):
        """Over the timed updates only: start-up (workers, cuDNN's autotuning) is left out."""
        inside = [v for t, v in self.samples if start <= t <= end]
        return sum(inside) / len(inside) if inside else None


# ------------------------------------------------------------------ data and configuration
def make_dataset(root: Path, per_domain: int, classes: int) -> Path:
    start = time.perf_counter()
    synthetic_images.build(root / "data", per_domain=per_domain, classes=classes)
    manifest = build_manifest(root / "data", source="photo", target="shifted", seed=0)
    write_manifest(manifest, root / "manifest.csv")
    log(f"data: {2 * per_domain} JPEGs and their manifest in {time.perf_counter() - start:.0f} s")
    return root / "manifest.csv"


def real_size_config(root: Path, manifest: Path, *, batch: int, workers: int, **extra) -> Config:
    return Config().with_overrides({
        "data.root": str(root / "data"), "data.manifest": str(manifest), "data.source": "photo",
        "data.target": "shifted", "data.channels": 3, "data.image_size": 224,
        "data.loader": "stream", "data.workers": workers, "model.backbone": "resnet50",
        "model.bottleneck_dim": 256, "model.discriminator_hidden": 1024,
        "train.batch_size": batch, "train.adversarial": "tsf", **extra})


# ------------------------------------------------------------------ T1: streamed throughput
def streamed_phase(run_steps, cfg, kind: str, steps: int, warmup: int) -> dict:
    """Images/s of the production ``train()`` from files, timed after ``warmup`` steps."""
    torch.manual_seed(0)
    net = run_steps.new_network().to(run_steps.device)
    pool = run_steps.pool
    labelled = None
    if kind == "ssda":
        labelled = pool.subset(pool.ids[:min(2000, len(pool) // 2)])
        labelled.labels = torch.arange(len(labelled)) % len(run_steps.classes)
    marks = {}

    def on_step(step):
        if step in (warmup - 1, steps - 1):
            sync()
            marks[step] = time.perf_counter()

    regulariser = "source" if kind == "tsf" else "sum"
    train_cfg = cfg.train
    if kind == "plain":
        train_cfg = train_cfg.model_copy(update={"adversarial": "none"})
    per_step = cfg.train.batch_size * {"plain": 1, "tsf": 2, "ssda": 3}[kind]
    began = time.perf_counter()
    with Utilisation() as util:
        if kind == "plain":
            plain_loop(net, run_steps.source, train_cfg, steps, on_step)
        else:
            train(net, Streams(run_steps.source, labelled, pool), steps=steps, train_cfg=train_cfg,
                  regulariser=regulariser, seed=0, device=run_steps.device, phase=kind,
                  ramp_lambda=kind == "tsf", progress=False, on_step=on_step)
    seconds = marks[steps - 1] - marks[warmup - 1]
    return {"images_per_update": per_step, "timed_updates": steps - warmup,
            "images_per_s": per_step * (steps - warmup) / seconds,
            "gpu_utilisation_pct": util.mean(marks[warmup - 1], marks[steps - 1]),
            "phase_seconds_incl_startup": time.perf_counter() - began}


def plain_loop(net, source, train_cfg, steps, on_step) -> None:
    """The baseline: one supervised update per batch of the same streamed source images."""
    from components.adaptation.trainer import batch_plan

    net.train()
    opt = make_optimizer(net, train_cfg)
    plan, seeds = batch_plan(Streams(source, None, source), steps=steps,
                             batch_size=train_cfg.batch_size, seed=0)
    device = next(net.parameters()).device
    for step, images in enumerate(source.batches(plan["source"], seeds["source"], role="plain")):
        x = prepare_input(net, images, device)
        y = source.labels[plan["source"][step]].to(device, non_blocking=True)
        with autocast(device):
            loss = F.cross_entropy(net(x).float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        on_step(step)


# ------------------------------------------------------------------ T2: per-update cost
def per_update_ms(fn, repeat: int = 40, warmup: int = 8) -> float:
    """Median milliseconds of ``fn`` after ``warmup`` calls (device events on a GPU)."""
    for _ in range(warmup):
        fn()
    sync()
    times = []
    for _ in range(repeat):
        if DEVICE.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            torch.cuda.synchronize()
            times.append(start.elapsed_time(end))
        else:
            t = time.perf_counter()
            fn()
            times.append(1e3 * (time.perf_counter() - t))
    return sorted(times)[len(times) // 2]


def update_ratio(cfg: Config, num_classes: int, shape: tuple, *, compile: bool | str,
                 repeat: int = 40) -> dict:
    """Median ms of one SSDA update (source + labelled + unlabelled, TSF, Ω_{S+T}) and of one
    TSF pretraining update, each ÷ one plain supervised update over the same images."""
    device = DEVICE
    torch.manual_seed(0)
    net = build_network(cfg, num_classes).to(device).train()
    if device.type == "cuda":
        net = net.to(memory_format=torch.channels_last)
    opt = make_optimizer(net, cfg.train)
    bs = cfg.train.batch_size
    g = torch.Generator().manual_seed(0)
    raw = torch.randint(0, 256, (3 * bs, *shape), generator=g, dtype=torch.uint8)
    x = prepare_input(net, raw, device)
    y = torch.randint(num_classes, (3 * bs,), generator=g).to(device)
    xs, xl, xu = x[:bs], x[bs:2 * bs], x[2 * bs:]
    mode = compile if isinstance(compile, str) else "default" if compile else None
    losses = compiled_losses(mode) if mode else step_losses  # as train.compile: <mode>
    lam = torch.tensor(0.3, device=device) if compile else 0.3

    def ssda():
        update_step(net, opt, xs, y[:bs], xl, y[bs:2 * bs], xu, adversarial="tsf",
                    regulariser="sum", lambda_adv=lam, lambda_entropy=0.1, losses=losses)

    def tsf():
        update_step(net, opt, xs, y[:bs], xs[:0], y[:0], xu, adversarial="tsf",
                    regulariser="source", lambda_adv=lam, lambda_entropy=0.1, losses=losses)

    def plain_on(images, labels):
        forward = torch.compile(net, mode=None if mode == "default" else mode) if mode else net
        def step():
            with autocast(device):
                loss = F.cross_entropy(forward(images).float(), labels)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        return step

    start = time.perf_counter()
    timed = lambda fn: per_update_ms(fn, repeat=repeat, warmup=min(8, repeat))  # noqa: E731
    t_ssda, t_tsf = timed(ssda), timed(tsf)
    t_plain3, t_plain2 = timed(plain_on(x, y)), timed(plain_on(x[:2 * bs], y[:2 * bs]))
    return {"batch_per_stream": bs, "compile": compile,
            "ssda_ms": t_ssda, "plain_same_images_ms": t_plain3, "ssda_ratio": t_ssda / t_plain3,
            "tsf_ms": t_tsf, "plain_2x_ms": t_plain2, "tsf_ratio": t_tsf / t_plain2,
            "ssda_images_per_s": 3 * bs / t_ssda * 1e3, "tsf_images_per_s": 2 * bs / t_tsf * 1e3,
            "plain_images_per_s": 3 * bs / t_plain3 * 1e3,
            "seconds_incl_compile": time.perf_counter() - start, "target_ratio": "<= 1.3"}


# ------------------------------------------------------------------ T3: selection at scale
def selection(n: int, classes: int, m: int, hidden: int, budget: int, chunk: int) -> dict:
    from components.models.heads import MLPDiscriminator
    from components.query.sage import embed, select_from_embedding

    device = DEVICE
    cuda = device.type == "cuda"
    torch.manual_seed(0)
    disc = MLPDiscriminator(m, hidden, classes).to(device).eval()
    z = torch.randn(n, m, device=device)
    p = torch.softmax(3 * torch.randn(n, classes, device=device), 1)
    out = {"n": n, "classes": classes, "m": m, "budget": budget, "chunk": chunk}
    picks = {}
    for storage in ("float32", "float16"):
        sync()
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated() if cuda else 0
        start = time.perf_counter()
        emb, norms = embed(disc, z, p, chunk=chunk, storage=storage)
        sync()
        t_embed = time.perf_counter() - start
        picks[storage], _ = select_from_embedding(emb, budget, diversity="greedy", seed=0,
                                                  chunk=4096, norms=norms)
        sync()
        out[storage] = {"seconds": time.perf_counter() - start, "embed_seconds": t_embed,
                        "embedding_gb": emb.numel() * emb.element_size() / 1e9,
                        "peak_over_inputs_gb": ((torch.cuda.max_memory_allocated() - base) / 1e9
                                                if cuda else None)}
        del emb, norms
        if cuda:
            torch.cuda.empty_cache()
    same = sum(a == b for a, b in zip(picks["float32"], picks["float16"]))
    out["same_picks_in_order"] = same
    out["same_picks_as_sets"] = len(set(picks["float32"]) & set(picks["float16"]))
    return out


# ------------------------------------------------------------------ the GPU run
def run_gpu(args) -> dict:
    began = time.perf_counter()
    if DEVICE.type != "cuda" and not args.smoke:
        sys.exit("no GPU visible: `gpu` runs on a GPU machine (`--smoke` tries the script on "
                 "the CPU at toy sizes); `rss` is the CPU part")
    shm = os.statvfs("/dev/shm") if os.path.exists("/dev/shm") else None
    if shm is None or shm.f_bavail * shm.f_frsize < 4e9:  # workers hand batches over in /dev/shm
        torch.multiprocessing.set_sharing_strategy("file_system")
        log("small /dev/shm: decoding workers share batches through files")
    torch.backends.cudnn.benchmark = True
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    results = {"device": torch.cuda.get_device_name() if DEVICE.type == "cuda" else "cpu",
               "torch": torch.__version__, "cpu_cores": os.cpu_count(), "quick": args.quick,
               "smoke": args.smoke}
    name = "gpu_throughput_smoke.json" if args.smoke else "gpu_throughput_cuda.json"
    out = Path(args.out) / name
    if args.only and (RESULTS / name).exists():  # a partial rerun updates the committed figures
        earlier = json.loads((RESULTS / name).read_text())
        results = {**earlier, **results, "reruns": [*earlier.get("reruns", []), {
            "parts": args.only, "device": results["device"], "torch": results["torch"]}]}

    def save(key, value):
        results[key] = value
        out.write_text(json.dumps(results, indent=1))
        log(key, json.dumps(value))

    if args.smoke:
        args.per_domain, args.classes, args.batch, args.steps, args.quick = 40, 5, 2, 4, False
    per_domain = 2000 if args.quick else args.per_domain
    root = Path(tempfile.mkdtemp(prefix="sage-ada-synth-"))
    manifest = make_dataset(root, per_domain, args.classes)  # also T2's config needs its manifest
    cores = os.cpu_count() or 4
    from components.run.steps import RunSteps

    steps, warmup = (25, 8) if args.quick else (args.steps, min(15, args.steps // 2))
    t1 = dict(results.get("T1_streamed", {}))
    for kind, streams in (("plain", 1), ("tsf", 2), ("ssda", 3)):
        if args.only and f"T1_{kind}" not in args.only.split(","):
            continue
        workers = max(1, (cores - 1) // streams)  # the same decoding processes in every phase
        cfg = real_size_config(root, manifest, batch=args.batch, workers=workers)
        run_steps = RunSteps(cfg, progress=False, cache_dir=root / "cache")
        try:
            t1[kind] = {**streamed_phase(run_steps, cfg, kind, steps, warmup),
                        "workers_per_stream": workers}
        except Exception as err:  # keep what the other parts measure
            t1[kind] = {"error": repr(err)}
        save("T1_streamed", t1)
        del run_steps
        gc.collect()  # its persistent decoding workers go with it
    cfg = real_size_config(root, manifest, batch=args.batch, workers=1)
    digits = Config()
    smoke = args.smoke
    parts = [  # compiled ResNet-50 last: its compilation is the slowest part
        ("T2_resnet50", lambda: update_ratio(cfg, args.classes, (3, 224, 224), compile=False,
                                             repeat=3 if smoke else 40)),
        ("T2_digits", lambda: update_ratio(digits, 10, (1, 28, 28), compile=False,
                                           repeat=3 if smoke else 100)),
        ("T2_digits_compiled", lambda: update_ratio(digits, 10, (1, 28, 28), compile=True,
                                                    repeat=3 if smoke else 100)),
    ]
    n, c = (2000, 20) if smoke else (20_000, 345) if args.quick else (100_000, 345)
    for chunk in (4096, 65536):
        parts.append((f"T3_selection_chunk{chunk}",
                      lambda chunk=chunk: selection(n, c, 256, 1024, c, chunk)))
    parts.append(("T2_digits_cudagraphs", lambda: update_ratio(
        digits, 10, (1, 28, 28), compile="reduce-overhead", repeat=100)))
    parts.append(("T2_resnet50_compiled", lambda: update_ratio(
        cfg, args.classes, (3, 224, 224), compile=True, repeat=3 if smoke else 40)))
    for key, part in parts:
        if args.only and key not in args.only.split(","):
            continue
        if ("compiled" in key or "graphs" in key) and (smoke or time.perf_counter() - began > args.deadline_s):
            save(key, {"skipped": "smoke run" if smoke else
                       f"past --deadline-s {args.deadline_s} before it started"})
            continue
        try:
            save(key, part())
        except Exception as err:  # keep what the other parts measure
            save(key, {"error": repr(err)})
    ceiling, streamed = results.get("T2_resnet50", {}), results.get("T1_streamed", {})
    shares = {k: streamed[k]["images_per_s"] / ceiling[f"{k}_images_per_s"]
              for k in ("plain", "tsf", "ssda")
              if "images_per_s" in streamed.get(k, {}) and f"{k}_images_per_s" in ceiling}
    if shares:  # streamed from files ÷ the same updates on GPU-resident batches
        save("T1_loader_share", shares)
    return results


# ------------------------------------------------------------------ the CPU memory run
def rss_child(manifest: str, root: str) -> dict:
    """One streamed run's data path in this process: a few training updates and a pass over
    pool and test, on a small backbone (28-px crops), so that decoding, not compute, is what
    runs; returns this process's peak RSS."""
    import resource

    from components.run.steps import RunSteps

    torch.set_num_threads(1)
    cfg = Config().with_overrides({
        "data.root": root, "data.manifest": manifest, "data.source": "photo",
        "data.target": "shifted", "data.channels": 3, "data.image_size": 28,
        "data.resize_size": 32, "data.loader": "stream", "data.workers": 1,
        "train.pretrain_steps": 20, "active.strategy": "entropy"})
    run_steps = RunSteps(cfg, progress=False, cache_dir=Path(root).parent / "cache")
    start = time.perf_counter()
    net, _, _ = run_steps.pretrain()
    run_steps.select(net, {}, 1)
    run_steps.evaluate(net)
    return {"images": len(run_steps.manifest), "seconds": time.perf_counter() - start,
            "main_peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def run_rss(args) -> dict:
    import psutil

    sizes = [int(s) for s in args.sizes.split(",")]
    base = Path(tempfile.mkdtemp(prefix="sage-ada-rss-"))
    synthetic_images.build(base / "data", per_domain=max(sizes) // 2, classes=args.classes)
    results = {"cpu": platform.processor() or platform.machine(), "cpu_cores": os.cpu_count(),
               "torch": torch.__version__, "runs": []}
    for n in sizes:
        manifest = build_manifest(base / "data", source="photo", target="shifted", seed=0)
        index = manifest["sample_id"].str.rsplit("_", n=1).str[1].astype(int)
        manifest = manifest[index < n // 2]  # the first n/2 of each domain: every class in both
        path = base / f"manifest-{n}.csv"
        write_manifest(manifest, path)
        proc = subprocess.Popen([sys.executable, __file__, "rss-child", str(path),
                                 str(base / "data")], stdout=subprocess.PIPE, text=True)
        tree_peak = 0.0
        parent = psutil.Process(proc.pid)
        while proc.poll() is None:  # the process and its decoding workers, shared pages shared
            try:
                procs = [parent, *parent.children(recursive=True)]
                tree_peak = max(tree_peak, sum(p.memory_full_info().pss for p in procs) / 2 ** 20)
            except psutil.Error:
                pass
            time.sleep(0.3)
        child = json.loads(proc.stdout.read().strip().splitlines()[-1])
        results["runs"].append({**child, "tree_peak_pss_mb": tree_peak})
        log(json.dumps(results["runs"][-1]))
    first, last = results["runs"][0], results["runs"][-1]
    results["growth"] = {"images": last["images"] / first["images"],
                         "main_peak_rss": last["main_peak_rss_mb"] / first["main_peak_rss_mb"],
                         "tree_peak_pss": last["tree_peak_pss_mb"] / first["tree_peak_pss_mb"],
                         "target": "<= 1.3"}
    (Path(args.out) / "gpu_throughput_cpu.json").write_text(json.dumps(results, indent=1))
    return results


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="command", required=True)
    g = sub.add_parser("gpu")
    g.add_argument("--quick", action="store_true", help="smaller sizes, on the GPU")
    g.add_argument("--smoke", action="store_true", help="toy sizes, to try the script on a CPU")
    g.add_argument("--per-domain", type=int, default=12_000)
    g.add_argument("--classes", type=int, default=345)
    g.add_argument("--batch", type=int, default=128, help="images per stream per update")
    g.add_argument("--steps", type=int, default=60)
    g.add_argument("--only", help="comma-separated parts, e.g. T1_tsf,T2_digits_cudagraphs")
    g.add_argument("--deadline-s", type=float, default=300,
                   help="skip the compiled ResNet-50 part if the run is older than this")
    g.add_argument("--out", default=str(RESULTS))
    r = sub.add_parser("rss")
    r.add_argument("--sizes", default="5000,50000")
    r.add_argument("--classes", type=int, default=345)
    r.add_argument("--out", default=str(RESULTS))
    c = sub.add_parser("rss-child")
    c.add_argument("manifest")
    c.add_argument("root")
    args = ap.parse_args()
    if args.command == "rss-child":
        print(json.dumps(rss_child(args.manifest, args.root)))
        return
    Path(getattr(args, "out", RESULTS)).mkdir(parents=True, exist_ok=True)
    results = run_gpu(args) if args.command == "gpu" else run_rss(args)
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
