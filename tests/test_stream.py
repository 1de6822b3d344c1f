"""The streaming path for real images, ResNet-50 weights from a local file, BatchNorm setting,
and Sage's half-precision embedding: each pinned against the in-memory / float32 reference."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from components.adaptation.trainer import Streams, train
from components.config import Config
from components.data.stream import Transform, stream_images
from components.data.tensors import ImageLoadError, load_images
from components.run.steps import streams_images
from tests.conftest import tiny_network

torch.set_num_threads(1)


def _rows(manifest: pd.DataFrame, split: str, n: int) -> pd.DataFrame:
    return manifest[manifest["split"] == split].iloc[:n]


def _classes(manifest):
    from components.data.split import class_list

    return class_list(manifest)


def test_streamed_images_equal_the_in_memory_ones(digits_root, digits_manifest):
    """Without augmentation (resize = crop = 28) both paths hand the network the same pixels,
    in the same order, with 0 and with 2 decoding workers; a subset is a view of ids."""
    rows, classes = _rows(digits_manifest, "target_test", 70), _classes(digits_manifest)
    memory = load_images(rows, digits_root, classes, size=28, channels=1)
    for workers in (0, 2):
        streamed = stream_images(rows, digits_root, classes, crop=28, resize=28, channels=1,
                                 workers=workers)
        assert torch.equal(torch.cat(list(streamed.eval_batches(32))), memory.images)
        assert torch.equal(streamed.labels, memory.labels)
        ids = memory.ids[5:9][::-1]
        part = streamed.subset(ids)
        assert part.files is streamed.files and part.ids == ids
        assert torch.equal(next(iter(part.eval_batches(8))), memory.subset(ids).images)
        rest = streamed.without(ids)
        assert len(rest) == len(memory) - 4 and not set(ids) & set(rest.ids)
        plan = [torch.tensor([3, 0, 3])]
        assert torch.equal(next(streamed.batches(plan, role="source")), memory.images[plan[0]])


def test_augmentation_is_the_usual_one_and_follows_the_seed():
    """Train: shorter side to ``resize``, a random ``crop``, a flip; evaluation: the centre."""
    t = Transform(resize=16, crop=12, channels=3)
    im = Image.fromarray(np.arange(32 * 48 * 3, dtype=np.uint32).reshape(32, 48, 3).astype(np.uint8))
    centre = t(im, -1)
    assert centre.shape == (3, 12, 12)
    resized = np.asarray(im.resize((24, 16), Image.BILINEAR)).transpose(2, 0, 1)
    assert np.array_equal(centre, resized[:, 2:14, 6:18])
    crops = {t(im, seed).tobytes() for seed in range(40)}
    assert len(crops) > 10                                    # random crops and flips
    assert np.array_equal(t(im, 7), t(im, 7))                 # but fixed by the seed
    flipped = [s for s in range(40) if any(np.array_equal(t(im, s), w[:, :, ::-1])
                                           for w in _windows(resized, 12))]
    kept = [s for s in range(40) if any(np.array_equal(t(im, s), w) for w in _windows(resized, 12))]
    assert flipped and kept and len(flipped) + len(kept) == 40


def _windows(arr, crop):
    h, w = arr.shape[1:]
    return [arr[:, i:i + crop, j:j + crop] for i in range(h - crop + 1) for j in range(w - crop + 1)]


def test_a_corrupt_file_names_itself_from_inside_a_worker(tmp_path):
    (tmp_path / "a").mkdir()
    Image.new("RGB", (40, 30)).save(tmp_path / "a" / "ok.png")
    (tmp_path / "a" / "bad.png").write_bytes(b"not a png")
    rows = pd.DataFrame({"sample_id": ["a/ok", "a/bad"], "label": ["a", "a"],
                         "path": ["a/ok.png", "a/bad.png"]})
    streamed = stream_images(rows, tmp_path, ["a"], crop=24, resize=28, channels=3, workers=1)
    with pytest.raises(ImageLoadError, match=r"bad\.png cannot be decoded"):
        list(streamed.eval_batches(1))


def _train_streamed(digits_root, digits_manifest, workers, seed=0):
    classes = _classes(digits_manifest)
    load = dict(root=digits_root, classes=classes, crop=24, resize=28, channels=1, workers=workers)
    source = stream_images(_rows(digits_manifest, "source", 200), **load)
    pool = stream_images(_rows(digits_manifest, "target_train", 100), with_labels=False, **load)
    labelled = pool.subset(pool.ids[:6])
    labelled.labels = torch.arange(6) % len(classes)
    cfg = Config().with_overrides({"train.batch_size": 16, "active.strategy": "random"})
    torch.manual_seed(0)
    net = _cnn_for(24, len(classes))
    train(net, Streams(source, labelled, pool), steps=4, train_cfg=cfg.train, regulariser="sum",
          seed=seed, device=torch.device("cpu"), phase="t", progress=False)
    return torch.cat([p.detach().flatten() for p in net.parameters()])


def _cnn_for(size, num_classes):
    """The digits network, its bottleneck sized for ``size``-px crops."""
    from components.models.heads import Bottleneck

    net = tiny_network(num_classes, dim=8)
    with torch.no_grad():
        width = net.backbone(torch.zeros(1, 1, size, size)).shape[1]
    net.bottleneck = Bottleneck(width, 8)
    return net


def test_streamed_training_is_reproducible_whatever_the_workers(digits_root, digits_manifest):
    """Augmentation seeds travel with the indices, so 0 or 3 workers train to the same bits;
    another seed trains to other weights (the seed is used)."""
    a = _train_streamed(digits_root, digits_manifest, workers=0)
    b = _train_streamed(digits_root, digits_manifest, workers=3)
    c = _train_streamed(digits_root, digits_manifest, workers=0, seed=1)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_auto_loader_streams_what_would_not_fit():
    data = Config().data
    assert not streams_images(data, 10_000)                         # digits: 8 MB
    big = data.model_copy(update={"image_size": 224, "channels": 3})
    assert streams_images(big, 20_000)                              # 3 GB > 2 GB
    assert not streams_images(big.model_copy(update={"loader": "memory"}), 20_000)
    assert streams_images(data.model_copy(update={"loader": "stream"}), 10)
    assert big.resize == 256


# ---------------------------------------------------------------- ResNet-50 and BatchNorm
def _resnet_cfg(**extra):
    return Config().with_overrides({"model.backbone": "resnet50", "data.channels": 3,
                                    "data.image_size": 64, "active.strategy": "random", **extra})


def test_resnet50_loads_a_local_state_dict_and_refuses_wrong_ones(tmp_path):
    from torchvision.models import resnet18, resnet50

    from components.models import build_network
    from components.models.backbones import WeightsError

    torch.manual_seed(1)
    reference = resnet50(weights=None)
    good = tmp_path / "r50.pt"
    torch.save(reference.state_dict(), good)
    net = build_network(_resnet_cfg(**{"model.weights": str(good)}), 5)
    assert torch.equal(net.backbone.conv1.weight, reference.conv1.weight)
    assert torch.equal(net.backbone.layer4[2].bn3.running_var, reference.layer4[2].bn3.running_var)

    torch.save(resnet18(weights=None).state_dict(), tmp_path / "r18.pt")
    torch.save({k: v for k, v in reference.state_dict().items() if "layer4" not in k},
               tmp_path / "partial.pt")
    torch.save(reference, tmp_path / "whole.pt")
    cases = {str(tmp_path / "absent.pt"): "not found; model.weights must be a local file",
             str(tmp_path / "r18.pt"): r"not a torchvision ResNet-50 state dict: \d+ (keys missing|tensors of another shape)",
             str(tmp_path / "partial.pt"): r"\d+ keys missing \(e\.g\. \['layer4",
             str(tmp_path / "whole.pt"): "cannot be read|not a state dict"}
    for path, message in cases.items():
        with pytest.raises(WeightsError, match=message):
            build_network(_resnet_cfg(**{"model.weights": path}), 5)


def test_resnet_input_is_normalised_with_its_weights_statistics():
    from components.models import build_network

    net = build_network(_resnet_cfg(), 5)
    x = torch.full((1, 3, 2, 2), 255, dtype=torch.uint8)
    expect = (1.0 - torch.tensor([0.485, 0.456, 0.406])) / torch.tensor([0.229, 0.224, 0.225])
    torch.testing.assert_close(net.normalise(x)[0, :, 0, 0], expect)


def test_frozen_batchnorm_keeps_the_backbone_statistics_and_affine():
    from components.adaptation.trainer import make_optimizer, update_step
    from components.models import build_network

    for setting, should_move in (("frozen", False), ("train", True)):
        cfg = _resnet_cfg(**{"model.batchnorm": setting})
        torch.manual_seed(0)
        net = build_network(cfg, 4).train()
        bn = net.backbone.bn1
        before = (bn.running_mean.clone(), bn.weight.detach().clone())
        opt = make_optimizer(net, cfg.train)
        x = net.normalise(torch.randint(0, 256, (4, 3, 64, 64), dtype=torch.uint8))
        y = torch.tensor([0, 1, 2, 3])
        update_step(net, opt, x, y, x[:0], y[:0], x, adversarial="tsf", regulariser="sum",
                    lambda_adv=0.3, lambda_entropy=0.1)
        moved = not torch.equal(bn.running_mean, before[0]) and not torch.equal(bn.weight, before[1])
        assert moved == should_move, setting
        assert net.bottleneck[1].training  # the heads' BatchNorm trains either way


# ---------------------------------------------------------------- Sage at scale
def test_float16_embedding_picks_what_float32_picks():
    """The half-size storage (scaled by the largest norm) gives the same greedy picks (Sage's
    Algorithm 1) and the same scores as float32. float16 keeps 11 bits: two candidates whose
    distances differ by less than ~1e-3 of the squared norms can swap (an untrained tiny
    network on noise has all embeddings within 3e-5: there it does), so the pools here have
    the spread of a trained discriminator. k-means++ draws at random in proportion to
    distances, so a rounding can move a draw to a neighbour: the picks may differ, by few."""
    from components.query.sage import embed_pool, select_from_embedding
    from tests.conftest import outputs_of, random_pool

    for seed in range(4):
        net = tiny_network(num_classes=5, dim=8, seed=seed)
        with torch.no_grad():
            net.discriminator[0].weight.mul_(10)
            net.classifier.weight.mul_(10)
        pool = random_pool(120, seed=seed)
        e32, n32 = embed_pool(outputs_of(net, pool), chunk=64, storage="float32")
        e16, n16 = embed_pool(outputs_of(net, pool), chunk=64, storage="float16")
        assert e16.dtype == torch.float16
        torch.testing.assert_close(n16, n32)
        a = select_from_embedding(e32, 12, diversity="greedy", seed=3, chunk=50, norms=n32)
        b = select_from_embedding(e16, 12, diversity="greedy", seed=3, chunk=50, norms=n16)
        assert a[0] == b[0], seed
        torch.testing.assert_close(torch.tensor(a[1]), torch.tensor(b[1]))
        a = select_from_embedding(e32, 12, diversity="kmeans++", seed=3, chunk=50, norms=n32)[0]
        b = select_from_embedding(e16, 12, diversity="kmeans++", seed=3, chunk=50, norms=n16)[0]
        assert a[:6] == b[:6] and len(set(a) & set(b)) >= 9, (seed, a, b)


def test_float16_embedding_survives_norms_beyond_its_range():
    """A saturated discriminator gives norms over float16's largest value (65504); stored
    unscaled they would be infinite and every distance NaN."""
    from components.query.sage import embed_pool
    from tests.conftest import outputs_of, random_pool

    net = tiny_network(num_classes=5, dim=8, seed=2)
    with torch.no_grad():
        net.discriminator[-1].weight.mul_(1e6)
    emb, norms = embed_pool(outputs_of(net, random_pool(60, seed=2)), chunk=64,
                            storage="float16")
    assert float(norms.max()) > 65504 and torch.isfinite(emb).all()
    torch.testing.assert_close(emb.float().norm(dim=1) * norms.max(), norms, rtol=2e-3, atol=0)


def test_auto_storage_halves_only_what_does_not_fit(monkeypatch):
    import psutil

    from components.query.sage import storage_dtype

    class Memory:
        available = 8e9

    monkeypatch.setattr(psutil, "virtual_memory", lambda: Memory)
    cpu = torch.device("cpu")
    assert storage_dtype(100_000, 10 * 64, cpu) == torch.float32         # 0.26 GB
    assert storage_dtype(100_000, 345 * 256, cpu) == torch.float16       # 35 GB
    assert storage_dtype(100_000, 345 * 256, cpu, "float32") == torch.float32
