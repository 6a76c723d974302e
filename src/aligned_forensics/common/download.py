"""Resumable, verified HTTP downloads into a cache folder that outlives DVC re-running the stage.

A download streams into `<name>.partial`; after an interruption it resumes with a Range request (guarded by
If-Range on the ETag, so a changed file restarts). It is renamed to `<name>` only once its pinned checksum
matches; a mismatching file is moved aside, never deleted.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import requests
import urllib3

from aligned_forensics.common.errors import DataError, ParamsError
from aligned_forensics.common.progress import progress_bar

log = logging.getLogger(__name__)

CHUNK_BYTES = 1 << 20
DIGESTS = ("md5", "sha256")
DOWNLOADS_ENV = "ALIGNED_FORENSICS_DOWNLOADS"  # e.g. a shared disk, so `dvc exp run --temp` reuses archives
DEFAULT_DOWNLOADS = Path("data/downloads")


@dataclass(frozen=True)
class RemoteFile:
    """One archive a source needs: where it lives, the file name in the cache, its pinned checksum."""

    url: str
    name: str
    checksum: str  # "md5:<hex>", "sha256:<hex>" or "" (unverified: the sha256 is logged so it can be pinned)


@dataclass(frozen=True)
class RetryPolicy:
    """How hard to try before giving up on a flaky server."""

    attempts: int = 6
    backoff_s: float = 2.0  # waits backoff, 2x backoff, 4x backoff, ... between attempts
    timeout_s: float = 60.0  # per connect / per read


class _Retryable(Exception):
    """A failure worth another attempt (connection dropped, timeout, 5xx)."""


def downloads_dir(override: Path | None = None) -> Path:
    """The download cache: --downloads, else $ALIGNED_FORENSICS_DOWNLOADS, else data/downloads."""
    return Path(override or os.environ.get(DOWNLOADS_ENV) or DEFAULT_DOWNLOADS).expanduser()


def parse_checksum(text: str, *, key: str) -> tuple[str, str]:
    """'md5:abc…' -> ('md5', 'abc…'); '' -> ('', '')."""
    if not text:
        return "", ""
    algorithm, _, digest = text.partition(":")
    expected_length = {"md5": 32, "sha256": 64}.get(algorithm.lower())
    if expected_length is None or len(digest) != expected_length or any(c not in "0123456789abcdefABCDEF"
                                                                        for c in digest):
        raise ParamsError(f"params key '{key}': expected 'md5:<32 hex digits>' or 'sha256:<64 hex digits>' "
                          f"(or '' to skip verification), got {text!r}")
    return algorithm.lower(), digest.lower()


def file_digest(path: Path, algorithm: str) -> str:
    """Hex digest of a file, read in 1 MiB chunks."""
    return file_digests(path, (algorithm,))[algorithm]


def file_digests(path: Path, algorithms: tuple[str, ...] = DIGESTS) -> dict[str, str]:
    """Hex digests of a file in several algorithms, from one read (archives can be tens of GB)."""
    digests = {algorithm: hashlib.new(algorithm) for algorithm in algorithms}
    with open(path, "rb") as handle:
        while chunk := handle.read(CHUNK_BYTES):
            for digest in digests.values():
                digest.update(chunk)
    return {algorithm: digest.hexdigest() for algorithm, digest in digests.items()}


def cached_path(remote: RemoteFile, directory: Path, *, record: bool = True) -> Path | None:
    """The verified file in the cache, or None when it still has to be downloaded.

    record=False (dry runs) never writes the stamp that spares hashing the file next time."""
    path = directory / remote.name
    if not path.is_file():
        return None
    return path if _verified(path, remote, record=record) else None


def check_free_space(directory: Path, needed: int, *, what: str) -> None:
    """DataError before starting when the disk under `directory` has less than `needed` bytes free."""
    directory.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(directory).free
    if needed > free:
        raise DataError(f"not enough disk space for {what}: needs {needed / 2**30:.2f} GiB in {directory}, "
                        f"{free / 2**30:.2f} GiB free; free some space or point ${DOWNLOADS_ENV} at a larger disk")


def remote_length(url: str, *, timeout_s: float = 30.0) -> int | None:
    """Content-Length from a HEAD request, or None when the server does not say."""
    try:
        response = requests.head(url, allow_redirects=True, timeout=timeout_s)
    except requests.RequestException:
        return None
    length = response.headers.get("Content-Length")
    return int(length) if response.ok and length and length.isdigit() else None


def download(remote: RemoteFile, directory: Path, *, policy: RetryPolicy = RetryPolicy()) -> Path:
    """Return the verified local copy of `remote`, downloading or resuming it first if needed."""
    done = cached_path(remote, directory)
    if done is not None:
        log.info("%s: cached and verified in %s", remote.name, directory)
        return done
    final = directory / remote.name
    partial = final.with_name(final.name + ".partial")
    for attempt in range(1, policy.attempts + 1):
        try:
            _stream(remote.url, partial, timeout_s=policy.timeout_s)
            break
        except _Retryable as error:
            if attempt == policy.attempts:
                raise DataError(f"download of {remote.url} failed {attempt} times, last: {error}; "
                                f"{_kept(partial)}") from None
            wait = policy.backoff_s * 2 ** (attempt - 1)
            log.warning("%s (attempt %d of %d); retrying in %.1f s", error, attempt, policy.attempts, wait)
            time.sleep(wait)
    _verify_or_move_aside(partial, remote)
    os.replace(partial, final)
    _etag_path(partial).unlink(missing_ok=True)
    return final


def _kept(partial: Path) -> str:
    """What a failed download leaves behind: the partial file is named only when it holds bytes to resume from."""
    have = partial.stat().st_size if partial.is_file() else 0
    if have:
        return f"{have:,} bytes kept in {partial}; rerun to resume"
    return "no bytes were received, so nothing was kept; check that the url is reachable and rerun"


def _stream(url: str, partial: Path, *, timeout_s: float) -> None:
    """Append the rest of `url` to `partial` (or restart it when the server cannot resume)."""
    partial.parent.mkdir(parents=True, exist_ok=True)
    have = partial.stat().st_size if partial.exists() else 0
    etag = _etag_path(partial).read_text().strip() if have and _etag_path(partial).exists() else ""
    headers = {"Range": f"bytes={have}-"} if have else {}
    if have and etag:
        headers["If-Range"] = etag  # the server sends the whole (new) file if it changed since
    try:
        response = requests.get(url, headers=headers | {"Accept-Encoding": "identity"}, stream=True,
                                timeout=timeout_s)
    except requests.RequestException as error:
        raise _Retryable(f"{url}: {type(error).__name__}: {error}") from None
    with response:
        if response.status_code == 416 and have:  # nothing left to send: the partial file is complete
            return
        if response.status_code >= 500 or response.status_code == 429:
            raise _Retryable(f"{url}: HTTP {response.status_code}")
        if response.status_code >= 400:
            raise DataError(f"{url}: HTTP {response.status_code} {response.reason}; check the source's url "
                            "param (a mirror may use another layout)")
        resuming = response.status_code == 206
        if have and not resuming:
            log.warning("%s ignored the range request (HTTP %d): restarting from byte 0", url, response.status_code)
            have = 0
        if response.headers.get("ETag"):
            _etag_path(partial).write_text(response.headers["ETag"])
        length = response.headers.get("Content-Length")
        total = have + int(length) if length and length.isdigit() else None
        if total is not None:
            check_free_space(partial.parent, total - have, what=partial.name[: -len(".partial")])
        with open(partial, "ab" if resuming else "wb") as handle, progress_bar(
            total=total, initial=have, unit="B", unit_scale=True, unit_divisor=1024, desc=partial.stem
        ) as bar:
            _copy_body(response, handle, bar, url=url)
            if total is not None and handle.tell() < total:
                raise _Retryable(f"{url}: connection lost after {handle.tell():,} of {total:,} bytes")


def _copy_body(response: requests.Response, handle: BinaryIO, bar: Any, *, url: str) -> None:
    """Append the body to `handle` as it arrives: read1 returns what came in, so a drop loses no byte."""
    while True:
        try:
            chunk = response.raw.read1(CHUNK_BYTES)
        except (requests.RequestException, urllib3.exceptions.HTTPError, OSError) as error:
            raise _Retryable(f"{url}: connection lost after {handle.tell():,} bytes ({type(error).__name__})"
                             ) from None
        if not chunk:
            return
        handle.write(chunk)
        bar.update(len(chunk))


def _verify_or_move_aside(partial: Path, remote: RemoteFile) -> None:
    algorithm, expected = parse_checksum(remote.checksum, key=f"checksum of {remote.name}")
    actual = file_digest(partial, algorithm or "sha256")
    if not expected:
        log.warning("%s is not verified (no checksum in params); its sha256 is %s: pin it with "
                    "checksum: sha256:%s", remote.name, actual, actual)
    elif actual != expected:
        aside = partial.with_name(f"{remote.name}.{algorithm}-{actual[:12]}.rejected")
        os.replace(partial, aside)
        _etag_path(partial).unlink(missing_ok=True)
        raise DataError(f"checksum mismatch for {remote.url}: expected {algorithm}:{expected}, got "
                        f"{algorithm}:{actual}; the file was moved aside to {aside} (not deleted). A mirror "
                        "may serve another version: check the url, or set the source's checksum param")
    _record_verified(partial, remote)


def _verified(path: Path, remote: RemoteFile, *, record: bool) -> bool:
    """True when the file matches the pinned checksum (hashed only when the file or the checksum changed since
    the last check); without a checksum, when it was downloaded from this same url."""
    algorithm, expected = parse_checksum(remote.checksum, key=f"checksum of {remote.name}")
    stamp = _stamp_path(path)
    previous = json.loads(stamp.read_text()) if stamp.exists() else {}
    fingerprint = _fingerprint(path, remote)
    unchanged = all(previous.get(key) == fingerprint[key] for key in ("checksum", "bytes", "mtime_ns"))
    if not expected:
        if previous.get("url", remote.url) != remote.url:  # stamps from before urls were recorded: kept
            return False  # nothing says another url serves the same file: download it again
    elif not unchanged and file_digest(path, algorithm) != expected:
        return False  # a different version under the same name: download again (to .partial)
    if record and previous != fingerprint:
        stamp.write_text(json.dumps(fingerprint))
    return True


def _record_verified(partial: Path, remote: RemoteFile) -> None:
    # os.replace keeps size and mtime, so the stamp stays valid for the final name
    _stamp_path(partial.with_name(remote.name)).write_text(json.dumps(_fingerprint(partial, remote)))


def _fingerprint(path: Path, remote: RemoteFile) -> dict[str, Any]:
    """What a stamp records: the checksum verified, the url, and the file's size and mtime at that moment."""
    stat = path.stat()
    return {"checksum": remote.checksum, "url": remote.url, "bytes": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def _etag_path(partial: Path) -> Path:
    return partial.with_name(partial.name + ".etag")


def _stamp_path(path: Path) -> Path:
    return path.with_name(path.name + ".verified")
