"""The losses of eq. 1-2 and 7-9, the gradient reversal layer, and the trainer."""
from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F

from components.adaptation.losses import (ADVERSARIAL, REGULARISERS, AdversarialLoss, Outputs,
                                          adversarial_loss, entropy,
                                          omega_mme, omega_sum, omega_union)
from components.models.grl import reverse_gradient

DANN, TSF = ADVERSARIAL["dann"], ADVERSARIAL["tsf"]


def test_gradient_reversal_flips_and_scales():
    x = torch.randn(5, requires_grad=True)
    (reverse_gradient(x, 0.3) * torch.arange(5.0)).sum().backward()
    torch.testing.assert_close(x.grad, -0.3 * torch.arange(5.0))
    y = torch.randn(5)
    torch.testing.assert_close(reverse_gradient(y, 2.0), y)


def test_tsf_with_one_class_equals_dann():
    a_s, a_t = torch.randn(8, 1), torch.randn(6, 1)
    w_s, w_t = DANN.weights(torch.zeros(8, dtype=torch.long), torch.randn(6, 3))
    assert torch.equal(w_s, torch.ones(8, 1)) and torch.equal(w_t, torch.ones(6, 1))
    torch.testing.assert_close(TSF.loss(a_s, a_t, w_s, w_t), DANN.loss(a_s, a_t, w_s, w_t))
    y_one_class = torch.zeros(8, dtype=torch.long)
    assert [torch.equal(w, torch.ones_like(w)) for w in TSF.weights(y_one_class, a_t)] == [True] * 2


def test_dann_matches_binary_cross_entropy_definition():
    a_s, a_t = torch.randn(8, 1, dtype=torch.float64), torch.randn(6, 1, dtype=torch.float64)
    d_s, d_t = torch.sigmoid(a_s), torch.sigmoid(a_t)
    expect = -(torch.log(1 - d_s).mean() + torch.log(d_t).mean())
    torch.testing.assert_close(DANN.loss(a_s, a_t, torch.ones(8, 1), torch.ones(6, 1)), expect)


def test_tsf_matches_eq2_and_is_stable_for_large_logits():
    a_s, a_t = torch.randn(4, 3, dtype=torch.float64), torch.randn(5, 3, dtype=torch.float64)
    y = F.one_hot(torch.tensor([0, 2, 1, 2]), 3).double()
    p = torch.softmax(torch.randn(5, 3, dtype=torch.float64), 1)
    expect = -((y * torch.log(1 - torch.sigmoid(a_s))).sum(1).mean()
               + (p * torch.log(torch.sigmoid(a_t))).sum(1).mean())
    torch.testing.assert_close(TSF.loss(a_s, a_t, y, p), expect)
    big = TSF.loss(torch.full((2, 3), 200.0), torch.full((2, 3), -200.0), y[:2], p[:2])
    assert torch.isfinite(big) and big > 100  # log(sigmoid) would give inf here


def test_tsf_weights_are_source_labels_and_detached_target_predictions():
    y = torch.tensor([0, 2, 1, 2])
    logits = torch.randn(5, 3, requires_grad=True)
    w_s, w_t = TSF.weights(y, logits)
    assert torch.equal(w_s, F.one_hot(y, 3).float())
    torch.testing.assert_close(w_t, torch.softmax(logits, 1))
    assert not w_t.requires_grad  # ŷ is a constant: the classifier gets nothing from d
    # a known target label replaces ŷ on its row (train.labelled_in_adversary: label)
    _, w_known = TSF.weights(y, logits, torch.tensor([-1, 1, -1, -1, 0]))
    assert torch.equal(w_known[1], torch.tensor([0.0, 1.0, 0.0]))
    assert torch.equal(w_known[4], torch.tensor([1.0, 0.0, 0.0]))
    torch.testing.assert_close(w_known[[0, 2, 3]], torch.softmax(logits, 1)[[0, 2, 3]])


@pytest.mark.parametrize("name, outputs", [("none", 0), ("dann", 1), ("tsf", 7)])
def test_each_loss_sizes_its_discriminator(name, outputs):
    """``build_network`` sizes ``d`` by the kind the loss declares (none: no ``d``)."""
    from tests.conftest import tiny_network

    if name != "none":
        assert ADVERSARIAL[name].outputs(7) == outputs
    disc = tiny_network(num_classes=7, adversarial=name).discriminator
    assert (disc.outputs if disc is not None else 0) == outputs


@pytest.mark.parametrize("name", ["dann", "tsf"])
def test_a_unit_reverses_the_features_gradient_and_scales_each_domain(name):
    """The unit's discriminator descends its loss, the features ascend it at ``reversal``
    times the rate, and each domain's rows carry their own scale (a process's share)."""
    unit, reversal, (cs, ct) = ADVERSARIAL[name], 0.25, (0.5, 2.0)
    torch.manual_seed(0)
    disc = torch.nn.Linear(4, unit.outputs(3))
    z_s, z_t = torch.randn(6, 4, requires_grad=True), torch.randn(5, 4, requires_grad=True)
    y, logits = torch.randint(3, (6,)), torch.randn(5, 3)
    got = torch.autograd.grad(unit(disc, z_s, z_t, y, logits, reversal=reversal, scales=(cs, ct)),
                              [z_s, z_t, disc.weight])
    # by hand: no reversal layer, each domain's term scaled apart
    w_s, w_t = unit.weights(y, logits)
    a_s, a_t = disc(z_s), disc(z_t)
    source = unit.loss(a_s, a_t.detach(), w_s, w_t)   # the source term's gradient ...
    target = unit.loss(a_s.detach(), a_t, w_s, w_t)   # ... and the target term's
    g_s = torch.autograd.grad(source, [z_s, disc.weight])
    g_t = torch.autograd.grad(target, [z_t, disc.weight])
    torch.testing.assert_close(got[0], -reversal * cs * g_s[0])
    torch.testing.assert_close(got[1], -reversal * ct * g_t[0])
    torch.testing.assert_close(got[2], cs * g_s[1] + ct * g_t[1])


def test_a_new_adversarial_loss_is_one_registered_class(monkeypatch):
    monkeypatch.setattr("components.adaptation.losses.ADVERSARIAL", dict(ADVERSARIAL))
    from components.adaptation import losses

    @adversarial_loss("toy", discriminator="class")
    class Toy(AdversarialLoss):
        def weights(self, y_source, logits_target, y_target=None):
            return torch.ones(len(y_source), 1), torch.ones(len(logits_target), 1)

        def loss(self, a_source, a_target, w_source, w_target):
            return a_target.mean() - a_source.mean()

    toy = losses.ADVERSARIAL["toy"]
    assert isinstance(toy, Toy) and toy.name == "toy" and toy.outputs(5) == 5
    assert "toy" not in ADVERSARIAL
    with pytest.raises(ValueError, match="none means no adversary"):
        adversarial_loss("none", discriminator="domain")


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
    assert {n: (u.name, u.discriminator) for n, u in ADVERSARIAL.items()} == {
        "dann": ("dann", "domain"), "tsf": ("tsf", "class")}
    assert set(REGULARISERS) == {"source", "union", "sum", "mme"}


def test_entropy_is_shannons_in_nats():
    uniform = torch.zeros(3, 5)
    torch.testing.assert_close(entropy(uniform), torch.tensor(math.log(5)))
    certain = torch.tensor([[50.0, 0.0, 0.0]])
    assert float(entropy(certain)) < 1e-6
    logits = torch.randn(4, 6)
    p = torch.softmax(logits, 1)
    torch.testing.assert_close(entropy(logits), -(p * p.log()).sum(1).mean())
