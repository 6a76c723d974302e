"""Paths that may run through an archive or start with a URL: `bench.zip/valid/real`, `https://host/set.tar.gz`.

An archive is unpacked once, safely (unsafe members and bombs refused, see archives.py), into the download
cache's `unpacked/` folder, keyed by the archive's path, length and modification time; a URL is downloaded
into the cache first (resumable, verified against its checksum when one is given).
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path, PurePosixPath
from urllib.parse import urlparse

from aligned_forensics.common.archives import (
    Limits,
    check_zip_limits,
    extract_member,
    open_zip,
    read_tar_member,
    tar_members,
)
from aligned_forensics.common.download import RemoteFile, download
from aligned_forensics.common.errors import DataError
from aligned_forensics.common.io import atomic_directory, atomic_write_bytes
from aligned_forensics.common.progress import progress_bar

log = logging.getLogger(__name__)

ARCHIVE_SUFFIXES = (".zip", ".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tar.xz")
LIMITS = Limits(max_ratio=100.0, max_total_bytes=512 * 2**30)  # a benchmark can be large; bombs still refused
COMPLETE = ".unpacked.json"  # written last: a folder without it is an interrupted unpack, redone


def is_archive_name(name: str) -> bool:
    return name.lower().endswith(ARCHIVE_SUFFIXES)


def locate(text: str, *, checksum: str = "", cache: Path) -> Path:
    """The local path `text` names: itself, or the same path inside an archive's unpacked copy."""
    if text.startswith(("http://", "https://")):
        parts = PurePosixPath(urlparse(text).path).parts
        cut = next((i for i, part in enumerate(parts) if is_archive_name(part)), None)
        if cut is None:
            raise DataError(f"{text}: a URL must name an archive ({', '.join(ARCHIVE_SUFFIXES)})")
        inner = "/".join(parts[cut + 1:])
        url = text[: len(text) - len(inner)].rstrip("/") if inner else text
        archive = download(RemoteFile(url=url, name=parts[cut], checksum=checksum), cache)
        return unpack_archive(archive, cache=cache) / inner
    path = Path(text).expanduser()
    for index, part in enumerate(path.parts):
        prefix = Path(*path.parts[: index + 1])
        if is_archive_name(part) and prefix.is_file():
            return unpack_archive(prefix, cache=cache).joinpath(*path.parts[index + 1:])
    return path


def unpack_archive(archive: Path, *, cache: Path) -> Path:
    """The folder holding `archive`'s files, unpacked on first use (atomically: never half a folder)."""
    facts = archive.stat()
    key = hashlib.sha256(f"{archive.resolve()}:{facts.st_size}:{facts.st_mtime_ns}".encode()).hexdigest()[:16]
    target = cache / "unpacked" / f"{archive.name}.{key}"
    if (target / COMPLETE).is_file():
        return target
    log.info("unpacking %s into %s (once)", archive, target)
    with atomic_directory(target) as folder:
        if archive.name.lower().endswith(".zip"):
            with open_zip(archive) as opened:
                check_zip_limits(opened, LIMITS)
                for member in progress_bar(opened.infolist(), desc=f"unpack {archive.name}", unit="file"):
                    if not member.is_dir():  # names were checked by open_zip: no absolute paths, no '..'
                        destination = folder / member.filename
                        destination.parent.mkdir(parents=True, exist_ok=True)
                        extract_member(opened, member.filename, destination)
        else:
            plain, members = tar_members(archive, LIMITS, cache_dir=cache / "unpacked")
            for member in progress_bar(members, desc=f"unpack {archive.name}", unit="file"):
                destination = folder / member.name  # names were checked by tar_members
                destination.parent.mkdir(parents=True, exist_ok=True)
                atomic_write_bytes(destination, read_tar_member(plain, member, archive=archive))
            if plain != archive:
                plain.unlink()  # the uncompressed copy was only needed to read members by offset
        record = {"archive": str(archive.resolve()), "bytes": facts.st_size, "mtime_ns": facts.st_mtime_ns}
        (folder / COMPLETE).write_text(json.dumps(record, sort_keys=True) + "\n")
    return target
