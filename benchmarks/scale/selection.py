"""Part "selection": pool inference and selection for sage, clue and badge (issue 31, 2).

The pool is every generated target image (N of them, labels withheld), so selection runs at N;
the flow's own pool is the target-train half of its split. The network is the one
``params.yaml`` builds (the digits CNN, TSF discriminator, ``data.image_size`` 28: each 224-px
photo is decoded and resized to 28 px), on the CPU, briefly pretrained on the generated source
(so its outputs are a trained model's, not a random one's; the weights are cached in
``--work``, and pretraining is not measured).

The code path is the flow's (``components/run/steps.py``): the loader ``data.loader`` picks
(``load_images`` in memory, or ``stream_images``), ``predict``, ``PoolOutputs.from_logits``,
then ``components.query.select`` with ``active.selection_chunk`` and
``active.embedding_storage``, for a round of ``--tasks`` (1,000) labels.

One process computes the pool's outputs (decode + forward: "pool inference") and saves them;
then one fresh process per strategy loads them and selects, so each strategy's peak RSS is its
own (the process's baseline, torch and the pool outputs, included; noted beside it).

    python -m benchmarks.scale.selection infer --params P --out pool.pt --cache DIR
    python -m benchmarks.scale.selection select --params P --pool pool.pt --strategy sage --budget 1000
"""
from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from functools import partial
from pathlib import Path

from benchmarks.scale import figure, measured, peak_rss_mib

STRATEGIES = ("sage", "clue", "badge")
PRETRAIN_STEPS = 200
TARGET_S = 60


# ---------------------------------------------------------------------------- child processes
def infer(params: Path, out: Path, cache: Path, steps: int) -> dict:
    """Decode the pool, (pre)train or load the network, predict; save the pool's outputs."""
    import torch

    from components import numerics
    from components.adaptation.distributed import Shard
    from components.adaptation.trainer import Streams, seed_everything, train
    from components.config import load_config
    from components.data.split import class_list, read_manifest
    from components.data.stream import stream_images
    from components.data.tensors import load_images
    from components.models import build_network
    from components.models.checkpoints import load_checkpoint, save_checkpoint
    from components.models.inference import predict
    from components.query import PoolOutputs
    from components.run.steps import streams_images, training_code_digest

    cfg = load_config(params)
    numerics.apply(cfg.train.cpu_kernels, cfg.train.cpu_threads)
    device = torch.device("cpu")
    manifest = read_manifest(cfg.data.manifest)
    classes = class_list(manifest)
    d = cfg.data
    streamed = streams_images(d, len(manifest))
    load = (partial(stream_images, crop=d.image_size, resize=d.resize, workers=d.workers)
            if streamed else partial(load_images, size=d.image_size))
    load = partial(load, root=d.root, classes=classes, channels=d.channels)
    target = manifest[manifest["domain"] == d.target]

    start = time.perf_counter()
    pool = load(target, with_labels=False)
    decode_s = time.perf_counter() - start

    seed_everything(cfg.train.seed)
    net = build_network(cfg, len(classes))
    key = hashlib.sha256(json.dumps({
        "manifest": hashlib.sha256(manifest.to_csv(index=False).encode()).hexdigest(),
        "cfg": cfg.model_dump(mode="json"), "steps": steps, "code": training_code_digest()},
        sort_keys=True).encode()).hexdigest()[:16]
    weights = cache / f"net-{key}.pt"
    trained_now = not weights.is_file()
    if trained_now:
        source = load(manifest[manifest["split"] == "source"])
        train(net, Streams(source, None, pool), steps=steps, train_cfg=cfg.train,
              regulariser="source", seed=cfg.train.seed, device=device,
              phase=f"pretrain ({cfg.train.adversarial})", ramp_lambda=True, progress=False,
              shard=Shard())
        save_checkpoint(net, weights)
    else:
        load_checkpoint(net, weights)
    net.eval()

    start = time.perf_counter()
    z, logits = predict(net, pool, device=device)
    outputs = PoolOutputs.from_logits(pool.ids, z, logits, net.discriminator,
                                      classifier=net.classifier)
    forward_s = time.perf_counter() - start

    truth = torch.tensor([classes.index(str(v)) for v in target["label"]])
    accuracy = float((logits.argmax(1) == truth).float().mean())
    torch.save({"ids": outputs.ids, "features": outputs.features,
                "probabilities": outputs.probabilities,
                "classifier_inputs": outputs.classifier_inputs,
                "discriminator": outputs.discriminator}, out)
    return {"pool": len(pool), "decode_s": decode_s, "forward_s": forward_s,
            "streamed": streamed, "image_size": d.image_size, "backbone": cfg.model.backbone,
            "pretrain_steps": steps, "trained_now": trained_now, "accuracy": accuracy,
            "threads": torch.get_num_threads(), "peak_rss_mib": peak_rss_mib()}


