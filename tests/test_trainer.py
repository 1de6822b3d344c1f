"""The trainer: a short run learns, is reproducible, and checkpoints round-trip."""
from __future__ import annotations

import os

import pytest
import torch

from components.adaptation.trainer import Streams, train
from components.config import Config
from components.data.split import class_list
from components.data.tensors import load_images
from components.models import build_network
from components.models.checkpoints import load_checkpoint, save_checkpoint
from components.models.inference import evaluate
from tests.conftest import fresh_python


def _data(manifest, root):
    classes = class_list(manifest)
    rows = lambda s: manifest[manifest.split == s].groupby("label").head(30)  # noqa: E731
    load = dict(root=root, classes=classes, size=28, channels=1)
    return (classes, load_images(rows("source"), **load),
            load_images(rows("target_train"), with_labels=False, **load),
            load_images(rows("target_test"), **load))


def _run(cfg, data, steps, seed=0):
    classes, source, pool, _ = data
    torch.manual_seed(seed)
    net = build_network(cfg, len(classes))
    first = train(net, Streams(source, None, pool), steps=1, train_cfg=cfg.train,
                  regulariser="source", seed=seed, device=torch.device("cpu"), phase="t",
                  progress=False)
    last = train(net, Streams(source, None, pool), steps=steps, train_cfg=cfg.train,
                 regulariser="source", seed=seed + 1, device=torch.device("cpu"), phase="t",
                 progress=False)
    return net, first, last


def test_short_training_lowers_loss_and_is_reproducible(digits_manifest, digits_root, tmp_path):
    cfg = Config().with_overrides({"train.batch_size": 32})
    data = _data(digits_manifest, digits_root)
    net_a, first, last = _run(cfg, data, 40)
    assert last["omega"] < first["omega"] * 0.7
    net_b, _, last_b = _run(cfg, data, 40)
    assert last == last_b
    for (k, a), b in zip(net_a.state_dict().items(), net_b.state_dict().values()):
        assert torch.equal(a, b), k
    # checkpoints are plain state dicts that load with weights_only=True
    save_checkpoint(net_a, tmp_path / "c.pt")
    fresh = build_network(cfg, 10)
    load_checkpoint(fresh, tmp_path / "c.pt")
    classes, _, _, test = data
    assert evaluate(fresh, test, classes, device=torch.device("cpu")) == \
        evaluate(net_a, test, classes, device=torch.device("cpu"))


def test_ssda_step_with_every_regulariser_runs_and_updates_the_discriminator(digits_manifest,
                                                                             digits_root):
    classes, source, pool, test = _data(digits_manifest, digits_root)
    labelled = test.subset(test.ids[:8])
    for reg in ("union", "sum", "mme"):
        cfg = Config().with_overrides({"train.regulariser": reg, "train.batch_size": 16})
        torch.manual_seed(0)
        net = build_network(cfg, len(classes))
        before = [p.clone() for p in net.discriminator.parameters()]
        stats = train(net, Streams(source, labelled, pool), steps=3, train_cfg=cfg.train,
                      regulariser=reg, seed=0, device=torch.device("cpu"), phase=reg,
                      progress=False)
        assert all(torch.isfinite(torch.tensor(v)) for v in stats.values())
        assert any(not torch.equal(a, b) for a, b in zip(before, net.discriminator.parameters()))


def test_annealed_learning_rate_follows_dann_and_reaches_the_updates(digits_manifest, digits_root):
    from components.adaptation.trainer import learning_rate

    cfg = Config().with_overrides({"train.lr_schedule": "anneal", "train.lr": 0.01})
    assert learning_rate(cfg.train, 0, 100) == 0.01
    assert abs(learning_rate(cfg.train, 50, 100) - 0.01 / 6 ** 0.75) < 1e-12
    assert learning_rate(Config().train, 99, 100) == Config().train.lr   # constant
    data = _data(digits_manifest, digits_root)
    constant, _, _ = _run(Config().with_overrides({"train.batch_size": 16}), data, 5)
    annealed, _, _ = _run(cfg.with_overrides({"train.batch_size": 16}), data, 5)
    # the schedule reaches the optimiser: same seed and batches, other weights
    assert not torch.equal(next(iter(constant.parameters())), next(iter(annealed.parameters())))


COMPILE_RUN = r"""
import sys, torch
from components.adaptation.trainer import Streams, train
from components.config import Config
from components.models import build_network
from components.models.checkpoints import load_checkpoint, save_checkpoint
from components.models.inference import evaluate
from tests.conftest import random_pool
source = random_pool(64, seed=1)
source.labels = torch.arange(64) % 10
pool = random_pool(48, seed=2)
labelled = pool.subset(pool.ids[:8])
labelled.labels = torch.arange(8) % 10
weights = {}
for mode in ("none", "default"):
    cfg = Config().with_overrides({"train.batch_size": 16, "train.compile": mode})
    torch.manual_seed(0)
    net = build_network(cfg, 10)
    train(net, Streams(source, labelled, pool), steps=3, train_cfg=cfg.train,
          regulariser="sum", seed=0, device=torch.device("cpu"), phase="t", progress=False,
          ramp_lambda=True)
    weights[mode] = torch.cat([p.detach().flatten() for p in net.parameters()])
torch.manual_seed(0)
untrained = build_network(cfg, 10)
weights["untrained"] = torch.cat([p.detach().flatten() for p in untrained.parameters()])
torch.save(weights, sys.argv[1])
from torch._inductor.cpu_vec_isa import pick_vec_isa
print("ISA", pick_vec_isa())
"""


