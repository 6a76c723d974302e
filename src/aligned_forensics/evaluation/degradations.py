"""Post-processing applied before scoring, for robustness sweeps: JPEG, WebP, rescaling.

Two resizes: `resize` rescales by a factor, keeping the aspect ratio (bilinear); `resize_square` is the
paper's Fig. 2 (the authors' `resize_sweep.py --setting res`): every image to a square side x side, bicubic
with antialiasing, aspect ratio not preserved.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Literal

import numpy as np
from PIL import Image

Kind = Literal["none", "jpeg", "webp", "resize", "resize_square"]


@dataclass(frozen=True)
class Degradation:
    """One sweep level: `jpeg`/`webp` at quality `level`, `resize` by factor `level` (bilinear, antialiased),
    `resize_square` to `level` x `level` pixels (bicubic, antialiased)."""

    kind: Kind = "none"
    level: float = 0.0

    @property
    def label(self) -> str:
        return "none" if self.kind == "none" else f"{self.kind}-{self.level:g}"

    def output_size(self, height: int, width: int) -> tuple[int, int]:
        """(height, width) after applying this degradation to an image of that size."""
        if self.kind == "resize_square":
            return int(self.level), int(self.level)
        if self.kind != "resize":
            return height, width
        return max(1, round(height * self.level)), max(1, round(width * self.level))

    def apply(self, pixels: np.ndarray) -> np.ndarray:
        """(H, W, 3) uint8 -> degraded (H', W', 3) uint8."""
        if self.kind == "none":
            return pixels
        image = Image.fromarray(pixels)
        if self.kind == "resize":
            height, width = self.output_size(*pixels.shape[:2])
            return np.asarray(image.resize((width, height), Image.BILINEAR))  # Pillow antialiases downscaling
        if self.kind == "resize_square":  # = torchvision Resize((s, s), BICUBIC, antialias=True) on a PIL image
            side = int(self.level)
            return np.asarray(image.resize((side, side), Image.BICUBIC))
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG" if self.kind == "jpeg" else "WEBP", quality=int(self.level))
        return np.asarray(Image.open(buffer).convert("RGB"))


NO_DEGRADATION = Degradation()
