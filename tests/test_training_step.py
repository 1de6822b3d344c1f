"""The adversarial game of eq. 10, pinned against a hand computation: what the discriminator, the
features and the classifier each receive from one training step, and DANN's schedule."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from components.adaptation import trainer
from components.adaptation.distributed import scale_grad
from components.adaptation.losses import REGULARISERS, Outputs
from components.config import Config
from components.models.device import autocast
from components.models.grl import reverse_gradient
from tests.conftest import tiny_network

NS, NL, NU, LAMBDA = 6, 2, 5, 0.7


def _batch(classes: int, seed: int = 0):
    cfg = Config()
    gen = torch.Generator().manual_seed(seed)
    shape = (cfg.data.channels, cfg.data.image_size, cfg.data.image_size)
    x = lambda n: torch.randn(n, *shape, generator=gen)  # noqa: E731
    y = lambda n: torch.randint(classes, (n,), generator=gen)  # noqa: E731
    return x(NS), y(NS), x(NL), y(NL), x(NU)


def _grads(net, loss, retain: bool = False) -> dict[str, torch.Tensor]:
    params = dict(net.named_parameters())
    got = torch.autograd.grad(loss, list(params.values()), allow_unused=True,
                              retain_graph=retain)
    return {n: torch.zeros_like(p) if g is None else g for (n, p), g in zip(params.items(), got)}


def _by_hand(net, xs, ys, xl, yl, xu, adversarial: str, yu=None):
    """Ω_{S+T} and eq. 1/2 written out with sigmoids and logs, no reversal layer: the gradients
    of Ω and of L_adv on every parameter, separately. ``yu``: the unlabelled batch's known
    labels (-1: none), which TSF's target term then weighs by their one-hot label."""
    z = net.features(torch.cat([xs, xl, xu]))
    logits = net.classifier(z)
    omega = F.cross_entropy(logits[:NS], ys) + F.cross_entropy(logits[NS:NS + NL], yl)
    d = torch.sigmoid(net.discriminator(torch.cat([z[:NS], z[NS + NL:]])))
    if adversarial == "tsf":  # class-conditional: source one-hot, target predictions (constants)
        w_s = F.one_hot(ys, d.shape[1]).float()
        w_t = torch.softmax(logits[NS + NL:], 1).detach()
        if yu is not None:
            for row, label in enumerate(yu.tolist()):
                if label >= 0:
                    w_t[row] = F.one_hot(torch.tensor(label), d.shape[1]).float()
    else:
        w_s, w_t = torch.ones(NS, 1), torch.ones(NU, 1)
    adv = -((w_s * torch.log(1 - d[:NS])).sum(1).mean() + (w_t * torch.log(d[NS:])).sum(1).mean())
    return _grads(net, omega, retain=True), _grads(net, adv)


def test_labelled_target_samples_weigh_by_their_label_when_asked():
    """train.labelled_in_adversary: label (issue 33): the rows of B_T^u whose label is known
    enter TSF's target term with their one-hot label instead of ŷ; the others as before, and
    with no label known the step is today's to the bit."""
    net = tiny_network(num_classes=4, adversarial="tsf")
    batch = _batch(4)
    yu = torch.tensor([2, -1, 0, -1, -1])
    step = lambda labels: trainer.step_losses(  # noqa: E731
        net, *batch, LAMBDA, adversarial="tsf", regulariser="sum", lambda_entropy=0.1, yu=labels)
    got = _grads(net, step(yu)["loss"])
    g_omega, g_adv = _by_hand(net, *batch, "tsf", yu=yu)
    _, g_predicted = _by_hand(net, *batch, "tsf")
    for name in got:
        part = name.split(".")[0]
        factor = {"discriminator": LAMBDA, "classifier": 0.0}.get(part, -LAMBDA)
        torch.testing.assert_close(got[name], g_omega[name] + factor * g_adv[name], rtol=1e-4,
                                   atol=1e-6, msg=name)
    assert any(not torch.allclose(g_adv[n], g_predicted[n]) for n in got
               if n.startswith("discriminator"))
    assert torch.equal(step(torch.full((NU,), -1))["adv"], step(None)["adv"])


