"""The evaluate stage: every test set scored at the calibrated threshold and at logit 0, plus robustness sweeps."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from aligned_forensics.common.devices import pick_device
from aligned_forensics.common.errors import DataError, UserError
from aligned_forensics.common.params import require
from aligned_forensics.detector.checkpoints import load_detector
from aligned_forensics.detector.metrics import detection_metrics, rates_at, select_threshold
from aligned_forensics.evaluation.degradations import NO_DEGRADATION, Degradation
from aligned_forensics.evaluation.scoring import ScoreItem, ScoringOptions, score_images
from aligned_forensics.evaluation.test_sets import TestSet, reject_stage, resolve_test_set
from aligned_forensics.evaluation.threshold import ScoredImages

AVERAGED = ("ap", "auc", "real_acc", "fake_acc", "bacc", "real_acc_at_0", "fake_acc_at_0", "bacc_at_0",
            "tpr_at_5pct_fpr")


@dataclass(frozen=True)
class SweepConfig:
    """params.yaml `evaluate.sweeps`: post-processing levels applied to one test set before scoring."""

    test_set: str = ""  # the set to sweep; "" = no sweeps
    jpeg: tuple[int, ...] = ()  # JPEG qualities
    webp: tuple[int, ...] = ()  # WebP qualities
    resize: tuple[float, ...] = ()  # aspect-preserving scale factors, e.g. 0.25 .. 2 (bilinear)
    resize_square: tuple[int, ...] = ()  # square sides in pixels, bicubic, aspect not kept: the paper's Fig. 2

    def levels(self) -> list[Degradation]:
        return ([Degradation("jpeg", q) for q in self.jpeg] + [Degradation("webp", q) for q in self.webp]
                + [Degradation("resize", f) for f in self.resize]
                + [Degradation("resize_square", side) for side in self.resize_square])


@dataclass(frozen=True)
class EvaluateConfig:
    """params.yaml `evaluate`."""

    scoring: ScoringOptions = field(default_factory=ScoringOptions)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    test_sets: tuple[TestSet, ...] = (TestSet(name="test", split="test"),)
    sweeps: SweepConfig = field(default_factory=SweepConfig)

    def __post_init__(self) -> None:
        self.scoring.check("evaluate.scoring")
        for index, test_set in enumerate(self.test_sets):
            test_set.check(f"evaluate.test_sets[{index}]")
        names = [test_set.name for test_set in self.test_sets]
        require(len(names) >= 1 and len(set(names)) == len(names), "evaluate.test_sets",
                "at least one set, names unique", names)
        require(not self.sweeps.test_set or self.sweeps.test_set in names, "evaluate.sweeps.test_set",
                f"one of {names} (or '' for no sweeps)", self.sweeps.test_set)
        require(all(1 <= q <= 100 for q in (*self.sweeps.jpeg, *self.sweeps.webp)), "evaluate.sweeps.jpeg/webp",
                "qualities in 1..100", (self.sweeps.jpeg, self.sweeps.webp))
        require(all(0 < f <= 8 for f in self.sweeps.resize), "evaluate.sweeps.resize", "factors in (0, 8]",
                self.sweeps.resize)
        require(all(8 <= side <= 8192 for side in self.sweeps.resize_square), "evaluate.sweeps.resize_square",
                "square sides in pixels, 8..8192", self.sweeps.resize_square)


def tpr_at_fpr(labels: np.ndarray, scores: np.ndarray, target_fpr: float) -> float:
    """The largest fraction of fakes caught while at most `target_fpr` of reals are called fake."""
    threshold = select_threshold(labels, scores, criterion="fpr", target_fpr=target_fpr)
    return rates_at(labels, scores, threshold).tpr


def read_threshold(path: Path) -> float:
    """The calibrated threshold from metrics/threshold.json."""
    if not path.is_file():
        raise UserError(f"{path} not found: run `dvc repro threshold` first")
    return float(json.loads(path.read_text())["threshold"])


def set_metrics(scored: ScoredImages, *, threshold: float, rejected: int) -> dict[str, Any]:
    """The per-set numbers: detection metrics at the threshold and at 0, TPR at 5% FPR, mean P(fake) per class."""
    metrics = detection_metrics(scored.labels, scored.scores, threshold=threshold)
    probability = 1.0 / (1.0 + np.exp(-scored.scores))
    return metrics | {"tpr_at_5pct_fpr": tpr_at_fpr(scored.labels, scored.scores, 0.05), "rejected": rejected,
                      "mean_p_fake_real": float(probability[scored.labels == 0].mean()),
                      "mean_p_fake_fake": float(probability[scored.labels == 1].mean())}


def run_evaluate(config: EvaluateConfig, *, model_path: Path, manifest_dir: Path, threshold_path: Path,
                 arch: str | None = None) -> tuple[dict[str, Any], dict[str, ScoredImages], dict[str, dict[str, Any]]]:
    """Return (metrics: averaged + per set, scored images per set, sweep metrics per level label).

    `arch` is the architecture of a model file that records none (a released checkpoint)."""
    threshold = read_threshold(threshold_path)
    device = pick_device(config.device)
    model, payload = load_detector(model_path, device=device, arch=arch)
    crop_size = config.scoring.crop_size or payload["preprocessing"]["train_crop"]

    def score(reals: list[ScoreItem], fakes: list[ScoreItem], test_set: TestSet, degradation: Degradation
              ) -> ScoredImages:
        items = reals + fakes
        desc = test_set.name if degradation == NO_DEGRADATION else f"{test_set.name} {degradation.label}"
        scores, rejects = score_images(model, items, protocol=config.scoring.protocol, crop_size=crop_size,
                                       batch_size=config.scoring.batch_size, device=device,
                                       stage=reject_stage(test_set), desc=desc, degradation=degradation)
        labels = np.array([0] * len(reals) + [1] * len(fakes))
        kept = np.isfinite(scores)
        return ScoredImages([item.path for item, keep in zip(items, kept, strict=True) if keep], labels[kept],
                            scores[kept], rejects)

    per_set, scored_sets, sweeps = {}, {}, {}
    for test_set in config.test_sets:
        reals, fakes, rejects = resolve_test_set(test_set, manifest_dir=manifest_dir)
        scored = score(reals, fakes, test_set, NO_DEGRADATION)
        scored = ScoredImages(scored.paths, scored.labels, scored.scores,
                              sorted(rejects + scored.rejects, key=lambda r: r["path"]))
        for label, kind in ((0, "real"), (1, "fake")):
            if not (scored.labels == label).any():
                raise DataError(f"test set '{test_set.name}': none of its {kind} images could be scored "
                                f"({len(scored.rejects)} rejected, e.g. {scored.rejects[:1]})")
        scored_sets[test_set.name] = scored
        per_set[test_set.name] = set_metrics(scored, threshold=threshold, rejected=len(scored.rejects))
        if test_set.name == config.sweeps.test_set:
            for level in config.sweeps.levels():
                degraded = score(reals, fakes, test_set, level)
                sweeps[level.label] = {"kind": level.kind, "level": level.level,
                                       **set_metrics(degraded, threshold=threshold, rejected=len(degraded.rejects))}
    mean = {key: float(np.mean([metrics[key] for metrics in per_set.values()])) for key in AVERAGED}
    totals = {key: sum(metrics[key] for metrics in per_set.values()) for key in ("n_real", "n_fake", "rejected")}
    summary = {"threshold": threshold, "protocol": config.scoring.protocol, **mean, **totals, "sets": per_set}
    return summary, scored_sets, sweeps
