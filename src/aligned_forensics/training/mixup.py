"""Pixel mixup as Dual Data Alignment defines it (Chen et al., NeurIPS 2025): a fake blended with its own real.

With probability `train.augment.mixup_prob` a fake is replaced, before any other augmentation, by
x_mix = r * x_real + (1 - r) * x_fake with r ~ U(mixup_ratio), the real it was reconstructed from weighing r; the
mix keeps the fake label (DDA: "the synthetic sample"). The draw comes from its own stream of the item's
(seed, epoch, index) generator, so turning mixup on leaves every other augmentation draw as it was.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from aligned_forensics.training.augment import AugmentConfig

MIXUP_STREAM = 0xD0A  # separates the mixup draw from the augmentation's


def draw_mixup(config: AugmentConfig, rng: np.random.Generator) -> float | None:
    """The real's weight r for one fake, or None when this fake is not mixed (always two draws: stable streams)."""
    chance, position = rng.random(2)
    low, high = config.mixup_ratio
    return float(low + position * (high - low)) if chance < config.mixup_prob else None


def pixel_mixup(real: np.ndarray, fake: np.ndarray, real_weight: float) -> np.ndarray:
    """(H, W, 3) uint8 each -> r * real + (1 - r) * fake, rounded to the nearest level: (H, W, 3) uint8."""
    if real.shape != fake.shape:
        raise ValueError(f"mixup needs a real and a fake of one size, got {real.shape} and {fake.shape}")
    mixed = real_weight * real.astype(np.float64) + (1.0 - real_weight) * fake.astype(np.float64)
    return np.clip(np.round(mixed), 0, 255).astype(np.uint8)


def mixed_fake(fake: np.ndarray, real: Callable[[], np.ndarray], config: AugmentConfig, *, key: Sequence[int]
               ) -> np.ndarray:
    """The fake's pixels, or their mix with its real's (`real()` is only called, to decode it, when mixed).

    key: the item's generator key, e.g. (seed, epoch, index); the mixup draws from (*key, MIXUP_STREAM)."""
    if config.mixup_prob == 0:
        return fake
    weight = draw_mixup(config, np.random.default_rng([*key, MIXUP_STREAM]))
    return fake if weight is None else pixel_mixup(real(), fake, weight)
