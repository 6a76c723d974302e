"""Training augmentation drawn once per pair and applied identically to a real and its reconstruction.

Order follows the paper's pipeline for the steps implemented here: Gaussian blur → JPEG → rot90 →
horizontal flip → random crop (symmetric padding when the image is smaller than the crop).
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image
from scipy.ndimage import gaussian_filter

from aligned_forensics.models import IMAGENET_MEAN, IMAGENET_STD
from aligned_forensics.params import require

_MEAN = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)  # constants, built once rather than per image
_STD = torch.tensor(IMAGENET_STD).view(3, 1, 1)


@dataclass(frozen=True)
class AugmentConfig:
    """params.yaml `train.augment`."""

    crop_size: int = 96  # final square crop fed to the network
    blur_prob: float = 0.5
    blur_sigma_max: float = 3.0  # sigma ~ U(0, max)
    jpeg_prob: float = 0.5
    jpeg_quality_min: int = 30  # quality ~ U{min..max}
    jpeg_quality_max: int = 100
    rot90_prob: float = 1.0  # then k ~ U{0, 1, 2, 3} quarter turns
    flip_prob: float = 0.5

    def __post_init__(self) -> None:
        require(self.crop_size >= 8, "train.augment.crop_size", "an integer >= 8", self.crop_size)
        for name in ("blur_prob", "jpeg_prob", "rot90_prob", "flip_prob"):
            value = getattr(self, name)
            require(0.0 <= value <= 1.0, f"train.augment.{name}", "a probability in [0, 1]", value)
        require(self.blur_sigma_max >= 0, "train.augment.blur_sigma_max", ">= 0", self.blur_sigma_max)
        require(1 <= self.jpeg_quality_min <= self.jpeg_quality_max <= 100, "train.augment.jpeg_quality_min/max",
                "1 <= min <= max <= 100", (self.jpeg_quality_min, self.jpeg_quality_max))


@dataclass(frozen=True)
class AugmentDraw:
    """Every random decision for one image (or one real/fake pair)."""

    blur_sigma: float  # 0 = no blur
    jpeg_quality: int  # 0 = no JPEG
    quarter_turns: int
    flip: bool
    crop_top: float  # relative position in [0, 1] of the crop inside the (padded) image
    crop_left: float


def draw_augmentation(config: AugmentConfig, rng: np.random.Generator) -> AugmentDraw:
    """Draw one augmentation; the same number of draws happens whatever is applied (stable streams)."""
    u = rng.random(8)
    return AugmentDraw(
        blur_sigma=float(u[1] * config.blur_sigma_max) if u[0] < config.blur_prob else 0.0,
        jpeg_quality=int(config.jpeg_quality_min + int(u[3] * (config.jpeg_quality_max - config.jpeg_quality_min + 1)))
        if u[2] < config.jpeg_prob else 0,
        quarter_turns=int(u[5] * 4) if u[4] < config.rot90_prob else 0,
        flip=bool(u[6] < config.flip_prob),
        crop_top=float(u[7]),
        crop_left=float(rng.random()),
    )


def apply_augmentation(pixels: np.ndarray, draw: AugmentDraw, *, crop_size: int) -> np.ndarray:
    """(H, W, 3) uint8 -> (crop, crop, 3) uint8 following `draw`."""
    if draw.blur_sigma > 0:
        pixels = gaussian_filter(pixels, sigma=(draw.blur_sigma, draw.blur_sigma, 0), truncate=4.0, mode="reflect")
    if draw.jpeg_quality:
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, format="JPEG", quality=draw.jpeg_quality)
        pixels = np.asarray(Image.open(buffer).convert("RGB"))
    pixels = np.rot90(pixels, draw.quarter_turns)
    if draw.flip:
        pixels = pixels[:, ::-1]
    pixels = pad_to_at_least(pixels, crop_size)
    top = int(draw.crop_top * (pixels.shape[0] - crop_size + 1) * (1 - 1e-9))
    left = int(draw.crop_left * (pixels.shape[1] - crop_size + 1) * (1 - 1e-9))
    return np.ascontiguousarray(pixels[top:top + crop_size, left:left + crop_size])


def center_crop(pixels: np.ndarray, crop_size: int) -> np.ndarray:
    """The deterministic validation transform: a centre crop (symmetric padding if smaller)."""
    pixels = pad_to_at_least(pixels, crop_size)
    top = (pixels.shape[0] - crop_size) // 2
    left = (pixels.shape[1] - crop_size) // 2
    return np.ascontiguousarray(pixels[top:top + crop_size, left:left + crop_size])


def pad_to_at_least(pixels: np.ndarray, side: int) -> np.ndarray:
    """Symmetric-pad (mirror, edge repeated) each spatial side up to `side`, like torchvision's RandomCrop."""
    pad_height, pad_width = max(0, side - pixels.shape[0]), max(0, side - pixels.shape[1])
    if not pad_height and not pad_width:
        return pixels
    return np.pad(pixels, ((pad_height // 2, pad_height - pad_height // 2),
                           (pad_width // 2, pad_width - pad_width // 2), (0, 0)), mode="symmetric")


def to_normalised_tensor(pixels: np.ndarray) -> torch.Tensor:
    """(H, W, 3) uint8 -> (3, H, W) float32 with ImageNet normalisation."""
    writable = np.require(pixels, dtype=np.uint8, requirements=["C", "W"])  # copies views and read-only decodes
    tensor = torch.from_numpy(writable).permute(2, 0, 1).float().div_(255.0)
    return (tensor - _MEAN) / _STD
