"""Seeded subsets that keep their input order (so outputs stay sorted and diffable)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

import numpy as np

T = TypeVar("T")


def seeded_subset(items: Sequence[T], count: int, *, seed: int, stream: int) -> list[T]:
    """`count` items drawn without replacement by a generator seeded with (seed, stream); all when fewer.

    `stream` separates independent draws made with one user seed (e.g. reals vs fakes)."""
    if count <= 0 or count >= len(items):
        return list(items)
    chosen = np.random.default_rng([seed, stream]).choice(len(items), size=count, replace=False)
    return [items[i] for i in sorted(chosen)]
