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
from aligned_forensics.evaluation.format_match import reencode

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
) -> Iterator[tuple[list[int], list[Any], list[tuple[int, Any]]]]:
    """Yield (item indices, prepared images, matched) per batch of equal `size_of`, decoded on a thread beside the
    model; `matched` holds (position in the batch, prepared image) of each item with a `match`, re-encoded with it
    from the same decoded pixels (format_match.py).

    Undecodable files are appended to `rejects` (labelled `stage`) and left out of their batch."""
    groups: dict[tuple[int, int], list[int]] = defaultdict(list)
    for index, item in enumerate(items):
        groups[size_of(item)].append(index)
    batches = [indices[i:i + batch_size] for _, indices in sorted(groups.items())
               for i in range(0, len(indices), batch_size)]

    def load(chunk: list[int]) -> tuple[list[int], list[Any], list[tuple[int, Any]]]:
        kept, images, matched = [], [], []
        for index in chunk:
            item = items[index]
            image, reason = decode_expected(Path(item.path), height=item.height, width=item.width)
            if image is None:
                rejects.append({"path": item.path, "stage": stage, "reason": reason})
                continue
            if item.match is not None:
                matched.append((len(kept), prepare(reencode(image, item.match))))
            kept.append(index)
            images.append(prepare(image))
        return kept, images, matched

    with ThreadPoolExecutor(2) as pool, progress_bar(total=len(items), desc=desc, unit="img") as progress:
        for chunk, (kept, images, matched) in zip(batches, prefetch_map(pool, load, batches), strict=True):
            if kept:
                yield kept, images, matched
            progress.update(len(chunk))


@torch.inference_mode()
def score_images(
    model: torch.nn.Module, items: Sequence[ScoreItem], *, protocol: Protocol, crop_size: int, batch_size: int,
    device: torch.device, stage: str, desc: str = "score", degradation: Degradation = NO_DEGRADATION,
) -> tuple[np.ndarray, list[dict[str, str]]]:
    """Logit per item (NaN for undecodable files, which are also returned as rejects labelled `stage`).

    Full images are batched by size (one forward pass per batch of equal sizes, not per image)."""
    scores, _, rejects = score_with_matched(model, items, protocol=protocol, crop_size=crop_size,
                                            batch_size=batch_size, device=device, stage=stage, desc=desc,
                                            degradation=degradation)
    return scores, rejects


@torch.inference_mode()
def score_with_matched(
    model: torch.nn.Module, items: Sequence[ScoreItem], *, protocol: Protocol, crop_size: int, batch_size: int,
    device: torch.device, stage: str, desc: str = "score", degradation: Degradation = NO_DEGRADATION,
) -> tuple[np.ndarray, np.ndarray, list[dict[str, str]]]:
    """(logits as delivered, logits format-matched, rejects): as score_images, plus the logit of each item
    re-encoded with its `match` (decoded once for both); an item without one keeps its delivered logit."""
    def size_of(item: ScoreItem) -> tuple[int, int]:
        return (crop_size, crop_size) if protocol == "center_crop" else degradation.output_size(item.height,
                                                                                                  item.width)

    def prepare(image: np.ndarray) -> torch.Tensor:
        image = degradation.apply(image)
        return to_normalised_tensor(center_crop(image, crop_size) if protocol == "center_crop" else image)

    def forward(tensors: list[torch.Tensor], indices: list[int]) -> np.ndarray:
        batch = torch.stack(tensors)  # (B, 3, H, W)
        logits = split_on_oom(lambda start, stop: model(batch[start:stop].to(device)).float().cpu(),
                              len(indices), what=f"one {batch.shape[-1]}x{batch.shape[-2]} image",
                              param=batch_size_param(stage)).numpy()  # (B,)
        if not np.isfinite(logits).all():
            bad = [items[i].path for i, value in zip(indices, logits, strict=True) if not np.isfinite(value)]
            raise DataError(f"the detector returned NaN/inf scores for {len(bad)} image(s), e.g. {bad[:3]}")
        return logits

    scores, matched_scores = np.full(len(items), np.nan), np.full(len(items), np.nan)
    rejects: list[dict[str, str]] = []
    model.eval()
    for kept, tensors, matched in decoded_batches(items, size_of=size_of, batch_size=batch_size, stage=stage,
                                                  desc=desc, rejects=rejects, prepare=prepare):
        scores[kept] = forward(tensors, kept)
        if matched:
            indices = [kept[position] for position, _ in matched]
            matched_scores[indices] = forward([tensor for _, tensor in matched], indices)
    as_delivered = np.array([item.match is None for item in items], dtype=bool)
    matched_scores[as_delivered] = scores[as_delivered]
    return scores, matched_scores, rejects


def batch_size_param(stage: str) -> str:
    """The setting that sizes score_images' batches for a stage ("evaluate:test" -> evaluate.scoring.batch_size)."""
    section = stage.split(":")[0]
    return "predict --batch-size" if section == "predict" else f"{section}.scoring.batch_size"
