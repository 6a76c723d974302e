"""Generation speed of the `procedural` fetch source on one core: images per second, JPEG q90 encoding included.

For each side (square images) the default mix and each kind alone are timed over the same indices; a Markdown
table row per measurement, median (min-max) of REPEATS passes. Loading is what `run_fetch` calls per image.

Usage, from the repository root (about a minute on 2 cores):
    .venv/bin/python bench/procedural.py
"""

from __future__ import annotations

import os

os.environ.update(OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1")

import statistics  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import cv2  # noqa: E402

from aligned_forensics.data.sources import procedural  # noqa: E402
from aligned_forensics.data.sources.common import SourceContext  # noqa: E402

SIDES = {64: 300, 128: 100, 256: 25}  # side -> images per pass
REPEATS = 3
MIXES = {"default mix": (0.6, 0.25, 0.15), **{kind: tuple(float(k == kind) for k in procedural.KINDS)
                                              for kind in procedural.KINDS}}


def rate(side: int, count: int, fractions: tuple[float, ...]) -> list[float]:
    """Images per second of REPEATS passes over `count` images of side x side."""
    config = procedural.Config(kind="procedural", count=count, min_side=side, max_side=side,
                               **dict(zip(procedural.KINDS, fractions, strict=True)))
    loads = [item["load"] for item in procedural.plan(config, SourceContext(seed=0, downloads=Path("unused")))]
    loads[0]()  # warm-up: OpenCV's first call and the cached frequency grid
    rates = []
    for _ in range(REPEATS):
        start = time.perf_counter()
        for load in loads:
            load()
        rates.append(count / (time.perf_counter() - start))
    return rates


def main() -> None:
    """Print one table of img/s per side and mix."""
    cv2.setNumThreads(1)  # one core: fetch runs several loads in parallel threads
    print("| side | mix | img/s median (min-max) |\n| --- | --- | --- |")
    for side, count in SIDES.items():
        for name, fractions in MIXES.items():
            rates = rate(side, count, fractions)
            print(f"| {side}² | {name} | {statistics.median(rates):.0f} ({min(rates):.0f}-{max(rates):.0f}) |",
                  flush=True)


if __name__ == "__main__":
    main()