@pytest.mark.slow  # one torch.compile on 2 CPU cores: about a minute
def test_compiled_update_trains_like_the_eager_one(tmp_path):
    """``train.compile``: the compiled forward and backward (gradient reversal and TSF's
    detached weights included) give the eager update's weights, with λ ramping every step.

    Noise images, not digits: a digit's flat background ties the values in about a third of
    the max-pooling windows (none on noise), where the winner, and so the gradient, can turn
    on the last bit of a kernel's rounding, which differs between CPUs (on one, digits made
    eager float32's first convolution gradient 0.3 % from float64's, the compiled one 3e-5
    from it). Without ties, what differs is the compiler.

    In a fresh process with its own inductor cache, as a user's run compiles: in this worker
    other tests have changed the process (environment, heap, torch state), and the cache in
    /tmp is shared with every other run on the machine."""
    out = fresh_python(COMPILE_RUN, str(tmp_path / "w.pt"), timeout=900,
                       env={**os.environ, "OMP_NUM_THREADS": "1",
                            "TORCHINDUCTOR_CACHE_DIR": str(tmp_path / "inductor")})
    assert out.returncode == 0, out.stderr[-3000:]
    isa = out.stdout.split("ISA", 1)[-1].strip()
    weights = torch.load(tmp_path / "w.pt", weights_only=True)
    for mode in ("none", "default"):
        bad = int((~torch.isfinite(weights[mode])).sum())
        assert bad == 0, (f"train.compile={mode}: {bad} of {weights[mode].numel()} weights not "
                          f"finite (inductor's vector ISA: {isa})")
    assert not torch.equal(weights["none"], weights["untrained"])
    torch.testing.assert_close(weights["default"], weights["none"], atol=1e-5, rtol=1e-4,
                               msg=lambda m: f"{m}\n(inductor's vector ISA: {isa})")


def test_a_change_to_the_training_code_invalidates_cached_pretraining(tmp_path):
    """The round-0 cache is keyed by the code that trains, so an edited loss is not answered
    by a model the old loss trained; code that does not train (a query, prediction, the DDP
    launcher) keeps the key."""
    import shutil
    from pathlib import Path

    import components
    from components.run.steps import training_code_digest

    copy = tmp_path / "components"
    shutil.copytree(Path(components.__file__).parent, copy,
                    ignore=shutil.ignore_patterns("__pycache__"))
    before = training_code_digest(copy)
    assert before == training_code_digest()
    for kept in ("query/sage.py", "models/inference.py", "run/torchrun.py"):  # no weights move
        (copy / kept).write_text((copy / kept).read_text() + "\n# a\n")
        assert training_code_digest(copy) == before, kept
    losses = copy / "adaptation" / "losses.py"
    losses.write_text(losses.read_text().replace("lambda_entropy", "lambda_ent"))
    assert training_code_digest(copy) != before


def test_how_labels_enter_the_adversary_does_not_split_the_round0_cache():
    """train.labelled_in_adversary is read only once labels are known (round 1 on), so the arms
    that differ in it share one pretrained checkpoint per seed (issue 33's pairs); a setting
    pretraining reads still keys its own."""
    import pandas as pd

    from components.run.steps import RunSteps

    manifest = pd.DataFrame({"sample_id": ["a"], "split": ["source"], "label": ["1"]})
    key = lambda **train: RunSteps.pretrain_key(type("S", (), {  # noqa: E731
        "cfg": Config.model_validate({"train": train}), "manifest": manifest})())
    assert key(labelled_in_adversary="label") == key(labelled_in_adversary="predicted") == key()
    assert key(lambda_adv=0.5) != key()


def test_the_trainer_hands_each_unlabelled_batch_its_known_labels(monkeypatch):
    """train.labelled_in_adversary: label (issue 33): each step's B_T^u rows come with the
    labels known for exactly those rows (-1 where none), as the run builds them for U_T."""
    from components.adaptation import trainer
    from components.run.steps import RunSteps
    from tests.conftest import random_pool

    source = random_pool(32, seed=1)
    source.labels = torch.arange(32) % 10
    pool = random_pool(24, seed=2)
    labelled = {pool.ids[3]: "7", pool.ids[10]: "2"}
    classes = [str(c) for c in range(10)]
    fake_steps = type("S", (), {"classes": classes, "pool": pool})()
    known = RunSteps.known_labels(fake_steps, labelled)
    assert known[3] == 7 and known[10] == 2 and (known >= 0).sum() == 2
    seen = []
    original = trainer.update_step
    monkeypatch.setattr(trainer, "update_step", lambda *a, **k: seen.append(k["yu"]) or
                        original(*a, **k))
    cfg = Config().with_overrides({"train.batch_size": 16})
    net = build_network(cfg, 10)
    plan, _ = trainer.batch_plan(Streams(source, None, pool, known), steps=3, batch_size=16,
                                 seed=0)
    train(net, Streams(source, None, pool, known), steps=3, train_cfg=cfg.train,
          regulariser="sum", seed=0, device=torch.device("cpu"), phase="t", progress=False)
    assert [y.tolist() for y in seen] == [known[p].tolist() for p in plan["unlabelled"]]
