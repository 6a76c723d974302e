"""One chart per set for every detector: ROC curves resampled onto one FPR grid."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.metrics import roc_curve

from aligned_forensics.common.figures import roc_points
from aligned_forensics.evaluation.compare import GRID, comparison_rows, tpr_on_grid, write_comparisons


def brute_force_tpr(labels: np.ndarray, scores: np.ndarray, fpr_limit: float) -> float:
    """The best TPR over every threshold whose FPR does not exceed the limit."""
    best = 0.0
    for threshold in np.concatenate([[np.inf], np.unique(scores)]):
        called = scores >= threshold
        fpr = called[labels == 0].mean()
        if fpr <= fpr_limit + 1e-12:
            best = max(best, called[labels == 1].mean())
    return best


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_grid_tpr_is_the_best_tpr_at_or_below_each_fpr(seed):
    rng = np.random.default_rng(seed)
    labels = np.repeat([0, 1], 40)
    scores = np.round(rng.normal(labels * 1.2, 1.0), 1)  # rounded: ties, vertical and diagonal ROC segments
    fpr, tpr, _ = roc_curve(labels, scores, drop_intermediate=False)
    points = [{"fpr": float(f), "tpr": float(t)} for f, t in zip(fpr, tpr, strict=True)]
    on_grid = tpr_on_grid(points)
    for rate, value in zip(GRID[::10], on_grid[::10], strict=True):
        assert value == pytest.approx(brute_force_tpr(labels, scores, rate))


def test_rows_hold_every_curve_and_files_follow_the_metrics_layout(tmp_path):
    labels = np.repeat([0, 1], 10)
    scores = np.linspace(0, 1, 20)
    points = roc_points(labels, scores)
    rows = comparison_rows({"base": points, "stay_positive": points})
    assert len(rows) == len(GRID) and set(rows[0]) == {"fpr", "base", "stay_positive"}
    assert rows[-1]["base"] == 1.0 and rows[0]["fpr"] == 0.0
    metrics = tmp_path / "metrics"
    for folder in (metrics, metrics / "stay_positive"):
        (folder / "threshold").mkdir(parents=True)
        (folder / "eval" / "roc").mkdir(parents=True)
        (folder / "threshold" / "roc.json").write_text(json.dumps(points))
        (folder / "eval" / "roc" / "test.json").write_text(json.dumps(points))
    (metrics / "reference" / "roc").mkdir(parents=True)
    (metrics / "reference" / "roc" / "ratio-test.json").write_text(json.dumps(points))
    names = write_comparisons(metrics, tmp_path / "roc")
    assert names == ["test/test", "validation"]
    test_rows = json.loads((tmp_path / "roc" / "test" / "test.json").read_text())
    assert set(test_rows[0]) == {"fpr", "base", "stay_positive", "reference_ratio"}
    assert set(json.loads((tmp_path / "roc" / "validation.json").read_text())[0]) == {"fpr", "base", "stay_positive"}
