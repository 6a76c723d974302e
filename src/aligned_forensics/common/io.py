"""Atomic file and directory writes: every output appears whole or not at all."""

from __future__ import annotations

import contextlib
import csv
import errno
import hashlib
import io
import json
import math
import os
import shutil
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from aligned_forensics.common.errors import DataError, UserError

PARTIAL_SUFFIX = ".partial"
NO_SPACE = (errno.ENOSPC, errno.EDQUOT)  # a full disk, or a full quota on it


class DiskFullError(UserError):
    """A write failed because the disk (or the user's quota) is full; the message names the path."""


def file_sha256(path: Path) -> str:
    """Hex SHA-256 of a file, read in 4 MiB chunks (weights and images alike)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 22):
            digest.update(chunk)
    return digest.hexdigest()


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write `data` to `path` through a temp file in the same folder, then rename into place.

    On any failure the temp file is removed and `path` keeps its old content; a full disk is a DiskFullError."""
    path = Path(path)
    temporary = path.with_name(path.name + PARTIAL_SUFFIX)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(temporary, "wb") as handle:
            handle.write(data)
        # os.replace breaks a DVC cache hardlink instead of writing through it.
        os.replace(temporary, path)
    except BaseException as error:
        with contextlib.suppress(OSError):
            temporary.unlink(missing_ok=True)
        if isinstance(error, OSError) and error.errno in NO_SPACE:
            raise disk_full(error, path, needed=len(data)) from None
        raise


def disk_full(error: OSError, path: Path | None = None, *, needed: int | None = None) -> DiskFullError:
    """The one message for a full disk: which file, how much space is left there, and what to free."""
    path = Path(path or error.filename or ".")
    existing = next((p for p in [path, *path.absolute().parents] if p.exists()), Path("/"))
    free = shutil.disk_usage(existing).free
    wanted = f" ({needed:,} bytes)" if needed is not None else ""
    return DiskFullError(f"disk full: could not write {path}{wanted}, {free / 2**20:,.1f} MiB left on the disk that "
                         f"holds {existing} ({os.strerror(error.errno or errno.ENOSPC)}). Free space there "
                         "(`dvc gc -w` drops cache objects no longer used, archives in data/downloads can go once "
                         "fetched, old `dvc exp` runs hold outputs too) or move the folder to a larger disk, "
                         "then rerun")


def remove_partials(folder: Path) -> list[Path]:
    """Delete the temp files a killed write left directly in `folder` (they would be cached as outputs)."""
    found = sorted(Path(folder).glob(f"*{PARTIAL_SUFFIX}")) if Path(folder).is_dir() else []
    for path in found:
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink()
    return found


def atomic_write_text(path: Path, text: str) -> None:
    """Write UTF-8 text atomically."""
    atomic_write_bytes(path, text.encode("utf-8"))


def write_json(path: Path, payload: Mapping[str, Any], *, digits: int = 6) -> None:
    """Write small JSON with sorted keys and rounded floats, so git diffs stay readable."""
    atomic_write_text(path, json.dumps(_round_floats(payload, digits), indent=2, sort_keys=True) + "\n")


def info_path(metrics_path: Path) -> Path:
    """Where the full record beside a declared metrics file lives: <folder>/info/<name>."""
    return metrics_path.parent / "info" / metrics_path.name


def write_metrics(path: Path, record: Mapping[str, Any], *, declared: Mapping[str, Any], digits: int = 4) -> None:
    """Write `declared` to `path` (a DVC metric) and the whole `record` to info_path(path) (not one).

    Declared metrics are what a researcher compares across experiments (`dvc metrics diff`, `dvc exp show`):
    quality figures only, rounded so they read at a glance; counts of work, timings and labels stay in the
    record, which the report reads."""
    write_json(info_path(path), record)
    write_json(path, declared, digits=digits)


def pick(record: Mapping[str, Any], *keys: str) -> dict[str, Any]:
    """The named keys of a record (a KeyError names a missing one)."""
    return {key: record[key] for key in keys}


def write_csv(path: Path, rows: Iterable[Mapping[str, Any]], columns: Sequence[str]) -> int:
    """Write rows (in the given order) as CSV with '\\n' line ends; return the row count."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(columns), lineterminator="\n", extrasaction="raise")
    writer.writeheader()
    count = 0
    for row in rows:
        writer.writerow(row)
        count += 1
    atomic_write_text(path, buffer.getvalue())
    return count


def read_csv(path: Path) -> list[dict[str, str]]:
    """Read a CSV written by write_csv into a list of dicts (DataError if it does not exist)."""
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            return list(csv.DictReader(handle))
    except FileNotFoundError:
        raise DataError(f"{path} not found: the stage that writes it has not run; `dvc repro` runs every "
                        "stage in order") from None


@contextlib.contextmanager
def atomic_directory(path: Path) -> Iterator[Path]:
    """Yield a fresh temp folder beside `path`; on success it replaces `path`, on failure it is removed."""
    path = Path(path)
    temporary = path.with_name(path.name + PARTIAL_SUFFIX)
    shutil.rmtree(temporary, ignore_errors=True)
    temporary.mkdir(parents=True)
    try:
        yield temporary
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        raise
    if path.exists():
        shutil.rmtree(path)
    os.replace(temporary, path)


def _round_floats(value: Any, digits: int) -> Any:
    if isinstance(value, float):
        if not math.isfinite(value):
            return None  # JSON has no NaN; null is explicit in diffs
        return round(value, digits)
    if isinstance(value, Mapping):
        return {str(k): _round_floats(v, digits) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_round_floats(v, digits) for v in value]
    return value
