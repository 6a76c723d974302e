"""Figures for offline viewing and DVC plots: reconstruction pairs, ROC/PR curve data and PNGs, training curves."""

from __future__ import annotations

import io
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.metrics import precision_recall_curve, roc_curve

from aligned_forensics.common.images import decode_rgb, psnr
from aligned_forensics.common.io import atomic_write_bytes, atomic_write_text

AMPLIFY = 8  # a difference of 32 levels shows at full brightness
MAX_POINTS = 200  # keeps the JSON (tracked in git) small; curves stay visually exact at plot resolution


def pick_pairs(stems: Sequence[str], count: int) -> list[str]:
    """`count` stems spread evenly over the sorted list (deterministic, no seed needed)."""
    ordered = sorted(stems)
    if len(ordered) <= count:
        return ordered
    return [ordered[round(i * (len(ordered) - 1) / (count - 1))] for i in range(count)] if count > 1 else ordered[:1]


def centre_crop(pixels: np.ndarray, side: int) -> np.ndarray:
    """(H, W, C) -> at most (side, side, C) from the centre."""
    height, width = pixels.shape[:2]
    top, left = max(0, (height - side) // 2), max(0, (width - side) // 2)
    return pixels[top:top + side, left:left + side]


def write_pairs_png(path: Path, pairs: Sequence[tuple[str, Path, Path]], *, side: int = 160) -> None:
    """One row per (stem, real, fake): the real, its reconstruction and |real - fake| x AMPLIFY."""
    plt = pyplot()
    figure, axes = plt.subplots(len(pairs), 3, figsize=(7.5, 2.5 * len(pairs)), dpi=80, squeeze=False)
    for row, (stem, real_path, fake_path) in zip(axes, pairs, strict=True):
        real, fake = decode_rgb(real_path), decode_rgb(fake_path)
        difference = np.abs(real.astype(np.int16) - fake.astype(np.int16)).mean(axis=2)  # (H, W)
        panels = (centre_crop(real, side), centre_crop(fake, side),
                  centre_crop(np.clip(difference * AMPLIFY, 0, 255).astype(np.uint8), side))
        titles = (f"real {stem}"[:28], f"reconstruction, {psnr(real, fake):.1f} dB", f"|difference| x{AMPLIFY}")
        for axis, panel, title in zip(row, panels, titles, strict=True):
            axis.imshow(panel, cmap="magma" if panel.ndim == 2 else None, vmin=0, vmax=255, interpolation="nearest")
            axis.set_title(title, fontsize=8)
            axis.axis("off")
    save_figure(figure, path, "")


def pyplot():
    """matplotlib's pyplot on the file-only Agg backend (imported late: only stages that draw pay for it)."""
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    return plt


def save_figure(figure, path: Path, title: str) -> None:
    """Title, tight layout, PNG without a version string (stable bytes), written atomically."""
    if title:
        figure.suptitle(title)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", metadata={"Software": None})
    pyplot().close(figure)
    atomic_write_bytes(path, buffer.getvalue())

def roc_points(labels: np.ndarray, scores: np.ndarray) -> list[dict[str, float]]:
    """[{fpr, tpr, threshold}] with fake as the positive class."""
    fpr, tpr, thresholds = roc_curve(labels, scores, drop_intermediate=True)
    keep = _thin(len(fpr))
    return [{"fpr": round(float(fpr[i]), 5), "tpr": round(float(tpr[i]), 5),
             "threshold": round(float(np.clip(thresholds[i], -1e6, 1e6)), 5)} for i in keep]


def pr_points(labels: np.ndarray, scores: np.ndarray) -> list[dict[str, float]]:
    """[{recall, precision}] with fake as the positive class."""
    precision, recall, _ = precision_recall_curve(labels, scores)
    keep = _thin(len(recall))
    return [{"recall": round(float(recall[i]), 5), "precision": round(float(precision[i]), 5)} for i in keep]


def write_points(path: Path, points: list[dict[str, float]]) -> None:
    """A JSON list of points, the shape `dvc plots` reads."""
    atomic_write_text(path, json.dumps(points, indent=1) + "\n")


def write_curves_png(path: Path, labels: np.ndarray, scores: np.ndarray, *, threshold: float, title: str) -> None:
    """ROC, precision-recall and score histograms side by side, threshold marked."""
    plt = pyplot()
    figure, (roc_axis, pr_axis, hist_axis) = plt.subplots(1, 3, figsize=(13, 4), dpi=80)
    fpr, tpr, _ = roc_curve(labels, scores)
    roc_axis.plot(fpr, tpr)
    roc_axis.plot([0, 1], [0, 1], ":", color="grey")
    roc_axis.set(xlabel="false-positive rate (reals called fake)", ylabel="true-positive rate", title="ROC")
    precision, recall, _ = precision_recall_curve(labels, scores)
    pr_axis.plot(recall, precision)
    pr_axis.set(xlabel="recall (fakes found)", ylabel="precision", title="precision-recall", ylim=(0, 1.02))
    bins = np.linspace(scores.min(), scores.max(), 41)
    hist_axis.hist(scores[labels == 0], bins=bins, alpha=0.6, label="real")
    hist_axis.hist(scores[labels == 1], bins=bins, alpha=0.6, label="fake")
    hist_axis.axvline(threshold, color="black", linestyle="--", label=f"threshold {threshold:.3g}")
    hist_axis.set(xlabel="logit (positive = fake)", ylabel="images", title="scores")
    hist_axis.legend()
    save_figure(figure, path, title)


def write_training_png(path: Path, history: list[dict[str, float]], *, best_epoch: int, title: str) -> None:
    """Training loss and learning rate, validation balanced accuracy / AUC / AP, per epoch."""
    plt = pyplot()
    figure, (loss_axis, val_axis) = plt.subplots(1, 2, figsize=(11, 4), dpi=80)
    epochs = [row["epoch"] for row in history]
    loss_axis.plot(epochs[1:], [row["train_loss"] for row in history[1:]], marker="o", label="train loss")
    loss_axis.set(xlabel="epoch", ylabel="BCE loss", title="training")
    lr_axis = loss_axis.twinx()
    lr_axis.step(epochs, [row["lr"] for row in history], where="post", color="grey", linestyle=":")
    lr_axis.set(ylabel="learning rate (dotted)", yscale="log")
    for key, label in (("val_bacc", "balanced accuracy at logit 0"), ("val_auc", "AUC"), ("val_ap", "AP")):
        val_axis.plot(epochs, [row[key] for row in history], marker="o", label=label)
    val_axis.axvline(best_epoch, color="black", linestyle="--", label=f"best epoch {best_epoch}")
    val_axis.set(xlabel="epoch (0 = before training)", ylabel="validation", title="validation", ylim=(0, 1.02))
    val_axis.legend(loc="lower right")
    save_figure(figure, path, title)


def write_weights_png(path: Path, base_weights: np.ndarray, weights: np.ndarray, ranking: list[dict[str, Any]],
                      *, title: str) -> None:
    """Final-layer weights of the input and the stay-positive model, sorted, and the largest ones."""
    plt = pyplot()
    figure, (sorted_axis, top_axis) = plt.subplots(1, 2, figsize=(12, 4.5), dpi=80)
    sorted_axis.plot(np.sort(base_weights)[::-1], label=f"input model: {int((base_weights < 0).sum())} negative")
    sorted_axis.plot(np.sort(weights)[::-1], label=f"stay-positive: {int((weights == 0).sum())} zero")
    sorted_axis.axhline(0.0, color="grey", linestyle=":")
    sorted_axis.set(xlabel="feature, sorted by weight", ylabel="final-layer weight", title="every weight")
    sorted_axis.legend()
    labels = [f"#{row['feature']}" for row in reversed(ranking)]
    top_axis.barh(labels, [row["weight"] for row in reversed(ranking)], label="stay-positive")
    top_axis.scatter([row["base_weight"] for row in reversed(ranking)], labels, color="black", marker="|", s=200,
                     label="input model")
    top_axis.axvline(0.0, color="grey", linestyle=":")
    top_axis.set(xlabel="weight", ylabel="feature (channel of the last residual map)",
                 title=f"the {len(ranking)} largest weights")
    top_axis.legend(loc="lower right")
    save_figure(figure, path, title)


def _thin(count: int) -> list[int]:
    if count <= MAX_POINTS:
        return list(range(count))
    return sorted(set(np.linspace(0, count - 1, MAX_POINTS).round().astype(int).tolist()))


def write_sweeps_png(path: Path, sweeps: dict[str, dict[str, float]], *, title: str) -> None:
    """Mean P(fake) of reals and of fakes per level, one panel per kind (like the paper's resize figure)."""
    plt = pyplot()
    kinds = sorted({row["kind"] for row in sweeps.values()})
    figure, axes = plt.subplots(1, len(kinds), figsize=(4.5 * len(kinds), 3.6), dpi=80, squeeze=False)
    for axis, kind in zip(axes[0], kinds, strict=True):
        rows = sorted((row for row in sweeps.values() if row["kind"] == kind), key=lambda row: row["level"])
        levels = [row["level"] for row in rows]
        axis.plot(levels, [row["mean_p_fake_fake"] for row in rows], "o-", color="tab:red", label="fakes")
        axis.plot(levels, [row["mean_p_fake_real"] for row in rows], "o-", color="tab:blue", label="reals")
        axis.set(xlabel={"resize": "scale factor (aspect kept)", "resize_square": "square side, pixels",
                               "jpeg": "JPEG quality", "webp": "WebP quality"}[kind],
                 ylabel="mean P(fake)", ylim=(-0.02, 1.02), title=kind)
        axis.grid(alpha=0.3)
        axis.legend(loc="best", fontsize=8)
    save_figure(figure, path, title)
