"""Decision thresholds on detector scores, and the metrics computed at a threshold.

Convention everywhere: label 1 = fake (positive), 0 = real; an image is called fake iff score > threshold.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
from sklearn.metrics import average_precision_score, roc_auc_score

from aligned_forensics.common.errors import DataError

Criterion = Literal["bacc", "eer", "fpr", "fixed"]


@dataclass(frozen=True)
class Rates:
    tpr: float  # fakes called fake (fake accuracy)
    tnr: float  # reals called real (real accuracy)

    @property
    def bacc(self) -> float:
        return (self.tpr + self.tnr) / 2


def rates_at(labels: np.ndarray, scores: np.ndarray, threshold: float) -> Rates:
    """True-positive and true-negative rates when 'fake' means score > threshold."""
    labels, scores = np.asarray(labels), np.asarray(scores)
    predicted_fake = scores > threshold
    return Rates(tpr=float(predicted_fake[labels == 1].mean()), tnr=float((~predicted_fake[labels == 0]).mean()))


def candidate_thresholds(scores: np.ndarray) -> np.ndarray:
    """Every distinct decision: below the minimum, midpoints between consecutive distinct scores, the maximum."""
    distinct = np.unique(scores)
    return np.concatenate([[distinct[0] - 1.0], (distinct[:-1] + distinct[1:]) / 2, [distinct[-1]]])


def sweep_rates(labels: np.ndarray, scores: np.ndarray, thresholds: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(tpr, tnr) arrays for many thresholds at once, O((n + k) log n)."""
    real = np.sort(scores[labels == 0])
    fake = np.sort(scores[labels == 1])
    tnr = np.searchsorted(real, thresholds, side="right") / len(real)
    tpr = 1.0 - np.searchsorted(fake, thresholds, side="right") / len(fake)
    return tpr, tnr


def select_threshold(
    labels: np.ndarray, scores: np.ndarray, *, criterion: Criterion, target_fpr: float = 0.05, fixed: float = 0.0
) -> float:
    """Choose a threshold among the candidate decisions: `bacc` max balanced accuracy, `eer` min |FPR - FNR|,
    `fpr` max TPR with FPR <= target and, among equal TPRs, the lowest FPR; `fixed` the given value.

    Remaining ties go to the threshold closest to 0 (the untrained default) and, at equal distance, to the
    larger one (fewer images called fake)."""
    labels, scores = np.asarray(labels), np.asarray(scores, dtype=np.float64)
    check_scores(labels, scores)
    if criterion == "fixed":
        return float(fixed)
    thresholds = candidate_thresholds(scores)
    tpr, tnr = sweep_rates(labels, scores, thresholds)
    fpr = 1 - tnr
    if criterion == "bacc":
        objectives = [-(tpr + tnr) / 2]
    elif criterion == "eer":
        objectives = [np.abs(fpr - (1 - tpr))]
    elif criterion == "fpr":  # the largest threshold always qualifies (FPR 0), so the set is never empty
        objectives = [np.where(fpr <= target_fpr + 1e-12, -tpr, np.inf), fpr]
    else:
        raise ValueError(f"unknown criterion {criterion!r}")
    best = np.arange(len(thresholds))
    for objective in [*objectives, np.abs(thresholds), -thresholds]:  # lexicographic: each breaks the last's ties
        values = objective[best]
        best = best[np.isclose(values, values.min(), rtol=0, atol=1e-12)]
    return float(thresholds[best[0]])


def check_scores(labels: np.ndarray, scores: np.ndarray) -> None:
    """Both classes present and every score finite, else DataError."""
    if not (labels == 0).any() or not (labels == 1).any():
        raise DataError(f"need both real and fake scores, got {int((labels == 0).sum())} real and "
                        f"{int((labels == 1).sum())} fake")
    if not np.isfinite(scores).all():
        raise DataError(f"{int((~np.isfinite(scores)).sum())} score(s) are NaN or infinite")


def detection_metrics(labels: np.ndarray, scores: np.ndarray, *, threshold: float) -> dict[str, float]:
    """AP and ROC-AUC (threshold-free) plus real/fake/balanced accuracy at `threshold` and at logit 0."""
    labels, scores = np.asarray(labels), np.asarray(scores, dtype=np.float64)
    check_scores(labels, scores)
    calibrated, at_zero = rates_at(labels, scores, threshold), rates_at(labels, scores, 0.0)
    return {
        "ap": float(average_precision_score(labels, scores)),
        "auc": float(roc_auc_score(labels, scores)),
        "threshold": float(threshold),
        "real_acc": calibrated.tnr, "fake_acc": calibrated.tpr, "bacc": calibrated.bacc,
        "real_acc_at_0": at_zero.tnr, "fake_acc_at_0": at_zero.tpr, "bacc_at_0": at_zero.bacc,
        "n_real": int((labels == 0).sum()), "n_fake": int((labels == 1).sum()),
    }


def roc_rates(labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(fpr, tpr) at every distinct decision, from 'nothing is fake' to 'everything is fake'."""
    thresholds = candidate_thresholds(np.asarray(scores, dtype=np.float64))[::-1]
    tpr, tnr = sweep_rates(np.asarray(labels), np.asarray(scores, dtype=np.float64), thresholds)
    return 1.0 - tnr, tpr


def equal_error_rate(labels: np.ndarray, scores: np.ndarray) -> float:
    """Where the ROC polyline meets FPR = FNR (= 1 - TPR), linearly interpolated between its two points."""
    fpr, tpr = roc_rates(labels, scores)
    gap = fpr + tpr - 1.0  # < 0 while FNR > FPR, then >= 0; rises along the curve
    i = int(np.argmax(gap >= 0))  # the first point at or past the crossing (the last point has gap 1)
    if i == 0 or gap[i] == 0:
        return float(fpr[i])
    weight = -gap[i - 1] / (gap[i] - gap[i - 1])  # (0, 1]: how far along segment i-1 -> i the crossing lies
    return float(fpr[i - 1] + weight * (fpr[i] - fpr[i - 1]))


def detection_at_false_alarm(labels: np.ndarray, scores: np.ndarray, far: float) -> float:
    """Pd at a false-alarm rate: the largest fraction of fakes caught while at most `far` of reals are called fake."""
    fpr, tpr = roc_rates(labels, scores)
    return float(tpr[fpr <= far + 1e-12].max())
