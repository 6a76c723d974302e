"""Progress bars that stay readable both on a terminal and in CI / `dvc repro` logs."""

from __future__ import annotations

import sys
from collections.abc import Iterable
from typing import Any

from tqdm import tqdm


def progress_bar(iterable: Iterable[Any] | None = None, **kwargs: Any) -> tqdm:
    """A tqdm bar on stderr: refreshed twice a second on a terminal, every 10 s in a log file."""
    kwargs.setdefault("mininterval", 0.5 if sys.stderr.isatty() else 10.0)
    return tqdm(iterable, file=sys.stderr, **kwargs)
