"""Zip and tar archives read safely: unsafe members and bombs refused, corruption reported with the archive's name.

Nothing is ever extracted to a path taken from an archive: members are read by name (zip) or by offset in an
uncompressed tar (tar), and callers choose where the bytes go.
"""

from __future__ import annotations

import hashlib
import os
import stat
import tarfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from aligned_forensics.common.download import check_free_space
from aligned_forensics.common.errors import DataError
from aligned_forensics.common.io import NO_SPACE, disk_full


def open_zip(path: Path) -> zipfile.ZipFile:
    """Open a zip, checking every member name first (absolute paths, '..', links are refused)."""
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as error:
        raise DataError(f"{path} is not a readable zip archive ({error}); it may be truncated: delete it "
                        "and rerun to download it again") from None
    for member in archive.infolist():
        problem = unsafe_member(member)
        if problem:
            archive.close()
            raise DataError(f"{path} contains an unsafe member {member.filename!r} ({problem}); refusing to read "
                            "it. Check where the archive came from")
    return archive


def unsafe_member(member: zipfile.ZipInfo) -> str:
    """Why a member must not be read ('' when it is fine). Plain string tests: COCO has 118k members."""
    if stat.S_ISLNK(member.external_attr >> 16):
        return "symbolic link"
    return unsafe_name(member.filename)


def unsafe_name(name: str) -> str:
    """Why a member name must not be used ('' when fine): absolute paths and '..' could escape a destination."""
    if name.startswith(("/", "\\")) or name[1:2] == ":":
        return "absolute path"
    if ".." in name and ".." in name.replace("\\", "/").split("/"):
        return "'..' escapes the destination"
    return ""


@dataclass(frozen=True)
class Limits:
    """What an archive may unpack to before it is refused as a bomb."""

    max_ratio: float  # uncompressed / compressed size, per zip member and for a whole compressed tar
    max_total_bytes: int  # everything the archive unpacks to


BOMB_FLOOR = 1 << 20  # less than this cannot hurt, whatever its ratio (a 1 kB text of zeros compresses 100x)


def check_zip_limits(archive: zipfile.ZipFile, limits: Limits) -> None:
    """Refuse a zip whose declared sizes exceed the limits (zipfile never reads past a declared size)."""
    total = 0
    for member in archive.infolist():
        ratio = member.file_size / max(member.compress_size, 1)
        if member.file_size > BOMB_FLOOR and ratio > limits.max_ratio:
            raise DataError(f"{archive.filename}: member {member.filename!r} unpacks {ratio:,.0f}x "
                            f"({member.file_size:,} bytes from {member.compress_size:,}), over the limit of "
                            f"{limits.max_ratio:g}x (a zip bomb?); refusing to read it")
        total += member.file_size
        if total > limits.max_total_bytes:
            raise DataError(f"{archive.filename}: unpacks to more than {limits.max_total_bytes:,} bytes (at member "
                            f"{member.filename!r}); refusing to read it (raise the source's max_unpacked_gib if "
                            "the archive is genuine)")


def read_member(archive: zipfile.ZipFile, name: str) -> bytes:
    """A member's bytes (CRC-checked by zipfile); corruption becomes a DataError naming archive and member."""
    try:
        return archive.read(name)
    except (zipfile.BadZipFile, OSError, EOFError) as error:
        raise DataError(f"{archive.filename}: member {name} is corrupt ({error}); delete the archive and rerun "
                        "to download it again") from None


def extract_member(archive: zipfile.ZipFile, name: str, destination: Path) -> Path:
    """Copy one member to `destination` through a temp file (never to a path taken from the archive)."""
    if destination.exists() and destination.stat().st_size == archive.getinfo(name).file_size:
        return destination
    check_free_space(destination.parent, archive.getinfo(name).file_size, what=f"{name} from {archive.filename}")
    temporary = destination.with_name(destination.name + ".partial")
    try:
        with archive.open(name) as source, open(temporary, "wb") as target:
            while chunk := source.read(1 << 22):
                target.write(chunk)
    except (zipfile.BadZipFile, OSError, EOFError) as error:
        raise _copy_failed(error, temporary, f"{archive.filename}: member {name} is corrupt ({error}); delete the "
                           "archive and rerun to download it again") from None
    os.replace(temporary, destination)
    return destination


@dataclass(frozen=True)
class TarMember:
    """A regular file inside an uncompressed tar: read `length` bytes at `offset`."""

    name: str
    offset: int
    length: int


def unsafe_tar_member(member: tarfile.TarInfo) -> str:
    """Why a tar member must not be read ('' when it is fine): links, devices and escaping names."""
    if member.issym():
        return f"symbolic link to {member.linkname!r}"
    if member.islnk():
        return f"hard link to {member.linkname!r}"
    if not (member.isreg() or member.isdir()):
        return "a device, FIFO or other special file"
    if member.issparse():
        return "a sparse file (not supported)"
    return unsafe_name(member.name)


