"""Source kind `folder`: every image under a local directory tree, copied byte for byte (never re-encoded).

Files are found recursively, sorted, by a case-insensitive extension filter. Each file's split is either
fixed (`split: val`) or drawn from a hash of (seed, relative path), so adding files never moves others.
Sizes are kept as they are unless `multiple_of` is set: the reconstruct stage pads odd sizes and crops its
output back to the real's.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from aligned_forensics.common.errors import DataError
from aligned_forensics.common.images import IMAGE_EXTENSIONS
from aligned_forensics.common.params import require
from aligned_forensics.common.sampling import seeded_subset
from aligned_forensics.data.sources.common import (
    LoadedImage,
    SourceContext,
    check_selection,
    crop_to_multiple,
    safe_name,
    split_for,
)


@dataclass(frozen=True)
class Config:
    """`fetch.sources[i]` for kind `folder`."""

    kind: Literal["folder"]
    path: str  # root of the tree
    split: Literal["auto", "train", "val", "test"] = "auto"  # auto: by hash, with the fractions below
    val_fraction: float = 0.1
    test_fraction: float = 0.1
    extensions: tuple[str, ...] = IMAGE_EXTENSIONS  # compared case-insensitively
    prefix: str = ""  # stem prefix; default: the folder's name
    count: int = 0  # a seeded subset of this many files (0 = all)
    multiple_of: int = 0  # crop sides down to a multiple of this, losslessly to PNG (0 = bytes verbatim)

    def __post_init__(self) -> None:
        key = "fetch.sources[folder]"
        require(bool(self.path), f"{key}.path", "a folder", self.path)
        check_selection(self, key=key)
        require(all(e.startswith(".") for e in self.extensions), f"{key}.extensions", "suffixes like '.jpg'",
                self.extensions)


def list_images(root: Path, extensions: tuple[str, ...]) -> list[Path]:
    """Image files under root (recursive), sorted by relative path; extensions matched case-insensitively."""
    wanted = {extension.lower() for extension in extensions}
    return sorted((p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in wanted),
                  key=lambda p: p.relative_to(root).as_posix())


def stem_for(prefix: str, relative_path: str) -> str:
    """`prefix-sub__dir__name`: the relative path without its extension, safe as a file name.

    Non-ASCII names also get 8 hex digits of the path's sha256: every such character becomes '_', so
    without them 北京.jpg and 上海.jpg would share a stem."""
    without_suffix = relative_path.rsplit(".", 1)[0]
    stem = f"{prefix}-" + safe_name(without_suffix.replace("/", "__"))
    if not relative_path.isascii():
        stem += "-" + hashlib.sha256(relative_path.encode("utf-8")).hexdigest()[:8]
    return stem


def plan(config: Config, context: SourceContext) -> list[dict[str, Any]]:
    """One planned image per file found."""
    seed = context.seed
    root = Path(config.path).expanduser()
    if not root.is_dir():
        raise DataError(f"fetch source folder {root} does not exist (fetch.sources[…].path)")
    files = list_images(root, config.extensions)
    if not files:
        raise DataError(f"found 0 images under {root}; extensions looked for (any case): "
                        f"{', '.join(config.extensions)}")
    if config.count > len(files):
        raise DataError(f"fetch source {root}: count is {config.count:,} but only {len(files):,} images exist")
    files = seeded_subset(files, config.count, seed=seed, stream=0xF01)
    prefix = config.prefix or safe_name(root.resolve().name)
    items = []
    for path in files:
        relative = path.relative_to(root).as_posix()
        split = config.split if config.split != "auto" else split_for(
            relative, seed=seed, val_fraction=config.val_fraction, test_fraction=config.test_fraction)
        items.append({"stem": stem_for(prefix, relative), "split": split, "source": f"folder:{prefix}",
                      "origin": str(path), "bytes": path.stat().st_size,
                      "load": _FileLoader(path, config.multiple_of)})
    return items


@dataclass(frozen=True)
class _FileLoader:
    path: Path
    multiple_of: int

    def __call__(self) -> LoadedImage:
        return crop_to_multiple(self.path.read_bytes(), multiple=self.multiple_of, suffix=self.path.suffix.lower())
