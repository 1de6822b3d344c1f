"""The losses of eq. 1-2 and 7-9, the gradient reversal layer, and the trainer."""
from __future__ import annotations

import math
from dataclasses import replace

import torch
import torch.nn.functional as F

from components.adaptation.losses import (ADVERSARIAL, REGULARISERS, Outputs, dann_loss, entropy,
                                          omega_mme, omega_sum, omega_union, tsf_loss)
from components.models.grl import reverse_gradient


def test_gradient_reversal_flips_and_scales():
    x = torch.randn(5, requires_grad=True)
    (reverse_gradient(x, 0.3) * torch.arange(5.0)).sum().backward()
    torch.testing.assert_close(x.grad, -0.3 * torch.arange(5.0))
    y = torch.randn(5)
    torch.testing.assert_close(reverse_gradient(y, 2.0), y)


def test_tsf_with_one_class_equals_dann():
    a_s, a_t = torch.randn(8, 1), torch.randn(6, 1)
    tsf = tsf_loss(a_s, a_t, torch.ones(8, 1), torch.ones(6, 1))
    torch.testing.assert_close(tsf, dann_loss(a_s, a_t, None, None))


def test_dann_matches_binary_cross_entropy_definition():
    a_s, a_t = torch.randn(8, 1, dtype=torch.float64), torch.randn(6, 1, dtype=torch.float64)
    d_s, d_t = torch.sigmoid(a_s), torch.sigmoid(a_t)
    expect = -(torch.log(1 - d_s).mean() + torch.log(d_t).mean())
    torch.testing.assert_close(dann_loss(a_s, a_t, None, None), expect)


def test_tsf_matches_eq2_and_is_stable_for_large_logits():
    a_s, a_t = torch.randn(4, 3, dtype=torch.float64), torch.randn(5, 3, dtype=torch.float64)
    y = F.one_hot(torch.tensor([0, 2, 1, 2]), 3).double()
    p = torch.softmax(torch.randn(5, 3, dtype=torch.float64), 1)
    expect = -((y * torch.log(1 - torch.sigmoid(a_s))).sum(1).mean()
               + (p * torch.log(torch.sigmoid(a_t))).sum(1).mean())
    torch.testing.assert_close(tsf_loss(a_s, a_t, y, p), expect)
    big = tsf_loss(torch.full((2, 3), 200.0), torch.full((2, 3), -200.0), y[:2], p[:2])
    assert torch.isfinite(big) and big > 100  # log(sigmoid) would give inf here


def _outputs(n_s=6, n_l=2, c=3, m=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    return Outputs(torch.randn(n_s, c, generator=g), torch.randint(0, c, (n_s,), generator=g),
                   torch.randn(n_l, c, generator=g), torch.randint(0, c, (n_l,), generator=g),
                   torch.randn(5, m, generator=g))


def test_omega_sum_weighs_target_labels_as_a_separate_mean():
    out = _outputs()
    ce_s = F.cross_entropy(out.logits_source, out.y_source)
    ce_t = F.cross_entropy(out.logits_labelled, out.y_labelled)
    torch.testing.assert_close(omega_sum(out, None, 0.1), ce_s + ce_t)
    pooled = F.cross_entropy(torch.cat([out.logits_source, out.logits_labelled]),
                             torch.cat([out.y_source, out.y_labelled]))
    torch.testing.assert_close(omega_union(out, None, 0.1), pooled)
    # with 2 target vs 6 source labels, a target sample weighs 1/2 in Ω_S+T but 1/8 in Ω_S∪T
    logits = out.logits_labelled.clone().requires_grad_(True)
    omega_sum(Outputs(out.logits_source, out.y_source, logits, out.y_labelled, out.z_unlabelled),
              None, 0.1).backward()
    g_sum = logits.grad.clone()
    logits.grad = None
    omega_union(Outputs(out.logits_source, out.y_source, logits, out.y_labelled, out.z_unlabelled),
                None, 0.1).backward()
    torch.testing.assert_close(g_sum, logits.grad * 8 / 2)


def test_omega_union_estimates_the_pooled_mean_from_separately_drawn_batches():
    out = _outputs(n_s=6, n_l=2)
    ce_s = F.cross_entropy(out.logits_source, out.y_source)
    ce_t = F.cross_entropy(out.logits_labelled, out.y_labelled)
    # batches in the sets' proportion: the share-weighted estimate is the pooled batch mean
    as_pool = replace(out, target_share=2 / 8)
    torch.testing.assert_close(omega_union(as_pool, None, 0.1), omega_union(out, None, 0.1))
    # 10 target labels next to 3,490 source ones weigh 1/350 of the pool, whatever the batch
    few = replace(out, target_share=10 / 3500)
    torch.testing.assert_close(omega_union(few, None, 0.1), (3490 * ce_s + 10 * ce_t) / 3500)
    no_labels = replace(_outputs(n_l=0), target_share=0.0)
    torch.testing.assert_close(omega_union(no_labels, None, 0.1),
                               F.cross_entropy(no_labels.logits_source, no_labels.y_source))


def test_without_target_labels_sum_is_source_ce():
    out = _outputs(n_l=0)
    torch.testing.assert_close(omega_sum(out, None, 0.1),
                               F.cross_entropy(out.logits_source, out.y_source))


def test_mme_classifier_and_features_get_opposite_entropy_gradients():
    from components.models.heads import CosineClassifier

    torch.manual_seed(0)
    clf = CosineClassifier(4, 3, 0.05)
    z_u = torch.randn(5, 4, requires_grad=True)
    empty = Outputs(torch.zeros(0, 3), torch.zeros(0, dtype=torch.long), torch.zeros(0, 3),
                    torch.zeros(0, dtype=torch.long), z_u)
    omega_mme(empty, clf, 0.1).backward()
    g_clf_mme, g_z_mme = clf.weight.grad.clone(), z_u.grad.clone()
    # reference: the plain gradients of -λ_H H (what f minimises)
    clf.weight.grad, z_u.grad = None, None
    (-0.1 * entropy(clf(z_u))).backward()
    torch.testing.assert_close(g_clf_mme, clf.weight.grad)       # f minimises Ω - λ_H H
    torch.testing.assert_close(g_z_mme, -z_u.grad)                # phi minimises Ω + λ_H H
    assert (g_clf_mme * g_z_mme.sum() != 0).any()


def test_registries_name_every_loss():
    assert set(ADVERSARIAL) == {"dann", "tsf"}
    assert set(REGULARISERS) == {"source", "union", "sum", "mme"}


def test_entropy_is_shannons_in_nats():
    uniform = torch.zeros(3, 5)
    torch.testing.assert_close(entropy(uniform), torch.tensor(math.log(5)))
    certain = torch.tensor([[50.0, 0.0, 0.0]])
    assert float(entropy(certain)) < 1e-6
    logits = torch.randn(4, 6)
    p = torch.softmax(logits, 1)
    torch.testing.assert_close(entropy(logits), -(p * p.log()).sum(1).mean())
