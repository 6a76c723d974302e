"""The fetch stage: collect real images from the configured sources into data/real/<split>/."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aligned_forensics.errors import DataError, ParamsError
from aligned_forensics.images import ImageDecodeError, image_header
from aligned_forensics.io import atomic_directory, atomic_write_bytes, write_csv
from aligned_forensics.params import require
from aligned_forensics.progress import progress_bar
from aligned_forensics.sources import PlannedImage, plan_source
from aligned_forensics.splits import SPLITS

log = logging.getLogger(__name__)

INDEX_COLUMNS = ("stem", "split", "source", "path", "width", "height", "format", "origin")
REJECT_COLUMNS = ("path", "stage", "reason")


@dataclass(frozen=True)
class FetchConfig:
    """params.yaml `fetch`."""

    seed: int
    sources: tuple[dict[str, Any], ...]

    def __post_init__(self) -> None:
        require(len(self.sources) >= 1, "fetch.sources", "at least one source", self.sources)


def plan_fetch(config: FetchConfig) -> list[PlannedImage]:
    """List every image of every source; stems must be unique across sources."""
    planned: list[PlannedImage] = []
    for index, spec in enumerate(config.sources):
        planned += plan_source(spec, seed=config.seed, key=f"fetch.sources[{index}]")
    seen: dict[str, PlannedImage] = {}
    for item in planned:
        if item.stem in seen:
            raise ParamsError(f"two real images share the stem '{item.stem}': {seen[item.stem].origin} and "
                              f"{item.origin}; stems pair reals with fakes, so they must be unique")
        seen[item.stem] = item
    return sorted(planned, key=lambda item: (item.split, item.stem))


def run_fetch(config: FetchConfig, *, out_dir: Path, index_path: Path, rejects_path: Path) -> dict[str, Any]:
    """Write every planned image to out_dir/<split>/<stem><suffix>; return counts for metrics."""
    planned = plan_fetch(config)
    rows, rejects = [], []
    with atomic_directory(out_dir) as staging:
        for item in progress_bar(planned, desc="fetch", unit="img"):
            try:
                relative, width, height, image_format = _write_image(item, staging)
            except ImageDecodeError as error:
                rejects.append({"path": item.origin, "stage": "fetch", "reason": str(error)})
                continue
            rows.append({"stem": item.stem, "split": item.split, "source": item.source,
                         "path": (out_dir / relative).as_posix(), "width": width, "height": height,
                         "format": image_format, "origin": item.origin})
    write_csv(rejects_path, rejects, REJECT_COLUMNS)
    if not rows:
        raise DataError(f"fetch produced no images ({len(rejects)} rejected, see {rejects_path})")
    write_csv(index_path, rows, INDEX_COLUMNS)
    counts = {split: sum(row["split"] == split for row in rows) for split in SPLITS}
    for split in SPLITS:
        if counts[split] == 0:
            log.warning("split '%s' has no images; later stages need train and val", split)
    return {"images": len(rows), "rejected": len(rejects), **{f"images_{s}": n for s, n in counts.items()}}


def _write_image(item: PlannedImage, staging: Path) -> tuple[Path, int, int, str]:
    """Write one image under staging; return (relative path, width, height, format) read back from its header."""
    data, suffix = item.load()
    relative = Path(item.split) / f"{item.stem}{suffix}"
    atomic_write_bytes(staging / relative, data)
    try:
        return (relative, *image_header(staging / relative))
    except ImageDecodeError:
        (staging / relative).unlink()  # rejected, so not part of the dataset
        raise
