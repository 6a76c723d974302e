"""The threshold stage: score a seeded subset of validation reals and fakes, pick the decision threshold."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from aligned_forensics.common.devices import pick_device
from aligned_forensics.common.image_sets import ResolvedSet, ScoreItem, ValidationSet, resolve_validation
from aligned_forensics.common.io import file_sha256, write_csv
from aligned_forensics.common.params import require
from aligned_forensics.common.sampling import seeded_subset
from aligned_forensics.common.watch import NOTHING_OUTSIDE, check_watched
from aligned_forensics.detector.checkpoints import load_detector
from aligned_forensics.detector.metrics import Criterion, detection_metrics, select_threshold
from aligned_forensics.evaluation.scoring import ScoringOptions, score_images

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
    validation: ValidationSet = field(default_factory=ValidationSet)  # "" everywhere = the manifest's val pairs
    watch: str = NOTHING_OUTSIDE  # the outside folder/archive it reads, a DVC dependency (common/watch.py)

    def __post_init__(self) -> None:
        require(self.n_per_class >= 1, "threshold.n_per_class", "an integer >= 1", self.n_per_class)
        require(0 <= self.target_fpr <= 1, "threshold.target_fpr", "a rate in [0, 1]", self.target_fpr)
        self.scoring.check("threshold.scoring")
        self.validation.check("threshold.validation")


@dataclass(frozen=True)
class ScoredImages:
    """Detector scores for a set of reals and fakes; undecodable images are left out and listed."""

    paths: list[str]
    labels: np.ndarray  # (N,) 0 real, 1 fake
    scores: np.ndarray  # (N,) logits, finite
    rejects: list[dict[str, str]]
    matched: np.ndarray | None = None  # (N,) logits with the format cue removed (format_match.py); NaN: unmatched

    def table(self, threshold: float) -> list[dict[str, Any]]:
        """Rows for scores.csv: path, label, logit, P(fake), decision at `threshold` (and the format-matched
        logit, blank where unmatched, when scored so)."""
        probability = 1.0 / (1.0 + np.exp(-self.scores))
        rows = [{"path": path, "label": "fake" if label else "real", "logit": f"{score:.6f}",
                 "probability_fake": f"{p:.6f}", "called": "fake" if score > threshold else "real"}
                for path, label, score, p in zip(self.paths, self.labels, self.scores, probability, strict=True)]
        if self.matched is not None:
            for row, value in zip(rows, self.matched, strict=True):
                row["logit_matched"] = f"{value:.6f}" if np.isfinite(value) else ""
        return rows

    def columns(self) -> tuple[str, ...]:
        """The columns of table()."""
        return SCORE_COLUMNS if self.matched is None else (*SCORE_COLUMNS, "logit_matched")


SCORE_COLUMNS = ("path", "label", "logit", "probability_fake", "called")


def write_scores(folder: Path, scored: ScoredImages, *, threshold: float) -> None:
    """folder/scores.csv (one row per image) and folder/rejects.csv (images that could not be scored)."""
    write_csv(folder / "scores.csv", scored.table(threshold), scored.columns())
    write_csv(folder / "rejects.csv", scored.rejects, ("path", "stage", "reason"))


def score_pairs(
    model: Any, reals: list[ScoreItem], fakes: list[ScoreItem], *, scoring: ScoringOptions, crop_size: int,
    device: Any, rejects: list[dict[str, str]] = (),
) -> ScoredImages:
    """Score `reals` and `fakes`; `rejects` are files already refused (unreadable headers)."""
    items = reals + fakes
    scores, decode_rejects = score_images(model, items, protocol=scoring.protocol, crop_size=crop_size,
                                          batch_size=scoring.batch_size, device=device, stage="threshold")
    labels = np.array([0] * len(reals) + [1] * len(fakes))
    kept = np.isfinite(scores)
    return ScoredImages([item.path for item, keep in zip(items, kept, strict=True) if keep], labels[kept],
                        scores[kept], sorted([*rejects, *decode_rejects], key=lambda r: r["path"]))


def calibration_items(
    validation: ResolvedSet, *, n_per_class: int, seed: int
) -> tuple[list[ScoreItem], list[ScoreItem]]:
    """Seeded subsets of the validation reals and, drawn independently, of its fakes (n_per_class each)."""
    reals = seeded_subset(validation.reals, n_per_class, seed=seed, stream=0)
    fakes = seeded_subset(validation.fakes, n_per_class, seed=seed, stream=1)  # independent of the reals
    if len(reals) < n_per_class or len(fakes) < n_per_class:
        log.warning("only %d real and %d fake validation images: calibrating on all of them instead of %d each",
                    len(reals), len(fakes), n_per_class)
    return reals, fakes


def run_threshold(
    config: ThresholdConfig, *, model_path: Path, val_manifest: Path, cache: Path | None = None,
    arch: str | None = None,
) -> tuple[dict[str, Any], ScoredImages]:
    """Return (metrics for threshold.json, the scored validation images); `cache` holds downloaded archives,
    `arch` is the architecture of a model file that records none."""
    check_watched([("threshold.validation", path, config.validation.checksum) for path in config.validation.paths()],
                  watch=config.watch, section="threshold")
    validation = resolve_validation(config.validation, val_manifest=val_manifest, cache=cache, stage="threshold")
    reals, fakes = calibration_items(validation, n_per_class=config.n_per_class, seed=config.seed)
    device = pick_device(config.device)
    model, payload = load_detector(model_path, device=device, arch=arch)
    crop_size = config.scoring.crop_size or payload["preprocessing"]["train_crop"]
    scored = score_pairs(model, reals, fakes, scoring=config.scoring, crop_size=crop_size, device=device,
                         rejects=validation.rejects)
    threshold = select_threshold(scored.labels, scored.scores, criterion=config.criterion,
                                 target_fpr=config.target_fpr, fixed=config.fixed)
    metrics = detection_metrics(scored.labels, scored.scores, threshold=threshold)
    result = {"threshold": threshold, "criterion": config.criterion, "n_real": metrics["n_real"],
              "n_fake": metrics["n_fake"], "n_requested_per_class": config.n_per_class, "rejected": len(scored.rejects),
              "bacc": metrics["bacc"], "tpr": metrics["fake_acc"], "tnr": metrics["real_acc"], "ap": metrics["ap"],
              "auc": metrics["auc"], "bacc_at_0": metrics["bacc_at_0"], "protocol": config.scoring.protocol,
              "validation": "manifest val pairs" if not config.validation.unpaired else
              " + ".join(config.validation.paths()),
              "model_sha256": file_sha256(model_path)}  # predict uses this threshold only for this very file
    return result, scored
