"""One update of eq. 10, UDA pretraining and SSDA rounds, evaluation and checkpoints.

Batches follow Algorithm 2: ``B_S`` from the labelled source, ``B_T^l`` from the target labels
so far, ``B_T^u`` from the **whole** target-train pool (never the shrinking one).
"""
from __future__ import annotations

import contextlib
import math
import os
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from components.adaptation.losses import ADVERSARIAL, REGULARISERS, Outputs
from components.data.tensors import ImageSet, to_float
from components.models.grl import reverse_gradient


def resolve_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("train.device is cuda but no GPU is visible; set train.device: auto")
    return torch.device(name)


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


def _prepare(images: torch.Tensor, device: torch.device) -> torch.Tensor:
    x = to_float(images.to(device, non_blocking=True))
    return x.contiguous(memory_format=torch.channels_last) if device.type == "cuda" else x


def _autocast(device: torch.device):
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def update_step(net, optimizer, xs, ys, xl, yl, xu, *, adversarial: str, regulariser: str,
                lambda_adv: float, lambda_entropy: float, device: torch.device,
                target_share: float | None = None) -> dict:
    """``(f, phi, d) -= α ∇(Ω + λ L_adv)`` on one batch; returns the loss parts.

    ``target_share`` is ``|L_T| / (|L_S| + |L_T|)``, which Ω_{S∪T} needs (see ``omega_union``)."""
    ns, nl = len(ys), len(yl)
    with _autocast(device):
        z = net.features(torch.cat([xs, xl, xu]))
        logits = net.classifier(z)
        out = Outputs(logits[:ns], ys, logits[ns:ns + nl], yl, z[ns + nl:], target_share)
        omega = REGULARISERS[regulariser](out, net.classifier, lambda_entropy)
        loss, adv = omega, torch.zeros(())
        if adversarial != "none":
            d_in = reverse_gradient(torch.cat([z[:ns], z[ns + nl:]]))
            a = net.discriminator(d_in).float()
            num_outputs = a.shape[1]
            y_onehot = F.one_hot(ys, num_outputs).float() if num_outputs > 1 else torch.ones(ns, 1, device=device)
            p_t = (F.softmax(logits[ns + nl:].float(), 1) if num_outputs > 1
                   else torch.ones(len(xu), 1, device=device))
            adv = ADVERSARIAL[adversarial](a[:ns], a[ns:], y_onehot, p_t)
            loss = omega + lambda_adv * adv
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    acc = (logits[:ns].argmax(1) == ys).float().mean()
    return {"loss": loss.item(), "omega": omega.item(), "adv": float(adv.detach()), "src_acc": acc.item()}


def make_optimizer(net, train_cfg) -> torch.optim.Optimizer:
    return torch.optim.SGD(net.parameters(), lr=train_cfg.lr, momentum=train_cfg.momentum,
                           weight_decay=train_cfg.weight_decay, nesterov=True)


def learning_rate(train_cfg, step: int, steps: int) -> float:
    """``constant``, or ``anneal``: DANN's ``lr / (1 + 10 p)^0.75`` over the phase's progress ``p``,
    which quiets the last updates so the phase ends near a minimum, not wherever noise left it."""
    if train_cfg.lr_schedule == "anneal":
        return train_cfg.lr / (1.0 + 10.0 * step / max(steps, 1)) ** 0.75
    return train_cfg.lr


def train(net, streams: Streams, *, steps: int, train_cfg, regulariser: str, seed: int,
          device: torch.device, phase: str, ramp_lambda: bool = False,
          progress: bool = True) -> dict:
    """Run ``steps`` updates; batches are drawn with a seeded generator (reproducible)."""
    net.to(device).train()
    optimizer = make_optimizer(net, train_cfg)
    gen = torch.Generator().manual_seed(seed)
    bs = train_cfg.batch_size
    src, unl = streams.source, streams.unlabelled
    lab = streams.labelled if streams.labelled is not None and len(streams.labelled) else None
    empty_x = src.images[:0]
    target_share = 0.0 if lab is None else len(lab) / (len(src) + len(lab))  # for Ω_{S∪T}
    stats: dict = {}
    bar = tqdm(range(steps), desc=phase, disable=not progress or steps == 0, leave=False,
               mininterval=1.0, dynamic_ncols=True)
    for step in bar:
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(train_cfg, step, steps)
        lam = train_cfg.lambda_adv
        if ramp_lambda:  # DANN's schedule 2/(1+exp(-10p)) - 1 keeps early updates stable
            lam *= 2.0 / (1.0 + math.exp(-10.0 * step / max(steps, 1))) - 1.0
        i_s = torch.randint(len(src), (bs,), generator=gen)
        i_u = torch.randint(len(unl), (bs,), generator=gen)
        if lab is not None:
            i_l = torch.randint(len(lab), (min(bs, max(len(lab), 1)),), generator=gen)
            xl, yl = lab.images[i_l], lab.labels[i_l]
        else:
            xl, yl = empty_x, src.labels[:0]
        stats = update_step(
            net, optimizer, _prepare(src.images[i_s], device), src.labels[i_s].to(device),
            _prepare(xl, device), yl.to(device), _prepare(unl.images[i_u], device),
            adversarial=train_cfg.adversarial, regulariser=regulariser, lambda_adv=lam,
            lambda_entropy=train_cfg.lambda_entropy, device=device,
            target_share=target_share)
        if step % 20 == 0:
            bar.set_postfix(loss=f"{stats['loss']:.3f}", acc=f"{stats['src_acc']:.2f}")
    bar.close()
    net.eval()
    return stats


@torch.no_grad()
def predict(net, images: torch.Tensor, *, device: torch.device, batch_size: int = 512):
    """Return (z, logits) for uint8 images, in eval mode, batched."""
    net.to(device).eval()
    zs, logits = [], []
    for start in range(0, len(images), batch_size):
        with _autocast(device):
            z = net.features(_prepare(images[start:start + batch_size], device))
            zs.append(z.float())
            logits.append(net.classifier(z).float())
    if not zs:
        return torch.zeros(0), torch.zeros(0)
    return torch.cat(zs), torch.cat(logits)


def evaluate(net, data: ImageSet, classes: list[str], *, device: torch.device) -> dict:
    """Accuracy overall and per class (target-test: never used for training)."""
    _, logits = predict(net, data.images, device=device)
    pred = logits.argmax(1).cpu()
    correct = pred == data.labels
    per_class = {}
    for index, name in enumerate(classes):
        mask = data.labels == index
        per_class[name] = float(correct[mask].float().mean()) if mask.any() else float("nan")
    return {"accuracy": float(correct.float().mean()), "per_class": per_class}


def save_checkpoint(net, path: str | Path) -> None:
    """A plain state dict, written atomically (a temporary file per process, so two runs
    filling the same cache entry at once cannot tear each other's file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    torch.save({k: v.detach().cpu() for k, v in net.state_dict().items()}, tmp)
    os.replace(tmp, path)


def load_checkpoint(net, path: str | Path) -> None:
    net.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
