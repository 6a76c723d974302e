"""The fetch stage: collect real images from the configured sources into data/real/<split>/."""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aligned_forensics.common.download import RemoteFile, cached_path, check_free_space, downloads_dir, remote_length
from aligned_forensics.common.errors import DataError, ParamsError
from aligned_forensics.common.images import ImageDecodeError, image_header
from aligned_forensics.common.io import atomic_directory, atomic_write_bytes, read_csv, write_csv
from aligned_forensics.common.params import require
from aligned_forensics.common.prefetch import prefetch_map
from aligned_forensics.common.progress import progress_bar
from aligned_forensics.common.splits import SPLITS
from aligned_forensics.common.stems import rename_advice, shared_stems, shared_stems_message
from aligned_forensics.common.watch import check_watched
from aligned_forensics.data.sources import PlannedImage, plan_source, source_config, source_remote_files
from aligned_forensics.data.sources.common import NotReady, SourceContext

log = logging.getLogger(__name__)

INDEX_COLUMNS = ("stem", "split", "source", "path", "width", "height", "format", "source_format", "processing",
                 "origin")
REJECT_COLUMNS = ("path", "stage", "reason")
LOCAL_INPUTS = ("path", "list_file")  # the source fields naming local files or folders (folder, archive, coco, lsun)
NOTHING_OUTSIDE = "stages/fetch.py"  # the default watch: already a dependency of fetch, so nothing outside
MIN_SIDE = 8  # smaller reals are rejected: nothing to reconstruct or detect in less than one latent


@dataclass(frozen=True)
class FetchConfig:
    """params.yaml `fetch`."""

    seed: int
    sources: tuple[dict[str, Any], ...]
    watch: str = NOTHING_OUTSIDE  # the outside folder/archive/list file the sources read, a DVC dependency

    def __post_init__(self) -> None:
        require(len(self.sources) >= 1, "fetch.sources", "at least one source", self.sources)

    def source_configs(self) -> list[Any]:
        """Every source entry validated into its kind's Config."""
        return [source_config(spec, key=f"fetch.sources[{i}]") for i, spec in enumerate(self.sources)]

    def watched_paths(self) -> list[tuple[str, str, str]]:
        """(params key, path, '') of every local folder, archive and list file the sources read, for check_watched."""
        return [(f"fetch.sources[{index}].{name}", getattr(source, name), "")
                for index, source in enumerate(self.source_configs()) for name in LOCAL_INPUTS
                if getattr(source, name, "")]


def pending_downloads(config: FetchConfig, downloads: Path) -> list[tuple[RemoteFile, int | None]]:
    """Archives not yet in the cache, with their remote sizes (None when the server does not say)."""
    remotes = {remote.name: remote for source in config.source_configs() for remote in source_remote_files(source)}
    missing = [remote for remote in remotes.values() if cached_path(remote, downloads, record=False) is None]
    return [(remote, remote_length(remote.url)) for remote in missing]


def check_download_space(pending: list[tuple[RemoteFile, int | None]], downloads: Path) -> None:
    """Fail before the first byte when the cache disk cannot hold every pending archive."""
    have = sum((downloads / f"{remote.name}.partial").stat().st_size
               for remote, _ in pending if (downloads / f"{remote.name}.partial").exists())
    needed = sum(length or 0 for _, length in pending) - have
    if needed > 0:
        check_free_space(downloads, needed, what=", ".join(remote.name for remote, _ in pending))


def plan_fetch(config: FetchConfig, *, downloads: Path | None = None) -> list[PlannedImage]:
    """Every image of every source, sorted by (split, stem); archives are downloaded first if needed."""
    return _plan_sources(config, SourceContext(seed=config.seed, downloads=downloads_dir(downloads)))[0]


def _plan_sources(config: FetchConfig, context: SourceContext) -> tuple[list[PlannedImage], list[str]]:
    """Every image of every source, sorted; plus, in a dry run, the sources that cannot be listed yet."""
    planned: list[PlannedImage] = []
    not_ready: list[str] = []
    for source in config.source_configs():
        try:
            planned += plan_source(source, context)
        except NotReady as reason:
            not_ready.append(f"{source.kind}: {reason}")
    shared = shared_stems((item.stem, item.origin) for item in planned)
    if shared:
        raise ParamsError(shared_stems_message(shared, advice=rename_advice, fix=(
            "Files in one folder: rename or remove all but the first of each line, as suggested. Images from "
            "different sources: set a different `prefix` on one of the sources.")))
    return sorted(planned, key=lambda item: (item.split, item.stem)), not_ready