@pytest.mark.parametrize("reversal", [1.0, 0.25])
@pytest.mark.parametrize("adversarial", ["tsf", "dann"])
def test_discriminator_descends_features_ascend_and_the_classifier_ignores_the_adversary(
        adversarial, reversal):
    """The discriminator gets +λ ∇L_adv at full rate; the features −λ·r ∇L_adv (r: the
    reversal's ramp); the classifier only Ω (TSF's target weights are constants). A missing
    or sign-flipped reversal, a dropped detach, uniform TSF weights or a ramp on the whole
    adversarial loss each break one of these."""
    net = tiny_network(num_classes=4, adversarial=adversarial)
    batch = _batch(4)
    parts = trainer.step_losses(net, *batch, LAMBDA, adversarial=adversarial, regulariser="sum",
                                lambda_entropy=0.1, reversal=reversal)
    got = _grads(net, parts["loss"])
    g_omega, g_adv = _by_hand(net, *batch, adversarial)
    checked = set()
    for name in got:
        part = name.split(".")[0]
        factor = {"discriminator": LAMBDA, "classifier": 0.0}.get(part, -LAMBDA * reversal)
        expected = g_omega[name] + factor * g_adv[name]
        torch.testing.assert_close(got[name], expected, rtol=1e-4, atol=1e-6, msg=name)
        checked.add(part)
    assert checked == {"backbone", "bottleneck", "classifier", "discriminator"}
    assert all(g_adv[n].abs().sum() > 0 for n in got if n.startswith(("discriminator", "backbone")))


def _step_losses_before_the_unit(net, xs, ys, xl, yl, xu, lambda_adv, *, adversarial: str,
                                 regulariser: str, lambda_entropy: float,
                                 target_share: float | None = None,
                                 group_scales=(1.0, 1.0, 1.0), reversal=1.0) -> dict:
    """A frozen copy of ``step_losses`` as it was before the adversarial loss became a unit
    (issue 29), eq. 1 and eq. 2 inlined: the reference it must match bit for bit."""
    ns, nl = len(ys), len(yl)
    cs, cl, cu = group_scales
    device = xs.device
    with autocast(device):
        z = net.features(torch.cat([xs, xl, xu]))
        logits = net.classifier(z)
        out = Outputs(scale_grad(logits[:ns], cs), ys, scale_grad(logits[ns:ns + nl], cl), yl,
                      scale_grad(z[ns + nl:], cu), target_share)
        omega = REGULARISERS[regulariser](out, net.classifier, lambda_entropy)
        loss, adv = omega, torch.zeros((), device=device)
        if adversarial != "none":
            d_in = reverse_gradient(torch.cat([z[:ns], z[ns + nl:]]), reversal)
            a = net.discriminator(d_in).float()
            a = torch.cat([scale_grad(a[:ns], cs), scale_grad(a[ns:], cu)])
            num_outputs = a.shape[1]
            y_onehot = (F.one_hot(ys, num_outputs).float() if num_outputs > 1
                        else torch.ones(ns, 1, device=device))
            p_t = (F.softmax(logits[ns + nl:].float(), 1) if num_outputs > 1
                   else torch.ones(len(xu), 1, device=device))
            a_s, a_t = a[:ns], a[ns:]
            if adversarial == "dann":
                adv = F.softplus(a_s).mean() + F.softplus(-a_t).mean()
            else:
                adv = ((y_onehot * F.softplus(a_s)).sum(1).mean()
                       + (p_t.detach() * F.softplus(-a_t)).sum(1).mean())
            loss = omega + lambda_adv * adv
    acc = (logits[:ns].argmax(1) == ys).float().mean()
    return {"loss": loss, "omega": omega, "adv": adv, "src_acc": acc}