def tar_members(path: Path, limits: Limits, *, cache_dir: Path) -> tuple[Path, list[TarMember]]:
    """(an uncompressed tar, its regular files): every header is checked first; a compressed tar is
    unpacked once into cache_dir, bounded by the limits, so members can be read by offset."""
    plain = path if _compression(path) is None else unpacked_tar_path(path, cache_dir)
    if plain != path and not plain.is_file():
        _unpack(path, plain, limits)
    try:
        with tarfile.open(plain, "r:") as archive:
            members, total = [], 0
            for member in archive:
                _refuse_if_unsafe(path, member)
                total += member.size
                if total > limits.max_total_bytes:
                    raise DataError(f"{path}: unpacks to more than {limits.max_total_bytes:,} bytes (at member "
                                    f"{member.name!r}); refusing to read it (raise the source's "
                                    "max_unpacked_gib if the archive is genuine)")
                if member.isreg():
                    members.append(TarMember(member.name, member.offset_data, member.size))
    except (tarfile.TarError, OSError, EOFError) as error:
        raise DataError(f"{path} is not a readable tar archive ({error}); it may be truncated: delete it and "
                        "rerun") from None
    return plain, members


def read_tar_member(plain: Path, member: TarMember, *, archive: Path) -> bytes:
    """A member's bytes, read by offset (DataError naming archive and member if the file is too short)."""
    with open(plain, "rb") as handle:
        handle.seek(member.offset)
        data = handle.read(member.length)
    if len(data) != member.length:
        raise DataError(f"{archive}: member {member.name} is truncated ({len(data):,} of {member.length:,} "
                        "bytes); delete the archive and rerun")
    return data


def unpacked_tar_path(path: Path, cache_dir: Path) -> Path:
    """Where the uncompressed copy of a compressed tar lives: keyed by its path, length and mtime."""
    facts = path.stat()
    key = hashlib.sha256(f"{path.resolve()}:{facts.st_size}:{facts.st_mtime_ns}".encode()).hexdigest()[:16]
    return cache_dir / f"{path.name}.{key}.tar"


def is_compressed(path: Path) -> bool:
    """True when the file starts like gzip, bzip2 or xz data (a tar must then be unpacked before reading)."""
    return _compression(path) is not None


def is_tar(path: Path) -> bool:
    """True for a tar, compressed (gzip, bzip2, xz) or not."""
    return _compression(path) is not None or tarfile.is_tarfile(path)


def _compression(path: Path) -> str | None:
    """'gz', 'bz2' or 'xz' from the file's first bytes (not its name), else None."""
    with open(path, "rb") as handle:
        magic = handle.read(6)
    return next((kind for prefix, kind in ((b"\x1f\x8b", "gz"), (b"BZh", "bz2"), (b"\xfd7zXZ\x00", "xz"))
                 if magic.startswith(prefix)), None)


def _refuse_if_unsafe(path: Path, member: tarfile.TarInfo) -> None:
    problem = unsafe_tar_member(member)
    if problem:
        raise DataError(f"{path} contains an unsafe member {member.name!r} ({problem}); refusing to read it. "
                        "Check where the archive came from")


def _unpack(path: Path, plain: Path, limits: Limits) -> None:
    """Stream a compressed tar into an uncompressed one, checking each header before its data is read, so
    a bomb costs at most max_ratio x its own size of work."""
    budget = min(limits.max_total_bytes, max(BOMB_FLOOR, int(limits.max_ratio * path.stat().st_size)))
    plain.parent.mkdir(parents=True, exist_ok=True)
    temporary = plain.with_name(plain.name + ".partial")
    try:
        with tarfile.open(path, f"r|{_compression(path)}") as source, tarfile.open(temporary, "w:") as target:
            total = 0
            for member in source:
                _refuse_if_unsafe(path, member)
                total += member.size
                if total > budget:
                    raise DataError(f"{path}: member {member.name!r} brings what the archive unpacks to over "
                                    f"{budget:,} bytes ({limits.max_ratio:g}x its compressed size, at most "
                                    f"{limits.max_total_bytes:,}): a decompression bomb? refusing to read it")
                target.addfile(member, source.extractfile(member) if member.isreg() else None)
    except (tarfile.TarError, OSError, EOFError) as error:
        raise _copy_failed(error, temporary, f"{path} is not a readable compressed tar ({error}); it may be "
                           "truncated: delete it and rerun") from None
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    os.replace(temporary, plain)


def _copy_failed(error: BaseException, temporary: Path, corrupt: str) -> Exception:
    """Remove the half-written copy; a full disk is our write failing (DiskFullError), else the archive is bad."""
    temporary.unlink(missing_ok=True)
    if isinstance(error, OSError) and error.errno in NO_SPACE:
        return disk_full(error, temporary)
    return DataError(corrupt)
