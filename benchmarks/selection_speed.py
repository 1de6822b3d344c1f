"""P1-P3: how much Sage and the SSDA update cost. Prints figures and saves them to
``benchmarks/results/selection_speed.json`` (measured, never asserted in unit tests).

    python benchmarks/selection_speed.py [--quick]

P1  ResNet-50 (C=31, m=256, 256 images 224x224, random weights): Sage query ÷ one inference pass
P2  selection alone, N=20,000, C=126, m=256, b=63: wall time, peak memory ÷ embedding size,
    and speed-up over a naive reference (per-sample autograd + dense N×N) at N=2,000
P3  one TSF/SSDA update ÷ one plain supervised update over the same images (digits)
"""
from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from components.config import Config  # noqa: E402
from components.data.tensors import ImageSet  # noqa: E402
from components.models import build_network  # noqa: E402
from components.models.heads import MLPDiscriminator  # noqa: E402
from components.query import select  # noqa: E402
from components.query.sage import (adversarial_jacobian, expected_gradient,  # noqa: E402
                                   positive_orthogonal_projection, sage_embedding,
                                   select_from_embedding)

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _sync():
    if DEVICE.type == "cuda":
        torch.cuda.synchronize()


def timed(fn, repeat=1):
    best = float("inf")
    for _ in range(repeat):
        _sync()
        start = time.perf_counter()
        out = fn()
        _sync()
        best = min(best, time.perf_counter() - start)
    return best, out


def p1(n_images: int) -> dict:
    cfg = Config().with_overrides({"model.backbone": "resnet50", "data.channels": 3,
                                   "data.image_size": 224, "model.bottleneck_dim": 256,
                                   "model.discriminator_hidden": 256})
    torch.manual_seed(0)
    net = build_network(cfg, 31).to(DEVICE).eval()
    images = torch.randint(0, 256, (n_images, 3, 224, 224), dtype=torch.uint8)
    pool = ImageSet([str(i) for i in range(n_images)], images, torch.full((n_images,), -1))
    from components.models.inference import predict
    from components.query import PoolOutputs

    predict(net, images[:8], device=DEVICE)  # warm-up
    t_inf, _ = timed(lambda: predict(net, images, device=DEVICE), repeat=2)

    def query():  # what a round does: predict over the pool once, then the strategy
        z, logits = predict(net, pool, device=DEVICE)
        return select("sage", PoolOutputs.from_logits(pool.ids, z, logits, net.discriminator), 8,
                      seed=0)
    t_sage, _ = timed(query, repeat=2)
    return {"images": n_images, "inference_s": t_inf, "sage_query_s": t_sage,
            "ratio": t_sage / t_inf, "target": "<= 1.2"}


def _synthetic(n, c, m, hidden, seed=0):
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    disc = MLPDiscriminator(m, hidden, c).eval()
    z = torch.randn(n, m, generator=g)
    p = torch.softmax(3 * torch.randn(n, c, generator=g), 1)
    return disc, z, p


def fast_select(disc, z, p, budget, chunk=64):
    """The production path: chunked embedding, then Algorithm 1 with one pass per pick."""
    n, c, m = len(z), p.shape[1], z.shape[1]
    emb = torch.empty(n, c * m, device=z.device)
    with torch.no_grad():
        for s in range(0, n, chunk):
            g = adversarial_jacobian(disc, z[s:s + chunk])
            g = positive_orthogonal_projection(g, expected_gradient(g, p[s:s + chunk]))
            emb[s:s + chunk] = sage_embedding(g, p[s:s + chunk])
    return select_from_embedding(emb, budget, diversity="greedy", seed=0, chunk=4096)[0]


def naive_select(disc, z, p, budget):
    """Reference: per-sample autograd Jacobians and a dense N×N distance matrix."""
    rows = []
    for zi, pi in zip(z, p):
        jac = torch.autograd.functional.jacobian(lambda x: -F.logsigmoid(disc(x[None])[0]), zi)
        E = pi @ jac
        lam = (jac @ E).abs() / (E @ E)
        rows.append((pi.sqrt()[:, None] * (jac - lam[:, None] * E)).flatten())
    emb = torch.stack(rows)
    dist = torch.cdist(emb, emb)
    chosen = [int(emb.norm(dim=1).argmax())]
    while len(chosen) < budget:
        d = dist[:, chosen].min(1).values
        d[chosen] = -1
        chosen.append(int(d.argmax()))
    return chosen


