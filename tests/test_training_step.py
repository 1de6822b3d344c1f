"""The adversarial game of eq. 10, pinned against a hand computation: what the discriminator, the
features and the classifier each receive from one training step, and DANN's schedule."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from components.adaptation import trainer
from components.config import Config
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


def _by_hand(net, xs, ys, xl, yl, xu, adversarial: str):
    """Ω_{S+T} and eq. 1/2 written out with sigmoids and logs, no reversal layer: the gradients
    of Ω and of L_adv on every parameter, separately."""
    z = net.features(torch.cat([xs, xl, xu]))
    logits = net.classifier(z)
    omega = F.cross_entropy(logits[:NS], ys) + F.cross_entropy(logits[NS:NS + NL], yl)
    d = torch.sigmoid(net.discriminator(torch.cat([z[:NS], z[NS + NL:]])))
    if adversarial == "tsf":  # class-conditional: source one-hot, target predictions (constants)
        w_s = F.one_hot(ys, d.shape[1]).float()
        w_t = torch.softmax(logits[NS + NL:], 1).detach()
    else:
        w_s, w_t = torch.ones(NS, 1), torch.ones(NU, 1)
    adv = -((w_s * torch.log(1 - d[:NS])).sum(1).mean() + (w_t * torch.log(d[NS:])).sum(1).mean())
    return _grads(net, omega, retain=True), _grads(net, adv)


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


def test_clue_weights_its_clusters_by_entropy(monkeypatch):
    """CLUE's centroids follow uncertainty: with one budget, the pick sits among the uncertain
    few, not at the centre of the confident many (unweighted k-means would pick that)."""
    from components.query import clue

    gen = np.random.default_rng(0)
    confident = gen.normal(0.0, 0.1, (40, 2))
    uncertain = gen.normal(5.0, 0.1, (4, 2))
    z = torch.tensor(np.vstack([confident, uncertain]))
    p = torch.tensor([[0.999, 0.001]] * 40 + [[0.5, 0.5]] * 4)
    monkeypatch.setattr(clue, "pool_outputs", lambda model, pool, device: (z, p))
    picks, scores = clue.clue_query(None, None, 1, 0, device="cpu", chunk=64)
    assert picks[0] >= 40, picks
    assert scores[0] == pytest.approx(math.log(2))
