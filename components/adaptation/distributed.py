"""Pretraining and adaptation on several GPUs: DistributedDataParallel under ``torchrun``.

``train.gpus > 1``: the run writes the job (settings, labels so far, starting weights) to a
folder, ``torchrun`` starts one process per GPU (``gloo`` processes on a CPU) on the run's
worker module (``components.run.training_job``), and each process
trains on its share of every step's **global** batch (the batch one process would draw: the
same seeded plan, positions ``rank::world``). Rank 0 writes the weights back.

What makes W processes compute the one-process update (``tests/test_distributed.py``):

* BatchNorm statistics over the global batch: ``SyncBatchNorm`` on GPUs, and on CPUs (where
  torch's is not available) ``CrossProcessBatchNorm``, the same sums through an all-reduce
  that autograd differentiates;
* losses that are means over a group (source, labelled, unlabelled) weigh each process's
  share by its size: a labelled batch of 5 splits 3 + 2, and DDP's gradient average would
  otherwise give the 2 the weight of the 3 (``group_scales``).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn


@dataclass(frozen=True)
class Shard:
    """This process's share of each step's global batch: positions ``rank::world``."""

    rank: int = 0
    world: int = 1

    def take(self, values: torch.Tensor) -> torch.Tensor:
        return values[self.rank::self.world]

    def scale(self, global_count: int) -> float:
        """``W · n_local / n_global``: with DDP's average over W processes, the gradient of a
        local mean times this is the gradient of the global mean."""
        if not global_count:
            return 1.0
        return self.world * len(range(self.rank, global_count, self.world)) / global_count


class _ScaleGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, factor: float):
        ctx.factor = factor
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        return grad * ctx.factor, None


def scale_grad(x: torch.Tensor, factor: float) -> torch.Tensor:
    """Identity forward; the gradient times ``factor`` (1: untouched, not even recorded)."""
    return x if factor == 1.0 else _ScaleGrad.apply(x, factor)


class CrossProcessBatchNorm(nn.modules.batchnorm._BatchNorm):
    """BatchNorm whose training statistics cover every process's batch (CPU, ``gloo``).

    Mean first, then the variance around it (two all-reduces: no ``E[x²] - E[x]²``
    cancellation), through ``torch.distributed.nn.all_reduce`` so the backward pass sums the
    statistics' gradients across processes as the one-process BatchNorm's backward would."""

    def _check_input_dim(self, x: torch.Tensor) -> None:
        if x.dim() < 2:
            raise ValueError(f"expected a batch of at least 2 dimensions, got {x.dim()}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or not dist.is_initialized() or dist.get_world_size() == 1:
            return super().forward(x)
        from torch.distributed.nn import all_reduce

        dims = [0] + list(range(2, x.dim()))
        shape = [1, -1] + [1] * (x.dim() - 2)
        count = all_reduce(torch.tensor([x.numel() / x.shape[1]], dtype=x.dtype))
        mean = all_reduce(x.sum(dims)) / count
        centred = x - mean.view(shape)
        var = all_reduce((centred * centred).sum(dims)) / count
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                m = self.momentum
                self.running_mean.mul_(1 - m).add_(m * mean)
                self.running_var.mul_(1 - m).add_(m * var * count / (count - 1).clamp(min=1))
        y = centred / torch.sqrt(var + self.eps).view(shape)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        return y


def synchronise_batchnorm(net: nn.Module, device: torch.device) -> nn.Module:
    """Every BatchNorm computes its statistics over all processes' batches."""
    if device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(net)
    for name, child in net.named_children():
        if isinstance(child, nn.modules.batchnorm._BatchNorm) and child.momentum is not None:
            synced = CrossProcessBatchNorm(child.num_features, child.eps, child.momentum,
                                           child.affine, child.track_running_stats)
            synced.load_state_dict(child.state_dict())
            synced.train(child.training)
            if child.affine:
                synced.weight.requires_grad_(child.weight.requires_grad)
                synced.bias.requires_grad_(child.bias.requires_grad)
            setattr(net, name, synced)
        else:
            synchronise_batchnorm(child, device)
    return net


class UpdateModule(nn.Module):
    """The forward half of an update as one module, so DDP sees the forward it synchronises
    (calling ``net.features`` and the heads directly would bypass its hooks)."""

    def __init__(self, net: nn.Module, losses):
        super().__init__()
        self.net, self.losses = net, losses

    def forward(self, *args, **kwargs):
        return self.losses(self.net, *args, **kwargs)


def wrap_for_ddp(net: nn.Module, losses, device: torch.device, *, adversarial: str):
    """``losses``-compatible callable whose gradients DDP averages across processes."""
    from torch.nn.parallel import DistributedDataParallel as DDP

    ids = [device.index] if device.type == "cuda" else None
    ddp = DDP(UpdateModule(net, losses), device_ids=ids,
              find_unused_parameters=adversarial == "none" and net.discriminator is not None)
    return lambda _net, *args, **kwargs: ddp(*args, **kwargs)
