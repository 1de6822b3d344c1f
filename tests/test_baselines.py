"""The baseline query strategies against their definitions."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from components.query import STRATEGIES, select
from components.query.aada import aada_scores
from components.query.badge import factorised_distance, gradient_factors
from tests.conftest import outputs_of, random_pool, tiny_network


def test_badge_factorised_distances_equal_explicit_embedding_distances():
    g = torch.Generator().manual_seed(0)
    p = torch.softmax(torch.randn(30, 4, generator=g, dtype=torch.float64), 1)
    z = torch.randn(30, 6, generator=g, dtype=torch.float64)
    gf, zf = gradient_factors(p, z)
    explicit = (gf[:, :, None] * zf[:, None, :]).flatten(1)           # the C·m embedding
    distance_to, sq = factorised_distance(gf, zf)
    for j in (0, 7, 29):
        torch.testing.assert_close(distance_to(j), ((explicit - explicit[j]) ** 2).sum(1))
    torch.testing.assert_close(sq, (explicit ** 2).sum(1))
    onehot = F.one_hot(p.argmax(1), 4).double()
    torch.testing.assert_close(gf, p - onehot)


def test_aada_scores_match_their_formula_in_log_space():
    p = torch.softmax(torch.randn(10, 3, dtype=torch.float64), 1)
    a = torch.randn(10, 1, dtype=torch.float64)
    d_source = 1 - torch.sigmoid(a[:, 0])      # our d is 1 on target: the source probability
    entropy = -(p * p.log()).sum(1)
    torch.testing.assert_close(aada_scores(p, a), torch.log(entropy * (1 - d_source) / d_source))


@pytest.mark.parametrize("name", ["entropy", "confidence", "random", "clusters", "clue", "badge",
                                  "las", "eada"])
def test_baselines_pick_distinct_unlabelled_ids_reproducibly(name):
    net = tiny_network(num_classes=4, adversarial="none")
    labelled = {f"t/{i:03d}" for i in range(0, 40, 4)}
    pool = random_pool(40).without(labelled)
    ids, scores = select(name, outputs_of(net, pool), 6, seed=2)
    assert ids == select(name, outputs_of(net, pool), 6, seed=2)[0]
    assert len(set(ids)) == 6 and not set(ids) & labelled and len(scores) == 6


def test_entropy_and_confidence_rank_by_their_scores():
    net = tiny_network(num_classes=4, adversarial="none")
    pool = random_pool(30)
    from components.query.base import entropy_of

    p = outputs_of(net, pool).probabilities
    ids, _ = select("entropy", outputs_of(net, pool), 3, seed=0)
    assert ids == [pool.ids[i] for i in torch.topk(entropy_of(p), 3).indices]
    ids, _ = select("confidence", outputs_of(net, pool), 3, seed=0)
    assert ids == [pool.ids[i] for i in torch.topk(-p.max(1).values, 3).indices]


def test_aada_needs_the_domain_discriminator():
    with pytest.raises(ValueError, match="DANN"):
        select("aada", outputs_of(tiny_network(adversarial="tsf"), random_pool(10)), 2, seed=0)
    ids, _ = select("aada", outputs_of(tiny_network(adversarial="dann"), random_pool(10)), 2, seed=0)
    assert len(ids) == 2


def test_budget_larger_than_pool_is_a_clear_error():
    with pytest.raises(ValueError, match="exceeds"):
        select("random", outputs_of(tiny_network(), random_pool(3)), 5, seed=0)


def test_every_strategy_is_registered():
    assert {"sage", "sage-no-pop", "sage-no-diversity", "sage-kmeans++", "aada", "badge", "entropy",
            "confidence", "random", "clusters", "clue", "las", "eada"} <= set(STRATEGIES)
