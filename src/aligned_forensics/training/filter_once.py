"""`filter_once`: run a detector's fixed input filter once per training and validation image, not once per step.

The `roundtrip` filter costs two autoencoder round trips per image: on a CPU, more than the network it feeds.
When the augmentation only moves pixels (crop, quarter turns, flips), the filter can run once on each whole image
and the network can train on turned crops of its output. The filter then sees whole, unturned images, exactly as
when the trained detector scores full images; the turns and flips act on its output instead of its input (the
autoencoder is not equivariant to them, so the two differ: they are augmentations of the maps scoring sees).
Anything that changes pixel values needs the filter after it, so those augmentations refuse filter_once at
start-up.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from aligned_forensics.common.errors import UserError
from aligned_forensics.common.images import decode_rgb
from aligned_forensics.common.progress import progress_bar
from aligned_forensics.detector.preprocessing import to_normalised_tensor
from aligned_forensics.training.augment import AugmentConfig

log = logging.getLogger(__name__)
PIXEL_CHANGING = ("resized_crop_prob", "jitter_prob", "grayscale_prob", "cutout_prob", "noise_prob", "blur_prob",
                  "jpeg_prob", "mixup_prob")
BATCH = 32  # same-size images per filter call


def check_geometric(augment: AugmentConfig, *, section: str) -> None:
    """Refuse filter_once with any augmentation that changes pixel values (the filter would have to follow it)."""
    active = [name for name in PIXEL_CHANGING if getattr(augment, name) > 0]
    if active:
        raise UserError(f"{section}.filter_once runs the input filter before augmentation, so it only allows "
                        f"crops, quarter turns and flips; train.augment sets {', '.join(active)} > 0. Set those "
                        f"to 0, or {section}.filter_once: false (the filter then runs on every augmented crop)")


class FilterCache:
    """path -> (H, W, C) float32 output of `model`'s input filter on the whole decoded image."""

    def __init__(self, model: torch.nn.Module, *, device: torch.device) -> None:
        self.model, self.device = model, device
        self.maps: dict[str, np.ndarray] = {}

    @torch.no_grad()
    def fill(self, paths: Sequence[str]) -> dict[str, np.ndarray]:
        """Filter every path not yet held (batched by size, in sorted order: same batches, same floats)."""
        by_shape: dict[tuple[int, ...], list[tuple[str, np.ndarray]]] = defaultdict(list)
        todo = sorted(set(paths) - set(self.maps))
        input_filter = getattr(self.model, "module", self.model).input_filter
        with progress_bar(total=len(todo), desc="filter once", unit="img") as bar:
            for path in todo:
                pixels = decode_rgb(Path(path))
                by_shape[pixels.shape].append((path, pixels))
                if len(by_shape[pixels.shape]) == BATCH:
                    self._run(input_filter, by_shape.pop(pixels.shape), bar)
            for group in by_shape.values():
                self._run(input_filter, group, bar)
        return self.maps

    def _run(self, input_filter: torch.nn.Module, group: list[tuple[str, np.ndarray]], bar) -> None:
        batch = torch.stack([to_normalised_tensor(pixels) for _, pixels in group]).to(self.device)  # (B, 3, H, W)
        output = input_filter(batch).float().cpu().permute(0, 2, 3, 1).numpy()  # (B, H, W, C)
        for (path, _), filtered in zip(group, output, strict=True):
            self.maps[path] = np.ascontiguousarray(filtered)
        bar.update(len(group))
