"""Scoring images with a trained detector: full images (the paper's protocol) or centre crops, batched by size."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from aligned_forensics.common.devices import split_on_oom
from aligned_forensics.common.errors import DataError
from aligned_forensics.common.image_sets import ScoreItem
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


def decoded_batches(
    items: Sequence[ScoreItem], *, size_of: Callable[[ScoreItem], tuple[int, int]], batch_size: int, stage: str,
    desc: str, rejects: list[dict[str, str]], prepare: Callable[[np.ndarray], Any] = lambda image: image,
) -> Iterator[tuple[list[int], list[Any]]]:
    """Yield (item indices, prepared images) per batch of equal `size_of`, decoded on a thread beside the model.

    Undecodable files are appended to `rejects` (labelled `stage`) and left out of their batch."""
    groups: dict[tuple[int, int], list[int]] = defaultdict(list)
    for index, item in enumerate(items):
        groups[size_of(item)].append(index)
    batches = [indices[i:i + batch_size] for _, indices in sorted(groups.items())
               for i in range(0, len(indices), batch_size)]

    def load(chunk: list[int]) -> tuple[list[int], list[Any]]:
        kept, images = [], []
        for index in chunk:
            item = items[index]
            image, reason = decode_expected(Path(item.path), height=item.height, width=item.width)
            if image is None:
                rejects.append({"path": item.path, "stage": stage, "reason": reason})
            else:
                kept.append(index)
                images.append(prepare(image))
        return kept, images

    with ThreadPoolExecutor(2) as pool, progress_bar(total=len(items), desc=desc, unit="img") as progress:
        for chunk, (kept, images) in zip(batches, prefetch_map(pool, load, batches), strict=True):
            if kept:
                yield kept, images
            progress.update(len(chunk))


@torch.inference_mode()
def score_images(
    model: torch.nn.Module, items: Sequence[ScoreItem], *, protocol: Protocol, crop_size: int, batch_size: int,
    device: torch.device, stage: str, desc: str = "score", degradation: Degradation = NO_DEGRADATION,
) -> tuple[np.ndarray, list[dict[str, str]]]:
    """Logit per item (NaN for undecodable files, which are also returned as rejects labelled `stage`).

    Full images are batched by size (one forward pass per batch of equal sizes, not per image)."""
    def size_of(item: ScoreItem) -> tuple[int, int]:
        return (crop_size, crop_size) if protocol == "center_crop" else degradation.output_size(item.height,
                                                                                                  item.width)

    def prepare(image: np.ndarray) -> torch.Tensor:
        image = degradation.apply(image)
        return to_normalised_tensor(center_crop(image, crop_size) if protocol == "center_crop" else image)

    scores = np.full(len(items), np.nan)
    rejects: list[dict[str, str]] = []
    model.eval()
    for kept, tensors in decoded_batches(items, size_of=size_of, batch_size=batch_size, stage=stage, desc=desc,
                                         rejects=rejects, prepare=prepare):
        batch = torch.stack(tensors)  # (B, 3, H, W)
        logits = split_on_oom(lambda start, stop, batch=batch: model(batch[start:stop].to(device)).float().cpu(),
                              len(kept), what=f"one {batch.shape[-1]}x{batch.shape[-2]} image",
                              param=batch_size_param(stage)).numpy()  # (B,)
        if not np.isfinite(logits).all():
            bad = [items[i].path for i, value in zip(kept, logits, strict=True) if not np.isfinite(value)]
            raise DataError(f"the detector returned NaN/inf scores for {len(bad)} image(s), e.g. {bad[:3]}")
        scores[kept] = logits
    return scores, rejects


def batch_size_param(stage: str) -> str:
    """The setting that sizes score_images' batches for a stage ("evaluate:test" -> evaluate.scoring.batch_size)."""
    section = stage.split(":")[0]
    return "predict --batch-size" if section == "predict" else f"{section}.scoring.batch_size"
