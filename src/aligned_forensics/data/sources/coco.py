"""Source kind `coco`: a seeded selection of MS-COCO images read straight out of the official zip.

Only the selected members are read; the 118k-file archive is never extracted. Stems are
`<prefix>-<image file name without extension>` (COCO ids are unique across train/val/test).
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any, Literal

from aligned_forensics.common.archives import open_zip, read_member
from aligned_forensics.common.download import RemoteFile
from aligned_forensics.common.params import require
from aligned_forensics.data.sources.common import (
    LoadedImage,
    SourceContext,
    check_archive_source,
    crop_to_multiple,
    local_archive,
    remote_file,
    safe_name,
    select_names,
    split_for,
)

DEFAULT_URL = "http://images.cocodataset.org/zips/"
# Official archives' MD5s, pinned identically by several independent public download tools.
OFFICIAL_CHECKSUMS = {
    "train2017.zip": "md5:cced6f7f71b7629ddf16f17bbcfab6b2",
    "val2017.zip": "md5:442b8da7639aecaf257c1dceb8ba8c80",
    "test2017.zip": "md5:77ad2c53ac5d0aea611d422c0938fb35",
    "unlabeled2017.zip": "md5:7ebc562819fdb32847aab79530457326",
}
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


@dataclass(frozen=True)
class Config:
    """`fetch.sources[i]` for kind `coco`."""

    kind: Literal["coco"]
    split: Literal["train", "val", "test", "unlabeled"]  # which official archive, e.g. val -> val2017.zip
    year: int = 2017
    count: int = 1000  # images drawn by a seeded choice from the sorted member list (0 = all)
    list_file: str = ""  # or exactly the names in this file (one per line), instead of count
    url: str = DEFAULT_URL  # a base ending in '/' (the archive name is appended) or a full .zip URL (a mirror)
    checksum: str = "auto"  # auto: the official MD5 when known | md5:<hex> | sha256:<hex> | "" (unverified)
    use_as: Literal["auto", "train", "val", "test"] = "auto"  # our split; auto: by hash of (seed, name)
    val_fraction: float = 0.1  # used by use_as: auto
    test_fraction: float = 0.1
    multiple_of: int = 8  # crop sides down to a multiple of this (0 = keep the bytes verbatim)
    seed: int | None = None  # this source's own seed (default: fetch.seed); pin it to freeze a val set
    prefix: str = "coco"

    def __post_init__(self) -> None:
        check_archive_source(self, key="fetch.sources[coco]")
        require(self.year in (2014, 2015, 2017), "fetch.sources[coco].year", "2014, 2015 or 2017 (COCO's releases)",
                self.year)

    @property
    def archive_name(self) -> str:
        return f"{self.split}{self.year}.zip"


def remote_files(config: Config) -> list[RemoteFile]:
    """The one archive this source needs."""
    return [remote_file(config.url, config.archive_name, config.checksum, OFFICIAL_CHECKSUMS)]


def plan(config: Config, context: SourceContext) -> list[dict[str, Any]]:
    """One planned image per selected member."""
    seed = context.seed if config.seed is None else config.seed
    remote = remote_files(config)[0]
    archive = open_zip(local_archive(remote, context))
    members = [name for name in archive.namelist() if name.lower().endswith(IMAGE_SUFFIXES)]
    chosen = select_names(members, count=config.count, list_file=config.list_file, seed=seed, stream=0xC0C0,
                          what=f"coco {remote.name}")
    items = []
    for member in chosen:
        name = PurePosixPath(member).stem
        split = config.use_as if config.use_as != "auto" else split_for(
            name, seed=seed, val_fraction=config.val_fraction, test_fraction=config.test_fraction)
        items.append({"stem": f"{config.prefix}-{safe_name(name)}", "split": split, "source": f"coco/{config.split}",
                      "origin": f"{remote.name}:{member}", "bytes": archive.getinfo(member).file_size,
                      "load": _MemberLoader(archive, member, config.multiple_of)})
    return items


@dataclass(frozen=True)
class _MemberLoader:
    archive: zipfile.ZipFile  # shared by every loader of the source: the central directory is read once
    member: str
    multiple_of: int

    def __call__(self) -> LoadedImage:
        data = read_member(self.archive, self.member)
        return crop_to_multiple(data, multiple=self.multiple_of, suffix=PurePosixPath(self.member).suffix.lower())
