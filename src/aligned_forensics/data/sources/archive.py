"""Source kind `archive`: the images inside one .zip or .tar (.tar.gz/.tgz, .tar.bz2, .tar.xz), local or a URL.

Members are read one by one and never extracted to a path taken from the archive: a zip member by name, a
tar member by offset (a compressed tar is first unpacked once, as a plain .tar, into the download cache).
Archives with absolute or '..' member names, symbolic or hard links, devices, or that unpack to more than
`max_ratio` x their compressed size or `max_unpacked_gib` in all are refused whole, naming the member.
Members that are not decodable images are rejects, like a folder's. Stems are `<prefix>-<member path>`.
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Literal
from urllib.parse import urlparse

from aligned_forensics.common.archives import (
    Limits,
    TarMember,
    check_zip_limits,
    is_compressed,
    is_tar,
    open_zip,
    read_member,
    read_tar_member,
    tar_members,
    unpacked_tar_path,
)
from aligned_forensics.common.download import RemoteFile, parse_checksum
from aligned_forensics.common.errors import DataError
from aligned_forensics.common.images import IMAGE_EXTENSIONS
from aligned_forensics.common.params import require
from aligned_forensics.common.sampling import seeded_subset
from aligned_forensics.data.sources.common import (
    LoadedImage,
    NotReady,
    SourceContext,
    check_selection,
    crop_to_multiple,
    local_archive,
    safe_name,
    split_for,
)
from aligned_forensics.data.sources.folder import stem_for

ARCHIVE_SUFFIXES = (".tar.gz", ".tar.bz2", ".tar.xz", ".tgz", ".zip", ".tar")


@dataclass(frozen=True)
class Config:
    """`fetch.sources[i]` for kind `archive`."""

    kind: Literal["archive"]
    path: str = ""  # a local archive ...
    url: str = ""  # ... or an http(s) URL of one (downloaded into the cache, resumable)
    checksum: str = ""  # url only: md5:<hex> | sha256:<hex> | "" (unverified; the sha256 is logged)
    split: Literal["auto", "train", "val", "test"] = "auto"  # auto: by hash of (seed, member path)
    val_fraction: float = 0.1
    test_fraction: float = 0.1
    extensions: tuple[str, ...] = IMAGE_EXTENSIONS  # member suffixes, compared case-insensitively
    prefix: str = ""  # stem prefix; default: the archive's file name without its suffixes
    count: int = 0  # a seeded subset of this many images (0 = all)
    seed: int | None = None  # this source's own seed (default: fetch.seed)
    multiple_of: int = 0  # crop sides down to a multiple of this, losslessly to PNG (0 = bytes verbatim)
    max_ratio: float = 100.0  # refuse members (zip) or archives (compressed tar) unpacking more than this x
    max_unpacked_gib: float = 64.0  # refuse archives unpacking to more than this in all

    def __post_init__(self) -> None:
        key = "fetch.sources[archive]"
        require(bool(self.path) != bool(self.url), f"{key}.path/url", "exactly one of path and url",
                (self.path, self.url))
        require(not self.url or self.url.startswith(("http://", "https://")), f"{key}.url", "an http(s) URL",
                self.url)
        require(not self.url or bool(archive_name(self.url)), f"{key}.url", "a URL ending in an archive name",
                self.url)
        require(not self.checksum or bool(self.url), f"{key}.checksum", "'' for a local path (url only)",
                self.checksum)
        parse_checksum(self.checksum, key=f"{key}.checksum")
        check_selection(self, key=key)
        require(len(self.extensions) >= 1 and all(e.startswith(".") for e in self.extensions),
                f"{key}.extensions", "suffixes like '.jpg'", self.extensions)
        require(not self.prefix or safe_name(self.prefix) == self.prefix, f"{key}.prefix",
                "letters, digits, '.', '_' or '-' ('' = the archive's name)", self.prefix)
        require(self.max_ratio >= 1, f"{key}.max_ratio", "a number >= 1", self.max_ratio)
        require(self.max_unpacked_gib > 0, f"{key}.max_unpacked_gib", "a number > 0", self.max_unpacked_gib)


def archive_name(url_or_path: str) -> str:
    """The file name at the end of a URL or path ('' when there is none)."""
    return PurePosixPath(urlparse(url_or_path).path).name


def remote_files(config: Config) -> list[RemoteFile]:
    """The archive to download (none for a local path)."""
    return [RemoteFile(url=config.url, name=archive_name(config.url), checksum=config.checksum)] if config.url else []


def plan(config: Config, context: SourceContext) -> list[dict[str, Any]]:
    """One planned image per selected member."""
    seed = context.seed if config.seed is None else config.seed
    path = local_archive(remote_files(config)[0], context) if config.url else Path(config.path).expanduser()
    if not path.is_file():
        raise DataError(f"fetch source archive {path} does not exist (fetch.sources[…].path)")
    limits = Limits(config.max_ratio, int(config.max_unpacked_gib * 2**30))
    names, loader = _open(path, limits, context, multiple_of=config.multiple_of)
    wanted = {extension.lower() for extension in config.extensions}
    images = sorted(name for name in names if PurePosixPath(name).suffix.lower() in wanted)
    if not images:
        raise DataError(f"found 0 images in {path}; member suffixes looked for (any case): "
                        f"{', '.join(config.extensions)}")
    if config.count > len(images):
        raise DataError(f"fetch source {path}: count is {config.count:,} but only {len(images):,} images exist")
    prefix = config.prefix or safe_name(_without_suffix(path.name))
    items = []
    for name in seeded_subset(images, config.count, seed=seed, stream=0xA7C):
        relative = "/".join(part for part in name.split("/") if part not in ("", "."))  # "./a.jpg" -> "a.jpg"
        split = config.split if config.split != "auto" else split_for(
            relative, seed=seed, val_fraction=config.val_fraction, test_fraction=config.test_fraction)
        items.append({"stem": stem_for(prefix, relative), "split": split, "source": f"archive:{prefix}",
                      "origin": f"{path.name}:{name}", "bytes": names[name], "load": loader(name)})
    return items


def _open(path: Path, limits: Limits, context: SourceContext, *, multiple_of: int) -> tuple[dict[str, int], Any]:
    """({member name: bytes}, a factory of loaders by name) for a zip or a tar, after every safety check."""
    if zipfile.is_zipfile(path):
        archive = open_zip(path)
        check_zip_limits(archive, limits)
        members = {info.filename: info.file_size for info in archive.infolist() if not info.is_dir()}
        return members, lambda name: _ZipLoader(archive, name, multiple_of)
    if not is_tar(path):
        raise DataError(f"{path} is neither a zip nor a tar archive (compressed or not)")
    if context.dry_run and is_compressed(path) and not unpacked_tar_path(path, context.downloads).is_file():
        raise NotReady(f"{path.name} is a compressed tar not unpacked yet; the selection is listed once it is")
    plain, listed = tar_members(path, limits, cache_dir=context.downloads)
    by_name = {member.name: member for member in listed}
    return ({name: member.length for name, member in by_name.items()},
            lambda name: _TarLoader(plain, by_name[name], path, multiple_of))


def _without_suffix(name: str) -> str:
    lowered = name.lower()
    return next((name[:-len(suffix)] for suffix in ARCHIVE_SUFFIXES if lowered.endswith(suffix)), name)


@dataclass(frozen=True)
class _ZipLoader:
    archive: zipfile.ZipFile  # shared: zipfile reads members thread-safely through one handle
    member: str
    multiple_of: int

    def __call__(self) -> LoadedImage:
        data = read_member(self.archive, self.member)
        return crop_to_multiple(data, multiple=self.multiple_of, suffix=PurePosixPath(self.member).suffix.lower())


@dataclass(frozen=True)
class _TarLoader:
    plain: Path  # the uncompressed tar (the archive itself, or its unpacked copy)
    member: TarMember
    archive: Path
    multiple_of: int

    def __call__(self) -> LoadedImage:
        data = read_tar_member(self.plain, self.member, archive=self.archive)
        return crop_to_multiple(data, multiple=self.multiple_of,
                                suffix=PurePosixPath(self.member.name).suffix.lower())
