"""Every detector's ROC on one chart per set: the base model, the stay-positive model and the training-free
reference scores, resampled onto one false-positive-rate grid so DVC draws them as lines of one plot."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from aligned_forensics.common.figures import write_points

GRID = np.linspace(0.0, 1.0, 101)  # false-positive rates every 1 %


def tpr_on_grid(points: list[dict[str, float]], grid: np.ndarray = GRID) -> np.ndarray:
    """The ROC as a step function: at each grid FPR, the best TPR reached without exceeding that FPR."""
    fpr = np.array([point["fpr"] for point in points])
    tpr = np.maximum.accumulate(np.array([point["tpr"] for point in points])[np.argsort(fpr, kind="stable")])
    fpr = np.sort(fpr, kind="stable")
    index = np.searchsorted(fpr, grid, side="right") - 1
    return np.where(index >= 0, tpr[np.clip(index, 0, None)], 0.0)


def comparison_rows(curves: dict[str, list[dict[str, float]]]) -> list[dict[str, float]]:
    """One row per grid FPR: {fpr, <curve name>: tpr, …}."""
    columns = {name: tpr_on_grid(points) for name, points in curves.items()}
    return [{"fpr": round(float(rate), 4), **{name: round(float(values[i]), 5) for name, values in columns.items()}}
            for i, rate in enumerate(GRID)]


def set_curves(metrics_dir: Path) -> dict[str, dict[str, list[dict[str, float]]]]:
    """{'validation' | 'test/<set>': {curve name: ROC points}} from whatever the stages wrote."""
    def read(path: Path) -> list[dict[str, float]]:
        return json.loads(path.read_text())

    sets: dict[str, dict[str, Any]] = {"validation": {}}
    for model, folder in (("base", metrics_dir), ("stay_positive", metrics_dir / "stay_positive")):
        if (folder / "threshold" / "roc.json").is_file():
            sets["validation"][model] = read(folder / "threshold" / "roc.json")
        for path in sorted((folder / "eval" / "roc").glob("*.json")):
            sets.setdefault(f"test/{path.stem}", {})[model] = read(path)
    for path in sorted((metrics_dir / "reference" / "roc").glob("*.json")):
        score, _, name = path.stem.partition("-")
        if f"test/{name}" in sets:
            sets[f"test/{name}"][f"reference_{score}"] = read(path)
    return {name: curves for name, curves in sets.items() if curves}


def write_comparisons(metrics_dir: Path, out_dir: Path) -> list[str]:
    """Write out_dir/validation.json and out_dir/test/<set>.json; return their names."""
    sets = set_curves(metrics_dir)
    for name, curves in sets.items():
        write_points(out_dir / f"{name}.json", comparison_rows(curves))
    return sorted(sets)
