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


def _brute_force(labels, scores, objective, *, lower_fpr_first=False):
    """Try every candidate threshold one by one. Ties: (for fpr) the lower FPR, then the threshold closest to
    0, then at equal distance the larger threshold."""
    best, best_key = None, None
    for threshold in candidate_thresholds(scores):
        rates = rates_at(labels, scores, threshold)
        value = objective(rates)
        if value is None:
            continue
        key = (value, -(1 - rates.tnr) if lower_fpr_first else 0.0, -abs(threshold), threshold)
        if best_key is None or _better(key, best_key):
            best, best_key = threshold, key
    return best


def _better(key, other, tolerance=1e-12):
    """Lexicographically larger, each rate compared within `tolerance`."""
    for mine, theirs in zip(key, other, strict=True):
        if mine > theirs + tolerance:
            return True
        if mine < theirs - tolerance:
            return False
    return False


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
@pytest.mark.parametrize("ties", [False, True])
def test_fpr_target_matches_brute_force(seed, target, ties):
    labels, scores = _synthetic(seed, ties=ties)
    threshold = select_threshold(labels, scores, criterion="fpr", target_fpr=target)
    expected = _brute_force(labels, scores, lambda r: r.tpr if 1 - r.tnr <= target + 1e-12 else None,
                            lower_fpr_first=True)
    assert threshold == pytest.approx(expected)
    assert 1 - rates_at(labels, scores, threshold).tnr <= target + 1e-12


def test_fpr_prefers_fewer_false_positives_at_the_same_tpr_over_closeness_to_zero():
    """At 0.15 and at 0.6 every fake is caught; 0.15 is closer to 0 but calls the real at 0.2 fake."""
    labels, scores = np.array([0, 0, 0, 1, 1]), np.array([-2.0, 0.1, 0.2, 1.0, 2.0])
    threshold = select_threshold(labels, scores, criterion="fpr", target_fpr=1 / 3)
    assert threshold == pytest.approx(0.6)
    assert rates_at(labels, scores, threshold) == rates_at(labels, scores, 0.6)
    assert (rates_at(labels, scores, threshold).tpr, rates_at(labels, scores, threshold).tnr) == (1.0, 1.0)
    assert threshold == pytest.approx(_brute_force(labels, scores, lambda r: r.tpr if 1 - r.tnr <= 1 / 3 + 1e-12
                                                   else None, lower_fpr_first=True))


@pytest.mark.parametrize(("criterion", "labels", "scores", "expected"), [
    ("bacc", [0, 1, 0, 1], [-5.0, -0.4, 0.4, 5.0], 2.7),  # -2.7 and 2.7: bacc 0.75 (0: only 0.5)
    ("eer", [0, 0, 0, 1, 1, 1], [-2.0, -3.0, -0.5, -0.5, 3.0, 3.5], 1.25),  # -1.25 and 1.25: |FPR - FNR| 1/3
])
def test_at_equal_distance_from_zero_the_larger_threshold_wins(criterion, labels, scores, expected):
    labels, scores = np.array(labels), np.array(scores)
    assert -expected in candidate_thresholds(scores) and expected in candidate_thresholds(scores)
    objective = (lambda r: r.bacc) if criterion == "bacc" else (lambda r: -abs((1 - r.tnr) - (1 - r.tpr)))
    assert objective(rates_at(labels, scores, -expected)) == pytest.approx(objective(rates_at(labels, scores,
                                                                                              expected)))
    threshold = select_threshold(labels, scores, criterion=criterion)
    assert threshold == pytest.approx(expected) == _brute_force(labels, scores, objective)


@pytest.mark.parametrize("seed", range(20))
def test_crafted_ties_on_a_small_grid_match_brute_force(seed):
    """Integer scores on a small grid: many thresholds share a TPR, an FPR or a distance to 0."""
    rng = np.random.default_rng(100 + seed)
    labels = np.array([0] * 7 + [1] * 7)
    scores = rng.integers(-4, 5, 14).astype(float)
    scores[0], scores[-1] = -4.0, 4.0  # both classes present, grid symmetric around 0
    for target in (0.0, 1 / 7, 2 / 7, 0.5):
        expected = _brute_force(labels, scores, lambda r, t=target: r.tpr if 1 - r.tnr <= t + 1e-12 else None,
                                lower_fpr_first=True)
        assert select_threshold(labels, scores, criterion="fpr", target_fpr=target) == pytest.approx(expected)
    assert select_threshold(labels, scores, criterion="bacc") == pytest.approx(
        _brute_force(labels, scores, lambda r: r.bacc))
    assert select_threshold(labels, scores, criterion="eer") == pytest.approx(
        _brute_force(labels, scores, lambda r: -abs((1 - r.tnr) - (1 - r.tpr))))


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
