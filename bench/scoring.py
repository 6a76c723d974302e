"""Full-image scoring: our size-bucketed batches with read-ahead vs the original's one image at a time.

Same model (res50nodown, random init: speed does not depend on the weights), same images, one run; the
scores must agree. Usage, from the repository root:
    .venv/bin/python bench/scoring.py
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TQDM_DISABLE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from aligned_forensics.common.images import decode_rgb, encode_jpeg  # noqa: E402
from aligned_forensics.data.sources.samples import SAMPLE_PHOTOS, bundled_photo_path  # noqa: E402
from aligned_forensics.detector.models import create_detector  # noqa: E402
from aligned_forensics.detector.preprocessing import to_normalised_tensor  # noqa: E402
from aligned_forensics.evaluation.scoring import ScoreItem, score_images  # noqa: E402

SIZES = ((256, 256), (192, 256), (256, 192), (224, 160))  # (height, width): COCO-like mixed shapes, scaled down
PER_SIZE = 8
REPEATS = 3


def make_images(folder: Path) -> list[ScoreItem]:
    """PER_SIZE JPEGs (q90) of each size, cut and resized from the bundled photos."""
    photos = [decode_rgb(bundled_photo_path(photo)) for photo in SAMPLE_PHOTOS]
    items = []
    for index in range(PER_SIZE * len(SIZES)):
        height, width = SIZES[index % len(SIZES)]
        photo = photos[index % len(photos)]
        resized = np.asarray(Image.fromarray(photo).resize((width, height), Image.BILINEAR))
        path = folder / f"{index:03d}.jpg"
        path.write_bytes(encode_jpeg(resized, quality=90))
        items.append(ScoreItem(str(path), height, width))
    return items


@torch.inference_mode()
def one_at_a_time(model: torch.nn.Module, items: list[ScoreItem]) -> np.ndarray:
    """The original protocol: decode, normalise and score each image alone, synchronously."""
    return np.array([float(model(to_normalised_tensor(decode_rgb(Path(item.path)))[None])[0]) for item in items])


def timed(function, *args, **kwargs) -> tuple[float, object]:
    started = time.perf_counter()
    result = function(*args, **kwargs)
    return time.perf_counter() - started, result


def main() -> int:
    torch.set_num_threads(2)
    model = create_detector("res50nodown", pretrained="none", seed=0).eval().to(memory_format=torch.channels_last)
    device = torch.device("cpu")
    with tempfile.TemporaryDirectory() as folder:
        items = make_images(Path(folder))
        one_at_a_time(model, items[:2])  # warm-up
        naive, ours, ours_one = [], [], []
        for _ in range(REPEATS):
            seconds, reference = timed(one_at_a_time, model, items)
            naive.append(seconds)
            seconds, (scores, _) = timed(score_images, model, items, protocol="full", crop_size=0, batch_size=8,
                                         device=device)
            ours.append(seconds)
            assert np.allclose(scores, reference, atol=1e-3), np.abs(scores - reference).max()
            seconds, _ = timed(score_images, model, items, protocol="full", crop_size=0, batch_size=1, device=device)
            ours_one.append(seconds)
    count = len(items)
    rows = [("one image at a time, synchronous (original)", statistics.median(naive)),
            ("ours, size buckets of 8, read-ahead", statistics.median(ours)),
            ("ours, batch size 1, read-ahead", statistics.median(ours_one))]
    print(f"{count} JPEGs of {len(SIZES)} sizes {SIZES}, res50nodown, 2 threads, median of {REPEATS}")
    print("| method | seconds | images/s |\n| --- | --- | --- |")
    for name, seconds in rows:
        print(f"| {name} | {seconds:.2f} | {count / seconds:.2f} |")
    print(f"ratio bucketed / original: {rows[0][1] / rows[1][1]:.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
