"""Downloads against a real HTTP server on 127.0.0.1 with injected faults (no internet)."""

from __future__ import annotations

import hashlib
import os
import shutil
from collections import namedtuple

import pytest

from aligned_forensics.common.download import RemoteFile, RetryPolicy, download, parse_checksum
from aligned_forensics.common.errors import DataError, ParamsError

FAST = RetryPolicy(attempts=3, backoff_s=0.01, timeout_s=5)
PAYLOAD = os.urandom(700_000)
SHA256 = "sha256:" + hashlib.sha256(PAYLOAD).hexdigest()


@pytest.fixture
def served(http):
    http.files["/zips/archive.zip"] = PAYLOAD
    return http


def remote(http, checksum: str = SHA256) -> RemoteFile:
    return RemoteFile(url=http.url("/zips/archive.zip"), name="archive.zip", checksum=checksum)


def test_plain_download_is_verified_and_then_cached(served, tmp_path):
    path = download(remote(served), tmp_path, policy=FAST)
    assert path.read_bytes() == PAYLOAD and path == tmp_path / "archive.zip"
    assert download(remote(served), tmp_path, policy=FAST) == path
    assert served.gets("/zips/archive.zip") == [""]  # the second call found the verified copy
    assert sorted(p.name for p in tmp_path.iterdir()) == ["archive.zip", "archive.zip.verified"]


def test_dropped_connection_resumes_from_the_byte_reached(served, tmp_path):
    served.faults["/zips/archive.zip"].extend(["drop-after:300000", "drop-after:200000"])
    path = download(remote(served), tmp_path, policy=FAST)
    assert path.read_bytes() == PAYLOAD  # byte-identical after two interruptions
    assert served.gets("/zips/archive.zip") == ["", "bytes=300000-", "bytes=500000-"]


def test_interrupted_run_keeps_its_bytes_and_the_next_run_resumes(served, tmp_path):
    served.faults["/zips/archive.zip"].append("drop-after:250000")
    with pytest.raises(DataError, match="250,000 bytes kept.*rerun to resume"):
        download(remote(served), tmp_path, policy=RetryPolicy(attempts=1, backoff_s=0, timeout_s=5))
    assert (tmp_path / "archive.zip.partial").stat().st_size == 250_000
    assert download(remote(served), tmp_path, policy=FAST).read_bytes() == PAYLOAD
    assert served.gets("/zips/archive.zip")[-1] == "bytes=250000-"


def test_server_ignoring_range_means_restart_from_zero(served, tmp_path):
    served.faults["/zips/archive.zip"].extend(["drop-after:100000", "ignore-range"])
    assert download(remote(served), tmp_path, policy=FAST).read_bytes() == PAYLOAD
    assert served.gets("/zips/archive.zip") == ["", "bytes=100000-"]


def test_changed_file_restarts_instead_of_splicing_two_versions(served, tmp_path):
    served.faults["/zips/archive.zip"].append("drop-after:100000")
    with pytest.raises(DataError):
        download(remote(served, ""), tmp_path, policy=RetryPolicy(attempts=1, backoff_s=0, timeout_s=5))
    new_version = os.urandom(400_000)
    served.files["/zips/archive.zip"] = new_version  # new ETag: If-Range fails, the server sends it whole
    assert download(remote(served, ""), tmp_path, policy=FAST).read_bytes() == new_version


def test_server_errors_are_retried_with_backoff(served, tmp_path):
    served.faults["/zips/archive.zip"].extend(["status:500", "status:503"])
    assert download(remote(served), tmp_path, policy=FAST).read_bytes() == PAYLOAD
    assert len(served.gets("/zips/archive.zip")) == 3


def test_persistent_server_errors_give_up_with_the_url(served, tmp_path):
    served.faults["/zips/archive.zip"].extend(["status:500"] * 3)
    with pytest.raises(DataError, match=r"archive.zip failed 3 times, last: .*HTTP 500"):
        download(remote(served), tmp_path, policy=FAST)


def test_a_failed_download_names_a_partial_file_only_when_one_exists(served, tmp_path):
    served.faults["/zips/archive.zip"].extend(["status:503"] * 3)
    with pytest.raises(DataError, match="failed 3 times") as error:
        download(remote(served), tmp_path, policy=FAST)
    assert not (tmp_path / "archive.zip.partial").exists()
    message = str(error.value)  # no byte arrived: there is no partial file to name or resume from
    assert ".partial" not in message and "bytes kept" not in message and "nothing was kept" in message, message


def test_not_found_is_not_retried(served, tmp_path):
    missing = RemoteFile(url=served.url("/zips/nope.zip"), name="nope.zip", checksum="")
    with pytest.raises(DataError, match=r"/zips/nope.zip: HTTP 404.*url param"):
        download(missing, tmp_path, policy=FAST)
    assert len(served.gets("/zips/nope.zip")) == 1


def test_checksum_mismatch_moves_the_file_aside_and_names_both_digests(served, tmp_path):
    wrong = "md5:" + "0" * 32
    actual = hashlib.md5(PAYLOAD).hexdigest()
    with pytest.raises(DataError, match=f"expected md5:{'0' * 32}, got md5:{actual}.*moved aside") as error:
        download(remote(served, wrong), tmp_path, policy=FAST)
    assert served.url("/zips/archive.zip") in str(error.value)
    aside = tmp_path / f"archive.zip.md5-{actual[:12]}.rejected"
    assert aside.read_bytes() == PAYLOAD and not (tmp_path / "archive.zip").exists()


def test_not_enough_disk_space_fails_before_downloading(served, tmp_path, monkeypatch):
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(10**6, 10**6 - 1000, 1000))
    with pytest.raises(DataError, match=r"not enough disk space for archive.zip: needs 0.00 GiB .* free"):
        download(remote(served), tmp_path, policy=FAST)
    assert not (tmp_path / "archive.zip.partial").exists() or (tmp_path / "archive.zip.partial").stat().st_size == 0


def test_checksum_syntax_is_checked():
    assert parse_checksum("MD5:" + "A" * 32, key="k") == ("md5", "a" * 32)
    assert parse_checksum("", key="k") == ("", "")
    with pytest.raises(ParamsError, match="params key 'fetch.sources.0.checksum'"):
        parse_checksum("md5:123", key="fetch.sources.0.checksum")


def test_an_unverified_file_is_downloaded_again_when_its_url_changes(served, tmp_path):
    other = os.urandom(300_000)
    served.files["/mirror/archive.zip"] = other
    assert download(remote(served, ""), tmp_path, policy=FAST).read_bytes() == PAYLOAD
    moved = RemoteFile(url=served.url("/mirror/archive.zip"), name="archive.zip", checksum="")
    assert download(moved, tmp_path, policy=FAST).read_bytes() == other  # no checksum: only the url tells them apart
    assert download(moved, tmp_path, policy=FAST).read_bytes() == other
    assert len(served.gets("/mirror/archive.zip")) == 1
    pinned = RemoteFile(url=served.url("/zips/archive.zip"), name="archive.zip",
                        checksum="sha256:" + hashlib.sha256(other).hexdigest())
    assert download(pinned, tmp_path, policy=FAST).read_bytes() == other  # pinned: the same bytes from any url
    assert served.gets("/zips/archive.zip") == [""]