@pytest.mark.parametrize("regulariser", ["sum", "mme"])
@pytest.mark.parametrize("group_scales", [(1.0, 1.0, 1.0), (0.5, 1.5, 2.0)])
@pytest.mark.parametrize("adversarial", ["none", "dann", "tsf"])
def test_the_adversarial_unit_changes_no_bit_of_the_step(adversarial, group_scales, regulariser):
    """``step_losses`` through the registered unit gives the very same loss parts and
    gradients (``torch.equal``, not close) as the inlined formula it replaced."""
    kind = "cosine" if regulariser == "mme" else "linear"
    batch = _batch(4, seed=3)
    results = []
    for losses in (trainer.step_losses, _step_losses_before_the_unit):
        net = tiny_network(num_classes=4, adversarial=adversarial, classifier=kind, seed=1)
        parts = losses(net, *batch, LAMBDA, adversarial=adversarial, regulariser=regulariser,
                       lambda_entropy=0.1, target_share=0.2, group_scales=group_scales,
                       reversal=0.25)
        results.append((parts, _grads(net, parts["loss"])))
    (parts, grads), (ref_parts, ref_grads) = results
    assert (net.discriminator is None) == (adversarial == "none")
    for key, value in ref_parts.items():
        assert torch.equal(parts[key], value), (key, parts[key], value)
    assert adversarial == "none" or parts["adv"] != 0
    for name, value in ref_grads.items():
        assert torch.equal(grads[name], value), name


def test_dann_schedule_ramps_the_reversal_not_the_discriminators_rate(monkeypatch,
                                                                      digits_manifest,
                                                                      digits_root):
    """Pretraining ramps the reversal coefficient 2/(1+exp(-10p)) − 1 step by step, while λ
    (what the discriminator learns at) stays train.lambda_adv throughout; adaptation rounds
    do not ramp."""
    from tests.test_trainer import _data

    seen = []
    real = trainer.step_losses

    def spy(*args, reversal=1.0, **kwargs):
        seen.append((float(args[6]), float(reversal)))
        return real(*args, reversal=reversal, **kwargs)

    monkeypatch.setattr(trainer, "step_losses", spy)
    cfg = Config().with_overrides({"active.strategy": "random"})
    classes, source, pool, _ = _data(digits_manifest, digits_root)
    net = tiny_network(num_classes=len(classes))
    steps = 8
    for ramp in (True, False):
        seen.clear()
        trainer.train(net, trainer.Streams(source, None, pool), steps=steps, train_cfg=cfg.train,
                      regulariser="source", seed=0, device=torch.device("cpu"), phase="t",
                      ramp_lambda=ramp, progress=False)
        lambdas, reversals = zip(*seen)
        assert lambdas == (cfg.train.lambda_adv,) * steps
        expected = [2 / (1 + math.exp(-10 * s / steps)) - 1 if ramp else 1.0 for s in range(steps)]
        np.testing.assert_allclose(reversals, expected, rtol=1e-6)


def test_clue_weights_its_clusters_by_entropy():
    """CLUE's centroids follow uncertainty: with one budget, the pick sits among the uncertain
    few, not at the centre of the confident many (unweighted k-means would pick that)."""
    from components.query import PoolOutputs, clue

    gen = np.random.default_rng(0)
    confident = gen.normal(0.0, 0.1, (40, 2))
    uncertain = gen.normal(5.0, 0.1, (4, 2))
    z = torch.tensor(np.vstack([confident, uncertain]))
    p = torch.tensor([[0.999, 0.001]] * 40 + [[0.5, 0.5]] * 4)
    pool = PoolOutputs([str(i) for i in range(len(z))], z, p)
    picks, scores = clue.clue_query(pool, 1, 0, chunk=64)
    assert picks[0] >= 40, picks
    assert scores[0] == pytest.approx(math.log(2))
