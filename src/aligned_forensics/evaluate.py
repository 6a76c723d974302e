"""The evaluate stage: score the test split, metrics at the calibrated threshold and at logit 0."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from aligned_forensics.calibrate import ScoredImages, score_pairs
from aligned_forensics.checkpoints import load_detector
from aligned_forensics.devices import pick_device
from aligned_forensics.errors import DataError, UserError
from aligned_forensics.io import read_csv
from aligned_forensics.scoring import ScoringOptions
from aligned_forensics.threshold import detection_metrics, rates_at, select_threshold


@dataclass(frozen=True)
class EvaluateConfig:
    """params.yaml `evaluate`."""

    scoring: ScoringOptions = field(default_factory=ScoringOptions)
    device: Literal["auto", "cpu", "cuda"] = "auto"

    def __post_init__(self) -> None:
        self.scoring.check("evaluate.scoring")


def tpr_at_fpr(labels: np.ndarray, scores: np.ndarray, target_fpr: float) -> float:
    """The largest fraction of fakes caught while at most `target_fpr` of reals are called fake."""
    threshold = select_threshold(labels, scores, criterion="fpr", target_fpr=target_fpr)
    return rates_at(labels, scores, threshold).tpr


def read_threshold(path: Path) -> float:
    """The calibrated threshold from metrics/threshold.json."""
    if not path.is_file():
        raise UserError(f"{path} not found: run `dvc repro threshold` first")
    return float(json.loads(path.read_text())["threshold"])


def run_evaluate(
    config: EvaluateConfig, *, model_path: Path, test_manifest: Path, threshold_path: Path
) -> tuple[dict[str, Any], ScoredImages]:
    """Return (metrics, the scored test images)."""
    rows = read_csv(test_manifest)
    if not rows:
        raise DataError(f"{test_manifest} has no test pairs: the test split needs reals and their reconstructions")
    threshold = read_threshold(threshold_path)
    device = pick_device(config.device)
    model, payload = load_detector(model_path, device=device)
    crop_size = config.scoring.crop_size or payload["preprocessing"]["train_crop"]
    scored = score_pairs(model, rows, rows, scoring=config.scoring, crop_size=crop_size, device=device)
    metrics = detection_metrics(scored.labels, scored.scores, threshold=threshold)
    metrics |= {"tpr_at_5pct_fpr": tpr_at_fpr(scored.labels, scored.scores, 0.05), "rejected": len(scored.rejects),
                "protocol": config.scoring.protocol}
    return metrics, scored