def p2_child(n, c, m, b, hidden) -> dict:
    """Run in a fresh process so its peak RSS is its own."""
    disc, z, p = _synthetic(n, c, m, hidden)
    disc, z, p = disc.to(DEVICE), z.to(DEVICE), p.to(DEVICE)
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    if DEVICE.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    t, picks = timed(lambda: fast_select(disc, z, p, b))
    peak = (torch.cuda.max_memory_allocated() if DEVICE.type == "cuda"
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
    emb_bytes = n * c * m * 4
    return {"n": n, "classes": c, "m": m, "budget": b, "seconds": t,
            "embedding_gb": emb_bytes / 1e9, "peak_over_baseline_gb": (peak - base) / 1e9,
            "memory_ratio": (peak - base) / emb_bytes, "picks_head": picks[:5]}


def p2(quick: bool) -> dict:
    n = 4000 if quick else 20000
    out = subprocess.run([sys.executable, __file__, "--p2-child", str(n)], capture_output=True,
                         text=True, check=True)
    big = json.loads(out.stdout.strip().splitlines()[-1])
    disc, z, p = _synthetic(2000, 126, 256, 256)
    t_fast, fast = timed(lambda: fast_select(disc, z, p, 63))
    t_naive, naive = timed(lambda: naive_select(disc, z, p, 63))
    return {**big, "target_seconds": "<= 30", "target_memory_ratio": "<= 1.5",
            "naive_n": 2000, "naive_s": t_naive, "fast_s": t_fast, "speedup": t_naive / t_fast,
            "identical_picks": fast == naive, "target_speedup": ">= 10"}


def p3() -> dict:
    from components.adaptation.trainer import make_optimizer, update_step
    from components.models.device import prepare_input as _prepare

    cfg = Config()
    torch.manual_seed(0)
    net = build_network(cfg, 10).to(DEVICE).train()
    opt = make_optimizer(net, cfg.train)
    bs = cfg.train.batch_size
    x = {k: _prepare(net, torch.randint(0, 256, (bs, 1, 28, 28), dtype=torch.uint8), DEVICE)
         for k in ("s", "l", "u")}
    y = {k: torch.randint(0, 10, (bs,), device=DEVICE) for k in ("s", "l")}

    def ssda():
        update_step(net, opt, x["s"], y["s"], x["l"], y["l"], x["u"], adversarial="tsf",
                    regulariser="sum", lambda_adv=0.3, lambda_entropy=0.1)

    xs_all = torch.cat([x["s"], x["l"], x["u"]])
    ys_all = torch.cat([y["s"], y["l"], y["s"]])

    def plain():
        loss = F.cross_entropy(net(xs_all), ys_all)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    def per_step(fn, n=60):
        for _ in range(10):
            fn()
        times = []
        for _ in range(n):
            t, _ = timed(fn)
            times.append(t)
        return sorted(times)[n // 2]

    t_plain, t_ssda = per_step(plain), per_step(ssda)
    return {"plain_ms": 1000 * t_plain, "ssda_ms": 1000 * t_ssda, "ratio": t_ssda / t_plain,
            "target": "<= 1.3"}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="smaller P1/P2 (smoke run)")
    ap.add_argument("--only", default="P1,P2,P3", help="comma-separated subset, e.g. P2")
    ap.add_argument("--p2-child", type=int)
    args = ap.parse_args()
    if args.p2_child:
        print(json.dumps(p2_child(args.p2_child, 126, 256, 63, 256)))
        return
    torch.set_num_threads(torch.get_num_threads())
    results = {"device": str(DEVICE), "threads": torch.get_num_threads(),
               "cpu": platform.processor() or platform.machine(),
               "gpu": torch.cuda.get_device_name() if DEVICE.type == "cuda" else None}
    out = Path(__file__).parent / "results" / ("selection_speed_quick.json" if args.quick else
                                              f"selection_speed_{DEVICE.type}.json")
    if out.exists():  # keep the parts not rerun
        results = {**json.loads(out.read_text()), **results}
    for name, fn in (("P3", p3), ("P2", lambda: p2(args.quick)),
                     ("P1", lambda: p1(32 if args.quick else 256))):
        if name not in args.only.split(","):
            continue
        results[name] = fn()
        print(name, json.dumps(results[name], indent=1), flush=True)
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(results, indent=1))
    print(f"saved {out}")


if __name__ == "__main__":
    main()
