from __future__ import annotations

import numpy as np
import pytest
import torch

from aligned_forensics.common.images import encode_png
from aligned_forensics.common.sampling import seeded_subset
from aligned_forensics.detector.models import count_parameters, create_detector
from aligned_forensics.detector.preprocessing import center_crop
from aligned_forensics.training.augment import AugmentConfig, draw_augmentation
from aligned_forensics.training.augment_ops import apply_augmentation
from aligned_forensics.training.dataset import EpochSampler, SyncedPairs, collate_synced
from aligned_forensics.training.train import EarlyStopping


def test_res50nodown_matches_the_paper():
    model = create_detector("res50nodown", pretrained="none", seed=0).eval()
    assert count_parameters(model) == 23_510_081
    with torch.no_grad():
        assert model.features(torch.zeros(1, 3, 96, 96)).shape == (1, 2048, 12, 12)  # total stride 8
        assert model(torch.zeros(2, 3, 96, 96)).shape == (2,)
    assert model.fc.weight.std().item() == pytest.approx(0.02, rel=0.1)


@pytest.mark.parametrize(("arch", "side"), [("res50", 3), ("res18nodown", 12), ("res18", 3)])
def test_smaller_variants_have_their_stride(arch, side):
    model = create_detector(arch, pretrained="none", seed=0).eval()
    with torch.no_grad():
        assert model.features(torch.zeros(1, 3, 96, 96)).shape[-1] == side


def test_schedule_decays_then_stops_like_the_paper():
    schedule = EarlyStopping(patience=2, delta=0.001, lr_decay=0.1, min_lr=1e-6)
    lr, history = 1e-4, []
    for score in [0.5, 0.6, 0.6005, 0.6, 0.7, 0.7, 0.7, 0.7, 0.7, 0.7, 0.7]:
        improved, lr, stop = schedule.step(score, lr)
        history.append((improved, lr, stop))
        if stop:
            break
    assert [h[0] for h in history[:5]] == [True, True, False, False, True]  # +0.0005 is below delta
    assert history[3][1] == pytest.approx(1e-5)  # two epochs without gain -> LR / 10
    lrs = [h[1] for h in history]
    assert min(lrs[:-1]) == pytest.approx(1e-6) and history[-1][2]  # trains at 1e-6, stops below it


def _pair_dataset(tmp_path, count: int) -> SyncedPairs:
    pairs = []
    rng = np.random.default_rng(0)
    for i in range(count):
        pixels = rng.integers(0, 256, (40, 56, 3), dtype=np.uint8)
        paths = []
        for kind in ("real", "fake"):  # identical pixels, so identical augmentation gives identical tensors
            path = tmp_path / f"{kind}{i}.png"
            path.write_bytes(encode_png(pixels))
            paths.append(str(path))
        pairs.append(tuple(paths))
    return SyncedPairs(pairs, AugmentConfig(crop_size=32), seed=5)


def test_a_pair_gets_one_draw_and_different_pairs_differ(tmp_path):
    dataset = _pair_dataset(tmp_path, 6)
    images, labels = collate_synced([dataset[(1, i)] for i in range(6)])
    assert images.shape == (12, 3, 32, 32) and labels.tolist() == [0] * 6 + [1] * 6
    assert torch.equal(images[:6], images[6:])
    config = AugmentConfig()
    draws = {draw_augmentation(config, np.random.default_rng([5, 1, i])) for i in range(6)}
    assert len(draws) == 6
    assert torch.equal(dataset[(1, 2)][0], dataset[(1, 2)][0])  # same (seed, epoch, index) -> same tensor
    assert not torch.equal(dataset[(1, 2)][0], dataset[(2, 2)][0])  # a new epoch -> a new draw


def test_crops_are_padded_when_the_image_is_small():
    pixels = np.arange(20 * 10 * 3, dtype=np.uint8).reshape(20, 10, 3)
    draw = draw_augmentation(AugmentConfig(), np.random.default_rng(3))
    assert apply_augmentation(pixels, draw, crop_size=16).shape == (16, 16, 3)
    assert center_crop(pixels, 8).shape == (8, 8, 3)


def test_sampler_and_cap_are_seeded():
    sampler = EpochSampler(10, seed=1, shuffle=True)
    first = list(sampler)
    assert first == list(EpochSampler(10, seed=1, shuffle=True))
    sampler.set_epoch(1)
    assert [i for _, i in first] != [i for _, i in sampler] and all(e == 1 for e, _ in sampler)
    pairs = [(f"r{i}", f"f{i}") for i in range(20)]
    subset = seeded_subset(pairs, 5, seed=3, stream=0)
    assert subset == seeded_subset(pairs, 5, seed=3, stream=0) and subset == sorted(subset, key=pairs.index)
    assert subset != seeded_subset(pairs, 5, seed=4, stream=0) and subset != seeded_subset(pairs, 5, seed=3, stream=1)
    assert seeded_subset(pairs, 0, seed=3, stream=0) == pairs == seeded_subset(pairs, 99, seed=3, stream=0)


def test_imagenet_initialisation_loads_all_but_the_head(monkeypatch, tmp_path, http):
    """The weights come over HTTP (a real server on 127.0.0.1), are checked against their name's hash prefix,
    cached in $TORCH_HOME and loaded from the cache the second time; offline without a cache is a clear error."""
    import hashlib
    import io
    from types import SimpleNamespace

    from torchvision.models import resnet18

    from aligned_forensics.common.errors import UserError
    from aligned_forensics.detector import models

    reference = resnet18().state_dict()  # stands in for torchvision's file: no internet in tests
    buffer = io.BytesIO()
    torch.save(reference, buffer)
    data = buffer.getvalue()
    name = f"/resnet18-{hashlib.sha256(data).hexdigest()[:10]}.pth"
    http.files[name] = data
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setitem(models.IMAGENET_WEIGHTS, "res18nodown", SimpleNamespace(url=http.url(name)))
    for _ in range(2):  # downloaded, then read from the cache
        model = create_detector("res18nodown", pretrained="imagenet", seed=0)
        assert torch.equal(model.conv1.weight, reference["conv1.weight"])
        assert model.fc.weight.shape == (1, 512)
        assert model.imagenet_sha256 == hashlib.sha256(data).hexdigest()  # the full hash, for the config
    assert len(http.gets(name)) == 1 and (tmp_path / "torch/hub/checkpoints" / name[1:]).read_bytes() == data

    monkeypatch.setitem(models.IMAGENET_WEIGHTS, "res18", SimpleNamespace(url=http.url("/resnet18-0123abcd.pth")))
    with pytest.raises(UserError, match=r"resnet18-0123abcd\.pth.*HTTPError.*pretrained: none"):
        create_detector("res18", pretrained="imagenet", seed=0)
