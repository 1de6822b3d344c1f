"""One update of eq. 10, UDA pretraining and SSDA rounds (prediction, evaluation and
checkpoints are ``components.models``'s: they do not change the weights).

Batches follow Algorithm 2: ``B_S`` from the labelled source, ``B_T^l`` from the target labels
so far, ``B_T^u`` from the **whole** target-train pool (never the shrinking one).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from components.adaptation.distributed import Shard, scale_grad, synchronise_batchnorm, wrap_for_ddp
from components.adaptation.losses import ADVERSARIAL, REGULARISERS, Outputs
from components.data.tensors import ImageSet
from components.models.device import autocast, prepare_input, to_device


def seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)


@dataclass
class Streams:
    """The three sources of a batch; ``labelled`` may be empty (UDA pretraining)."""

    source: ImageSet
    labelled: ImageSet | None
    unlabelled: ImageSet
    # per row of ``unlabelled``: its class index where a label is known, else -1; given, the
    # class-level adversary weighs those rows by their label (train.labelled_in_adversary)
    unlabelled_labels: torch.Tensor | None = None


def step_losses(net, xs, ys, xl, yl, xu, lambda_adv, *, adversarial: str, regulariser: str,
                lambda_entropy: float, target_share: float | None = None,
                group_scales: tuple[float, float, float] = (1.0, 1.0, 1.0),
                reversal: float | torch.Tensor = 1.0, yu: torch.Tensor | None = None) -> dict:
    """The forward half of eq. 10 on one batch: ``Ω + λ L_adv`` and its parts (tensors).

    ``L_adv`` is the unit ``ADVERSARIAL[adversarial]`` (``losses.AdversarialLoss``; ``none``:
    no adversary). The discriminator descends ``λ L_adv``; the features ascend it through the
    gradient reversal, scaled by ``reversal`` (DANN's ramp from 0 to 1: only the features' side
    ramps, the discriminator learns at full rate from the first step, as in Ganin et al.).
    Kept apart from the update so ``train.compile`` can compile it whole (forward and, through
    AOTAutograd, its backward) into few fused kernels; ``lambda_adv`` and ``reversal`` may be
    0-d tensors then, so the ramp does not recompile. ``group_scales`` (source, labelled,
    unlabelled): in one of several processes, what its share of each group weighs in the global
    batch (see ``distributed.Shard.scale``); every loss term reads one group's rows, so scaling
    the gradient where it reads them scales that term. ``yu``: the known labels of ``xu``'s
    rows (-1: none), for an adversary that weighs labelled target samples by their label."""
    ns, nl = len(ys), len(yl)
    cs, cl, cu = group_scales
    device = xs.device
    with autocast(device):
        z = net.features(torch.cat([xs, xl, xu]))
        logits = net.classifier(z)
        out = Outputs(scale_grad(logits[:ns], cs), ys, scale_grad(logits[ns:ns + nl], cl), yl,
                      scale_grad(z[ns + nl:], cu), target_share)
        omega = REGULARISERS[regulariser](out, net.classifier, lambda_entropy)
        loss, adv = omega, torch.zeros((), device=device)
        if adversarial != "none":
            adv = ADVERSARIAL[adversarial](net.discriminator, z[:ns], z[ns + nl:], ys,
                                           logits[ns + nl:], reversal=reversal, scales=(cs, cu),
                                           y_target=yu)
            loss = omega + lambda_adv * adv
    acc = (logits[:ns].argmax(1) == ys).float().mean()
    return {"loss": loss, "omega": omega, "adv": adv, "src_acc": acc}


def update_step(net, optimizer, xs, ys, xl, yl, xu, *, adversarial: str, regulariser: str,
                lambda_adv: float, lambda_entropy: float, target_share: float | None = None,
                losses=step_losses, group_scales=(1.0, 1.0, 1.0), reversal=1.0,
                yu: torch.Tensor | None = None) -> dict:
    """``(f, phi, d) -= α ∇(Ω + λ L_adv)`` on one batch; returns the loss parts.

    ``target_share`` is ``|L_T| / (|L_S| + |L_T|)``, which Ω_{S∪T} needs (see ``omega_union``);
    ``losses``: ``step_losses`` or its compiled form."""
    parts = losses(net, xs, ys, xl, yl, xu, lambda_adv, adversarial=adversarial,
                   regulariser=regulariser, lambda_entropy=lambda_entropy,
                   target_share=target_share, group_scales=group_scales, reversal=reversal,
                   yu=yu)
    optimizer.zero_grad(set_to_none=True)
    parts["loss"].backward()
    optimizer.step()
    # Tensors, not floats: reading a value waits for the GPU, so the caller reads them rarely.
    return {k: v.detach() for k, v in parts.items()}


def compiled_losses(mode: str = "default"):
    """``step_losses`` through ``torch.compile`` (one compilation per batch shape); mode
    ``reduce-overhead`` also replays it as CUDA graphs on a GPU (benchmarks/gpu_throughput.py)."""
    return torch.compile(step_losses, dynamic=False, mode=None if mode == "default" else mode)


def _floats(stats: dict) -> dict:
    return {k: float(v) for k, v in stats.items()}


def batch_plan(streams: Streams, *, steps: int, batch_size: int, seed: int):
    """Every step's sample positions, drawn up front from one seeded generator, in the order
    source, unlabelled, labelled per step; plus per-sample augmentation seeds from another
    generator (so the positions are the same with or without augmentation)."""
    gen = torch.Generator().manual_seed(seed)
    lab = streams.labelled if streams.labelled is not None and len(streams.labelled) else None
    plan = {"source": [], "unlabelled": [], "labelled": []}
    for _ in range(steps):
        plan["source"].append(torch.randint(len(streams.source), (batch_size,), generator=gen))
        plan["unlabelled"].append(torch.randint(len(streams.unlabelled), (batch_size,), generator=gen))
        if lab is not None:
            plan["labelled"].append(torch.randint(
                len(lab), (min(batch_size, max(len(lab), 1)),), generator=gen))
    aug = torch.Generator().manual_seed(seed + 7919)
    seeds = {k: [torch.randint(2 ** 31 - 1, p.shape, generator=aug) for p in v]
             for k, v in plan.items()}
    return plan, seeds


def make_optimizer(net, train_cfg) -> torch.optim.Optimizer:
    """Nesterov SGD; on a GPU its fused kernel (one launch for all parameters, not one per
    tensor: the heads have many small ones)."""
    params = [p for p in net.parameters() if p.requires_grad]
    fused = bool(params) and params[0].is_cuda
    return torch.optim.SGD(params, lr=train_cfg.lr, momentum=train_cfg.momentum,
                           weight_decay=train_cfg.weight_decay, nesterov=True,
                           **({"fused": True} if fused else {}))


def learning_rate(train_cfg, step: int, steps: int) -> float:
    """``constant``, or ``anneal``: DANN's ``lr / (1 + 10 p)^0.75`` over the phase's progress ``p``,
    which quiets the last updates so the phase ends near a minimum, not wherever noise left it."""
    if train_cfg.lr_schedule == "anneal":
        return train_cfg.lr / (1.0 + 10.0 * step / max(steps, 1)) ** 0.75
    return train_cfg.lr


def train(net, streams: Streams, *, steps: int, train_cfg, regulariser: str, seed: int,
          device: torch.device, phase: str, ramp_lambda: bool = False,
          progress: bool = True, on_step=None, shard: Shard = Shard()) -> dict:
    """Run ``steps`` updates; batches are drawn with a seeded generator (reproducible).

    ``on_step(step)``, if given, is called after each update (benchmarks time with it).
    ``shard``: in one of several DDP processes, which share of each global batch is this
    process's (the plan is the one-process plan, whatever the number of processes)."""
    distributed = shard.world > 1
    if distributed:
        synchronise_batchnorm(net, device)
    to_device(net, device).train()
    optimizer = make_optimizer(net, train_cfg)
    src, unl = streams.source, streams.unlabelled
    lab = streams.labelled if streams.labelled is not None and len(streams.labelled) else None
    target_share = 0.0 if lab is None else len(lab) / (len(src) + len(lab))  # for Ω_{S∪T}
    plan, seeds = batch_plan(streams, steps=steps, batch_size=train_cfg.batch_size, seed=seed)
    scales = tuple(shard.scale(len(p[0]) if p else 0) for p in
                   (plan["source"], plan["labelled"], plan["unlabelled"]))
    plan = {k: [shard.take(p) for p in v] for k, v in plan.items()}
    seeds = {k: [shard.take(p) for p in v] for k, v in seeds.items()}
    compiled = train_cfg.compile != "none"
    losses = compiled_losses(train_cfg.compile) if compiled else step_losses
    if distributed:
        losses = wrap_for_ddp(net, losses, device, adversarial=train_cfg.adversarial)
    x_src = src.batches(plan["source"], seeds["source"], role="source")
    x_unl = unl.batches(plan["unlabelled"], seeds["unlabelled"], role="unlabelled")
    x_lab = lab.batches(plan["labelled"], seeds["labelled"], role="labelled") if lab else None
    empty = torch.zeros((0,), dtype=torch.long)
    stats: dict = {}
    bar = tqdm(range(steps), desc=phase, disable=not progress or steps == 0, leave=False,
               mininterval=1.0, dynamic_ncols=True)
    for step in bar:
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(train_cfg, step, steps)
        lam, reversal = train_cfg.lambda_adv, 1.0
        if ramp_lambda:  # DANN's schedule 2/(1+exp(-10p)) - 1 on the reversal keeps early
            reversal = 2.0 / (1.0 + math.exp(-10.0 * step / max(steps, 1))) - 1.0  # updates stable
        if compiled:  # a changing Python float would recompile every step
            lam, reversal = torch.tensor(lam, device=device), torch.tensor(reversal, device=device)
        xs, xu = next(x_src), next(x_unl)
        yu = (None if streams.unlabelled_labels is None else
              streams.unlabelled_labels[plan["unlabelled"][step]].to(device, non_blocking=True))
        if lab is not None:
            xl, yl = next(x_lab), lab.labels[plan["labelled"][step]]
        else:
            xl, yl = xs[:0], empty
        stats = update_step(
            net, optimizer, prepare_input(net, xs, device),
            src.labels[plan["source"][step]].to(device, non_blocking=True),
            prepare_input(net, xl, device), yl.to(device, non_blocking=True), prepare_input(net, xu, device),
            adversarial=train_cfg.adversarial, regulariser=regulariser, lambda_adv=lam,
            lambda_entropy=train_cfg.lambda_entropy, target_share=target_share, losses=losses,
            group_scales=scales, reversal=reversal, yu=yu)
        if on_step is not None:
            on_step(step)
        if step % 20 == 0 and progress:
            bar.set_postfix(loss=f"{float(stats['loss']):.3f}", acc=f"{float(stats['src_acc']):.2f}")
    bar.close()
    net.eval()
    return _floats(stats)
