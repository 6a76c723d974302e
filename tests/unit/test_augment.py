"""The paper's augmentation: window-first equals whole-image, every probability, pairs share one draw."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from aligned_forensics.common.images import decode_rgb
from aligned_forensics.data.sources.samples import SAMPLE_PHOTOS, bundled_photo_path
from aligned_forensics.training.augment import AugmentConfig, draw_augmentation
from aligned_forensics.training.augment_ops import (
    apply_augmentation,
    apply_augmentation_full,
    gaussian_noise,
    grey,
    jitter,
)


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    """A natural 427 x 640 photo (odd height: not a multiple of the JPEG block)."""
    return decode_rgb(bundled_photo_path(next(p for p in SAMPLE_PHOTOS if p.name == "china")))


@pytest.mark.parametrize("crop_size", [96, 64])
def test_window_first_gives_the_same_pixels_as_the_whole_image(photo, crop_size):
    config = AugmentConfig(crop_size=crop_size)
    rng = np.random.default_rng(1)
    for _ in range(60):
        draw = draw_augmentation(config, rng)
        window = apply_augmentation(photo, draw, crop_size=crop_size)
        assert window.shape == (crop_size, crop_size, 3)
        assert np.array_equal(window, apply_augmentation_full(photo, draw, crop_size=crop_size)), draw


@pytest.mark.parametrize("step", ["blur", "jpeg", "noise", "cutout", "turns"])
def test_each_windowed_step_alone_is_exact(photo, step):
    """Force one step on, everything else off, over many positions (the edges included)."""
    off = AugmentConfig(resized_crop_prob=0, jitter_prob=0, grayscale_prob=0, cutout_prob=0, noise_prob=0,
                        blur_prob=0, jpeg_prob=0, rot90_prob=1, flip_prob=0.5)
    config = dataclasses.replace(off, **{"blur": {"blur_prob": 1}, "jpeg": {"jpeg_prob": 1},
                                         "noise": {"noise_prob": 1}, "cutout": {"cutout_prob": 1},
                                         "turns": {}}[step])
    rng = np.random.default_rng(2)
    for _ in range(40):
        draw = draw_augmentation(config, rng)
        assert np.array_equal(apply_augmentation(photo, draw, crop_size=96),
                              apply_augmentation_full(photo, draw, crop_size=96))


PROBABILITIES = {"resized_crop": (0.2, lambda d: bool(d.resized_crop)), "jitter": (0.8, lambda d: bool(d.jitter)),
                 "grayscale": (0.2, lambda d: d.grayscale), "cutout": (0.2, lambda d: d.cutout is not None),
                 "noise": (0.2, lambda d: d.noise_sigma > 0), "blur": (0.5, lambda d: d.blur_sigma > 0),
                 "jpeg": (0.5, lambda d: d.jpeg_quality > 0), "flip": (0.5, lambda d: d.flip),
                 "rot90 identity": (0.25, lambda d: d.quarter_turns == 0),
                 "cv2 jpeg": (0.5, lambda d: d.jpeg_method == "cv2")}


@pytest.mark.parametrize("name", sorted(PROBABILITIES))
def test_each_step_fires_with_its_probability(name):
    nominal, fired = PROBABILITIES[name]
    rng = np.random.default_rng(0)
    draws = [draw_augmentation(AugmentConfig(), rng) for _ in range(5000)]
    assert np.mean([fired(d) for d in draws]) == pytest.approx(nominal, abs=0.025)


def test_ranges_follow_the_paper():
    rng = np.random.default_rng(0)
    draws = [draw_augmentation(AugmentConfig(), rng) for _ in range(3000)]
    assert all(30 <= d.jpeg_quality <= 100 for d in draws if d.jpeg_quality)
    assert {d.jpeg_quality for d in draws if d.jpeg_quality} >= {30, 100}
    assert all(0 < d.blur_sigma <= 3 for d in draws if d.blur_sigma)
    assert all(np.sqrt(10) <= d.noise_sigma <= np.sqrt(50) for d in draws if d.noise_sigma)
    factors = {op: [f for d in draws for o, f in d.jitter if o == op] for op in ("brightness", "hue")}
    assert min(factors["brightness"]) >= 0.6 and max(factors["brightness"]) <= 1.4
    assert min(factors["hue"]) >= -0.1 and max(factors["hue"]) <= 0.1
    assert len({tuple(o for o, _ in d.jitter) for d in draws if d.jitter}) == 24  # every order of the four


def test_noise_is_standard_normal_and_positional():
    noise = gaussian_noise((200, 300), (0, 0, 200, 300), key=7, sigma=1.0, width=300)
    assert abs(noise.mean()) < 0.01 and abs(noise.std() - 1) < 0.01
    window = gaussian_noise((20, 30), (50, 60, 70, 90), key=7, sigma=1.0, width=300)
    assert np.array_equal(window, noise[50:70, 60:90])


def test_contrast_mean_from_a_grid_is_within_a_level_of_the_exact_mean(photo):
    rng = np.random.default_rng(4)
    for _ in range(20):
        factor = float(rng.uniform(0.6, 1.4))
        exact_mean = float(grey(photo).mean())
        exact = np.clip(np.floor(factor * photo.astype(np.float32) + (1 - factor) * exact_mean), 0, 255)
        ours = jitter(photo, (("contrast", factor),), image=photo)
        assert np.abs(ours.astype(np.float32) - exact).max() <= 1
