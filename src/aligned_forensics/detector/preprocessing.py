"""The pixels a detector sees, shared by training and scoring: ImageNet normalisation and the centre crop.

Kept apart from the training augmentation so an edit to the augmentation leaves calibrated thresholds and
evaluations up to date (dvc.yaml: threshold and evaluate depend on detector/, not on training/).
"""

from __future__ import annotations

import numpy as np
import torch

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
_MEAN = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)  # constants, built once rather than per image
_STD = torch.tensor(IMAGENET_STD).view(3, 1, 1)


def to_normalised_tensor(pixels: np.ndarray) -> torch.Tensor:
    """(H, W, 3) uint8 -> (3, H, W) float32 with ImageNet normalisation."""
    writable = np.require(pixels, dtype=np.uint8, requirements=["C", "W"])  # copies views and read-only decodes
    tensor = torch.from_numpy(writable).permute(2, 0, 1).float().div_(255.0)
    return (tensor - _MEAN) / _STD


def center_crop(pixels: np.ndarray, crop_size: int) -> np.ndarray:
    """The deterministic validation transform: a centre crop (symmetric padding if smaller)."""
    pixels = pad_to_at_least(pixels, crop_size)
    top, left = (pixels.shape[0] - crop_size) // 2, (pixels.shape[1] - crop_size) // 2
    return np.ascontiguousarray(pixels[top:top + crop_size, left:left + crop_size])


def pad_to_at_least(pixels: np.ndarray, side: int) -> np.ndarray:
    """Symmetric-pad (mirror, edge repeated) each spatial side up to `side`, like torchvision's RandomCrop."""
    pad_height, pad_width = max(0, side - pixels.shape[0]), max(0, side - pixels.shape[1])
    if not pad_height and not pad_width:
        return pixels
    return np.pad(pixels, ((pad_height // 2, pad_height - pad_height // 2),
                           (pad_width // 2, pad_width - pad_width // 2), (0, 0)), mode="symmetric")