def choose(params: Path, pool_file: Path, strategy: str, budget: int) -> dict:
    """One strategy's selection over the saved pool outputs, timed alone."""
    import torch

    from components import numerics
    from components.config import load_config
    from components.query import PoolOutputs, select

    cfg = load_config(params)
    numerics.apply(cfg.train.cpu_kernels, cfg.train.cpu_threads)
    saved = torch.load(pool_file, weights_only=False)
    pool = PoolOutputs(saved["ids"], saved["features"], saved["probabilities"],
                       saved["discriminator"].eval(), saved["classifier_inputs"])
    baseline = peak_rss_mib()
    a = cfg.active
    start = time.perf_counter()
    ids, scores = select(strategy, pool, min(budget, len(pool)), seed=a.seed * 1000 + 1,
                         chunk=a.selection_chunk, storage=a.embedding_storage)
    seconds = time.perf_counter() - start
    return {"strategy": strategy, "seconds": seconds, "picked": len(ids), "pool": len(pool),
            "baseline_rss_mib": baseline, "peak_rss_mib": peak_rss_mib(),
            "threads": torch.get_num_threads()}


# ---------------------------------------------------------------------------- the part
def run(args, work: Path) -> dict:
    from benchmarks.scale import data

    work = Path(work)
    params = data.ensure_split(args, work)
    folder = work / "selection"
    folder.mkdir(parents=True, exist_ok=True)
    logs = work / "logs"
    logs.mkdir(exist_ok=True)
    steps = getattr(args, "pretrain_steps", PRETRAIN_STEPS)
    budget = args.tasks
    me = [sys.executable, "-m", "benchmarks.scale.selection"]

    result = folder / "infer.json"
    outer = measured(me + ["infer", "--params", str(params), "--out", str(folder / "pool.pt"),
                           "--cache", str(folder), "--steps", str(steps),
                           "--json", str(result)],
                     cwd=data.REPO, env=data.env(), log=logs / "selection-infer.log")
    inf = json.loads(result.read_text())
    print(f"  pool inference: {inf['decode_s'] + inf['forward_s']:.1f} s", flush=True)
    loader = "streamed" if inf["streamed"] else "in memory"
    figures = {
        "pool inference": figure(
            inf["decode_s"] + inf["forward_s"], "s",
            note=(f"pool of {inf['pool']} photos, {inf['backbone']} at {inf['image_size']} px "
                  f"on the CPU ({inf['threads']} threads), {loader}: decode "
                  f"{inf['decode_s']:.1f} s + forward {inf['forward_s']:.1f} s; network "
                  f"pretrained {inf['pretrain_steps']} steps on the generated source (not "
                  f"timed), target accuracy {inf['accuracy']:.2f}")),
        "pool inference, peak RSS": figure(outer["peak_rss_mib"], "MiB",
                                           note="includes the (untimed) pretraining when it ran"
                                           if inf["trained_now"] else ""),
    }
    for strategy in STRATEGIES:
        result = folder / f"select-{strategy}.json"
        outer = measured(me + ["select", "--params", str(params), "--pool",
                               str(folder / "pool.pt"), "--strategy", strategy,
                               "--budget", str(budget), "--json", str(result)],
                         cwd=data.REPO, env=data.env(), log=logs / f"selection-{strategy}.log")
        sel = json.loads(result.read_text())
        print(f"  selection {strategy}: {sel['seconds']:.1f} s", flush=True)
        figures[f"selection {strategy}"] = figure(
            sel["seconds"], "s", at_most=TARGET_S,
            note=f"{sel['picked']} of a pool of {sel['pool']}, CPU, {sel['threads']} threads")
        figures[f"selection {strategy}, peak RSS"] = figure(
            outer["peak_rss_mib"], "MiB",
            note=f"the process before selecting: {sel['baseline_rss_mib']:.0f} MiB")
    return figures


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="what", required=True)
    i = sub.add_parser("infer")
    i.add_argument("--params", type=Path, required=True)
    i.add_argument("--out", type=Path, required=True)
    i.add_argument("--cache", type=Path, required=True)
    i.add_argument("--steps", type=int, default=PRETRAIN_STEPS)
    i.add_argument("--json", type=Path)
    s = sub.add_parser("select")
    s.add_argument("--params", type=Path, required=True)
    s.add_argument("--pool", type=Path, required=True)
    s.add_argument("--strategy", choices=STRATEGIES, required=True)
    s.add_argument("--budget", type=int, default=1000)
    s.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    out = (infer(args.params, args.out, args.cache, args.steps) if args.what == "infer"
           else choose(args.params, args.pool, args.strategy, args.budget))
    text = json.dumps(out)
    if args.json:
        args.json.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
