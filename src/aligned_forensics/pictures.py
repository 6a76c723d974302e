"""A picture of what the autoencoder does: real | reconstruction | amplified difference, a few pairs."""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from aligned_forensics.images import decode_rgb, psnr
from aligned_forensics.io import atomic_write_bytes

AMPLIFY = 8  # a difference of 32 levels shows at full brightness


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
