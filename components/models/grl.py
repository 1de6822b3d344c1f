"""Gradient reversal layer: identity forward, ``-coeff * grad`` backward (Ganin & Lempitsky)."""
from __future__ import annotations

import torch


class _ReverseGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, coeff: float) -> torch.Tensor:
        ctx.coeff = coeff
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return -ctx.coeff * grad, None


def reverse_gradient(x: torch.Tensor, coeff: float = 1.0) -> torch.Tensor:
    return _ReverseGrad.apply(x, coeff)
