"""A batch that runs out of GPU memory is split in halves (simulated), in scoring and in reconstruction alike."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch

from aligned_forensics.autoencoder.autoencoder import build_random_autoencoder
from aligned_forensics.autoencoder.reconstruct import reconstruct_batch
from aligned_forensics.common.errors import UserError
from aligned_forensics.common.images import encode_jpeg
from aligned_forensics.detector.models import create_detector
from aligned_forensics.evaluation.scoring import ScoreItem, score_images

SIZES = [(40, 48)] * 7 + [(32, 32)] * 3  # (height, width): a batch of 7 and one of 3 at batch_size 8


class LimitedMemory(torch.nn.Module):
    """Wraps a model; a forward on more than `limit` images raises the OutOfMemoryError CUDA would."""

    def __init__(self, model: torch.nn.Module, limit: int) -> None:
        super().__init__()
        self.model, self.limit, self.batches = model, limit, []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if len(x) > self.limit:
            raise torch.OutOfMemoryError(f"CUDA out of memory. Tried to allocate for {len(x)} images")
        self.batches.append(len(x))
        return self.model(x)


@pytest.fixture(scope="module")
def items(tmp_path_factory) -> list[ScoreItem]:
    folder = tmp_path_factory.mktemp("oom")
    rng = np.random.default_rng(0)
    items = []
    for index, (height, width) in enumerate(SIZES):
        path = folder / f"{index}.jpg"
        path.write_bytes(encode_jpeg(rng.integers(0, 256, (height, width, 3), dtype=np.uint8), quality=90))
        items.append(ScoreItem(str(path), height, width))
    return items


def score(model: torch.nn.Module, items: list[ScoreItem], stage: str = "evaluate:test") -> np.ndarray:
    scores, rejects = score_images(model, items, protocol="full", crop_size=0, batch_size=8,
                                   device=torch.device("cpu"), stage=stage)
    assert rejects == []
    return scores


@pytest.mark.parametrize("limit", [1, 2, 3])
def test_a_scoring_batch_that_runs_out_of_memory_is_split_and_scores_as_unsplit(items, limit, caplog):
    detector = create_detector("res18", pretrained="none", seed=0).eval()
    unsplit = score(detector, items)
    limited = LimitedMemory(detector, limit)
    with caplog.at_level(logging.WARNING):
        split = score(limited, items)
    np.testing.assert_allclose(split, unsplit, rtol=0, atol=1e-5)  # batched kernels may round the last bit
    assert max(limited.batches) <= limit and sum(limited.batches) == len(items)
    assert "splitting it (lower evaluate.scoring.batch_size)" in caplog.text


@pytest.mark.parametrize(("stage", "param"), [("threshold", "threshold.scoring.batch_size"),
                                              ("predict", "predict --batch-size")])
def test_one_image_that_does_not_fit_names_its_size_and_the_batch_size_setting(items, stage, param):
    with pytest.raises(UserError) as error:
        score(LimitedMemory(create_detector("res18", pretrained="none", seed=0).eval(), 0), items, stage=stage)
    assert "one 32x32 image" in str(error.value) and param in str(error.value)  # the smaller size comes first
    assert "device: cpu" in str(error.value)


def test_a_reconstruction_batch_that_runs_out_of_memory_is_split_with_the_same_bytes(tmp_path: Path):
    autoencoder = build_random_autoencoder(seed=1, channels=(8, 8, 8, 8), latent_channels=4).eval()
    pixels = torch.from_numpy(np.random.default_rng(1).integers(0, 256, (5, 3, 24, 32), dtype=np.uint8))
    seeds = [11, 12, 13, 14, 15]
    whole = reconstruct_batch(autoencoder, pixels, seeds=seeds, sample="sample", per_image=True)
    real_encode, sizes = autoencoder.encode, []

    def limited_encode(x, *args, **kwargs):
        if len(x) > 1:
            raise torch.OutOfMemoryError("CUDA out of memory")
        sizes.append(len(x))
        return real_encode(x, *args, **kwargs)

    autoencoder.encode = limited_encode
    split = reconstruct_batch(autoencoder, pixels, seeds=seeds, sample="sample")
    assert sizes == [1] * 5 and torch.equal(split, whole)  # one image per forward: exactly per_image's bytes
