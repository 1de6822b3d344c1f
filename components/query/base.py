"""The registry and the shared plumbing of every strategy."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import torch
import torch.nn.functional as F

from components.adaptation.trainer import predict
from components.data.tensors import ImageSet


@dataclass(frozen=True)
class Strategy:
    fn: Callable
    requires: Optional[str]  # None, "class" (TSF discriminator) or "domain" (DANN discriminator)


STRATEGIES: dict[str, Strategy] = {}


def register(name: str, *, requires: Optional[str] = None):
    def deco(fn):
        STRATEGIES[name] = Strategy(fn, requires)
        return fn
    return deco


def requirement_of(name: str) -> Optional[str]:
    return STRATEGIES[name].requires


def select(name: str, model, pool: ImageSet, budget: int, seed: int, *,
           device: torch.device | str = "cpu", chunk: int = 4096,
           storage: str = "auto") -> tuple[list[str], list[float]]:
    """Pick ``budget`` samples of ``pool``; return their ids and query scores.

    ``chunk`` bounds the rows handled at once; ``storage`` is the float type of an embedding
    kept whole (Sage's), for strategies that keep one; the others ignore both as they like."""
    if name not in STRATEGIES:
        raise KeyError(f"unknown strategy {name!r}; choose one of {sorted(STRATEGIES)}")
    if budget > len(pool):
        raise ValueError(f"budget {budget} exceeds the {len(pool)} unlabelled samples left")
    device = torch.device(device)
    positions, scores = STRATEGIES[name].fn(model, pool, budget, seed, device=device, chunk=chunk,
                                            storage=storage)
    positions = [int(p) for p in positions]
    assert len(set(positions)) == len(positions) == budget, "a strategy returned duplicates"
    return [pool.ids[p] for p in positions], [float(s) for s in scores]


def pool_outputs(model, pool: ImageSet, device) -> tuple[torch.Tensor, torch.Tensor]:
    """(z, probabilities) over the pool, computed once per query."""
    z, logits = predict(model, pool, device=device)
    return z, F.softmax(logits, dim=1)


def entropy_of(p: torch.Tensor) -> torch.Tensor:
    return -(p * torch.log(p.clamp_min(1e-12))).sum(1)


def top(scores: torch.Tensor, budget: int) -> tuple[list[int], list[float]]:
    values, index = torch.topk(scores, budget)
    return index.tolist(), values.tolist()
