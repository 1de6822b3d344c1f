"""The registry and the shared plumbing of every strategy.

A strategy never runs the model: the run predicts over the pool once and hands every strategy
the same :class:`PoolOutputs`, so ``query/`` depends on neither the networks nor the trainer,
and a new strategy is a function of tensors.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class PoolOutputs:
    """What a strategy may read about the unlabelled pool, row by row in ``ids`` order."""

    ids: list[str]
    features: torch.Tensor        # z = phi(x), (N, m), on the device selection runs on
    probabilities: torch.Tensor   # h(x) = softmax of the classifier's logits, (N, C)
    discriminator: Optional[nn.Module] = None  # d, in eval mode on that device: Sage's
    #                                            Jacobian (eq. 3) and AADA's domain logits
    classifier_inputs: Optional[torch.Tensor] = None  # what the classifier's last layer sees,
    #   (N, m): z for the linear classifier, z / ||z|| / T for the cosine one (MME); None: z
    logits: Optional[torch.Tensor] = None  # the classifier's logits (N, C): EADA's energies

    @property
    def last_layer_inputs(self) -> torch.Tensor:
        """The input of the classifier's last (linear) layer, row by row: what a last-layer
        gradient embedding (BADGE's ``(p - onehot(ŷ)) ⊗ ·``) is built on."""
        return self.features if self.classifier_inputs is None else self.classifier_inputs

    @classmethod
    def from_logits(cls, ids: list[str], features: torch.Tensor, logits: torch.Tensor,
                    discriminator: Optional[nn.Module] = None,
                    classifier: Optional[nn.Module] = None) -> "PoolOutputs":
        """``classifier``: the head that gave ``logits``; its ``classifier_input(z)`` (the
        models' heads define it) fills ``classifier_inputs``. Without it, z stands in."""
        if discriminator is not None:
            discriminator = discriminator.to(features.device).eval()
        probabilities = F.softmax(logits, dim=1) if len(logits) else logits.reshape(0, 0)
        inputs = None
        if classifier is not None and len(features):
            with torch.no_grad():
                inputs = classifier.classifier_input(features)
        return cls(list(ids), features, probabilities, discriminator, inputs, logits)

    def __len__(self) -> int:
        return len(self.ids)


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


def select(name: str, pool: PoolOutputs, budget: int, seed: int, *, chunk: int = 4096,
           storage: str = "auto", options: Optional[dict] = None) -> tuple[list[str], list[float]]:
    """Pick ``budget`` samples of ``pool``; return their ids and query scores.

    ``chunk`` bounds the rows handled at once; ``storage`` is the float type of an embedding
    kept whole (Sage's), for strategies that keep one; the others ignore both as they like.
    ``options``: the strategy's own settings (``active.<name>`` in params.yaml), as keywords."""
    if name not in STRATEGIES:
        raise KeyError(f"unknown strategy {name!r}; choose one of {sorted(STRATEGIES)}")
    if budget > len(pool):
        raise ValueError(f"budget {budget} exceeds the {len(pool)} unlabelled samples left")
    positions, scores = STRATEGIES[name].fn(pool, budget, seed, chunk=chunk, storage=storage,
                                            **(options or {}))
    positions = [int(p) for p in positions]
    assert len(set(positions)) == len(positions) == budget, "a strategy returned duplicates"
    return [pool.ids[p] for p in positions], [float(s) for s in scores]


def entropy_of(p: torch.Tensor) -> torch.Tensor:
    return -(p * torch.log(p.clamp_min(1e-12))).sum(1)


def top(scores: torch.Tensor, budget: int) -> tuple[list[int], list[float]]:
    values, index = torch.topk(scores, budget)
    return index.tolist(), values.tolist()
