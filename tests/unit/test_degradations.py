"""Sweep degradations: the square bicubic resize is the paper's (torchvision's Resize on a PIL image)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from torchvision.transforms import InterpolationMode, Resize

from aligned_forensics.common.errors import ParamsError
from aligned_forensics.common.params import build_config
from aligned_forensics.evaluation.degradations import Degradation
from aligned_forensics.evaluation.evaluate import EvaluateConfig


@pytest.fixture
def photo() -> np.ndarray:
    """A 60 x 90 image with structure at every scale (a smooth ramp plus noise)."""
    rng = np.random.default_rng(3)
    ramp = np.linspace(0, 200, 90)[None, :, None] + np.linspace(0, 50, 60)[:, None, None]
    return np.clip(ramp + rng.normal(0, 20, (60, 90, 3)), 0, 255).astype(np.uint8)


@pytest.mark.parametrize("side", [32, 64, 128])
def test_resize_square_is_the_authors_bicubic_antialiased_square(photo, side):
    level = Degradation("resize_square", side)
    expected = np.asarray(Resize((side, side), interpolation=InterpolationMode.BICUBIC, antialias=True)(
        Image.fromarray(photo)))
    out = level.apply(photo)
    assert out.shape == (side, side, 3) and level.output_size(60, 90) == (side, side)
    assert np.array_equal(out, expected)
    assert level.label == f"resize_square-{side}"


def test_resize_keeps_the_aspect_ratio_and_differs_from_the_square(photo):
    level = Degradation("resize", 0.5)
    assert level.apply(photo).shape == (30, 45, 3) == (*level.output_size(60, 90), 3)
    assert Degradation("resize_square", 45).apply(photo).shape == (45, 45, 3)


def test_sweep_levels_and_checks():
    config = build_config(EvaluateConfig, {"sweeps": {"test_set": "test", "resize": [0.5],
                                                      "resize_square": [256, 512]}}, section="evaluate")
    assert [level.label for level in config.sweeps.levels()] == ["resize-0.5", "resize_square-256",
                                                                  "resize_square-512"]
    with pytest.raises(ParamsError, match="evaluate.sweeps.resize_square"):
        build_config(EvaluateConfig, {"sweeps": {"test_set": "test", "resize_square": [4]}}, section="evaluate")
