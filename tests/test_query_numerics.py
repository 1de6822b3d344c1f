"""Query numerics (issue 34, fix 8): AADA scored in log space, BADGE on what the last layer sees."""
from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from components.query import PoolOutputs, select
from components.query.aada import aada_scores
from components.query.base import entropy_of
from components.query.diversity import kmeanspp
from tests.conftest import outputs_of, random_pool, tiny_network


# --------------------------------------------------------------------------------- AADA
class FixedLogits(nn.Module):
    """A stand-in DANN discriminator: the domain logit of a row is its first feature."""

    outputs = 1

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return z[:, :1]


def probabilities_with_entropies(n: int, classes: int = 3) -> torch.Tensor:
    """``n`` rows of distinct, decreasing entropies (float32, as the run hands them)."""
    sharpness = torch.linspace(0.2, 6.0, n)[:, None]
    return torch.softmax(sharpness * torch.arange(classes, dtype=torch.float32), 1)


def aada_pool(logits: list[float], p: torch.Tensor) -> PoolOutputs:
    z = torch.tensor(logits, dtype=torch.float32)[:, None]
    return PoolOutputs([f"t/{i}" for i in range(len(logits))], z, p, FixedLogits())


def test_aada_large_domain_logits_give_finite_distinct_log_scores():
    a = [100.0, 200.0, 300.0, 1000.0]
    p = probabilities_with_entropies(4)
    scores = aada_scores(p, torch.tensor(a)[:, None])
    expected = torch.log(entropy_of(p).double()) + torch.tensor(a, dtype=torch.float64)
    assert torch.isfinite(scores).all() and len(set(scores.tolist())) == 4, scores
    torch.testing.assert_close(scores.double(), expected)
    ids, picked = select("aada", aada_pool(a, p), 4, seed=0)
    assert ids == ["t/3", "t/2", "t/1", "t/0"]
    assert all(math.isfinite(s) for s in picked)
    torch.testing.assert_close(torch.tensor(picked, dtype=torch.float64), expected[[3, 2, 1, 0]])


def test_aada_ranks_by_log_entropy_plus_logit_where_the_product_overflows():
    """exp(1000) is inf even in float64: the entropy must still decide between equal logits."""
    a = [1000.0, 1000.0, 1000.5, 999.0, 1000.0]
    p = probabilities_with_entropies(5)          # H decreasing along the rows
    h = entropy_of(p).double()
    key = torch.log(h) + torch.tensor(a, dtype=torch.float64)
    expected = [f"t/{i}" for i in torch.argsort(key, descending=True).tolist()]
    ids, picked = select("aada", aada_pool(a, p), 5, seed=0)
    assert ids == expected
    assert picked == sorted(picked, reverse=True) and all(math.isfinite(s) for s in picked)


def test_aada_log_score_orders_as_the_product_where_it_is_finite():
    g = torch.Generator().manual_seed(0)
    p = torch.softmax(torch.randn(50, 4, generator=g, dtype=torch.float64) * 2, 1)
    a = torch.randn(50, 1, generator=g, dtype=torch.float64) * 5
    product = entropy_of(p) * torch.exp(a[:, 0])
    scores = aada_scores(p, a)
    torch.testing.assert_close(scores, torch.log(product))           # the logged score: log s(x)
    assert torch.equal(torch.argsort(scores, descending=True),
                       torch.argsort(product, descending=True))


def test_aada_zero_entropy_ranks_last_without_nan_whatever_the_logit():
    inf = float("inf")
    p = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0],
                      [0.5, 0.3, 0.2], [0.9, 0.05, 0.05]], dtype=torch.float32)
    a = [inf, -inf, 1e4, -50.0, 0.0]              # one-hot rows: H = 0
    scores = aada_scores(p, torch.tensor(a)[:, None])
    assert not torch.isnan(scores).any(), scores
    assert (scores[:3] == -inf).all() and torch.isfinite(scores[3:]).all()
    ids, picked = select("aada", aada_pool(a, p), 5, seed=0)
    assert not any(math.isnan(s) for s in picked)
    # positive entropy first (by log H + a), then H = 0, the more target-like logit first
    assert ids == ["t/4", "t/3", "t/0", "t/2", "t/1"], ids


