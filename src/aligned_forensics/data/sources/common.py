"""What source kinds share: the planning context, name-safe stems, split assignment, selection, cropping."""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from aligned_forensics.common.download import RemoteFile, cached_path, download, parse_checksum
from aligned_forensics.common.errors import DataError
from aligned_forensics.common.images import (
    ImageDecodeError,
    decode_rgb,
    encode_jpeg,
    encode_png,
    header_orientation,
    open_image,
)
from aligned_forensics.common.params import require
from aligned_forensics.common.sampling import seeded_subset

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SourceContext:
    """What every source's `plan` gets besides its own config."""

    seed: int  # fetch.seed (a source's own `seed`, when set, wins)
    downloads: Path  # the download cache (archives and anything extracted from them)
    dry_run: bool = False  # plan without downloading, extracting or writing anything


class NotReady(Exception):
    """A dry run cannot list this source's images yet (its archive is not downloaded); the message says why."""


@dataclass(frozen=True)
class LoadedImage:
    """The bytes to store for one real image and what was done to them."""

    data: bytes
    suffix: str  # ".jpg", ".png", ".webp", ...
    source_format: str  # format of the original bytes ("jpeg", "webp", ...), kept even when cropped to PNG
    processing: str  # "verbatim", or the crop applied


def safe_name(text: str) -> str:
    """Characters outside [A-Za-z0-9._-] replaced by '_' (stems become file names)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text)


def split_for(name: str, *, seed: int, val_fraction: float, test_fraction: float) -> str:
    """'val', 'test' or 'train' from a hash of (seed, name): stable whatever else is selected."""
    digest = hashlib.sha256(f"{seed}:{name}".encode()).digest()
    u = int.from_bytes(digest[:8], "little") / 2**64
    return "val" if u < val_fraction else "test" if u < val_fraction + test_fraction else "train"


def select_names(names: Sequence[str], *, count: int, list_file: str, seed: int, stream: int, what: str) -> list[str]:
    """The names listed in `list_file`, else `count` of `names` (sorted) by a seeded draw; 0 means all."""
    if list_file:
        return names_from_list(names, Path(list_file).expanduser(), what=what)
    if count > len(names):
        raise DataError(f"{what}: count is {count:,} but only {len(names):,} images are available; lower the count")
    return seeded_subset(sorted(names), count, seed=seed, stream=stream)


def names_from_list(names: Sequence[str], list_file: Path, *, what: str) -> list[str]:
    """Resolve a list file (one name per line, '#' comments; full member names or bare file names)."""
    try:
        wanted = [line.strip() for line in list_file.read_text().splitlines()]
    except OSError as error:
        raise DataError(f"{what}: cannot read list_file {list_file}: {error}") from None
    wanted = [line for line in wanted if line and not line.startswith("#")]
    by_basename = {name.rsplit("/", 1)[-1]: name for name in names}
    present = set(names)
    resolved = [line if line in present else by_basename.get(line.rsplit("/", 1)[-1]) for line in wanted]
    missing = [line for line, name in zip(wanted, resolved, strict=True) if name is None]
    if missing:
        raise DataError(f"{what}: {len(missing):,} of the {len(wanted):,} names in {list_file} are not in the "
                        f"archive, e.g. {', '.join(missing[:3])}")
    return sorted(set(resolved))  # type: ignore[arg-type]


def crop_to_multiple(data: bytes, *, multiple: int, suffix: str = "") -> LoadedImage:
    """Keep bytes verbatim when both sides are multiples of `multiple` (or it is 0); else crop losslessly.

    The crop keeps the top-left corner so the JPEG 8x8 block grid stays aligned with the image origin (a
    shifted grid is itself a forensic cue); the cropped pixels are stored as PNG, so no second lossy
    compression is added."""
    with open_image(data) as image:  # bombs and animations are refused before any pixel is decoded
        source_format = str(image.format or "unknown").lower()
        suffix = suffix or suffix_for(source_format)  # "": named after the format (LSUN values have no name)
        width, height = image.size
        if header_orientation(image) in (5, 6, 7, 8):  # shown rotated by 90 degrees
            width, height = height, width
        if multiple == 0 or (width % multiple == 0 and height % multiple == 0):
            return LoadedImage(data, suffix, source_format, "verbatim")
        new_width, new_height = width - width % multiple, height - height % multiple
        if new_width == 0 or new_height == 0:
            raise ImageDecodeError(f"{width}x{height} is smaller than {multiple} pixels on a side")
        pixels = decode_rgb(data)  # (H, W, 3), the one documented conversion (EXIF, 16-bit, CMYK, palette)
    cropped = np.ascontiguousarray(pixels[:new_height, :new_width])  # (H', W', 3)
    return LoadedImage(encode_png(cropped), ".png", source_format,
                       f"cropped {width}x{height} to {new_width}x{new_height} at the top-left corner, lossless PNG")


def encode_generated(pixels: np.ndarray, *, image_format: str, jpeg_quality: int, what: str) -> LoadedImage:
    """A generated or cropped real as JPEG at `jpeg_quality` (like COCO's photos) or as lossless PNG."""
    if image_format == "png":  # no compression trace in the real: the reconstruction is then the only difference
        return LoadedImage(encode_png(pixels), ".png", "png", f"{what} saved as lossless PNG")
    return LoadedImage(encode_jpeg(pixels, quality=jpeg_quality), ".jpg", "jpeg",
                       f"{what} encoded as JPEG q{jpeg_quality}")


def suffix_for(source_format: str) -> str:
    """File suffix for a Pillow format name."""
    return {"jpeg": ".jpg", "png": ".png", "webp": ".webp", "bmp": ".bmp", "tiff": ".tif", "gif": ".gif"}.get(
        source_format, ".img")


def check_selection(config: Any, *, key: str) -> None:
    """Checks every source with a `count`, split fractions and `multiple_of` shares."""
    require(config.count >= 0, f"{key}.count", "an integer >= 0 (0 = all)", config.count)
    require(config.val_fraction >= 0 and config.test_fraction >= 0 and config.val_fraction + config.test_fraction < 1,
            f"{key}.val_fraction + test_fraction", "fractions >= 0 adding up to less than 1",
            (config.val_fraction, config.test_fraction))
    require(config.multiple_of >= 0, f"{key}.multiple_of", "an integer >= 0 (0 = keep sizes)", config.multiple_of)


def check_archive_source(config: Any, *, key: str) -> None:
    """Checks shared by the archive-backed sources (coco, lsun)."""
    check_selection(config, key=key)
    require(config.url.startswith(("http://", "https://")), f"{key}.url", "an http(s) URL", config.url)
    if config.checksum != "auto":
        parse_checksum(config.checksum, key=f"{key}.checksum")
    require(bool(config.prefix) and safe_name(config.prefix) == config.prefix, f"{key}.prefix",
            "a non-empty name of letters, digits, '.', '_' or '-'", config.prefix)


def remote_file(url: str, name: str, checksum: str, official: dict[str, str]) -> RemoteFile:
    """The archive to download: `url` + name (or `url` itself when it names a .zip), with its checksum."""
    full_url = url if url.endswith(".zip") else url.rstrip("/") + "/" + name
    cache_name = full_url.rsplit("/", 1)[-1]
    if checksum == "auto":
        checksum = official.get(cache_name, "")
        if not checksum:
            log.warning("no official checksum is known for %s: it will not be verified", cache_name)
    return RemoteFile(url=full_url, name=cache_name, checksum=checksum)


def local_archive(remote: RemoteFile, context: SourceContext) -> Path:
    """The verified archive in the cache, downloaded first unless this is a dry run."""
    path = cached_path(remote, context.downloads, record=not context.dry_run)
    if path is None:
        if context.dry_run:
            raise NotReady(f"{remote.name} is not downloaded yet; the selection is listed once it is")
        path = download(remote, context.downloads)
    return path
