"""SAGE's maths against independent computations and the paper's properties."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from components.models.heads import MLPDiscriminator
from components.query import select
from components.query.diversity import embedding_distance, farthest_first
from components.query.sage import (adversarial_jacobian, adversarial_jacobian_autograd,
                                   embed_pool, expected_gradient, positive_orthogonal_projection,
                                   sage_embedding, select_from_embedding)
from tests.conftest import outputs_of, random_pool, tiny_network

torch.set_default_dtype(torch.float32)


def _disc(c=5, m=7, hidden=6, seed=0):
    torch.manual_seed(seed)
    return MLPDiscriminator(m, hidden, c).double()


def _per_sample_autograd(disc, z):
    """The plainest reference: loop over samples and classes, torch.autograd.grad each."""
    rows = []
    for zi in z:
        per_class = []
        for c in range(disc.outputs):
            x = zi.clone().requires_grad_(True)
            (g,) = torch.autograd.grad(-F.logsigmoid(disc(x[None])[0, c]), x)
            per_class.append(g)
        rows.append(torch.stack(per_class))
    return torch.stack(rows)


def test_closed_form_jacobian_matches_torch_func_and_autograd():
    disc = _disc()
    z = torch.randn(11, 7, dtype=torch.float64) * 3
    closed = adversarial_jacobian(disc, z)
    func = adversarial_jacobian_autograd(disc, z)
    plain = _per_sample_autograd(disc, z)
    assert closed.shape == (11, 5, 7)
    torch.testing.assert_close(closed, plain, atol=1e-8, rtol=0)
    torch.testing.assert_close(func, plain, atol=1e-8, rtol=0)


def test_non_mlp_discriminator_uses_the_autograd_path():
    torch.manual_seed(0)
    disc = torch.nn.Sequential(torch.nn.Linear(4, 5), torch.nn.Tanh(), torch.nn.Linear(5, 3)).double()
    disc.outputs = 3
    z = torch.randn(6, 4, dtype=torch.float64)
    torch.testing.assert_close(adversarial_jacobian(disc, z), _per_sample_autograd(disc, z),
                               atol=1e-8, rtol=0)


def test_pop_one_hot_prediction_gives_zero_embedding():
    g = torch.randn(3, 4, 6, dtype=torch.float64)
    p = F.one_hot(torch.tensor([0, 2, 3]), 4).double()
    s = sage_embedding(positive_orthogonal_projection(g, expected_gradient(g, p)), p)
    torch.testing.assert_close(s, torch.zeros_like(s), atol=1e-12, rtol=0)


def test_pop_removes_parallel_and_grows_opposite_components():
    e_dir = torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64)
    g = torch.stack([2 * e_dir, -1 * e_dir, torch.tensor([0.0, 1.0, 0.0], dtype=torch.float64)])[None]
    p = torch.tensor([[0.5, 0.5, 0.0]], dtype=torch.float64)
    E = expected_gradient(g, p)
    torch.testing.assert_close(E[0], 0.5 * e_dir)
    gt = positive_orthogonal_projection(g, E)[0]
    torch.testing.assert_close(gt[0], torch.zeros(3, dtype=torch.float64))     # parallel: removed
    torch.testing.assert_close(gt[1], -2 * e_dir)                              # opposite: grows
    assert gt[1].norm() > g[0, 1].norm()
    torch.testing.assert_close(gt[2], g[0, 2])                                 # orthogonal: kept


def test_pop_guard_when_expected_gradient_vanishes():
    g = torch.tensor([[[1.0, 0.0], [-1.0, 0.0]]], dtype=torch.float64)
    p = torch.tensor([[0.5, 0.5]], dtype=torch.float64)
    torch.testing.assert_close(positive_orthogonal_projection(g, expected_gradient(g, p)), g)


def test_embedding_norm_is_expected_projected_gradient_norm():
    g = torch.randn(9, 5, 4, dtype=torch.float64)
    p = torch.softmax(torch.randn(9, 5, dtype=torch.float64), 1)
    gt = positive_orthogonal_projection(g, expected_gradient(g, p))
    s = sage_embedding(gt, p)
    torch.testing.assert_close((s * s).sum(1), (p * (gt * gt).sum(2)).sum(1))


def _brute_force_algorithm1(emb, budget):
    dist = torch.cdist(emb, emb)
    chosen = [int(torch.argmax(emb.norm(dim=1)))]
    while len(chosen) < budget:
        d = dist[:, chosen].min(1).values
        d[chosen] = -1
        chosen.append(int(torch.argmax(d)))
    return chosen


@pytest.mark.parametrize("chunk", [1, 7, 4096])
def test_chunked_selection_equals_brute_force(chunk):
    emb = torch.randn(200, 12, dtype=torch.float64)
    picks, scores = select_from_embedding(emb, 15, diversity="greedy", seed=0, chunk=chunk)
    assert picks == _brute_force_algorithm1(emb, 15)
    assert picks[0] == int(torch.argmax(emb.norm(dim=1)))
    assert len(set(picks)) == 15
    torch.testing.assert_close(torch.tensor(scores, dtype=torch.float64), emb[picks].norm(dim=1))


def test_picks_cover_well_separated_clusters():
    g = torch.Generator().manual_seed(0)
    centres = torch.eye(6, dtype=torch.float64) * 50
    emb = torch.cat([c + torch.randn(30, 6, generator=g, dtype=torch.float64) for c in centres])
    picks = farthest_first(embedding_distance(emb), len(emb), 6, first=0)
    assert sorted(p // 30 for p in picks) == list(range(6))


def test_kmeanspp_is_seeded_and_distinct():
    emb = torch.randn(100, 5, dtype=torch.float64)
    a, _ = select_from_embedding(emb, 10, diversity="kmeans++", seed=3, chunk=16)
    b, _ = select_from_embedding(emb, 10, diversity="kmeans++", seed=3, chunk=16)
    c, _ = select_from_embedding(emb, 10, diversity="kmeans++", seed=4, chunk=16)
    assert a == b and len(set(a)) == 10 and a != c


def test_no_diversity_is_top_norm():
    emb = torch.randn(50, 3, dtype=torch.float64)
    picks, _ = select_from_embedding(emb, 5, diversity="none", seed=0, chunk=8)
    assert picks == torch.topk(emb.norm(dim=1), 5).indices.tolist()


@pytest.mark.parametrize("strategy", ["sage", "sage-no-pop", "sage-no-diversity", "sage-kmeans++"])
def test_sage_on_a_network_picks_distinct_unlabelled_ids_reproducibly(strategy):
    net = tiny_network(num_classes=4, adversarial="tsf")
    pool = random_pool(40).without([f"t/{i:03d}" for i in range(5)])  # 5 already labelled
    ids, scores = select(strategy, outputs_of(net, pool), 8, seed=1)
    again, _ = select(strategy, outputs_of(net, pool), 8, seed=1)
    assert ids == again and len(set(ids)) == 8
    assert not set(ids) & {f"t/{i:03d}" for i in range(5)}
    assert all(s >= 0 for s in scores)


def test_pool_embedding_matches_manual_composition():
    net = tiny_network(num_classes=3, adversarial="tsf").double()
    pool = random_pool(9)
    from components.data.tensors import to_float

    with torch.no_grad():
        z = net.features(to_float(pool.images).double())
        p = torch.softmax(net.classifier(z), 1)
    g = _per_sample_autograd(net.discriminator, z)
    E = (p[:, :, None] * g).sum(1)
    expect = []
    for n in range(len(z)):
        rows = []
        for c in range(3):
            lam = (g[n, c] @ E[n]).abs() / (E[n] @ E[n])
            rows.append(p[n, c].sqrt() * (g[n, c] - lam * E[n]))
        expect.append(torch.cat(rows))
    net = net.float()
    emb, norms = embed_pool(outputs_of(net, pool), chunk=4)
    torch.testing.assert_close(emb.double(), torch.stack(expect), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("strategy, pop", [("sage", True), ("sage-kmeans++", True),
                                           ("sage-no-diversity", True), ("sage-no-pop", False)])
def test_each_sage_variant_scores_with_the_embedding_its_name_says(strategy, pop):
    """Sage is POP'd (eq. 5) in every variant but the one named without it: the scores of the
    picks are the norms of that embedding, not of the other."""
    net = tiny_network(num_classes=4, adversarial="tsf")
    pool = random_pool(40)
    ids, scores = select(strategy, outputs_of(net, pool), 6, seed=1)
    norms = {flag: embed_pool(outputs_of(net, pool), chunk=4096, pop=flag)[1]
             for flag in (True, False)}
    at = [list(pool.ids).index(i) for i in ids]
    assert scores == pytest.approx(norms[pop][at].tolist(), rel=1e-5)
    assert scores != pytest.approx(norms[not pop][at].tolist(), rel=1e-3)
