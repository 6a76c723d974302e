from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, balanced_accuracy_score, roc_auc_score

from aligned_forensics.common.errors import DataError
from aligned_forensics.detector.metrics import candidate_thresholds, detection_metrics, rates_at, select_threshold
from aligned_forensics.detector.metrics import detection_at_false_alarm as tpr_at_fpr


def _synthetic(seed: int, n_real: int = 60, n_fake: int = 40, ties: bool = False):
    rng = np.random.default_rng(seed)
    scores = np.concatenate([rng.normal(-1, 1.2, n_real), rng.normal(1, 1.0, n_fake)])
    if ties:
        scores = np.round(scores, 1)
    return np.array([0] * n_real + [1] * n_fake), scores


def _brute_force(labels, scores, objective):
    """Try every candidate threshold one by one; ties to the threshold closest to 0."""
    best, best_value = None, None
    for threshold in candidate_thresholds(scores):
        rates = rates_at(labels, scores, threshold)
        value = objective(rates)
        if value is None:
            continue
        if best_value is None or value > best_value + 1e-12 or (
                abs(value - best_value) <= 1e-12 and abs(threshold) < abs(best)):
            best, best_value = threshold, value
    return best


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("ties", [False, True])
def test_bacc_matches_brute_force_and_sklearn(seed, ties):
    labels, scores = _synthetic(seed, ties=ties)
    threshold = select_threshold(labels, scores, criterion="bacc")
    assert threshold == pytest.approx(_brute_force(labels, scores, lambda r: r.bacc))
    predicted = (scores > threshold).astype(int)
    best = max(balanced_accuracy_score(labels, (scores > t).astype(int)) for t in candidate_thresholds(scores))
    assert balanced_accuracy_score(labels, predicted) == pytest.approx(best)


@pytest.mark.parametrize("seed", range(6))
def test_eer_matches_brute_force(seed):
    labels, scores = _synthetic(seed)
    threshold = select_threshold(labels, scores, criterion="eer")
    assert threshold == pytest.approx(_brute_force(labels, scores, lambda r: -abs((1 - r.tnr) - (1 - r.tpr))))


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("target", [0.0, 0.05, 0.2])
def test_fpr_target_matches_brute_force(seed, target):
    labels, scores = _synthetic(seed)
    threshold = select_threshold(labels, scores, criterion="fpr", target_fpr=target)
    expected = _brute_force(labels, scores, lambda r: r.tpr if 1 - r.tnr <= target + 1e-12 else None)
    assert threshold == pytest.approx(expected)
    assert 1 - rates_at(labels, scores, threshold).tnr <= target + 1e-12


def test_fixed_threshold_is_returned_as_is():
    labels, scores = _synthetic(0)
    assert select_threshold(labels, scores, criterion="fixed", fixed=0.7) == 0.7


@pytest.mark.parametrize("seed", range(4))
def test_metrics_equal_sklearn(seed):
    labels, scores = _synthetic(seed)
    metrics = detection_metrics(labels, scores, threshold=0.3)
    assert metrics["ap"] == pytest.approx(average_precision_score(labels, scores))
    assert metrics["auc"] == pytest.approx(roc_auc_score(labels, scores))
    assert metrics["bacc"] == pytest.approx(balanced_accuracy_score(labels, (scores > 0.3).astype(int)))
    assert metrics["bacc_at_0"] == pytest.approx(balanced_accuracy_score(labels, (scores > 0).astype(int)))
    assert metrics["real_acc"] == pytest.approx(np.mean(scores[labels == 0] <= 0.3))
    assert metrics["fake_acc"] == pytest.approx(np.mean(scores[labels == 1] > 0.3))


@pytest.mark.parametrize("seed", range(4))
def test_tpr_at_fpr_matches_brute_force(seed):
    labels, scores = _synthetic(seed)
    best = max(rates_at(labels, scores, t).tpr for t in candidate_thresholds(scores)
               if 1 - rates_at(labels, scores, t).tnr <= 0.05 + 1e-12)
    assert tpr_at_fpr(labels, scores, 0.05) == pytest.approx(best)


def test_one_class_or_nan_scores_fail_loudly():
    with pytest.raises(DataError, match="both real and fake"):
        select_threshold(np.zeros(4), np.arange(4.0), criterion="bacc")
    with pytest.raises(DataError, match="NaN or infinite"):
        detection_metrics(np.array([0, 1]), np.array([0.1, np.nan]), threshold=0.0)
