"""Source kind `lsun`: a seeded selection of LSUN scene images from the official `<category>_<split>_lmdb.zip`.

LMDB needs a real file to map, so `data.mdb` is copied out of the zip into the download cache; the images
are then read by key. Beside it, `unpacked-from.json` records the archive's url and digests: every run checks
that record against the params and unpacks again (from a verified, possibly new, download) when the url or
checksum no longer match, so an old cache is never served for another archive. Values are exported as they
are stored (WebP or JPEG bytes; the format is recorded because a real-WebP / fake-PNG mismatch is a shortcut
a detector can learn).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import lmdb

from aligned_forensics.common.archives import extract_member, open_zip
from aligned_forensics.common.download import RemoteFile, file_digests, parse_checksum
from aligned_forensics.common.errors import DataError
from aligned_forensics.common.io import atomic_directory
from aligned_forensics.common.params import require
from aligned_forensics.data.sources.common import (
    LoadedImage,
    NotReady,
    SourceContext,
    check_archive_source,
    crop_to_multiple,
    local_archive,
    remote_file,
    safe_name,
    select_names,
    split_for,
)

DEFAULT_URL = "http://dl.yf.io/lsun/scenes/"
CATEGORIES = ("bedroom", "bridge", "church_outdoor", "classroom", "conference_room", "dining_room", "kitchen",
              "living_room", "restaurant", "tower")
# Published in GANformer's prepare_data.py (dorarad/gansformer); other categories' digests are not published.
OFFICIAL_CHECKSUMS = {"bedroom_train_lmdb.zip": "md5:f2c5d904a82a6295dbdccb322b4b0a99"}
UNPACKED_FROM = "unpacked-from.json"  # beside data.mdb: the url and digests of the archive it came from


@dataclass(frozen=True)
class Config:
    """`fetch.sources[i]` for kind `lsun`."""

    kind: Literal["lsun"]
    category: str  # one of CATEGORIES
    split: Literal["train", "val"]
    count: int = 1000  # keys drawn by a seeded choice from the sorted key list (0 = all)
    list_file: str = ""  # or exactly the keys in this file (one per line)
    url: str = DEFAULT_URL  # a base ending in '/' or a full .zip URL (a mirror)
    checksum: str = "auto"  # auto: the official MD5 when known | md5:<hex> | sha256:<hex> | "" (unverified)
    use_as: Literal["auto", "train", "val", "test"] = "auto"
    val_fraction: float = 0.1
    test_fraction: float = 0.1
    multiple_of: int = 8  # LSUN's short side is 256, the long side any length: usually cropped
    seed: int | None = None
    prefix: str = "lsun"

    def __post_init__(self) -> None:
        key = "fetch.sources[lsun]"
        require(self.category in CATEGORIES, f"{key}.category", f"one of {', '.join(CATEGORIES)}", self.category)
        check_archive_source(self, key=key)

    @property
    def archive_name(self) -> str:
        return f"{self.category}_{self.split}_lmdb.zip"


def remote_files(config: Config) -> list[RemoteFile]:
    """The one archive this source needs."""
    return [remote_file(config.url, config.archive_name, config.checksum, OFFICIAL_CHECKSUMS)]


def open_database(config: Config, context: SourceContext) -> tuple[lmdb.Environment, str]:
    """The category's LMDB (read-only), its data.mdb copied out of the verified zip whenever the params name
    another archive than the one it came from; and the zip's name."""
    remote = remote_files(config)[0]
    folder = context.downloads / remote.name.removesuffix(".zip")
    if not unpacked_from(folder, remote):
        if context.dry_run:
            raise NotReady(f"{remote.name} is not downloaded and unpacked for these params yet; the selection is "
                           "listed once it is")
        unpack(local_archive(remote, context), remote, folder)
    try:  # lock=False: read-only, and the cache may sit on a read-only or network disk
        return lmdb.open(str(folder), readonly=True, lock=False, readahead=False, max_readers=512), remote.name
    except lmdb.Error as error:
        raise DataError(f"{folder / 'data.mdb'} is not a readable LMDB ({error}); delete {folder} and rerun") from None


def unpacked_from(folder: Path, remote: RemoteFile) -> bool:
    """True when folder holds a data.mdb unpacked from `remote`: an archive with its pinned checksum (from any
    url: the same bytes), or, when it has none, one downloaded from its url."""
    try:
        record = json.loads((folder / UNPACKED_FROM).read_text())
    except (OSError, ValueError):
        return False  # never unpacked, interrupted, or unpacked before records were kept: unpack again
    if not (isinstance(record, dict) and (folder / "data.mdb").is_file()):
        return False
    algorithm, expected = parse_checksum(remote.checksum, key=f"checksum of {remote.name}")
    return record.get(algorithm) == expected if expected else record.get("url") == remote.url


def unpack(archive_path: Path, remote: RemoteFile, folder: Path) -> None:
    """Copy the zip's one data.mdb into `folder`, with the record of where it came from, atomically: a temp
    folder replaces the old one only once both are written."""
    digests = file_digests(archive_path)  # recorded, so a later run checks the params without the archive
    with open_zip(archive_path) as archive:
        members = [name for name in archive.namelist() if name.rsplit("/", 1)[-1] == "data.mdb"]
        if len(members) != 1:
            raise DataError(f"{archive.filename}: expected one data.mdb (an LSUN lmdb zip), found "
                            f"{len(members)}; check the url")
        with atomic_directory(folder) as staging:
            extract_member(archive, members[0], staging / "data.mdb")
            record = {"url": remote.url, "checksum": remote.checksum, "archive": remote.name,
                      "bytes": archive_path.stat().st_size, **digests}
            (staging / UNPACKED_FROM).write_text(json.dumps(record, indent=1) + "\n")


def plan(config: Config, context: SourceContext) -> list[dict[str, Any]]:
    """One planned image per selected key."""
    seed = context.seed if config.seed is None else config.seed
    database, archive_name = open_database(config, context)
    with database.begin() as transaction:
        keys = [key.decode("ascii", "replace") for key in transaction.cursor().iternext(keys=True, values=False)]
    chosen = select_names(keys, count=config.count, list_file=config.list_file, seed=seed, stream=0x15E4,
                          what=f"lsun {archive_name}")
    source = f"lsun/{config.category}/{config.split}"
    items = []
    for key in chosen:
        split = config.use_as if config.use_as != "auto" else split_for(
            key, seed=seed, val_fraction=config.val_fraction, test_fraction=config.test_fraction)
        items.append({"stem": f"{config.prefix}-{config.category}-{safe_name(key)}", "split": split,
                      "source": source, "origin": f"{archive_name}:{key}",
                      "load": _KeyLoader(database, key, config.multiple_of)})
    return items


@dataclass(frozen=True)
class _KeyLoader:
    database: lmdb.Environment
    key: str
    multiple_of: int

    def __call__(self) -> LoadedImage:
        with self.database.begin() as transaction:
            data = transaction.get(self.key.encode("ascii"))
        if data is None:
            raise DataError(f"key {self.key} vanished from {self.database.path()}; delete that folder and rerun")
        return crop_to_multiple(data, multiple=self.multiple_of)  # one header read gives format and size