def run_fetch(config: FetchConfig, *, out_dir: Path, index_path: Path, rejects_path: Path,
              downloads: Path | None = None) -> dict[str, Any]:
    """Write every planned image to out_dir/<split>/<stem><suffix>; return counts for metrics."""
    check_watched(config.watched_paths(), watch=config.watch, section="fetch", pipeline_folders=())
    downloads = downloads_dir(downloads)
    check_download_space(pending_downloads(config, downloads), downloads)
    planned = plan_fetch(config, downloads=downloads)
    if _up_to_date(planned, out_dir=out_dir, index_path=index_path, rejects_path=rejects_path):
        log.info("%s already holds exactly these %d images: nothing to do", out_dir, len(planned))
        return fetch_counts(read_csv(index_path), read_csv(rejects_path))
    rows, rejects = [], []
    workers = min(8, os.cpu_count() or 1)  # reading members and cropping releases the GIL (zlib, Pillow)
    with atomic_directory(out_dir) as staging, ThreadPoolExecutor(workers) as pool:
        results = prefetch_map(pool, lambda item: _write_image(item, staging), planned, ahead=4 * workers)
        for item, result in progress_bar(zip(planned, results, strict=True), total=len(planned), desc="fetch",
                                         unit="img"):
            if isinstance(result, ImageDecodeError):
                rejects.append({"path": item.origin, "stage": "fetch", "reason": str(result)})
                continue
            relative, facts = result
            rows.append({"stem": item.stem, "split": item.split, "source": item.source,
                         "path": (out_dir / relative).as_posix(), **facts, "origin": item.origin})
    write_csv(rejects_path, rejects, REJECT_COLUMNS)
    if not rows:
        raise DataError(f"fetch produced no images ({len(rejects)} rejected, see {rejects_path})")
    write_csv(index_path, rows, INDEX_COLUMNS)
    return fetch_counts(rows, rejects)


def fetch_counts(rows: list[Mapping[str, Any]], rejects: list[Mapping[str, Any]]) -> dict[str, Any]:
    """Metrics: images per split and per source, rejects, how many were cropped."""
    counts = {split: sum(row["split"] == split for row in rows) for split in SPLITS}
    for split in SPLITS:
        if counts[split] == 0:
            log.warning("split '%s' has no images; later stages need train and val", split)
    sources = sorted({row["source"] for row in rows})
    return {"images": len(rows), "rejected": len(rejects), **{f"images_{s}": n for s, n in counts.items()},
            "cropped": sum(row["processing"].startswith("cropped") for row in rows),
            "per_source": {source: sum(row["source"] == source for row in rows) for source in sources}}


def _write_image(item: PlannedImage, staging: Path) -> tuple[Path, dict[str, Any]] | ImageDecodeError:
    """Write one image under staging; return its relative path and facts read back from its header."""
    try:
        loaded = item.load()
    except ImageDecodeError as error:
        return error
    relative = Path(item.split) / f"{item.stem}{loaded.suffix}"
    atomic_write_bytes(staging / relative, loaded.data)
    try:  # the size every later stage decodes (EXIF-rotated photos swap their sides)
        width, height, image_format = image_header(staging / relative, as_displayed=True)
        if min(width, height) < MIN_SIDE:
            raise ImageDecodeError(f"{width}x{height} is smaller than the {MIN_SIDE}-pixel minimum side (an "
                                   "autoencoder latent covers 8x8 pixels)")
    except ImageDecodeError as error:
        (staging / relative).unlink()  # rejected, so not part of the dataset
        return error
    return relative, {"width": width, "height": height, "format": image_format,
                      "source_format": loaded.source_format, "processing": loaded.processing}


def _up_to_date(planned: list[PlannedImage], *, out_dir: Path, index_path: Path, rejects_path: Path) -> bool:
    """True when the index (and rejects) already list exactly the planned images and their files exist."""
    if not (index_path.is_file() and rejects_path.is_file() and out_dir.is_dir()):
        return False
    indexed = read_csv(index_path)
    listed = {(row["stem"], row["split"], row["origin"]) for row in indexed}
    rejected = {row["path"] for row in read_csv(rejects_path)}
    if len(listed) + len(rejected) != len(planned):
        return False
    if not all((item.stem, item.split, item.origin) in listed or item.origin in rejected for item in planned):
        return False
    return all(Path(row["path"]).is_file() for row in indexed)


def describe_dry_run(config: FetchConfig, downloads: Path) -> tuple[list[str], str]:
    """What a run would download and select, touching nothing: (lines to print, one-line summary)."""
    lines = [f"download cache: {downloads} ({_free_bytes(downloads) / 2**30:,.1f} GiB free)"]
    pending = pending_downloads(config, downloads)
    for remote, length in pending:
        partial = downloads / f"{remote.name}.partial"
        have = partial.stat().st_size if partial.exists() else 0
        lines.append(f"download\t{remote.name}\t{remote.url}\t{_human(length)}"
                     + (f"\t(resumes at {_human(have)})" if have else "")
                     + ("" if remote.checksum else "\t(no checksum: unverified)"))
    planned, not_ready = _plan_sources(config, SourceContext(seed=config.seed, downloads=downloads, dry_run=True))
    lines += [f"select\t{item.split}\t{item.stem}\t{item.origin}" + (f"\t{_human(item.bytes)}" if item.bytes else "")
              for item in planned]
    lines += [f"not listed yet\t{reason}" for reason in not_ready]
    to_download = sum(length or 0 for _, length in pending)
    unknown = sum(length is None for _, length in pending)
    summary = (f"dry run: {len(pending)} archive(s) to download ({_human(to_download)}"
               + (f" + {unknown} of unknown size" if unknown else "") + f"), {len(planned):,} images "
               f"selected" + (f", {len(not_ready)} source(s) listed once downloaded" if not_ready else "")
               + "; nothing written")
    return lines, summary


def _free_bytes(directory: Path) -> int:
    existing = next((p for p in [directory, *directory.absolute().parents] if p.exists()), Path("/"))
    return shutil.disk_usage(existing).free


def _human(length: int | None) -> str:
    if length is None:
        return "size unknown"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if length < 1024 or unit == "GiB":
            return f"{length:,.0f} {unit}" if unit == "B" else f"{length:,.1f} {unit}"
        length /= 1024
    return ""