# --------------------------------------------------------------------------------- BADGE
def mme_network(dim: int = 6, classes: int = 4, seed: int = 0):
    """A network as ``train.regulariser: mme`` builds it: the cosine classifier, temperature T."""
    from components.config import Config
    from components.models import build_network

    cfg = Config().with_overrides({"model.bottleneck_dim": dim, "model.discriminator_hidden": 5,
                                   "train.adversarial": "none", "train.regulariser": "mme",
                                   "active.strategy": "badge"})
    assert cfg.classifier_kind == "cosine"
    torch.manual_seed(seed)
    return build_network(cfg, classes).eval()


def explicit_badge(z_seen: torch.Tensor, p: torch.Tensor, budget: int, seed: int):
    """BADGE from its definition, the C·m embedding built: ``(p - onehot(ŷ)) ⊗ z_seen``."""
    p, z_seen = p.double(), z_seen.double()
    g = p - F.one_hot(p.argmax(1), p.shape[1]).double()
    e = (g[:, :, None] * z_seen[:, None, :]).flatten(1)
    sq = (e * e).sum(1)

    def distance_to(j: int) -> torch.Tensor:
        return ((e - e[j]) ** 2).sum(1)

    first = int(torch.argmax(sq))
    picks = kmeanspp(distance_to, len(e), budget, first=first, seed=seed)
    return picks, sq[picks].sqrt()


def seen_by_cosine_head(net, pool):
    """The input of the cosine head's last layer, independently: z / ||z|| / T; checked to give
    the network's logits against the unit-norm class prototypes."""
    from components.models.inference import predict

    z, logits = predict(net, pool, device=torch.device("cpu"))
    head = net.classifier
    u = z / z.norm(dim=1, keepdim=True) / head.temperature
    prototypes = head.weight / head.weight.norm(dim=1, keepdim=True)
    torch.testing.assert_close(u @ prototypes.T, logits, rtol=1e-4, atol=1e-4)
    return z, u, torch.softmax(logits, 1)


@pytest.mark.parametrize("seed", [0, 3])
def test_badge_with_the_cosine_head_embeds_the_normalised_tempered_features(seed):
    net, pool = mme_network(), random_pool(40)
    z, u, p = seen_by_cosine_head(net, pool)
    ids, scores = select("badge", outputs_of(net, pool), 8, seed=seed)
    picks, norms = explicit_badge(u, p, 8, seed)
    assert ids == [pool.ids[i] for i in picks]
    torch.testing.assert_close(torch.tensor(scores, dtype=torch.float64), norms,
                               rtol=1e-4, atol=1e-6)
    # a case where it matters: the raw features would seed elsewhere and pick other samples
    raw_picks, _ = explicit_badge(z, p, 8, seed)
    assert raw_picks[0] != picks[0] and set(raw_picks) != set(picks)


def test_badge_with_the_linear_head_still_embeds_the_raw_features():
    net, pool = tiny_network(num_classes=4, adversarial="none"), random_pool(40)
    from components.models.inference import predict

    z, logits = predict(net, pool, device=torch.device("cpu"))
    ids, _ = select("badge", outputs_of(net, pool), 8, seed=1)
    picks, _ = explicit_badge(z, torch.softmax(logits, 1), 8, 1)
    assert ids == [pool.ids[i] for i in picks]


def test_the_run_hands_strategies_what_the_last_layer_sees():
    """``RunSteps.pool_outputs`` (what the run builds) carries the classifier's input."""
    from components.run.steps import RunSteps

    pool = random_pool(12)
    steps = SimpleNamespace(device=torch.device("cpu"))
    cosine = mme_network()
    z, u, _ = seen_by_cosine_head(cosine, pool)
    out = RunSteps.pool_outputs(steps, cosine, pool)
    torch.testing.assert_close(out.features, z)
    torch.testing.assert_close(out.last_layer_inputs, u, rtol=1e-5, atol=1e-5)
    linear = tiny_network(num_classes=4, adversarial="none")
    out = RunSteps.pool_outputs(steps, linear, pool)
    assert torch.equal(out.last_layer_inputs, out.features)
    # built without a classifier (the strategies' own tests), the features stand in
    bare = PoolOutputs(out.ids, out.features, out.probabilities)
    assert bare.last_layer_inputs is bare.features
