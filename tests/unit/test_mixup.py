"""train.augment.mixup_prob: DDA's pixel mixup, x = r * real + (1 - r) * fake with r ~ U(mixup_ratio), fake label."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

from aligned_forensics.common.errors import ParamsError
from aligned_forensics.common.images import decode_rgb, encode_jpeg, encode_png
from aligned_forensics.common.params import build_config
from aligned_forensics.detector.preprocessing import to_normalised_tensor
from aligned_forensics.training.augment import AugmentConfig, draw_augmentation
from aligned_forensics.training.augment_ops import apply_augmentation
from aligned_forensics.training.dataset import REAL, train_dataset
from aligned_forensics.training.mixup import MIXUP_STREAM, draw_mixup

SEED, HEIGHT, WIDTH = 7, 24, 32
# every other augmentation off and the crop the whole image: an item is its (mixed) pixels, normalised
PLAIN = AugmentConfig(crop_size=HEIGHT, resized_crop_prob=0, jitter_prob=0, grayscale_prob=0, cutout_prob=0,
                      noise_prob=0, blur_prob=0, jpeg_prob=0, rot90_prob=0, flip_prob=0)


@pytest.fixture(scope="module")
def pairs(tmp_path_factory) -> list[tuple[str, str]]:
    """Six (JPEG real, PNG fake) pairs of HEIGHT x HEIGHT: fake = real shifted and darkened, so every mix differs."""
    folder = tmp_path_factory.mktemp("mixup")
    rng = np.random.default_rng(0)
    found = []
    for i in range(6):
        real = rng.integers(0, 256, (HEIGHT, HEIGHT, 3), dtype=np.uint8)
        fake = (np.roll(real, 3, axis=1) // 2).astype(np.uint8)
        real_path, fake_path = folder / f"r{i}.jpg", folder / f"f{i}.png"
        real_path.write_bytes(encode_jpeg(real, quality=90))
        fake_path.write_bytes(encode_png(fake))
        found.append((str(real_path), str(fake_path)))
    return found


def expected_mix(real_path: str, fake_path: str, *, key: tuple[int, ...], ratio: tuple[float, float]) -> np.ndarray:
    """The formula on the decoded files, with r drawn from the documented stream of the item's generator."""
    position = np.random.default_rng([*key, MIXUP_STREAM]).random(2)[1]
    r = ratio[0] + position * (ratio[1] - ratio[0])
    real, fake = (decode_rgb(Path(path)).astype(np.float64) for path in (real_path, fake_path))
    return np.clip(np.round(r * real + (1 - r) * fake), 0, 255).astype(np.uint8)


def test_a_synced_fake_is_the_formula_and_its_real_is_untouched(pairs):
    config = dataclasses.replace(PLAIN, mixup_prob=1.0, mixup_ratio=(0.1, 0.7))
    dataset = train_dataset(pairs, config, pairing="aligned", sync=True, seed=SEED)
    for index, (real_path, fake_path) in enumerate(pairs):
        real, fake = dataset[(2, index)]
        mix = expected_mix(real_path, fake_path, key=(SEED, 2, index), ratio=(0.1, 0.7))
        assert torch.equal(fake, to_normalised_tensor(mix))
        assert torch.equal(real, to_normalised_tensor(decode_rgb(Path(real_path))))
        assert not np.array_equal(mix, decode_rgb(Path(fake_path))) and not np.array_equal(mix, decode_rgb(
            Path(real_path)))


@pytest.mark.parametrize("sync", [True, False])
def test_unaligned_and_independent_fakes_mix_with_their_own_real_never_a_partner(pairs, sync):
    config = dataclasses.replace(PLAIN, mixup_prob=1.0)
    source = {fake: real for real, fake in pairs}
    for pairing in ("aligned", "unaligned"):
        if pairing == "aligned" and sync:
            continue  # the test above
        dataset = train_dataset(pairs, config, pairing=pairing, sync=sync, seed=SEED)
        for index in range(len(dataset)):
            if sync:
                fake_path, key = dataset.paths((1, index))[1], (SEED, 1, index, 1)
                fake = dataset[(1, index)][1]
            else:
                fake_path, label = dataset.items[index]
                if label == REAL:
                    continue
                fake, key = dataset[(1, index)][0], (SEED, 1, index)
            assert torch.equal(fake, to_normalised_tensor(expected_mix(source[fake_path], fake_path, key=key,
                                                                       ratio=(0.0, 0.8))))


def test_probability_zero_leaves_every_batch_as_without_mixup(pairs):
    """Off (the default): the items of the code before mixup; on: the reals and every augmentation draw unchanged."""
    config = AugmentConfig(crop_size=16, cutout_prob=0)  # the paper's pipeline (a 48-pixel cutout would hide all)
    off = train_dataset(pairs, config, pairing="aligned", sync=True, seed=SEED)
    on = train_dataset(pairs, dataclasses.replace(config, mixup_prob=1.0), pairing="aligned", sync=True, seed=SEED)
    for index, paths in enumerate(pairs):
        draw = draw_augmentation(config, np.random.default_rng([SEED, 3, index]))
        before = [to_normalised_tensor(apply_augmentation(decode_rgb(Path(p)), draw, crop_size=16)) for p in paths]
        assert all(torch.equal(a, b) for a, b in zip(off[(3, index)], before, strict=True))
        assert torch.equal(on[(3, index)][0], before[0]) and not torch.equal(on[(3, index)][1], before[1])


def test_the_same_seed_gives_the_same_batches_and_another_seed_other_ones(pairs):
    config = dataclasses.replace(AugmentConfig(crop_size=16), mixup_prob=0.5)
    items = [[train_dataset(pairs, config, pairing="aligned", sync=True, seed=seed)[(1, i)][1] for i in range(6)]
             for seed in (SEED, SEED, SEED + 1)]
    assert all(torch.equal(a, b) for a, b in zip(items[0], items[1], strict=True))
    assert not all(torch.equal(a, b) for a, b in zip(items[0], items[2], strict=True))


def test_draws_follow_the_probability_and_the_ratio_range():
    config = dataclasses.replace(AugmentConfig(), mixup_prob=0.3, mixup_ratio=(0.2, 0.6))
    weights = [draw_mixup(config, np.random.default_rng([1, i])) for i in range(4000)]
    mixed = [w for w in weights if w is not None]
    assert abs(len(mixed) / len(weights) - 0.3) < 0.03
    assert 0.2 <= min(mixed) < 0.22 and 0.58 < max(mixed) <= 0.6


@pytest.mark.parametrize(("values", "match"), [
    ({"mixup_prob": 1.5}, r"train\.augment\.mixup_prob"),
    ({"mixup_ratio": [0.8, 0.2]}, r"train\.augment\.mixup_ratio"),
    ({"mixup_ratio": [0.0, 1.2]}, r"train\.augment\.mixup_ratio"),
])
def test_bad_mixup_params_name_the_key(values, match):
    with pytest.raises(ParamsError, match=match):
        build_config(AugmentConfig, values, section="train.augment")
