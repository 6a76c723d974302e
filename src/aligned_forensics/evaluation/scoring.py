"""Scoring images with a trained detector: full images (the paper's protocol) or centre crops, batched by size."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from aligned_forensics.common.errors import DataError
from aligned_forensics.common.images import decode_expected
from aligned_forensics.common.params import require
from aligned_forensics.common.prefetch import prefetch_map
from aligned_forensics.common.progress import progress_bar
from aligned_forensics.detector.preprocessing import center_crop, to_normalised_tensor
from aligned_forensics.evaluation.degradations import NO_DEGRADATION, Degradation

Protocol = Literal["full", "center_crop"]


@dataclass(frozen=True)
class ScoringOptions:
    """How images are scored; shared by the threshold and evaluate sections."""

    protocol: Protocol = "full"  # full image, no resize (the paper's test protocol), or a centre crop
    crop_size: int = 0  # center_crop side; 0 = the crop the model was trained on
    batch_size: int = 16  # images per forward pass (same-size images only)

    def check(self, section: str) -> None:
        """Range checks, reported under `section`."""
        require(self.crop_size >= 0, f"{section}.crop_size", ">= 0 (0 = training crop)", self.crop_size)
        require(self.batch_size >= 1, f"{section}.batch_size", "an integer >= 1", self.batch_size)


@dataclass(frozen=True)
class ScoreItem:
    path: str
    height: int  # from the manifest: full images are batched by size without decoding twice
    width: int


@torch.inference_mode()
def score_images(
    model: torch.nn.Module, items: Sequence[ScoreItem], *, protocol: Protocol, crop_size: int, batch_size: int,
    device: torch.device, stage: str, desc: str = "score", degradation: Degradation = NO_DEGRADATION,
) -> tuple[np.ndarray, list[dict[str, str]]]:
    """Logit per item (NaN for undecodable files, which are also returned as rejects labelled `stage`).

    Full images are batched by size (one forward pass per batch of equal sizes, not per image)."""
    groups: dict[tuple[int, int], list[int]] = defaultdict(list)
    for index, item in enumerate(items):
        size = degradation.output_size(item.height, item.width)
        groups[(crop_size, crop_size) if protocol == "center_crop" else size].append(index)
    batches = [indices[i:i + batch_size] for _, indices in sorted(groups.items())
               for i in range(0, len(indices), batch_size)]
    scores = np.full(len(items), np.nan)
    rejects: list[dict[str, str]] = []
    model.eval()

    def prepare(chunk: list[int]) -> tuple[list[int], list[torch.Tensor]]:
        kept, tensors = [], []
        for index in chunk:
            item = items[index]
            image, reason = decode_expected(Path(item.path), height=item.height, width=item.width)
            if image is None:
                rejects.append({"path": items[index].path, "stage": stage, "reason": reason})
            else:
                kept.append(index)
                image = degradation.apply(image)
                tensors.append(to_normalised_tensor(center_crop(image, crop_size) if protocol == "center_crop"
                                                    else image))
        return kept, tensors

    with ThreadPoolExecutor(2) as pool, progress_bar(total=len(items), desc=desc, unit="img") as progress:
        for chunk, (kept, tensors) in zip(batches, prefetch_map(pool, prepare, batches), strict=True):
            if kept:
                logits = model(torch.stack(tensors).to(device)).float().cpu().numpy()  # (B,)
                if not np.isfinite(logits).all():
                    bad = [items[i].path for i, value in zip(kept, logits, strict=True) if not np.isfinite(value)]
                    raise DataError(f"the detector returned NaN/inf scores for {len(bad)} image(s), e.g. {bad[:3]}")
                scores[kept] = logits
            progress.update(len(chunk))
    return scores, rejects

