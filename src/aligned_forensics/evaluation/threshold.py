"""The threshold stage: score a seeded subset of validation reals and fakes, pick the decision threshold."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from aligned_forensics.common.devices import pick_device
from aligned_forensics.common.errors import DataError
from aligned_forensics.common.io import read_csv, write_csv
from aligned_forensics.common.params import require
from aligned_forensics.common.sampling import seeded_subset
from aligned_forensics.detector.checkpoints import file_sha256, load_detector
from aligned_forensics.detector.metrics import Criterion, detection_metrics, select_threshold
from aligned_forensics.evaluation.scoring import ScoreItem, ScoringOptions, score_images

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ThresholdConfig:
    """params.yaml `threshold`."""

    n_per_class: int = 5000  # validation reals and fakes scored (each); fewer available -> all, recorded
    seed: int = 0
    criterion: Criterion = "bacc"
    target_fpr: float = 0.05  # criterion fpr: the largest TPR whose FPR on reals is at most this
    fixed: float = 0.0  # criterion fixed: this logit
    scoring: ScoringOptions = field(default_factory=ScoringOptions)
    device: Literal["auto", "cpu", "cuda"] = "auto"

    def __post_init__(self) -> None:
        require(self.n_per_class >= 1, "threshold.n_per_class", "an integer >= 1", self.n_per_class)
        require(0 <= self.target_fpr <= 1, "threshold.target_fpr", "a rate in [0, 1]", self.target_fpr)
        self.scoring.check("threshold.scoring")


def manifest_items(rows: list[dict[str, str]], column: Literal["real_path", "fake_path"]) -> list[ScoreItem]:
    """One ScoreItem per manifest row for its real or fake image."""
    return [ScoreItem(row[column], int(row["height"]), int(row["width"])) for row in rows]


@dataclass(frozen=True)
class ScoredImages:
    """Detector scores for a set of reals and fakes; undecodable images are left out and listed."""

    paths: list[str]
    labels: np.ndarray  # (N,) 0 real, 1 fake
    scores: np.ndarray  # (N,) logits, finite
    rejects: list[dict[str, str]]

    def table(self, threshold: float) -> list[dict[str, Any]]:
        """Rows for scores.csv: path, label, logit, P(fake), decision at `threshold`."""
        probability = 1.0 / (1.0 + np.exp(-self.scores))
        return [{"path": path, "label": "fake" if label else "real", "logit": f"{score:.6f}",
                 "probability_fake": f"{p:.6f}", "called": "fake" if score > threshold else "real"}
                for path, label, score, p in zip(self.paths, self.labels, self.scores, probability, strict=True)]


SCORE_COLUMNS = ("path", "label", "logit", "probability_fake", "called")


def write_scores(folder: Path, scored: ScoredImages, *, threshold: float) -> None:
    """folder/scores.csv (one row per image) and folder/rejects.csv (images that could not be scored)."""
    write_csv(folder / "scores.csv", scored.table(threshold), SCORE_COLUMNS)
    write_csv(folder / "rejects.csv", scored.rejects, ("path", "stage", "reason"))


def score_pairs(
    model: Any, real_rows: list[dict[str, str]], fake_rows: list[dict[str, str]], *, scoring: ScoringOptions,
    crop_size: int, device: Any,
) -> ScoredImages:
    """Score the reals of `real_rows` and the fakes of `fake_rows`."""
    items = manifest_items(real_rows, "real_path") + manifest_items(fake_rows, "fake_path")
    scores, rejects = score_images(model, items, protocol=scoring.protocol, crop_size=crop_size,
                                   batch_size=scoring.batch_size, device=device, stage="threshold")
    labels = np.array([0] * len(real_rows) + [1] * len(fake_rows))
    kept = np.isfinite(scores)
    return ScoredImages([item.path for item, keep in zip(items, kept, strict=True) if keep], labels[kept],
                        scores[kept], sorted(rejects, key=lambda r: r["path"]))


def calibration_rows(
    val_manifest: Path, *, n_per_class: int, seed: int
) -> tuple[list[dict[str, str]], list[dict[str, str]]]:
    """Seeded subsets of the validation pairs: (rows whose real is used, rows whose fake is used)."""
    rows = read_csv(val_manifest)
    if not rows:
        raise DataError(f"{val_manifest} has no validation pairs")
    real_rows = seeded_subset(rows, n_per_class, seed=seed, stream=0)
    fake_rows = seeded_subset(rows, n_per_class, seed=seed, stream=1)  # independent of the reals
    if len(rows) < n_per_class:
        log.warning("only %d validation pairs: calibrating on %d reals + %d fakes instead of %d each",
                    len(rows), len(real_rows), len(fake_rows), n_per_class)
    return real_rows, fake_rows


def run_threshold(
    config: ThresholdConfig, *, model_path: Path, val_manifest: Path, arch: str | None = None
) -> tuple[dict[str, Any], ScoredImages]:
    """Return (metrics for threshold.json, the scored validation images); `arch` for a file that records none."""
    real_rows, fake_rows = calibration_rows(val_manifest, n_per_class=config.n_per_class, seed=config.seed)
    device = pick_device(config.device)
    model, payload = load_detector(model_path, device=device, arch=arch)
    crop_size = config.scoring.crop_size or payload["preprocessing"]["train_crop"]
    scored = score_pairs(model, real_rows, fake_rows, scoring=config.scoring, crop_size=crop_size, device=device)
    threshold = select_threshold(scored.labels, scored.scores, criterion=config.criterion,
                                 target_fpr=config.target_fpr, fixed=config.fixed)
    metrics = detection_metrics(scored.labels, scored.scores, threshold=threshold)
    result = {"threshold": threshold, "criterion": config.criterion, "n_real": metrics["n_real"],
              "n_fake": metrics["n_fake"], "n_requested_per_class": config.n_per_class, "rejected": len(scored.rejects),
              "bacc": metrics["bacc"], "tpr": metrics["fake_acc"], "tnr": metrics["real_acc"], "ap": metrics["ap"],
              "auc": metrics["auc"], "bacc_at_0": metrics["bacc_at_0"], "protocol": config.scoring.protocol,
              "model_sha256": file_sha256(model_path)}  # predict uses this threshold only for this very file
    return result, scored
